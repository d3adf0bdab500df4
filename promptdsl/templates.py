"""Jinja2 templates, always sandboxed and bounded, with undefined names as errors.

Specs come from files people share, so a template may only format the data it is given. The
sandbox refuses Python internals such as ``''.__class__``; on top of it, everything a template
can compute is bounded, because a three-line spec must not exhaust memory or hang:

- size: every value an operator, filter or method makes (``"a" * 10**10``, ``"%999999999d" % 1``,
  ``text|center(10**9)``, ``x.replace(...)``, ``2**100000``, ``list + list``) is checked *before*
  it is built against :data:`MAX_CHARS` characters (:data:`MAX_INT_BITS` bits for integers), and
  so is the rendered text. Lists hold at most :data:`MAX_ITEMS` items, and the filters that take
  their value item by item (``select``, ``batch``, ``list``, ...) read it through the same
  counted, clocked loop as ``{% for %}``. Intercepting the operators also stops Jinja from folding them at parse time,
  which is where ``validate`` used to run out of memory.
- time: loops, calls, attribute lookups and operators charge a clock; a render that takes
  longer than :data:`RENDER_SECONDS` stops (nested ``range(99999)`` loops, exponential macros).
- depth: macros may nest :data:`MAX_CALL_DEPTH` levels.

A limit hit is a :class:`TemplateFailure` naming the limit; the compiler turns it into a
``SpecError`` at the template's ``file:line:col``.
"""

from __future__ import annotations

import contextvars
import functools
import json
import math
import re
import string
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from functools import lru_cache
from types import TracebackType
from typing import Any

import jinja2
import jinja2.meta
import jinja2.nodes
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context, Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment

#: Largest text (or list weight) a template may make, in characters: the largest input file.
MAX_CHARS = 16 << 20
#: Largest integer a template may compute (about 3,600 digits; Python prints at most 4,300).
MAX_INT_BITS = 12_000
#: Most items a template may make a list of, or take one by one from anything: a list costs
#: memory per item however short its text (16 Mi one-character items are 1 GiB of list).
MAX_ITEMS = 1 << 20
#: Longest a single render may run.
RENDER_SECONDS = 5.0
#: How deep macros may call macros.
MAX_CALL_DEPTH = 40
#: Longest text given to filters that work word by word in Python (wordwrap, urlize, ...).
MAX_SLOW_FILTER_CHARS = 100_000
_SLOW_FILTERS = frozenset({"wordwrap", "urlize", "striptags", "title"})
#: Filters that take their value item by item in Python (and need no more than an iterable).
_ITEM_FILTERS = frozenset(
    {
        "batch",
        "groupby",
        "list",
        "map",
        "max",
        "min",
        "reject",
        "rejectattr",
        "select",
        "selectattr",
        "slice",
        "sort",
        "sum",
        "unique",
    }
)
_CHECK_EVERY = 256  # clock reads are cheap, but not free


class TemplateFailure(Exception):
    """Why a template failed, in one line (the caller adds where)."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line  # the template's own line, when known

    def __str__(self) -> str:
        message = str(self.args[0])
        if self.line is None or "on its line" in message:
            return message
        return f"{message} (on its line {self.line})"


class TemplateLimit(TemplateFailure):
    """A template tried to compute more than the limits allow."""


# ---------------------------------------------------------------------------- the budget


class _Budget:
    __slots__ = ("deadline", "depth", "lists", "steps")

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.steps = 0
        self.depth = 0
        self.lists: list[tuple[Any, int]] = []  # the last lists ``+`` made, with their weights


def _list_weight(value: Any) -> int:
    """``_weight`` of a list, remembered for the lists ``+`` made last: ``ns.l = ns.l + [x]`` in a
    loop would otherwise weigh the whole list again at every step (quadratic time)."""
    budget = _budget.get()
    for made, weight in budget.lists if budget is not None else ():
        if made is value:
            return weight
    return _weight(value)


_budget: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("promptdsl_template_budget", default=None)


def _tick() -> _Budget | None:
    budget = _budget.get()
    if budget is not None:
        budget.steps += 1
        if budget.steps % _CHECK_EVERY == 0 and time.monotonic() > budget.deadline:
            raise TemplateLimit(f"rendering took longer than {RENDER_SECONDS:g} s (runaway loop or recursion?)")
    return budget


def _too_big(what: str, size: int | float) -> TemplateLimit:
    return TemplateLimit(f"{what} would be {_amount(size)} characters; the limit is {_amount(MAX_CHARS)}")


def _amount(n: int | float) -> str:
    return f"{n:,.0f}" if n < 1e15 else f"{n:.1e}"


#: Lists and mappings inside each other that a template may print.
MAX_PRINT_DEPTH = 30


class _TooDeep(Exception):
    """A value nested deeper than :data:`MAX_PRINT_DEPTH`."""


def _weight(value: Any, cap: int = MAX_CHARS) -> int:
    """About how many characters ``str(value)`` makes, counted no further than ``cap``."""
    try:
        return _weigh(value, cap, 0)
    except _TooDeep:  # a size cannot be told, and is not the problem
        raise TemplateLimit(f"a value nests more than {MAX_PRINT_DEPTH} levels deep; the limit is {MAX_PRINT_DEPTH}") \
            from None


def _weigh(value: Any, cap: int, depth: int) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return 8
    if isinstance(value, int):
        return value.bit_length() // 3 + 1
    if depth > MAX_PRINT_DEPTH:
        raise _TooDeep
    if isinstance(value, Mapping):
        items: Iterable[Any] = (x for kv in value.items() for x in kv)
    elif isinstance(value, list | tuple | set | frozenset):
        items = value
    else:
        return 16  # objects the sandbox lets through print briefly
    total = 2
    for item in items:
        total += _weigh(item, cap - total, depth + 1) + 2
        if total > cap:
            return total
    return total


def _check_weight(what: str, value: Any) -> None:
    weight = _weight(value)
    if weight > MAX_CHARS:
        raise _too_big(what, weight)


def _too_many(n: int) -> TemplateLimit:
    return TemplateLimit(f"a list of {_amount(n)} items or more; the limit is {_amount(MAX_ITEMS)}")


def _check_result(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
        raise TemplateLimit(f"a number of {value.bit_length()} bits is larger than the limit of {MAX_INT_BITS} bits")
    if isinstance(value, str) and len(value) > MAX_CHARS:
        raise _too_big("a value", len(value))
    if isinstance(value, list | tuple) and len(value) > MAX_ITEMS:
        raise _too_many(len(value))
    return value


# ---------------------------------------------------------------------------- operators

_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")


def _check_printf(fmt: str, args: Any) -> None:
    """``fmt % args`` makes about len(fmt) + widths + the arguments; refuse it when that is too much."""
    total = len(fmt) + _weight(args)
    for m in _PRINTF.finditer(fmt):
        for part in m.groups():
            if part == "*":
                raise TemplateLimit("'*' widths in % formatting are not allowed in templates")
            if part is not None:
                total += int(part) if len(part) < 12 else MAX_CHARS + 1
    if total > MAX_CHARS:
        raise _too_big("the formatted text", total)


def _check_repeat(left: Any, right: Any) -> None:
    for seq, n in ((left, right), (right, left)):
        if isinstance(n, int) and not isinstance(n, bool) and isinstance(seq, str | list | tuple):
            size = _weight(seq) * max(n, 0)
            if size > MAX_CHARS:
                raise _too_big("the repeated value", size)
    if isinstance(left, int) and isinstance(right, int) and left.bit_length() + right.bit_length() > MAX_INT_BITS + 1:
        raise TemplateLimit(f"the product would exceed the limit of {MAX_INT_BITS} bits")


def _check_power(base: Any, exp: Any) -> None:
    if isinstance(base, int) and isinstance(exp, int) and exp > 0 and abs(base) > 1:
        bits = exp * math.log2(abs(base))
        if bits > MAX_INT_BITS:
            raise TemplateLimit(f"the power would have about {bits:,.0f} bits; the limit is {MAX_INT_BITS}")


def _check_format(fmt: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """``fmt.format(...)``: the same estimate as for ``%``, with widths from the format specs."""
    total = len(fmt) + _weight(list(args)) + _weight(dict(kwargs))
    try:
        specs = [spec or "" for _, _, spec, _ in string.Formatter().parse(fmt)]
    except ValueError:
        return  # format() itself reports the broken format string
    for spec in specs:
        for number in re.findall(r"\d+", spec):
            total += int(number) if len(number) < 12 else MAX_CHARS + 1
    if total > MAX_CHARS:
        raise _too_big("the formatted text", total)


def _check_add(left: Any, right: Any) -> int | None:
    """``list + list`` in a loop (``ns.l = ns.l + [big]``) grows by whole values each time.
    Returns the joined list's weight, for :func:`_list_weight` to remember."""
    if isinstance(left, list | tuple) and isinstance(right, list | tuple):
        if len(left) + len(right) > MAX_ITEMS:
            raise _too_many(len(left) + len(right))
        size = _list_weight(left) + _list_weight(right)
        if size > MAX_CHARS:
            raise _too_big("the joined list", size)
        return size
    if isinstance(left, str) and isinstance(right, str) and len(left) + len(right) > MAX_CHARS:
        raise _too_big("the joined text", len(left) + len(right))
    return None


_BINOP_CHECKS: dict[str, Callable[[Any, Any], int | None]] = {
    "+": _check_add,
    "*": _check_repeat,
    "**": _check_power,
    "%": lambda left, right: _check_printf(left, right) if isinstance(left, str) else None,
}


# ---------------------------------------------------------------------------- methods and filters


def _int_args(args: Iterable[Any]) -> Iterator[int]:
    return (a for a in args if isinstance(a, int) and not isinstance(a, bool))


#: str methods a prompt has no use for, whose cost no check can bound: ``encode`` makes bytes, which
#: every size check here skips (``x.encode() * 2000000000`` took 2 GB), and runs codecs such as
#: punycode (quadratic, 24 s for 10,000 characters in one step the clock cannot interrupt);
#: ``translate`` maps each character to a string of any length.
_REFUSED_STR_METHODS = frozenset({"encode", "translate", "maketrans"})


def _check_str_method(text: str, name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    values = [*args, *kwargs.values()]
    if name in _REFUSED_STR_METHODS:
        raise TemplateLimit(f"the text method '{name}' is not available in templates")
    if name == "expandtabs":
        tab = next(_int_args(values), 8)
        if len(text) * max(tab, 1) > MAX_CHARS:
            raise _too_big("the expanded text", len(text) * tab)
    elif name == "replace" and len(values) >= 2 and isinstance(values[0], str) and isinstance(values[1], str):
        _check_replace(text, values[0], values[1])
    elif name == "join" and values:
        _check_join(text, values[0])
    elif name in ("split", "rsplit", "splitlines"):
        _check_split(text, name, values)
    for n in _int_args(values):
        if n > MAX_CHARS:
            raise _too_big(f"the result of '{name}'", n)


_LINE_BREAKS = ("\n", "\r", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")


@functools.cache
def _spaces() -> str:
    """What ``str.split()`` splits on (Unicode's whitespace), found on first need: scanning every
    code point takes 0.1 s, too much for every start-up."""
    return "".join(chr(c) for c in range(0x110000) if chr(c).isspace())


def _check_split(text: str, name: str, values: list[Any]) -> None:
    """The most items a split can make, counted in C before the list is built: every item but
    the last ends at a separator (``\r\n`` is one line break)."""
    sep = values[0] if values and isinstance(values[0], str) and name != "splitlines" else None
    if len(text) <= MAX_ITEMS:
        return  # cannot make more items than it has characters
    if name == "splitlines":
        most = sum(text.count(b) for b in _LINE_BREAKS) - text.count("\r\n") + 1
    elif sep:
        most = text.count(sep) + 1
    else:
        most = min(sum(text.count(c) for c in _spaces()), len(text) // 2) + 1
    limits = [n for n in _int_args(values) if n >= 0]
    if limits and name != "splitlines":
        most = min(most, limits[0] + 1)  # maxsplit
    if most > MAX_ITEMS:
        raise TemplateLimit(
            f"'{name}' could make {_amount(most)} items from this text; lists hold at most {_amount(MAX_ITEMS)}"
        )


def _check_replace(text: str, old: str, new: str) -> None:
    hits = len(text) + 1 if old == "" else text.count(old)
    size = len(text) + hits * len(new)
    if size > MAX_CHARS:
        raise _too_big("the replaced text", size)


def _check_join(sep: str, items: Any) -> None:
    if isinstance(items, Sized):
        size = _weight(items) + len(sep) * len(items)
        if size > MAX_CHARS:
            raise _too_big("the joined text", size)


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a filter: charge the clock, pre-check the arguments that decide its size, check the result."""
    offset = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0

    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        _tick()
        value = args[offset] if len(args) > offset else None
        if name == "join" and not isinstance(value, Sized):
            value = list(_loop(value))  # a generator is read once, so count it first
            args = (*args[:offset], value, *args[offset + 1 :])
        elif name in _ITEM_FILTERS and value is not None and not isinstance(value, Mapping):
            args = (*args[:offset], _loop(value), *args[offset + 1 :])  # counted and clocked, item by item
        rest = args[offset + 1 :]
        if name in _SLOW_FILTERS and isinstance(value, str) and len(value) > MAX_SLOW_FILTER_CHARS:
            raise TemplateLimit(
                f"the '{name}' filter takes at most {MAX_SLOW_FILTER_CHARS:,} characters, not {len(value):,}"
            )
        check = _FILTER_CHECKS.get(name)
        if check is not None:
            check(value, rest, kwargs)
        for n in _int_args([*rest, *kwargs.values()]):
            if n > MAX_CHARS:
                raise _too_big(f"the result of the '{name}' filter", n)
        return _check_result(func(*args, **kwargs))

    return run


def _indent_check(value: Any, rest: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    width = rest[0] if rest else kwargs.get("width", 4)
    per_line = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    lines = str(value).count("\n") + 1 if isinstance(value, str) else 1
    if lines * per_line > MAX_CHARS:
        raise _too_big("the indented text", lines * per_line)


def _wordwrap_check(value: Any, rest: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    wrap = rest[2] if len(rest) > 2 else kwargs.get("wrapstring") or "\n"
    if isinstance(value, str) and isinstance(wrap, str) and len(value) * (len(wrap) + 1) > MAX_CHARS:
        raise _too_big("the wrapped text", len(value) * (len(wrap) + 1))


def _replace_check(value: Any, rest: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    old = rest[0] if rest else kwargs.get("old")
    new = rest[1] if len(rest) > 1 else kwargs.get("new")
    if isinstance(value, str) and isinstance(old, str) and isinstance(new, str):
        _check_replace(value, old, new)


def _join_check(value: Any, rest: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    sep = rest[0] if rest else kwargs.get("d", "")
    _check_join(str(sep), value)


def _format_check(value: Any, rest: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    if isinstance(value, str):
        _check_printf(value, [*rest, *kwargs.values()])


def _stringify_check(value: Any, rest: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    _check_weight("the text of the value", value)


def _sum_check(value: Any, rest: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    start = rest[1] if len(rest) > 1 else kwargs.get("start", 0)
    if not isinstance(start, int | float):
        raise TemplateLimit("the 'sum' filter adds numbers only in templates (adding lists takes quadratic time)")


_FILTER_CHECKS: dict[str, Callable[[Any, tuple[Any, ...], Mapping[str, Any]], None]] = {
    "indent": _indent_check,
    "wordwrap": _wordwrap_check,
    "replace": _replace_check,
    "join": _join_check,
    "format": _format_check,
    "string": _stringify_check,
    "pprint": _stringify_check,
    "tojson": _stringify_check,
    "list": _stringify_check,
    "sum": _sum_check,
}


# ---------------------------------------------------------------------------- the environment


class _BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The immutable sandbox plus the size, time and depth limits described above."""

    intercepted_binops = frozenset({"*", "**", "%", "+", "//", "/"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = _tick()
        check = _BINOP_CHECKS.get(operator)
        weight = check(left, right) if check is not None else None
        result = _check_result(self.binop_table[operator](left, right))
        if weight is not None and budget is not None:
            budget.lists = [(result, weight), *budget.lists[:3]]
        return result

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        budget = _tick()
        owner = getattr(obj, "__self__", None)
        if isinstance(owner, str):
            name = getattr(obj, "__name__", "")
            if name == "join" and args and not isinstance(args[0], Sized):
                args = (list(_loop(args[0])), *args[1:])  # a generator is read once, so count it first
            _check_str_method(owner, name, args, kwargs)
        elif not isinstance(obj, Macro):
            for n in _int_args([*args, *kwargs.values()]):
                if n > MAX_CHARS:
                    raise TemplateLimit(f"the argument {n} is larger than the limit of {MAX_CHARS:,}")
        if budget is None:
            return _check_result(super().call(context, obj, *args, **kwargs))
        budget.depth += 1
        try:
            if budget.depth > MAX_CALL_DEPTH:
                raise TemplateLimit(f"macros nest more than {MAX_CALL_DEPTH} calls deep (runaway recursion?)")
            return _check_result(super().call(context, obj, *args, **kwargs))
        finally:
            budget.depth -= 1

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt: str = value.__self__
        inner = wrapped

        def checked(*args: Any, **kwargs: Any) -> str:
            _check_format(fmt, args, kwargs)
            return inner(*args, **kwargs)

        return checked

    def getattr(self, obj: Any, attribute: str) -> Any:
        _tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _tick()
        return super().getitem(obj, argument)


def _tojson(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _loop(items: Any) -> Iterator[Any]:
    """What every ``{% for %}`` and item-by-item filter iterates: the items, each charged to the
    clock, at most :data:`MAX_ITEMS` of them."""
    for n, item in enumerate(items, 1):
        _tick()
        if n > MAX_ITEMS:
            raise TemplateLimit(f"more than {_amount(MAX_ITEMS)} items taken one by one; that is the limit")
        yield item


def _concat(parts: list[Any]) -> str:
    """``a ~ b``: joined only once the result is known to fit."""
    _tick()
    total = sum(_weight(p) for p in parts)
    if total > MAX_CHARS:
        raise _too_big("the joined text", total)
    return "".join(str(p) for p in parts)


def _finalize(value: Any) -> Any:
    """Every ``{{ expression }}`` passes here before it becomes text."""
    if not isinstance(value, str):
        _check_weight("the printed value", value)
    return value


def _as_json(value: Any) -> Any:
    """A spec's ``{{ value }}``: its values are JSON's, so null, booleans, lists and mappings print as
    JSON (``null``, ``true``, ``{"a": 1}``), not as Python (``None``, ``True``, ``{'a': 1}``)."""
    value = _finalize(value)
    if value is None or isinstance(value, (bool, dict, list, tuple)):
        try:
            return json.dumps(value, ensure_ascii=False)
        except (TypeError, ValueError):  # not JSON (a sandboxed object): as Jinja prints it
            return value
    return value


@lru_cache(maxsize=1)
def environment() -> ImmutableSandboxedEnvironment:
    """The environment of spec templates."""
    return bounded_environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True,
                               finalize=_as_json)


def bounded_environment(
    filters: Mapping[str, Callable[..., Any]] | None = None, **options: Any
) -> ImmutableSandboxedEnvironment:
    """A new sandboxed environment with every limit above, for templates that are not a spec's (a
    model's own chat template wants ``trim_blocks`` and ``{% break %}``). ``options`` are Jinja's;
    ``filters`` are added to (or replace) Jinja's and are bounded like them. Compile and render its
    templates with :func:`compile_template` and :func:`render`, passing ``env``."""
    env = _BoundedEnvironment(**{"finalize": _finalize, **options})
    env.filters.update({"tojson": _tojson, **(filters or {})})
    env.filters = {name: _bounded_filter(name, f) for name, f in env.filters.items()}  # type: ignore[assignment]
    env.filters["_promptdsl_loop"] = _loop
    env.filters["_promptdsl_concat"] = _concat
    env.globals.pop("lipsum", None)  # makes any amount of text from one number
    return env


def _bound_ast(ast: jinja2.nodes.Template) -> jinja2.nodes.Template:
    """Route every loop and every ``~`` through the bounded helpers above."""
    for loop in ast.find_all(jinja2.nodes.For):
        loop.iter = jinja2.nodes.Filter(loop.iter, "_promptdsl_loop", [], [], None, None, lineno=loop.lineno)
    for concat in list(ast.find_all(jinja2.nodes.Concat)):
        joined = jinja2.nodes.Filter(
            jinja2.nodes.List(list(concat.nodes), lineno=concat.lineno),
            "_promptdsl_concat",
            [],
            [],
            None,
            None,
            lineno=concat.lineno,
        )
        concat.nodes = [joined]
    return ast


def _parse(source: str, env: ImmutableSandboxedEnvironment | None = None) -> jinja2.nodes.Template:
    try:
        return (env or environment()).parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateFailure(f"template syntax error on its line {exc.lineno}: {exc.message}", exc.lineno) from None
    except (RecursionError, MemoryError):
        raise TemplateFailure("template nests too deeply") from None


@lru_cache(maxsize=512)
def compile_template(source: str, env: ImmutableSandboxedEnvironment | None = None) -> jinja2.Template:
    """Parse a template once; raise TemplateFailure on a syntax error or a limit hit while compiling.
    ``env``: one from :func:`bounded_environment` (default: the spec templates' own)."""
    env = env or environment()
    ast = _bound_ast(_parse(source, env))
    token = _budget.set(_Budget(RENDER_SECONDS))
    try:
        return env.from_string(ast)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateFailure(f"template syntax error on its line {exc.lineno}: {exc.message}", exc.lineno) from None
    except TemplateFailure:
        raise
    except RecursionError:
        raise TemplateFailure("template nests too deeply") from None
    except Exception as exc:  # Jinja's compiler folds constants, which can fail in any way
        raise TemplateFailure(f"template error: {type(exc).__name__}: {exc}") from None
    finally:
        _budget.reset(token)


def free_names(source: str) -> set[str]:
    """Names a template reads from its context (globals such as ``range`` excluded)."""
    return set(jinja2.meta.find_undeclared_variables(_parse(source))) - set(environment().globals)


def private_attributes(source: str) -> list[str]:
    """Attributes like ``__class__`` a template reaches for: refused before anything renders."""
    ast = _parse(source)
    found = [n.attr for n in ast.find_all(jinja2.nodes.Getattr) if n.attr.startswith("_")]
    for item in ast.find_all(jinja2.nodes.Getitem):
        if isinstance(item.arg, jinja2.nodes.Const) and str(item.arg.value).startswith("_"):
            found.append(str(item.arg.value))
    return found


def render(source: str, context: Mapping[str, Any], env: ImmutableSandboxedEnvironment | None = None) -> str:
    """Render ``source`` with ``context`` within the limits; every failure is a TemplateFailure."""
    template = compile_template(source, env)
    token = _budget.set(_Budget(RENDER_SECONDS))
    try:
        parts: list[str] = []
        size = 0
        for chunk in template.generate(**context):
            size += len(chunk)
            if size > MAX_CHARS:
                raise _too_big("the rendered text", size)
            parts.append(chunk)
        return "".join(parts)
    except TemplateFailure as exc:
        exc.line = exc.line or _template_line(exc.__traceback__)
        raise
    except Exception as exc:
        raise _failure(exc) from None
    finally:
        _budget.reset(token)


_FAILURES: dict[type[BaseException], Callable[[BaseException], str]] = {
    jinja2.UndefinedError: lambda e: f"undefined variable: {getattr(e, 'message', e)}",
    SecurityError: lambda e: f"unsafe template operation refused by the sandbox: {e}",
    RecursionError: lambda e: "template recursion is too deep",
    MemoryError: lambda e: "template ran out of memory",
    OverflowError: lambda e: f"a number too large for the template's arithmetic ({e}; an input's value?)",
    jinja2.TemplateError: lambda e: f"template error: {e}",
}


def _failure(exc: BaseException) -> TemplateFailure:
    for kind, message in _FAILURES.items():
        if isinstance(exc, kind):
            return TemplateFailure(message(exc), _template_line(exc.__traceback__))
    detail = str(exc) or "failed"
    if isinstance(exc, AssertionError):
        detail = "a filter was given arguments it cannot use"
    return TemplateFailure(f"template error: {type(exc).__name__}: {detail}", _template_line(exc.__traceback__))


def _template_line(tb: TracebackType | None) -> int | None:
    """The template line a failure happened on (Jinja rewrites tracebacks to template lines)."""
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
