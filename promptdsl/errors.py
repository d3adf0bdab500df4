"""The exception hierarchy: one root, four kinds, each with structured fields.

Every error a user can cause is a :class:`PromptDSLError`. Front ends print
``str(error)`` (one line that says what and where) and exit with ``exit_code``;
nothing else needs a traceback.

    PromptDSLError
    ├── SpecError      a spec file is unreadable, invalid or fails to compile
    ├── InputError     an input value (CLI, stdin or a dataset row) is invalid
    ├── BackendError   a backend is unknown, broken, unreachable or refused
    └── OutputError    the model's text cannot be parsed or validated
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def format_path(path: Sequence[str | int]) -> str:
    """Render a key path the way JSON Path does: ``$.output.choices[1]``."""
    out = "$"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


class PromptDSLError(Exception):
    """Root of every error promptdsl raises on purpose."""

    exit_code: int = 2

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class SpecError(PromptDSLError):
    """A spec is malformed: ``file:line:col: message (at $.key.path)``."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        col: int | None = None,
        path: Sequence[str | int] = (),
    ) -> None:
        super().__init__(message)
        self.file = file
        self.line = line
        self.col = col
        self.path = tuple(path)
        self.also: list[SpecError] = []  # further problems found in the same pass

    def __str__(self) -> str:
        first = self._line()
        return "\n".join([first, *(e._line() for e in self.also)])

    def _line(self) -> str:
        where = ""
        if self.file:
            where = self.file
            if self.line is not None:
                where += f":{self.line}"
                if self.col is not None:
                    where += f":{self.col}"
            where += ": "
        at = f" (at {format_path(self.path)})" if self.path else ""
        return f"{where}{self.message}{at}"


class InputError(PromptDSLError):
    """An input value breaks its schema, or an input source is unreadable."""

    def __init__(
        self,
        message: str,
        *,
        name: str | None = None,
        row: int | None = None,
        source: str | None = None,
    ) -> None:
        super().__init__(message)
        self.name = name
        self.row = row
        self.source = source

    def __str__(self) -> str:
        where = ""
        if self.source:
            where = self.source + (f": row {self.row}" if self.row is not None else "") + ": "
        elif self.row is not None:
            where = f"row {self.row}: "
        return f"{where}{self.message}"


class BackendError(PromptDSLError):
    """A backend cannot be found, loaded or reached, or it refused a request.

    ``exit_code`` is 2 when the user can fix it (unknown backend, missing
    model, prompt too long) and 1 when a run failed at the backend.
    """

    def __init__(
        self,
        message: str,
        *,
        backend: str | None = None,
        model: str | None = None,
        exit_code: int | None = None,
    ) -> None:
        super().__init__(message, exit_code=exit_code)
        self.backend = backend
        self.model = model

    def __str__(self) -> str:
        return f"{self.backend}: {self.message}" if self.backend else self.message


class OutputError(PromptDSLError):
    """The model answered, but the answer does not fit the spec's output."""

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        spec: str | None = None,
        input: Any = None,
        raw: str | None = None,
    ) -> None:
        super().__init__(message)
        self.spec = spec
        self.input = input
        self.raw = raw

    def __str__(self) -> str:
        where = f"{self.spec}: " if self.spec else ""
        raw = "" if self.raw is None else f"; raw text: {_clip(self.raw)!r}"
        inp = "" if self.input is None else f"; input: {_clip(repr(self.input))}"
        return f"{where}{self.message}{inp}{raw}"


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
