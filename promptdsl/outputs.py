"""Output post-processing: model text -> parsed, validated value.

One parser per output type in a table (not an if-chain), plus the order in
which methods are tried for each type and the capability each method needs.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

from . import schema as schemas
from .errors import quote
from .inputs import SURROGATE, has_surrogate, strict_json
from .spec import OutputSpec, OutputType


class ParseFailure(Exception):
    """The text does not hold a valid value; the message says why (one line)."""


def empty_answer(value: str) -> bool:
    """A text answer of nothing but white space: a failed answer, not an empty value a script
    would take for one (parsing refuses it, and the result cache never serves one)."""
    return not value.strip()


def _parse_text(out: OutputSpec, text: str) -> str:
    value = text.strip() if out.strip else text
    if empty_answer(value):
        raise ParseFailure("the answer is empty (the model wrote nothing but white space before it stopped, "
                           "or a stop string came first)")
    return value


def _parse_choice(out: OutputSpec, text: str) -> str:
    """The choice the text names first (exact match wins; then case-insensitive, whole word)."""
    stripped = text.strip()
    if stripped in out.choices:
        return stripped
    best: tuple[int, int, str] | None = None
    for choice in out.choices:
        pattern = r"(?<!\w)" + re.escape(choice) + r"(?!\w)"
        m = re.search(pattern, text, flags=re.IGNORECASE)
        if m:
            key = (m.start(), -len(choice), choice)
            if best is None or key < best:
                best = key
    if best is None:
        raise ParseFailure(f"the answer names none of the choices {list(out.choices)}")
    return best[2]


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


#: Starts tried in prose, a bound for replies of brackets alone (each try is linear in the reply).
MAX_JSON_STARTS = 10_000


def _top_level_starts(text: str) -> Iterator[int]:
    """Positions of ``[`` and ``{`` outside every bracket before them (counted naively, so a
    stray ``]`` in prose cannot hide what follows). A nested object of a malformed one is never
    a start of its own, while an answer after an unbalanced quote still is."""
    depth = 0
    for m in _BRACKET.finditer(text):
        if m.group() in "[{":
            if depth == 0:
                yield m.start()
            depth += 1
        else:
            depth = max(depth - 1, 0)


class _Refused:
    """A value the text holds that is not JSON a results file can carry: why (one line)."""

    def __init__(self, why: str) -> None:
        self.why = why


#: Why a value holding a lone surrogate is refused (valid JSON text, ``"\ud800"``, but not Unicode).
_SURROGATE_WHY = "the answer holds a lone surrogate (such as \\ud800), which is not valid Unicode"


def _strict(cand: str) -> Any:
    """``cand`` read as standard JSON (as inputs are: no NaN/Infinity, 1e400 or duplicate keys, no
    lone surrogates), a :class:`_Refused` for JSON that breaks those rules; raises JSONDecodeError
    or RecursionError for text that is no JSON at all."""
    try:
        value = strict_json(cand)
    except json.JSONDecodeError:
        raise
    except ValueError as exc:  # NaN, 1e400, a duplicate key, an integer of more than 4,300 digits
        return _Refused(f"the answer is not valid JSON: {quote(str(exc), 80)[1:-1]}")
    return _Refused(_SURROGATE_WHY) if has_surrogate(value) else value


def _json_values(text: str) -> Iterator[Any]:
    """JSON values the text may be answering with, in order: the whole text, fenced blocks,
    then values starting at a top-level bracket in the prose (a :class:`_Refused` for each
    one that is not standard JSON)."""
    for cand in [text.strip(), *(m.group(1).strip() for m in _FENCE.finditer(text))]:
        try:
            yield _strict(cand)
        except (ValueError, RecursionError):  # not JSON, deep nesting
            continue
    decoder = json.JSONDecoder()
    for start in itertools.islice(_top_level_starts(text), MAX_JSON_STARTS):
        try:
            _, end = decoder.raw_decode(text, start)  # where the value ends; then read strictly
            value = _strict(text[start:end])
        except (ValueError, RecursionError):
            continue
        yield value


_BRACKET = re.compile(r"[\[\]{}]")


def _parse_json(out: OutputSpec, text: str) -> Any:
    """The first JSON value in the text that fits the schema (fenced code blocks and
    surrounding prose tolerated); when none fits, why the first one found does not."""
    first_error: str | None = None
    for value in _json_values(text):
        if isinstance(value, _Refused):
            first_error = first_error or value.why
            continue
        errors = schemas.errors(out.schema or {}, value, formats=True)  # as inputs are: an email is an email
        if not errors:
            return value
        if first_error is None:
            err = errors[0]
            loc = "".join(f"[{p!r}]" for p in err.absolute_path)
            first_error = f"the JSON does not fit the output schema: {err.message}" + (f" at {loc}" if loc else "")
    raise ParseFailure(first_error or "the answer holds no valid JSON")


def _parse_regex(out: OutputSpec, text: str) -> str:
    try:
        m = schemas.search(out.pattern or "", text)
    except schemas.RegexProblem as exc:
        raise ParseFailure(str(exc)) from None
    if m is None:
        raise ParseFailure(f"the answer does not match the pattern {quote(out.pattern or '', 200)}")
    group: int | str = "answer" if "answer" in m.re.groupindex else min(m.re.groups, 1)
    value = m.group(group)
    if value is None:  # e.g. (?P<answer>yes)|no on "no": the match took the branch without the group
        name = "the answer group" if group == "answer" else "group 1"
        raise ParseFailure(f"the answer matches the pattern {quote(out.pattern or '', 200)} but {name} took no part")
    return str(value)


PARSERS: dict[OutputType, Callable[[OutputSpec, str], Any]] = {
    OutputType.TEXT: _parse_text,
    OutputType.CHOICE: _parse_choice,
    OutputType.JSON: _parse_json,
    OutputType.REGEX: _parse_regex,
}


def parse_output(out: OutputSpec, text: str) -> Any:
    """Parse and validate ``text`` for ``out``; raise ParseFailure when it does not fit.

    Text holding a lone surrogate (a backend's Python string can) is refused whatever the type:
    neither the value nor the raw text could be written out as UTF-8 or strict JSON."""
    if SURROGATE.search(text) is not None:
        raise ParseFailure(_SURROGATE_WHY)
    return PARSERS[out.type](out, text)
