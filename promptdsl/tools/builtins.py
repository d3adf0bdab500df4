"""Built-in tools, safe by construction: no shell, no network, no ``eval``.

- ``calculator``: arithmetic on numbers (``+ - * / // % **`` and parentheses),
  parsed with :mod:`ast` and walked through a whitelist; sizes are bounded.
- ``current_time``: the time now in an IANA zone.
- ``read_file`` / ``list_dir``: UTF-8 text and listings, only under ``root``,
  size-capped. A spec's ``root`` is relative to the spec's folder and cannot
  leave it; a root the user gives (``-T``, ``Runner(tools=...)``) may be anywhere.
"""

from __future__ import annotations

import ast
import contextlib
import datetime as dt
import heapq
import math
import operator
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..errors import quote
from .base import Tool, ToolError, ToolFailure

MAX_EXPRESSION = 200
MAX_ARGUMENT = 100  # what the model may write: short, so a model that keeps writing stops soon
MAX_DIGITS = 100  # an integer result longer than this is refused
MAX_EXPONENT = 1000

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def _check_size(value: Any) -> Any:
    if isinstance(value, int) and len(str(abs(value))) > MAX_DIGITS:
        raise ToolFailure(f"result has more than {MAX_DIGITS} digits")
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolFailure("result is not a finite number")
    return value


def _walk(node: ast.AST) -> Any:
    if isinstance(node, ast.Expression):
        return _walk(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return _check_size(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_walk(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _walk(node.left), _walk(node.right)
        too_big = abs(right) > MAX_EXPONENT or (abs(left) > 1 and abs(right) * math.log10(abs(left)) > MAX_DIGITS)
        if isinstance(node.op, ast.Pow) and too_big:
            raise ToolFailure("power too large")
        try:
            return _check_size(_BINARY[type(node.op)](left, right))
        except ZeroDivisionError:
            raise ToolFailure("division by zero") from None
        except OverflowError:
            raise ToolFailure("result too large") from None
    raise ToolFailure(f"not arithmetic: {ast.dump(node)[:60]}" if not isinstance(node, ast.Name)
                      else f"unknown name '{node.id}' (only numbers and + - * / // % ** ( ) are allowed)")


def calculate(expression: str) -> int | float:
    """The value of an arithmetic expression (raises ToolFailure with a reason)."""
    text = expression.strip().replace("×", "*").replace("÷", "/").replace("^", "**")
    if len(text) > MAX_EXPRESSION:
        raise ToolFailure(f"expression longer than {MAX_EXPRESSION} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise ToolFailure(f"cannot parse {expression!r} as arithmetic") from None
    value = _walk(tree)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return int(value)
    return value  # type: ignore[no-any-return]


def format_number(value: int | float) -> str:
    return str(value) if isinstance(value, int) else f"{value:.10g}"


_EXPRESSION = {
    "type": "string",
    "maxLength": MAX_ARGUMENT,
    "pattern": r"^[0-9 .+*/%()-]+$",
    "description": "the arithmetic to compute, with the numbers written out",
}
OPERATORS = ("+", "-", "*", "/")


def _operands(copy_numbers: bool) -> dict[str, Any]:
    """``"number operator number"``, listed part by part (``x-parts``): finite when the numbers are copied."""
    number: dict[str, Any] = {"type": "number", **({"x-from-input": True} if copy_numbers else {})}
    return {
        **_EXPRESSION,
        "pattern": r"^-?[0-9.]+ [-+*/] -?[0-9.]+$",
        "x-parts": [number, {"enum": list(OPERATORS)}, number],
        "description": "number operator number, e.g. 36 + 12",
    }


class Calculator(Tool):
    """Options: ``form`` (``expression``, any arithmetic, or ``operands``, ``number operator number``)
    and ``copy_numbers`` (the numbers are ones written in the conversation: schema keyword ``x-from-input``)."""

    name = "calculator"
    description = "Evaluate an arithmetic expression with numbers, + - * / // % ** and parentheses; returns the number."
    parameters = {  # noqa: RUF012
        "type": "object",
        "properties": {"expression": _EXPRESSION},
        "required": ["expression"],
        "additionalProperties": False,
    }
    options_schema = {  # noqa: RUF012
        "type": "object",
        "properties": {
            "form": {"enum": ["expression", "operands"], "default": "expression"},
            "copy_numbers": {"type": "boolean", "default": False},
        },
        "additionalProperties": False,
    }
    read_only = True
    cheap = True  # microseconds of arithmetic: the prompted path may try every listed call

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        copy_numbers = bool(self.options.get("copy_numbers", False))
        if self.options.get("form") == "operands":
            self.description = "Compute number operator number (operator: + - * /); returns the number."
            self.parameters = {**Calculator.parameters, "properties": {"expression": _operands(copy_numbers)}}
        elif copy_numbers:
            raise ToolError("calculator: copy_numbers needs form: operands (any arithmetic cannot be listed)")

    def call(self, arguments: dict[str, Any]) -> str:
        return format_number(calculate(str(arguments["expression"])))


class CurrentTime(Tool):
    name = "current_time"
    description = "The current date and time (ISO 8601) in an IANA time zone such as Europe/Paris."
    parameters = {  # noqa: RUF012
        "type": "object",
        "properties": {"zone": {"type": "string", "maxLength": 64, "default": "UTC",
                                "description": "IANA time zone name, e.g. UTC or America/New_York"}},
        "additionalProperties": False,
    }
    read_only = True

    def call(self, arguments: dict[str, Any]) -> str:
        zone = str(arguments.get("zone") or "UTC")
        try:
            tz = ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ToolFailure(f"unknown time zone '{zone}' (use an IANA name such as Europe/Paris)") from None
        return dt.datetime.now(tz).isoformat(timespec="seconds")


_ROOT_OPTION = {"root": {"type": "string", "minLength": 1, "description": "the folder the tool may read under"}}
_FILE_OPTIONS = {
    "type": "object",
    "properties": {
        **_ROOT_OPTION,
        "max_bytes": {"type": "integer", "minimum": 1, "maximum": 1 << 20,
                      "description": "the largest file it reads (default 65536)"},
    },
    "required": ["root"],
    "additionalProperties": False,
}
_FOLDER_OPTIONS = {"type": "object", "properties": _ROOT_OPTION, "required": ["root"], "additionalProperties": False}
_PATH_ARG = {"type": "string", "maxLength": 400, "description": "a path relative to the allowed root"}


class _UnderRoot(Tool):
    """Shared path rules: every path resolves (symlinks too) inside ``root``."""

    options_schema = _FILE_OPTIONS
    read_only = True
    default_max_bytes = 64 << 10

    @classmethod
    def prepare_options(cls, options: Mapping[str, Any], *, base_dir: Path | None, trusted: bool) -> dict[str, Any]:
        out = dict(options)
        if "root" not in out:
            return out
        base = base_dir or Path.cwd()
        root = (base / Path(str(out["root"])).expanduser()).resolve()
        if not trusted and not root.is_relative_to(base.resolve()):
            raise ToolError(
                f"tool '{cls.name}': a spec may only allow a root inside its own folder ({base}), not {out['root']!r}; "
                f"to allow a wider one, remove the tool from the spec's tools and give it yourself with "
                f"-T '{cls.name}:root=PATH'"
            )
        if not root.is_dir():  # a typo would otherwise fail every call, after the model has run
            what = "is not a folder" if root.exists() else "does not exist"
            raise ToolError(f"tool '{cls.name}': root {out['root']!r} {what} ({root})")
        out["root"] = str(root)
        return out

    @property
    def root(self) -> Path:
        return Path(str(self.options["root"])).resolve()

    def resolve(self, relative: str) -> Path:
        with plain_os_errors(relative):
            path = (self.root / relative.lstrip("/")).resolve()
        if not path.is_relative_to(self.root):
            raise ToolFailure(f"'{relative}' is outside the allowed folder")
        return path

    @property
    def max_bytes(self) -> int:
        return int(self.options.get("max_bytes", self.default_max_bytes))


@contextlib.contextmanager
def plain_os_errors(relative: str) -> Iterator[None]:
    """An OS error on a path the model wrote goes back to it as the path it wrote and the reason,
    never with the folder's absolute path (which a remote model's server would then see)."""
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ToolFailure(f"cannot use {quote(relative, 120)}: {reason}") from None
    except ValueError as exc:  # a NUL byte in the path
        raise ToolFailure(f"cannot use {quote(relative, 120)}: {exc}") from None
    except RuntimeError:  # Python 3.11's word for a symlink loop, with the absolute path in it
        raise ToolFailure(f"cannot use {quote(relative, 120)}: a loop of symbolic links") from None


class ReadFile(_UnderRoot):
    name = "read_file"
    description = "Read a UTF-8 text file under the allowed folder."
    parameters = {  # noqa: RUF012
        "type": "object", "properties": {"path": _PATH_ARG}, "required": ["path"], "additionalProperties": False,
    }

    def call(self, arguments: dict[str, Any]) -> str:
        with plain_os_errors(str(arguments["path"])):
            return self._read(str(arguments["path"]))

    def _read(self, relative: str) -> str:
        path = self.resolve(relative)
        if not path.is_file():
            raise ToolFailure(f"no such file: {relative}")
        size = path.stat().st_size
        if size > self.max_bytes:
            raise ToolFailure(f"file is {size} bytes; the limit is {self.max_bytes}")
        try:
            return path.read_bytes()[: self.max_bytes].decode("utf-8")
        except UnicodeDecodeError:
            raise ToolFailure(f"{relative} is not UTF-8 text") from None


class ListDir(_UnderRoot):
    name = "list_dir"
    description = "List the entries of a folder under the allowed folder (folders end with /)."
    parameters = {  # noqa: RUF012
        "type": "object",
        "properties": {"path": {**_PATH_ARG, "default": "."}},
        "additionalProperties": False,
    }
    options_schema = _FOLDER_OPTIONS  # it reads no file, so no max_bytes
    max_entries = 200

    def call(self, arguments: dict[str, Any]) -> str:
        with plain_os_errors(str(arguments.get("path") or ".")):
            return self._list(arguments)

    def _list(self, arguments: dict[str, Any]) -> str:
        path = self.resolve(str(arguments.get("path") or "."))
        if not path.is_dir():
            raise ToolFailure(f"no such folder: {arguments.get('path')}")
        count = 0

        def entries() -> Iterator[str]:
            nonlocal count
            with os.scandir(path) as found:  # the file type comes with the entry: no stat per name
                for entry in found:
                    count += 1
                    yield entry.name + ("/" if entry.is_dir() else "")

        shown = heapq.nsmallest(self.max_entries, entries())  # memory stays flat in a folder of millions
        more = count - len(shown)
        return "\n".join(shown + ([f"... and {more} more"] if more > 0 else [])) or "(empty)"
