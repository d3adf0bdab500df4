"""Output post-processing: model text -> parsed, validated value.

One parser per output type in a table (not an if-chain), plus the order in
which methods are tried for each type and the capability each method needs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from . import schema as schemas
from .errors import quote
from .spec import OutputSpec, OutputType


class ParseFailure(Exception):
    """The text does not hold a valid value; the message says why (one line)."""


def _parse_text(out: OutputSpec, text: str) -> str:
    return text.strip() if out.strip else text


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


def _parse_json(out: OutputSpec, text: str) -> Any:
    """The first JSON value in the text (fenced code blocks and surrounding prose tolerated)."""
    candidates = [text.strip()]
    candidates += [m.group(1).strip() for m in _FENCE.finditer(text)]
    decoder = json.JSONDecoder()
    value: Any = None
    found = False
    for cand in candidates:
        try:
            value, found = json.loads(cand), True
            break
        except json.JSONDecodeError:
            continue
    if not found:
        for m in re.finditer(r"[\[{]", text):
            try:
                value, _ = decoder.raw_decode(text, m.start())
                found = True
                break
            except json.JSONDecodeError:
                continue
    if not found:
        raise ParseFailure("the answer holds no valid JSON")
    errors = schemas.errors(out.schema or {}, value)
    if errors:
        err = errors[0]
        loc = "".join(f"[{p!r}]" for p in err.absolute_path)
        raise ParseFailure(f"the JSON does not fit the output schema: {err.message}" + (f" at {loc}" if loc else ""))
    return value


def _parse_regex(out: OutputSpec, text: str) -> str:
    try:
        m = schemas.search(out.pattern or "", text)
    except schemas.RegexProblem as exc:
        raise ParseFailure(str(exc)) from None
    if m is None:
        raise ParseFailure(f"the answer does not match the pattern {quote(out.pattern or '', 200)}")
    if "answer" in m.re.groupindex:
        return str(m.group("answer"))
    if m.re.groups >= 1:
        return str(m.group(1))
    return str(m.group(0))


PARSERS: dict[OutputType, Callable[[OutputSpec, str], Any]] = {
    OutputType.TEXT: _parse_text,
    OutputType.CHOICE: _parse_choice,
    OutputType.JSON: _parse_json,
    OutputType.REGEX: _parse_regex,
}


def parse_output(out: OutputSpec, text: str) -> Any:
    """Parse and validate ``text`` for ``out``; raise ParseFailure when it does not fit."""
    return PARSERS[out.type](out, text)
