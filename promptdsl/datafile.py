"""Dataset files: JSONL / CSV rows read lazily, and result files read back for ``--resume``.

A file is checked before anything runs (exists, known extension, text, a sane CSV header),
so a wrong path costs no model load. Rows come one at a time with their 0-based index and
the line they start on; a row that cannot be used (invalid JSON, not an object, wrong field
count) still comes, carrying the reason, so the run can record it or stop on it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .errors import InputError
from .inputs import typed_value
from .spec import Spec

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
SNIFF_BYTES = 8192


# ============================================================================ reading rows


@dataclass(frozen=True)
class Row:
    """One data row: its 0-based index, the file line it starts on, and the row as read."""

    index: int
    line: int
    data: Any  # a dict; for a line that is not a JSON object, the line's text
    error: str | None = None

    def where(self) -> str:
        return f"line {self.line} (row {self.index})"


class DataFile:
    """A dataset file checked up front (exists, known extension, text) and read lazily."""

    def __init__(self, path: Path | str) -> None:
        self.name = str(path)
        self.path = None if self.name == "-" else Path(path)
        if self.path is None:
            self.format = "jsonl"
            return
        suffix = self.path.suffix.lower()
        if suffix not in FORMATS:
            known = ", ".join(FORMATS)
            raise InputError(f"dataset must be a {known} file, not '{suffix or 'no extension'}'", source=self.name)
        self.format = FORMATS[suffix]
        if not self.path.exists():
            raise InputError("dataset file not found", source=self.name)
        if not self.path.is_file():
            raise InputError("dataset is not a file", source=self.name)
        try:
            with self.path.open("rb") as f:
                head = f.read(SNIFF_BYTES)
        except OSError as exc:
            raise InputError(f"cannot read dataset: {exc.strerror}", source=self.name) from None
        if b"\0" in head:
            raise InputError(f"dataset is a binary file, not {self.format.upper()} text", source=self.name)
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as exc:
            if exc.start < len(head) - 4:  # not just a character cut at the sniff boundary
                raise InputError("dataset is not UTF-8 text", source=self.name) from None
        if self.format == "csv":
            self.header()  # a bad header fails now, before any model is loaded

    def header(self) -> list[str] | None:
        """The CSV header (checked), or None for an empty file."""
        assert self.path is not None
        with self.path.open("r", encoding="utf-8-sig", newline="") as f:
            try:
                header = next(csv.reader(f), None)
            except (csv.Error, UnicodeDecodeError) as exc:
                raise InputError(f"line 1: bad CSV header: {exc}", source=self.name) from None
        if header is not None:
            _check_header(header, self.name)
        return header

    def count(self) -> int | None:
        """Rows in the file, counted fast (lines, minus the CSV header); None for stdin."""
        if self.path is None:
            return None
        lines = 0
        last = b"\n"
        with self.path.open("rb") as f:
            while chunk := f.read(1 << 20):
                lines += chunk.count(b"\n")
                last = chunk[-1:]
        lines += last != b"\n"
        return max(0, lines - 1) if self.format == "csv" else lines

    def rows(self) -> Iterator[Row]:
        if self.format == "csv":
            return self._csv_rows()
        return self._jsonl_rows()

    def _jsonl_rows(self) -> Iterator[Row]:
        with _open_binary(self) as f:
            index = 0
            for line_no, raw in enumerate(f, 1):
                if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                if not raw.strip():
                    continue
                yield _parse_json_row(raw, index, line_no)
                index += 1

    def _csv_rows(self) -> Iterator[Row]:
        assert self.path is not None
        csv.field_size_limit(64 << 20)
        with self.path.open("r", encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            try:
                header = next(reader, None)
                if header is None:
                    return
                _check_header(header, self.name)
                index = 0
                start = reader.line_num + 1
                for record in reader:
                    line, start = start, reader.line_num + 1
                    if not record or record == [""]:
                        continue
                    if len(record) != len(header):
                        error = f"has {len(record)} fields but the header has {len(header)}"
                        yield Row(index, line, {"_fields": record}, error)
                    else:
                        yield Row(index, line, dict(zip(header, record, strict=True)))
                    index += 1
            except UnicodeDecodeError:
                raise InputError(f"not UTF-8 text near line {reader.line_num + 1}", source=self.name) from None
            except csv.Error as exc:
                raise InputError(f"line {reader.line_num}: bad CSV: {exc}", source=self.name) from None


@contextmanager
def _open_binary(data: DataFile) -> Iterator[IO[bytes]]:
    if data.path is None:
        yield sys.stdin.buffer
        return
    with data.path.open("rb") as f:
        yield f


def _parse_json_row(raw: bytes, index: int, line_no: int) -> Row:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return Row(index, line_no, raw.decode("utf-8", "replace").rstrip("\r\n"), "not UTF-8 text")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return Row(index, line_no, text.rstrip("\r\n"), f"invalid JSON at column {exc.colno}: {exc.msg}")
    if not isinstance(value, dict):
        return Row(index, line_no, value, f"expected a JSON object of inputs, got {_json_type(value)}")
    return Row(index, line_no, value)


def _json_type(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")


def _check_header(header: list[str], source: str) -> None:
    seen: set[str] = set()
    for i, name in enumerate(header, 1):
        if not name.strip():
            raise InputError(f"line 1: column {i} of the header has no name", source=source)
        if name in seen:
            raise InputError(f"line 1: column '{name}' appears twice in the header", source=source)
        seen.add(name)


def row_inputs(spec: Spec, row: Row, fmt: str) -> dict[str, Any]:
    """The row's fields that are spec inputs (the rest are carried through, not passed on).

    CSV cells are text: a cell for a non-string input is read as JSON (``3`` -> 3), and an
    empty cell for an input with a default counts as missing.
    """
    data: Mapping[str, Any] = row.data
    values = {k: v for k, v in data.items() if k in spec.inputs}
    if fmt != "csv":
        return values
    out: dict[str, Any] = {}
    for name, cell in values.items():
        schema = spec.inputs[name]
        if cell == "" and "default" in schema:
            continue
        out[name] = typed_value(schema, cell)
    return out


def row_hash(data: Any) -> int:
    """A short stable hash of a row as read (to check ``--resume`` is given the same data)."""
    text = json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


# ============================================================================ resuming


@dataclass
class Existing:
    """What a previous run already wrote: row index -> hash of its input."""

    done: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    repaired: bool = False


def scan_output(path: Path, on_line: Callable[[dict[str, Any]], None] | None = None) -> Existing:
    """Read a results file back for ``--resume``; cut off a last line left half-written."""
    found = Existing()
    if not path.exists():
        return found
    good_end = 0
    try:
        with path.open("rb") as f:
            for line_no, raw in enumerate(f, 1):
                if not raw.endswith(b"\n"):
                    break  # cut off mid-line by a crash: drop it, that row runs again
                good_end += len(raw)
                if not raw.strip():
                    continue
                try:
                    item = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    item = None
                if not isinstance(item, dict) or not isinstance(item.get("index"), int):
                    raise InputError(
                        f"line {line_no} is not a promptdsl result line, so this file cannot be resumed "
                        "(give a new --out, or drop --resume to overwrite it)",
                        source=str(path),
                    )
                found.done[item["index"]] = row_hash(item.get("input"))
                found.errors += "error" in item
                if on_line is not None:
                    on_line(item)
        if good_end < path.stat().st_size:
            with path.open("r+b") as f:
                f.truncate(good_end)
            found.repaired = True
    except OSError as exc:
        raise InputError(f"cannot read results to resume: {exc.strerror}", source=str(path)) from None
    return found
