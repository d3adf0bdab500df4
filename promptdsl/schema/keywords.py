"""Misspelt JSON Schema words in a spec, caught before they silently do nothing.

JSON Schema ignores keywords it does not know, so ``{type: string, minlength: 1}`` accepts an
empty string: the spec's author meant ``minLength`` and nothing says so. A spec's own schemas
(inputs, a JSON output, a test's ``expect.schema``) are checked here for keys that look like a
misspelt keyword that checks something; other keys stay allowed as annotations, as JSON Schema
allows, and ``x-`` names are never questioned. Schemas from plugins and MCP servers are not
checked: their authors are not the user, and a custom keyword there must not break a tool.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterator, Mapping
from typing import Any

from ..errors import quote

#: The JSON types ``type`` may name.
TYPES = ("array", "boolean", "integer", "null", "number", "object", "string")

#: Keywords whose value is one subschema, a list of them, or a mapping of names to them.
_ONE = frozenset({"not", "if", "then", "else", "contains", "additionalProperties", "propertyNames",
                  "unevaluatedItems", "unevaluatedProperties", "contentSchema", "additionalItems", "items"})
_LIST = frozenset({"allOf", "anyOf", "oneOf", "prefixItems", "items"})
NAME_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas", "dependencies"})

#: Every keyword of Draft 2020-12 (all vocabularies), and the older drafts' names jsonschema still reads.
KEYWORDS = _ONE | _LIST | NAME_MAPS | frozenset({
    "$schema", "$id", "$ref", "$anchor", "$dynamicRef", "$dynamicAnchor", "$vocabulary", "$comment",
    "type", "const", "enum", "multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum",
    "maxLength", "minLength", "pattern", "maxItems", "minItems", "uniqueItems", "maxContains", "minContains",
    "maxProperties", "minProperties", "required", "dependentRequired",
    "title", "description", "default", "deprecated", "readOnly", "writeOnly", "examples", "format",
    "contentEncoding", "contentMediaType", "$recursiveRef", "$recursiveAnchor", "id",
})
#: Keywords that only describe (an OpenAPI ``example`` or a misspelt ``descripton`` changes no check).
ANNOTATIONS = frozenset({"title", "description", "default", "deprecated", "readOnly", "writeOnly", "examples",
                         "$comment", "contentEncoding", "contentMediaType"})
#: Keywords that name or hold things rather than check them (a misspelt ``$defs`` breaks its ``$ref``s
#: loudly anyway), and so never the intended word behind a key of one's own (``uiSchema``, ``anchor``).
IDENTIFIERS = frozenset({"$schema", "$id", "id", "$anchor", "$dynamicAnchor", "$recursiveAnchor", "$vocabulary",
                         "$defs", "definitions"})
#: Misspellings of these are refused. Keywords of three letters or fewer (``not``, ``if``) only in
#: another letter case: ``note`` is a plausible word of one's own, not a misspelt ``not``; those of
#: four (``type``, ``enum``) only one letter longer or shorter (``types``, not ``typeof``).
_CHECKING = {k.lower(): k for k in KEYWORDS - ANNOTATIONS - IDENTIFIERS}
_FUZZY = sorted(k for k in _CHECKING if len(k) > 3)


#: Keys compared letter by letter in one schema; a schema of thousands of keys (no real one has) is
#: still checked for keywords in another letter case, but not for typos: that would cost seconds.
MAX_FUZZY_KEYS = 1000


@functools.lru_cache(maxsize=4096)
def close_keyword(key: str, fuzzy: bool = True) -> str | None:
    """The checking keyword ``key`` most likely misspells, or None when it is a keyword, far from all,
    or near only to an annotation. Keys of other vocabularies (``@type``, ``_type``) are left alone."""
    if key in KEYWORDS or key.startswith("x-") or not (key[:1].isalpha() or key[:1] == "$"):
        return None
    lower = key.lower()
    if lower in _CHECKING or not fuzzy:
        return _CHECKING.get(lower)
    close = difflib.get_close_matches(lower, _near(len(lower)), n=1, cutoff=0.8)
    return _CHECKING[close[0]] if close else None


@functools.lru_cache(maxsize=64)
def _near(size: int) -> list[str]:
    """The keywords a key of ``size`` letters can be 0.8 alike to: lengths within a factor of 1.5, and
    for the four-letter ones (``type``) one letter more or less."""
    return [k for k in _FUZZY if 2 * min(len(k), size) >= 0.8 * (len(k) + size)
            and (len(k) > 4 or abs(len(k) - size) <= 1)]


def misspelt_keyword(schema: Any) -> tuple[str, tuple[str | int, ...]] | None:
    """The first key of ``schema`` or a subschema, in the file's order, that looks like a misspelt
    keyword, with its path.

    Only where a keyword can stand is looked at: a property *name* under ``properties`` is the
    user's to choose."""
    try:
        for n, (path, key) in enumerate(_keys((), schema)):
            meant = close_keyword(key, n < MAX_FUZZY_KEYS)
            if meant is not None:
                return (
                    f"unknown keyword {quote(key)} (did you mean {quote(meant)}?); JSON Schema ignores "
                    "unknown keywords (name one of your own x-...)",
                    (*path, key),
                )
    except RecursionError:
        return "the JSON Schema is nested too deeply", ()
    return None


def required_problem(schema: Any) -> tuple[str, tuple[str | int, ...]] | None:
    """A ``required`` name no value can have: not among ``properties``, matched by no
    ``patternProperties``, with ``additionalProperties: false``. JSON Schema would fail every answer."""
    for path, node, i, name in _required_outside(schema):
        if node.get("additionalProperties") is not False or _pattern_allows(node.get("patternProperties"), name):
            continue
        return (f"requires {quote(name)}, which is not among its properties and additionalProperties is false, "
                "so no value can be valid", (*path, "required", i))
    return None


def required_typo(schema: Any) -> tuple[str, tuple[str | int, ...]] | None:
    """A ``required`` name that looks like a typo of a property (``nmae`` next to ``name``): valid
    JSON Schema, so worth a note, not an error (``name2`` next to ``name1`` may be meant)."""
    for path, node, i, name in _required_outside(schema):
        close = difflib.get_close_matches(name, [str(k) for k in node["properties"]], n=1, cutoff=0.75)
        if close:
            return (f"requires {quote(name)}, which is not among its properties (did you mean {quote(close[0])}?)",
                    (*path, "required", i))
    return None


def _required_outside(schema: Any) -> Iterator[tuple[tuple[str | int, ...], Mapping[str, Any], int, str]]:
    """(path, node, index, name) of each ``required`` name that its node's ``properties`` lacks."""
    try:
        found = [path for path, key in _keys((), schema) if key == "required"]
    except RecursionError:
        return
    for path in found:
        node: Any = schema
        for part in path:
            node = node[part]
        names, props = node.get("required"), node.get("properties")
        if isinstance(names, list) and isinstance(props, Mapping):
            for i, name in enumerate(names):
                if isinstance(name, str) and name not in props:
                    yield path, node, i, name


def _pattern_allows(patterns: Any, name: str) -> bool:
    """Whether a ``patternProperties`` pattern matches ``name`` (one that cannot run counts as yes)."""
    from . import RegexProblem, search

    if not isinstance(patterns, Mapping):
        return False
    for pattern in patterns:
        try:
            if search(str(pattern), name):
                return True
        except RegexProblem:
            return True
    return False


def _keys(path: tuple[str | int, ...], node: Any) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Every key where a keyword can stand, depth first in the file's order."""
    if not isinstance(node, Mapping):
        return
    for key, value in node.items():
        if not isinstance(key, str):
            continue
        yield path, key
        here = (*path, key)
        if key in _ONE:
            yield from _keys(here, value)
        if key in _LIST and isinstance(value, list):
            for i, sub in enumerate(value):
                yield from _keys((*here, i), sub)
        if key in NAME_MAPS and isinstance(value, Mapping):
            for name, sub in value.items():
                yield from _keys((*here, name), sub)


def type_problem(value: Any) -> str | None:
    """A plain sentence for a ``type`` that names no JSON type (``strin``), or None."""
    names = value if isinstance(value, list) else [value]
    for name in names:
        if name in TYPES:
            continue
        if not isinstance(name, str):
            return f"{quote(name)} is not a JSON type name (the types: {', '.join(TYPES)})"
        close = difflib.get_close_matches(name.lower(), TYPES, n=1, cutoff=0.6)
        hint = f" (did you mean {quote(close[0])}?)" if close else ""
        return f"type {quote(name)} is not a JSON type{hint}; the types: {', '.join(TYPES)}"
    return None
