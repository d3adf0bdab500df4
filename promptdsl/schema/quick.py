"""Answers without jsonschema for the plainest schemas, so a one-input run need not import it.

Importing jsonschema (with referencing, attrs and its bundled metaschemas) costs about as much
as the rest of promptdsl together. Most inputs and options are a string, a number or a flag
under a schema of a handful of keywords, which a few lines can check exactly. Both functions
answer True only when they are sure; False means "not sure", and the caller then asks
jsonschema, which also writes the error message. So no answer and no message ever changes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

#: Keywords that never make an instance invalid.
ANNOTATIONS = frozenset({"description", "title", "$comment", "default", "examples", "deprecated", "readOnly",
                         "writeOnly"})
#: JSON types this module checks, by the Python types jsonschema accepts for them (bool is not a number).
_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
    "array": (list,),
    "object": (dict,),
}
_COUNTS = frozenset({"minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties"})
_BOUNDS = frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"})
_KNOWN = ANNOTATIONS | _COUNTS | _BOUNDS | {"type", "enum", "properties", "additionalProperties", "required", "items"}
_MAX_DEPTH = 8


def _is_number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _is_count(value: Any) -> bool:
    return type(value) is int and value >= 0


def surely_valid(schema: Any, instance: Any, _depth: int = 0) -> bool:
    """True only if ``instance`` is certainly valid under ``schema`` (False: ask jsonschema)."""
    if schema is True or (isinstance(schema, Mapping) and not schema):
        return True
    if not isinstance(schema, Mapping) or _depth > _MAX_DEPTH or not set(schema) <= _KNOWN:
        return False
    if "type" in schema and not _of_type(schema["type"], instance):
        return False
    if "enum" in schema and not _in_enum(schema["enum"], instance):
        return False
    return _within(schema, instance) and _fits_parts(schema, instance, _depth)


def _type_names(kind: Any) -> list[str] | None:
    """``type`` as a list of names this module knows (a name or a non-empty list of distinct names)."""
    names = [kind] if isinstance(kind, str) else kind
    if not isinstance(names, list) or not names or len(set(map(str, names))) != len(names):
        return None
    return names if all(isinstance(n, str) and n in _TYPES for n in names) else None


def _of_type(kind: Any, instance: Any) -> bool:
    names = _type_names(kind)
    if names is None or (isinstance(instance, float) and not math.isfinite(instance)):
        return False
    return any(type(instance) in _TYPES[n] for n in names)


def _in_enum(enum: Any, instance: Any) -> bool:
    # Only strings are compared: jsonschema's equality treats 1, 1.0 and True in ways not worth copying.
    return type(instance) is str and isinstance(enum, list) and any(type(e) is str and e == instance for e in enum)


def _within(schema: Mapping[str, Any], instance: Any) -> bool:
    for key in _COUNTS & set(schema):
        limit = schema[key]
        if not _is_count(limit):
            return False
        size = _size(key, instance)
        if size is not None and (size < limit if key.startswith("min") else size > limit):
            return False
    for key in _BOUNDS & set(schema):
        limit = schema[key]
        if not _is_number(limit):
            return False
        if type(instance) in (int, float) and not _bound_holds(key, limit, instance):
            return False
    return True


def _size(key: str, instance: Any) -> int | None:
    wanted = str if key.endswith("Length") else list if key.endswith("Items") else dict
    return len(instance) if type(instance) is wanted else None


def _bound_holds(key: str, limit: float, value: float) -> bool:
    checks = {
        "minimum": lambda: value >= limit,
        "maximum": lambda: value <= limit,
        "exclusiveMinimum": lambda: value > limit,
        "exclusiveMaximum": lambda: value < limit,
    }
    return bool(checks[key]())


def _fits_parts(schema: Mapping[str, Any], instance: Any, depth: int) -> bool:
    """``properties``, ``additionalProperties``, ``required`` and ``items``."""
    parts = {"properties", "additionalProperties", "required", "items"} & set(schema)
    if not parts:
        return True
    if type(instance) is list:
        return "items" not in parts or all(surely_valid(schema["items"], item, depth + 1) for item in instance)
    if type(instance) is not dict:
        return True  # these keywords only look at objects and arrays
    props = schema.get("properties", {})
    required = schema.get("required", [])
    extra = schema.get("additionalProperties", True)
    if not isinstance(props, Mapping) or not isinstance(required, list) or not isinstance(extra, (bool, Mapping)):
        return False
    if any(type(name) is not str or name not in instance for name in required):
        return False
    for key, value in instance.items():
        sub = props.get(key, extra) if type(key) is str else None
        if sub is None or not surely_valid(sub, value, depth + 1):
            return False
    return True


def surely_usable(schema: Any, _depth: int = 0) -> bool:
    """True only if ``schema`` is certainly a valid Draft 2020-12 schema with no regex and no ``$ref``."""
    if schema is True or schema is False:
        return True
    if not isinstance(schema, Mapping) or _depth > _MAX_DEPTH or not set(schema) <= _KNOWN:
        return False
    checks = {
        "type": lambda v: _type_names(v) is not None,
        "enum": lambda v: isinstance(v, list),
        "required": lambda v: isinstance(v, list) and all(type(n) is str for n in v) and len(set(v)) == len(v),
        "properties": lambda v: isinstance(v, Mapping) and all(
            type(k) is str and surely_usable(s, _depth + 1) for k, s in v.items()),
        "additionalProperties": lambda v: surely_usable(v, _depth + 1),
        "items": lambda v: surely_usable(v, _depth + 1),
        "description": lambda v: isinstance(v, str),
        "title": lambda v: isinstance(v, str),
        "$comment": lambda v: isinstance(v, str),
        "examples": lambda v: isinstance(v, list),
        "deprecated": lambda v: isinstance(v, bool),
        "readOnly": lambda v: isinstance(v, bool),
        "writeOnly": lambda v: isinstance(v, bool),
        "default": lambda v: True,
        **{k: _is_count for k in _COUNTS},
        **{k: _is_number for k in _BOUNDS},
    }
    return all(checks[key](value) for key, value in schema.items())
