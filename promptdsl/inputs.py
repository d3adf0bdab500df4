"""Input values: parse them from the command line and validate them against the spec.

Every value is checked against its JSON Schema before any model is called, so a
bad value costs nothing and the message names the input.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .errors import InputError, did_you_mean, format_path, quote
from .schema import RegexProblem, quoted_message, regex_budget
from .schema.quick import surely_valid
from .spec import Spec

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator

MAX_INPUT_FILE_BYTES = 16 << 20


def _validator(schema: Mapping[str, Any]) -> Draft202012Validator:
    from .schema import validator  # no $ref retrieval, regexes bounded in time

    return validator(schema, formats=True)


def validate_inputs(spec: Spec, values: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``values`` with defaults filled in; raise InputError on the first problem."""
    if not isinstance(values, Mapping):
        raise InputError(f"inputs must be an object of name -> value, not {type(values).__name__}")
    declared = spec.inputs
    for name in values:
        if name not in declared:
            known = ", ".join(declared) or "none"
            raise InputError(
                f"unknown input '{name}'{did_you_mean(name, declared)}; the spec's inputs: {known}",
                name=name,
            )
    out: dict[str, Any] = {}
    for name, schema in declared.items():
        if name in values:
            value = values[name]
        elif "default" in schema:
            value = schema["default"]
        else:
            raise InputError(f"missing input '{name}' (it has no default)", name=name)
        if has_surrogate(value):  # from Python ("\ud800"): it cannot be encoded for any model
            raise InputError(f"input '{name}': the value is not valid UTF-8 text (it holds a lone surrogate)",
                             name=name)
        if surely_valid(schema, value):  # a plain string or number: no need to import jsonschema
            out[name] = value
            continue
        try:
            with regex_budget():
                found = list(_validator(schema).iter_errors(value))
            errors = sorted(found, key=lambda e: list(e.path))
        except RecursionError:  # a value nested deeper than checking it can follow
            raise InputError(f"input '{name}' nests too deeply to check against its schema", name=name) from None
        except RegexProblem as exc:
            raise InputError(f"input '{name}': {exc}", name=name) from None
        if errors:
            err = errors[0]
            sub = format_path(list(err.absolute_path))[1:]
            hint = ""
            if err.validator == "enum" and isinstance(err.instance, str) and isinstance(err.validator_value, list):
                words = [v for v in err.validator_value if isinstance(v, str)]
                hint = did_you_mean(err.instance, words)  # 'postive' for positive, 'Positive' for positive
            raise InputError(f"input '{name}{sub}': {quoted_message(err)}{hint}", name=name)
        out[name] = value
    return out


def parse_assignment(spec: Spec, text: str) -> tuple[str, Any]:
    """Parse one ``--input name=value`` (or ``name=@file``) into a typed value.

    Strings stay as typed; other declared types are read as JSON, so
    ``--input n=3`` gives the integer 3 when ``n`` is an integer input (see :func:`typed_value`
    for type lists such as ``[integer, string]``).
    A value starting with ``@@`` is literal text starting with one ``@``
    (``text=@@user hi`` gives ``@user hi``: tweets and mentions start that way).
    """
    if "=" not in text:
        raise InputError(f"--input expects name=value, name=@file or '-', got {text!r}")
    name, raw = text.split("=", 1)
    name = name.strip()
    if has_surrogate(text):  # undecodable bytes in argv arrive as lone surrogates
        raise InputError(f"input '{name}': the value is not valid UTF-8 text", name=name)
    if raw.startswith("@@"):
        raw = raw[1:]
    elif raw.startswith("@"):
        path = Path(raw[1:])
        raw = _read_input_file(path, name, literal=f"{name}=@{raw}")
    return name, typed_value(spec.inputs.get(name, {}), raw, name)


def typed_value(schema: Mapping[str, Any], text: str, name: str) -> Any:
    """Text typed for input ``name`` (a flag, a CSV cell) as the input's value.

    A plain string input (``type: string``, no type, an enum of strings) takes the text as it
    is. Other inputs read it as JSON. An input whose type list holds "string" beside other types
    (``[integer, string]``, ``[string, "null"]``) takes the JSON value when that is valid for
    its schema, else the text: ``3`` -> 3 and ``abc`` -> "abc" for ``[integer, string]``;
    ``null`` -> None but ``12345`` and ``true`` stay text for ``[string, "null"]``. When neither
    is valid, validate_inputs reports the error on the same value as before (the text for such
    a type list). A number too large for a float (``1e400``) is an InputError, not text, for an
    input that cannot take text: the schema's "is not of type 'number'" would only puzzle."""
    if _wants_string(schema):
        return text
    mixed = _string_among_types(schema)
    try:
        value = strict_json(text)
    except NotFinite as exc:
        if mixed:
            return text
        raise InputError(f"input '{name}': invalid JSON: {exc}", name=name) from None
    except json.JSONDecodeError as exc:
        if not mixed and text.lstrip()[:1] in ("[", "{"):  # meant as JSON: say where it breaks, not "not an array"
            where = f"line {exc.lineno} column {exc.colno}" if exc.lineno > 1 else f"column {exc.colno}"
            raise InputError(f"input '{name}': invalid JSON at {where}: {exc.msg}", name=name) from None
        return text
    except (ValueError, RecursionError):
        if not mixed and _DIGITS.fullmatch(text.strip()):  # past Python's 4,300 digits: say so, not "not an integer"
            raise InputError(f"input '{name}': a number of {len(text.strip()):,} digits is too large (at most "
                             "4,300)", name=name) from None
        return text
    if mixed and not _valid(schema, value):
        return text
    return value


_DIGITS = re.compile(r"-?[0-9]+")


def json_or_text(text: str) -> Any:
    """``text`` read as JSON when it parses, else the text itself (schema validation then says what was expected).

    NaN/Infinity, 1e400, duplicate keys, integers past Python's 4,300 digits and runaway nesting
    stay text too (the input's schema then says what was expected), as :func:`strict_json` reads.
    """
    try:
        return strict_json(text)
    except (ValueError, RecursionError):
        return text


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


class NotFinite(ValueError):
    """A JSON number too large for a float (``1e400``): Python would read it as infinity."""


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        shown = text if len(text) <= 40 else f"{text[:20]}...{text[-10:]}"
        raise NotFinite(f"{shown} is not a finite number")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {quote(key)}")
        out[key] = value
    return out


def strict_json(text: str) -> Any:
    """JSON as the standard has it, for data files and stdin: Python's reader also takes NaN and
    Infinity, and reads a number too large for a float (``1e400``) as infinity (which results
    files could not carry on), and keeps the last of duplicate keys silently. Raises
    json.JSONDecodeError, ValueError (those, NotFinite, and huge integers) or RecursionError."""
    return json.loads(text, parse_constant=_no_constant, parse_float=_finite_float, object_pairs_hook=_no_duplicates)


def _wants_string(schema: Mapping[str, Any]) -> bool:
    """Whether typed text is always the value itself: the input takes a string and nothing else
    a JSON reading could give (``type: string`` or ``[string]``, no type, an enum of strings)."""
    kind = schema.get("type")
    if kind is None and "enum" in schema:
        return all(isinstance(v, str) for v in schema["enum"])
    if isinstance(kind, list):
        return kind == ["string"]
    return kind in (None, "string")


def _string_among_types(schema: Mapping[str, Any]) -> bool:
    """A type list with "string" and other types in it (``[integer, string]``, ``[string, "null"]``)."""
    kind = schema.get("type")
    return isinstance(kind, list) and "string" in kind


def _json_type_in(names: list[Any], value: Any) -> bool:
    """Whether ``value`` (read from JSON) is of one of the JSON types ``names``, as jsonschema's
    ``type`` keyword judges it (bool is not a number; 3.0 is an integer)."""
    if value is None:
        return "null" in names
    if isinstance(value, bool):
        return "boolean" in names
    if isinstance(value, int):
        return "integer" in names or "number" in names
    if isinstance(value, float):
        return "number" in names or ("integer" in names and value.is_integer())
    kinds: dict[type, str] = {str: "string", list: "array", dict: "object"}
    return kinds.get(type(value)) in names


def _valid(schema: Mapping[str, Any], value: Any) -> bool:
    """Whether ``value`` is valid for ``schema``; False when checking fails (validate_inputs then
    checks the value chosen and reports the problem in its own words)."""
    if surely_valid(schema, value):
        return True
    kind = schema.get("type")
    if isinstance(kind, list) and not _json_type_in(kind, value):
        return False  # the common case ("12345" for [string, "null"]): no jsonschema needed
    try:
        with regex_budget():
            return bool(_validator(schema).is_valid(value))
    except Exception:  # a regex timeout, an unresolvable $ref, deep nesting: not known valid
        return False


def _read_input_file(path: Path, name: str, literal: str) -> str:
    from .yamlsource import TooLarge, read_limited  # reads at most limit+1 bytes: /dev/zero has st_size 0

    try:
        return read_limited(path, MAX_INPUT_FILE_BYTES).decode("utf-8-sig")  # a BOM (Notepad, PowerShell) is not text
    except TooLarge:
        raise InputError(f"input '{name}': file {path} is larger than 16 MiB", name=name) from None
    except ValueError as exc:
        if isinstance(exc, UnicodeDecodeError):
            raise InputError(f"input '{name}': file {path} is not UTF-8 text", name=name) from None
        raise InputError(f"input '{name}': bad file name: {exc}", name=name) from None
    except FileNotFoundError:
        raise InputError(
            f"input '{name}': file not found: {path} (for text that starts with '@', double it: {literal!r})",
            name=name,
        ) from None
    except UnicodeDecodeError:
        raise InputError(f"input '{name}': file {path} is not UTF-8 text", name=name) from None
    except OSError as exc:
        raise InputError(f"input '{name}': cannot read {path}: {exc.strerror}", name=name) from None


SURROGATE = re.compile(r"[\ud800-\udfff]")


def has_surrogate(value: Any) -> bool:
    """True if a string anywhere in ``value`` holds a lone surrogate (it cannot be written as UTF-8)."""
    todo = [value]  # a stack, not recursion: a value may nest thousands deep
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            if SURROGATE.search(item) is not None:
                return True
        elif isinstance(item, dict):
            todo.extend(item)
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
    return False


def read_stdin_object(stream: TextIO) -> dict[str, Any]:
    """Read the JSON object given with ``--input -``."""
    try:
        text = stream.read(MAX_INPUT_FILE_BYTES + 1)
    except UnicodeDecodeError:
        raise InputError("stdin: not UTF-8 text") from None
    if len(text) > MAX_INPUT_FILE_BYTES:
        raise InputError("stdin: the JSON is larger than 16 MiB")
    try:
        value = strict_json(text.removeprefix("\ufeff"))  # a BOM (PowerShell's pipe writes one)
    except json.JSONDecodeError as exc:
        raise InputError(f"stdin: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise InputError("stdin: the JSON nests too deeply") from None
    except ValueError as exc:  # NaN, 1e400, a duplicate key, an integer of more than 4,300 digits
        raise InputError(f"stdin: invalid JSON: {exc}") from None
    if has_surrogate(value):
        raise InputError("stdin: a value holds a lone surrogate (such as \\ud800), which is not valid Unicode")
    if not isinstance(value, dict):
        raise InputError(f"stdin: expected a JSON object of inputs, got {json_kind(value)}")
    return value


def json_kind(value: Any) -> str:
    """A value read from JSON named as JSON names it ("null", not "NoneType")."""
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")


def parse_options(pairs: Iterable[str]) -> dict[str, Any]:
    """``KEY=VALUE`` model options (values read as JSON when they parse, else kept as text)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise InputError(f"--option expects KEY=VALUE, got {pair!r}")
        key, raw = pair.split("=", 1)
        out[key] = json_or_text(raw)
    return out


def missing_inputs(spec: Spec, values: Mapping[str, Any]) -> list[str]:
    """The spec's inputs that ``values`` leaves out and that have no default, in the spec's order (all
    of them: :func:`validate_inputs` stops at the first problem, in that order)."""
    return [name for name, schema in spec.inputs.items() if name not in values and "default" not in schema]


def collect_inputs(spec: Spec, assignments: Iterable[str], stdin: TextIO | None = None) -> dict[str, Any]:
    """Merge ``--input`` flags (and ``-`` for stdin) into one raw values mapping."""
    values: dict[str, Any] = {}
    given: dict[str, str] = {}  # input name -> where it came from, so a second value is refused, not lost
    read_stdin = False
    for item in assignments:
        if item == "-":
            if stdin is None:
                raise InputError("--input - needs JSON on standard input")
            if read_stdin:  # the second read would find nothing and say "invalid JSON"
                raise InputError("--input - is given twice; standard input can be read once")
            read_stdin = True
            pairs = list(read_stdin_object(stdin).items())
            where = "stdin"
        else:
            pairs = [parse_assignment(spec, item)]
            where = "flag"
        for name, value in pairs:
            if name in given:
                how = ("with --input twice" if given[name] == where == "flag" else
                       "both on standard input and with --input")
                raise InputError(f"input '{name}' is given {how}; give it once", name=name)
            given[name] = where
            values[name] = value
    return values
