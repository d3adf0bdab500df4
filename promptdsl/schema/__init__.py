"""JSON Schema and regular expressions from spec files, with their dangers removed.

A spec's schemas and patterns are untrusted, so every validator promptdsl builds comes from
here:

- ``$ref`` never leaves the schema: the registry refuses every retrieval (no HTTP, no
  ``file://``), and :func:`schema_problem` reports a reference that does not resolve while the
  spec loads, with the key path of the ``$ref``.
- Regexes (``pattern``, ``patternProperties``, output ``pattern``, ``tests[].expect.matches``)
  run on the ``regex`` module with a time limit. A pattern such as ``^(a+)+$`` backtracks
  exponentially in Python's ``re``; a static check cannot recognise every such pattern, but a
  clock can bound all of them, so a match that takes longer than :data:`REGEX_SECONDS` is an
  error that names the pattern instead of a hang.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any, cast

from ..errors import quote

if TYPE_CHECKING:  # imported when first used: a run of a spec already known valid needs none of them
    import referencing
    import regex
    from jsonschema import Draft202012Validator, SchemaError, ValidationError


def quoted_message(err: ValidationError) -> str:
    """jsonschema's message with the offending value shown short and escaped, never in full (a
    5,000-digit input, a shared spec's control characters)."""
    shown = repr(err.instance)
    message = err.message
    if shown in message:
        message = message.replace(shown, quote(err.instance))
    return quote(message, 300)[1:-1]


@lru_cache(maxsize=1)
def spec_schema() -> dict[str, Any]:
    """The spec JSON Schema shipped inside the package (every spec is checked against it)."""
    text = resources.files(__name__).joinpath("spec.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


#: Longest time one regex search may take on one text.
REGEX_SECONDS = 1.0
#: Longest time all the searches of one validation may take together (an array of a thousand
#: strings under a slow ``pattern`` would otherwise take a thousand times REGEX_SECONDS).
REGEX_BUDGET_SECONDS = 2.0
#: Longest time the checks of a whole spec may take together (loading and ``validate``): its
#: examples and tests are each a value, and 10 inputs under slow patterns in one test took 17 s.
SPEC_BUDGET_SECONDS = 10.0
#: Longest pattern accepted (patterns are a line or two; anything longer is a mistake).
MAX_PATTERN_CHARS = 2000

KeyPath = tuple[str | int, ...]


class RegexProblem(Exception):
    """A pattern is invalid, too long, or took too long on a text (the message says which)."""


@lru_cache(maxsize=256)
def compile_pattern(pattern: str) -> regex.Pattern[str]:
    """Compile a spec's pattern (``re`` syntax); RegexProblem when it is invalid or too long."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise RegexProblem(f"regular expression of {len(pattern)} characters is too long (limit {MAX_PATTERN_CHARS})")
    import regex

    try:
        return regex.compile(pattern, regex.VERSION0)
    except (regex.error, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise RegexProblem(f"invalid regular expression {quote(pattern)}: {exc}") from None


_budget = threading.local()  # .deadline: when the searches of the validation running on this thread must stop


@contextmanager
def regex_budget(seconds: float | None = None, scope: str = "on one value") -> Iterator[None]:
    """Bound every regex search (and ``$ref`` followed) inside to ``seconds`` in all (default
    :data:`REGEX_BUDGET_SECONDS`; ``scope`` says what the budget covers, for the message). An
    outer budget, if any, still rules."""
    outer = getattr(_budget, "deadline", None)
    if outer is None:
        _budget.seconds = REGEX_BUDGET_SECONDS if seconds is None else seconds
        _budget.scope = scope
        _budget.deadline = time.monotonic() + _budget.seconds
    try:
        yield
    finally:
        if outer is None:
            _budget.deadline = None


def spec_budget() -> AbstractContextManager[None]:
    """The budget of a whole spec's checks (:data:`SPEC_BUDGET_SECONDS`): loading it and ``validate``
    share it, for each example and test is a value with a budget of its own."""
    return regex_budget(SPEC_BUDGET_SECONDS, "for the whole spec")


def _spent() -> str:
    """The budget that ran out, as a message says it: "2 s in all on one value"."""
    return f"{getattr(_budget, 'seconds', REGEX_BUDGET_SECONDS):g} s in all {getattr(_budget, 'scope', 'on one value')}"


def search(pattern: str, text: str, flags: int = 0) -> regex.Match[str] | None:
    """``re.search`` for untrusted patterns: bounded by :data:`REGEX_SECONDS`, and inside
    :func:`regex_budget` by what is left of the budget."""
    compiled = compile_pattern(pattern) if not flags else _with_flags(pattern, flags)
    deadline = getattr(_budget, "deadline", None)
    left = REGEX_SECONDS if deadline is None else min(REGEX_SECONDS, deadline - time.monotonic())
    try:
        if left <= 0:
            raise TimeoutError
        return compiled.search(text, timeout=left)
    except TimeoutError:
        if left < REGEX_SECONDS:
            raise RegexProblem(
                f"the regular expressions took longer than {_spent()} "
                f"(the last was {quote(pattern)}: nested repetition such as '(a+)+' backtracks without end); "
                "simplify it"
            ) from None
        raise RegexProblem(
            f"the regular expression {quote(pattern)} took longer than {REGEX_SECONDS:g} s on a "
            f"{len(text)}-character text (nested repetition such as '(a+)+' backtracks without end); simplify it"
        ) from None


@lru_cache(maxsize=64)
def _with_flags(pattern: str, flags: int) -> regex.Pattern[str]:
    import regex

    compile_pattern(pattern)
    return regex.compile(pattern, regex.VERSION0 | flags)


# ---------------------------------------------------------------------------- JSON Schema


def _refuse(uri: str) -> referencing.Resource[Any]:
    import referencing.exceptions

    raise referencing.exceptions.NoSuchResource(ref=uri)  # type: ignore[call-arg]


@lru_cache(maxsize=1)
def registry() -> referencing.Registry[Any]:
    """No retrieval, ever: a ``$ref`` can only point inside the schema (or at the bundled metaschemas)."""
    import referencing

    made: referencing.Registry[Any] = referencing.Registry(retrieve=_refuse)  # type: ignore[call-arg]
    return made


def _pattern(validator: Any, patrn: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    from jsonschema import ValidationError

    if not validator.is_type(instance, "string"):
        return
    found = search(patrn, instance)  # a RegexProblem passes through: under "not" an error would count as a pass
    if found is None:
        yield ValidationError(f"{quote(instance)} does not match {quote(patrn)}")


def _pattern_properties(validator: Any, properties: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for patrn, subschema in properties.items():
        for key, value in instance.items():
            if search(patrn, key) is not None:
                yield from validator.descend(value, subschema, path=key, schema_path=patrn)


def _canonical(value: Any) -> Any:
    """A hashable stand-in equal exactly when JSON Schema calls two values equal (1 == 1.0, true != 1)."""
    if isinstance(value, bool) or value is None:
        return ("b", value)
    if isinstance(value, int | float):
        return ("n", value)
    if isinstance(value, str):
        return ("s", value)
    if isinstance(value, list | tuple):
        return ("l", tuple(_canonical(v) for v in value))
    if isinstance(value, Mapping):
        return ("d", frozenset((k, _canonical(v)) for k, v in value.items()))
    return ("o", repr(value))


def json_equal(a: Any, b: Any) -> bool:
    """JSON's equality (JSON Schema's ``const``, ``enum`` and ``uniqueItems``): 1 == 1.0, true != 1."""
    return bool(_canonical(a) == _canonical(b))


def _unique_items(validator: Any, unique: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    """In one pass over hashes: jsonschema compares every pair when the items cannot be sorted
    (numbers and strings mixed), which took minutes on a 60,000-item list."""
    from jsonschema import ValidationError

    if not unique or not validator.is_type(instance, "array"):
        return
    seen: set[Any] = set()
    for item in instance:
        key = _canonical(item)
        if key in seen:
            yield ValidationError(f"{quote(instance)} has non-unique elements")
            return
        seen.add(key)


def _additional_properties(validator: Any, extra: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    """jsonschema's ``additionalProperties``, with the keys matched against ``patternProperties`` by
    :func:`search` (jsonschema's own uses Python's ``re``, which no clock bounds)."""
    from jsonschema import ValidationError

    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    extras = [k for k in instance if k not in properties and not any(search(p, k) is not None for p in patterns)]
    if validator.is_type(extra, "object"):
        for key in extras:
            yield from validator.descend(instance[key], extra, path=key)
    elif not extra and extras:
        shown = ", ".join(repr(k) for k in sorted(extras, key=str))
        if patterns:
            verb = "does" if len(extras) == 1 else "do"
            regexes = ", ".join(map(repr, sorted(patterns)))
            yield ValidationError(f"{shown} {verb} not match any of the regexes: {regexes}")
        else:
            verb = "was" if len(extras) == 1 else "were"
            yield ValidationError(f"Additional properties are not allowed ({shown} {verb} unexpected)")


def _on_the_clock(keyword: Callable[..., Iterator[ValidationError]]) -> Callable[..., Iterator[ValidationError]]:
    """``keyword`` (``$ref``) charged to the budget of :func:`regex_budget`: a schema whose ``$ref``
    re-enters it through an ``allOf`` of three at every level of the value does 3^depth work with no
    regex in sight (23 s for a value nested 11 deep)."""

    def run(validator: Any, value: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
        deadline = getattr(_budget, "deadline", None)
        if deadline is not None and time.monotonic() > deadline:
            raise RegexProblem(f"checking took longer than {_spent()}: the schema's '$ref' re-enters it at every "
                               "level of the value; simplify the schema")
        yield from keyword(validator, value, instance, schema)

    return run


@lru_cache(maxsize=1)
def _bounded() -> Any:
    from jsonschema import Draft202012Validator, validators

    base = Draft202012Validator.VALIDATORS
    return validators.extend(  # type: ignore[no-untyped-call]
        Draft202012Validator,
        {"pattern": _pattern, "patternProperties": _pattern_properties, "uniqueItems": _unique_items,
         "additionalProperties": _additional_properties, "$ref": _on_the_clock(base["$ref"]),
         "$dynamicRef": _on_the_clock(base["$dynamicRef"])},
    )


@lru_cache(maxsize=1)
def _format_checker() -> Any:
    """Draft 2020-12's format checks, but ``format: regex`` compiled as every pattern here is (at most
    2,000 characters, the ``regex`` module): jsonschema's own ``re.compile`` of a 3 MB input took
    22 s and 760 MB, with no clock."""
    from jsonschema import Draft202012Validator, FormatChecker

    checker = FormatChecker(formats=())
    checker.checkers = dict(Draft202012Validator.FORMAT_CHECKER.checkers)

    @checker.checks("regex", raises=RegexProblem)
    def _regex(instance: object) -> bool:
        return not isinstance(instance, str) or compile_pattern(instance) is not None

    return checker


def validator(schema: Mapping[str, Any] | bool, *, formats: bool = False) -> Draft202012Validator:
    """A Draft 2020-12 validator for an untrusted schema: no retrieval, bounded regexes."""
    checker = _format_checker() if formats else None
    made: Draft202012Validator = _bounded()(schema, registry=registry(), format_checker=checker)
    return made


def closest_branch(err: ValidationError) -> ValidationError:
    """The error to report for ``err``: for an ``anyOf``/``oneOf`` that no branch took, the error of
    the branch the value was meant for, recursively (``{name: x, foo: 1}`` is a tool object with an
    unknown key, not a tool name that is not a string): one whose type it has, the deepest first."""
    while err.validator in ("anyOf", "oneOf") and err.context:
        err = min(err.context, key=_branch_rank(len(err.absolute_path)))
    return err


def _branch_rank(depth: int) -> Callable[[ValidationError], tuple[bool, int]]:
    """Sort key of a branch's error: a branch whose type (or ``not``) refused the value itself, at
    ``depth``, was not meant for it; of the rest, the deepest error is the line to fix."""

    def rank(e: ValidationError) -> tuple[bool, int]:
        return e.validator in ("type", "not") and len(e.absolute_path) == depth, -len(e.absolute_path)

    return rank


def errors(schema: Mapping[str, Any] | bool, instance: Any, *, formats: bool = False) -> list[ValidationError]:
    """Every problem of ``instance`` (a reference that cannot resolve is one problem, not a crash)."""
    import referencing.exceptions
    from jsonschema import ValidationError

    try:
        with regex_budget():
            found = list(validator(schema, formats=formats).iter_errors(instance))
        return sorted(found, key=lambda e: [str(p) for p in e.path])
    except (referencing.exceptions.Unresolvable, RecursionError) as exc:
        return [ValidationError(f"the schema cannot be used: {_ref_reason(exc)}")]
    except RegexProblem as exc:  # the value can be neither accepted nor refused on its merits
        return [ValidationError(str(exc))]


def schema_problem(schema: Any) -> tuple[str, KeyPath] | None:
    """Why ``schema`` cannot be used (and where inside it), or None: metaschema, regexes, refs."""
    from jsonschema import Draft202012Validator, SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        return f"invalid JSON Schema: {_short(exc)}", tuple(exc.absolute_path)
    except RecursionError:
        return "the JSON Schema is nested too deeply", ()
    try:
        for path, node in _nodes(schema, ()):
            problem = _node_problem(node)
            if problem is not None:
                return problem, path
        _check_refs(schema)
        _check_ref_loops(schema)
    except _RefFailure as exc:
        return exc.args[0], exc.args[1]
    except RecursionError:
        return "the JSON Schema is nested too deeply", ()
    return None


def _short(exc: SchemaError) -> str:
    from .keywords import NAME_MAPS, type_problem

    path = list(exc.absolute_path)
    if path and path[-1] == "type" and not (len(path) > 1 and path[-2] in NAME_MAPS):  # not a property named type
        plain = type_problem(exc.instance)
        if plain is not None:
            return plain
    message = exc.message
    shown = repr(exc.instance)
    if shown in message and len(shown) > 60:
        message = message.replace(shown, quote(exc.instance))
    return message


def _nodes(node: Any, path: KeyPath) -> Iterator[tuple[KeyPath, Mapping[str, Any]]]:
    if isinstance(node, Mapping):
        yield path, node
        for key, value in node.items():
            if key in ("const", "enum", "default", "examples"):
                continue  # data, not subschemas
            yield from _nodes(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _nodes(value, (*path, i))


def _node_problem(node: Mapping[str, Any]) -> str | None:
    if "unevaluatedProperties" in node and _holds_key(node, "patternProperties"):
        return ("'unevaluatedProperties' next to 'patternProperties' is not supported: jsonschema would match "
                "the keys with Python's re, which no time limit bounds (use 'additionalProperties')")
    patterns: list[str] = []
    if isinstance(node.get("pattern"), str):
        patterns.append(node["pattern"])
    if isinstance(node.get("patternProperties"), Mapping):
        patterns.extend(str(k) for k in node["patternProperties"])
    for patrn in patterns:
        try:
            compile_pattern(patrn)
        except RegexProblem as exc:
            return str(exc)
    return None


def _holds_key(node: Any, key: str) -> bool:
    """Whether ``key`` appears anywhere in ``node`` (a conservative look: data under ``enum`` counts too)."""
    todo = [node]
    while todo:
        item = todo.pop()
        if isinstance(item, Mapping):
            if key in item:
                return True
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
    return False


class _RefFailure(Exception):
    pass


def _check_refs(schema: Any) -> None:
    import referencing.jsonschema

    refs = registry().combine(_specifications())
    root = referencing.jsonschema.DRAFT202012.create_resource(schema)
    _walk_refs(schema, refs.resolver_with_root(root), ())


#: Keywords whose subschemas apply to the same instance (the others step into a part of it).
_IN_PLACE = ("allOf", "anyOf", "oneOf", "not", "if", "then", "else", "dependentSchemas")


def _pointer(schema: Any, ref: str) -> tuple[KeyPath, Any] | None:
    """The node a local ``#/a/b`` reference names (None for anchors and anything not found)."""
    if not ref.startswith("#") or (len(ref) > 1 and not ref.startswith("#/")):
        return None
    node, path = schema, cast(KeyPath, ())
    for raw in ref[2:].split("/") if len(ref) > 1 else []:
        part: str | int = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, list) and isinstance(part, str) and part.isdigit() and int(part) < len(node):
            part = int(part)
        elif not (isinstance(node, Mapping) and part in node):
            return None
        node, path = node[part], (*path, part)
    return path, node


def _check_ref_loops(schema: Any) -> None:
    """A ``$ref`` that comes back to itself without stepping into the instance (``{$ref: '#'}``)
    would make every validation recurse until Python gives up: refused where it starts."""

    def same_instance(path: KeyPath, node: Any) -> Iterator[tuple[KeyPath, Any, KeyPath | None]]:
        """(path, node, the $ref followed or None) of the subschemas that apply to the same value."""
        if not isinstance(node, Mapping):
            return
        if isinstance(node.get("$ref"), str):
            target = _pointer(schema, node["$ref"])
            if target is not None:
                yield (*target, (*path, "$ref"))
        for key in _IN_PLACE:
            sub = node.get(key)
            if isinstance(sub, list):
                yield from (((*path, key, i), v, None) for i, v in enumerate(sub))
            elif key == "dependentSchemas" and isinstance(sub, Mapping):
                yield from (((*path, key, k), v, None) for k, v in sub.items())
            elif isinstance(sub, Mapping):
                yield (*path, key), sub, None

    done: set[KeyPath] = set()

    def visit(path: KeyPath, node: Any, stack: dict[KeyPath, None], via: KeyPath) -> None:
        if path in stack:
            raise _RefFailure(
                "the references loop without stepping into the value (a $ref back to a schema that applies "
                "to the same value), so no value could ever be checked", via
            )
        if path in done:
            return
        stack[path] = None
        for sub_path, sub, ref in same_instance(path, node):
            visit(sub_path, sub, stack, ref or via)
        del stack[path]
        done.add(path)

    for path, node in _nodes(schema, ()):
        visit(path, node, {}, path)


def _walk_refs(node: Any, resolver: Any, path: KeyPath) -> None:
    import referencing.jsonschema

    if isinstance(node, Mapping):
        if isinstance(node.get("$id"), str) and path:
            resolver = resolver.in_subresource(referencing.jsonschema.DRAFT202012.create_resource(node))
        for key in ("$ref", "$dynamicRef"):
            ref = node.get(key)
            if isinstance(ref, str):
                try:
                    resolver.lookup(ref)
                except Exception as exc:  # referencing raises several kinds; all mean "does not resolve"
                    raise _RefFailure(
                        f"{key} {quote(ref)} does not resolve: {_ref_reason(exc)}; inline the definition "
                        "or point inside the schema ('#/$defs/...')",
                        (*path, key),
                    ) from None
        for key, value in node.items():
            if key not in ("const", "enum", "default", "examples"):
                _walk_refs(value, resolver, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _walk_refs(value, resolver, (*path, i))


def _ref_reason(exc: BaseException) -> str:
    import referencing.exceptions

    inner = getattr(exc, "_wrapped", exc)  # jsonschema wraps referencing's errors
    if isinstance(inner, RecursionError):
        return "the references loop or nest too deeply"
    if isinstance(inner, referencing.exceptions.PointerToNowhere):
        return f"nothing in the schema is at {quote(inner.ref)}"
    ref = getattr(inner, "ref", None)
    if isinstance(inner, referencing.exceptions.Unresolvable) and isinstance(ref, str) and not ref.startswith("#"):
        return f"{quote(ref)} is outside the schema, and references are never fetched (no URLs, no files)"
    return quote(f"{type(inner).__name__}: {inner}", 160)


@lru_cache(maxsize=1)
def _specifications() -> referencing.Registry[Any]:
    from jsonschema_specifications import REGISTRY as SPECIFICATIONS

    found: referencing.Registry[Any] = SPECIFICATIONS
    return found
