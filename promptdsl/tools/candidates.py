"""Finite argument choices for the prompted path: numbers copied from the conversation, and every call a schema allows.

A small model writes numbers and picks words unreliably, but it ranks a short
list of complete calls well. Two opt-in pieces make that list:

- the schema keyword ``x-from-input: true`` on a ``number``/``integer`` (or an
  array of them) says the value is copied from the conversation (the input and
  the tool results so far): :func:`restrict` turns it into an ``enum`` of the
  numbers written there;
- the schema keyword ``x-parts: [<schema>, ...]`` on a ``string`` says the value
  is those parts' values joined by spaces (e.g. the calculator's ``"36 + 12"``:
  a copied number, an operator, a copied number), so a string can be listed too
  while the model reads it in its natural form;
- :func:`enumerate_arguments` lists every value of an arguments schema whose
  leaves are finite (``const``, ``enum``, booleans, fixed-length arrays and
  ``x-parts`` strings of those), up to a bound; the driver picks one by ``score``.

Anything else (free strings, open numbers) is ``None`` here and goes to
grammar-constrained decoding as before.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

FROM_INPUT = "x-from-input"
PARTS = "x-parts"
#: Calls the driver is willing to score for one step.
MAX_CANDIDATES = 256

_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.]*\d)")


def numbers_in(texts: Iterable[str]) -> list[int | float]:
    """The numbers written in ``texts``, in order of first appearance ("1,200" is 1200; no signs)."""
    return list(number_counts(texts))


def number_counts(texts: Iterable[str]) -> Counter[int | float]:
    """How many times each number is written in ``texts``, in order of first appearance."""
    counts: Counter[int | float] = Counter()
    for text in texts:
        for match in _NUMBER.finditer(re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)):
            raw = match.group()
            counts[float(raw) if "." in raw else int(raw)] += 1
    return counts


def copies_within(arguments: Any, written: Counter[int | float]) -> bool:
    """Whether ``arguments`` copy no number of the conversation more often than it is written there.

    "27 * 27" from "270 eggs in cartons of 27" copies 27 twice but it is written once: a
    listed call like that is never what the text says (with "12 boxes of 12 pens" it is).
    Numbers the conversation does not have (a schema's own constants) are not counted.
    """
    used = number_counts([json.dumps(arguments)])
    return all(n not in written or k <= written[n] for n, k in used.items())


def restrict(schema: Any, numbers: list[int | float]) -> Any:
    """``schema`` with each ``x-from-input`` number limited to ``numbers`` (unchanged when there are none)."""
    if not isinstance(schema, Mapping):
        return schema
    out = {k: restrict_children(k, v, numbers) for k, v in schema.items()}
    if out.get(FROM_INPUT) is True and numbers and out.get("type") in ("number", "integer"):
        allowed = [n for n in numbers if out["type"] == "number" or isinstance(n, int)]
        if allowed:
            out["enum"] = allowed
    return out


def restrict_children(key: str, value: Any, numbers: list[int | float]) -> Any:
    if key == "properties" and isinstance(value, Mapping):
        return {name: restrict(sub, numbers) for name, sub in value.items()}
    if key in ("items",):
        return restrict(value, numbers)
    if key in ("prefixItems", "anyOf", "oneOf", PARTS) and isinstance(value, list):
        return [restrict(sub, numbers) for sub in value]
    return value


def enumerate_arguments(schema: Any, limit: int = MAX_CANDIDATES) -> list[Any] | None:
    """Every value ``schema`` allows when that is a finite list of at most ``limit``; else None."""
    values = _values(schema, limit)
    return values if values is not None and 0 < len(values) <= limit else None


def _values(schema: Any, limit: int) -> list[Any] | None:
    if not isinstance(schema, Mapping):
        return None
    if "const" in schema:
        return [schema["const"]]
    if isinstance(schema.get("enum"), list):
        return list(schema["enum"])
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list):
            parts = [_values(sub, limit) for sub in schema[key]]
            if any(p is None for p in parts):
                return None
            return _bounded([v for p in parts for v in p or ()], limit)
    kind = schema.get("type")
    if kind == "string" and isinstance(schema.get(PARTS), list):
        parts = [_values(sub, limit) for sub in schema[PARTS]]
        if any(p is None for p in parts):
            return None
        return _product(parts, limit, lambda combo: " ".join(_text(v) for v in combo))
    if kind == "boolean":
        return [False, True]
    if kind == "object":
        return _objects(schema, limit)
    if kind == "array" and isinstance(schema.get("prefixItems"), list) and schema.get("items") is False:
        parts = [_values(sub, limit) for sub in schema["prefixItems"]]
        if any(p is None for p in parts):
            return None
        return _product(parts, limit, list)
    return None


def _objects(schema: Mapping[str, Any], limit: int) -> list[Any] | None:
    props: Mapping[str, Any] = schema.get("properties") or {}
    required = set(schema.get("required") or ())
    if set(props) != required:  # optional properties: too many shapes to list
        return None
    parts = [_values(sub, limit) for sub in props.values()]
    if any(p is None for p in parts):
        return None
    names = list(props)
    return _product(parts, limit, lambda combo: dict(zip(names, combo, strict=True)))


def _product(parts: list[list[Any] | None], limit: int, build: Any) -> list[Any] | None:
    size = 1
    for p in parts:
        size *= len(p or ())
        if size > limit:
            return None
    return [build(list(combo)) for combo in itertools.product(*(p or () for p in parts))]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _bounded(values: list[Any], limit: int) -> list[Any] | None:
    return values if len(values) <= limit else None


__all__ = ["FROM_INPUT", "MAX_CANDIDATES", "PARTS", "copies_within", "enumerate_arguments", "number_counts",
           "numbers_in", "restrict"]
