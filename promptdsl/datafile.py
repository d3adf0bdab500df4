"""Dataset files: JSONL / CSV rows read lazily, and result files read back for ``--resume``.

A file is checked before anything runs (exists, known extension, text, a sane CSV header),
so a wrong path costs no model load. Rows come one at a time with their 0-based index and
the line they start on; a row that cannot be used (invalid JSON, not an object, wrong field
count) still comes, carrying the reason, so the run can record it or stop on it.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .errors import InputError, quote
from .inputs import has_surrogate, strict_json, typed_value
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
            if len(head) < SNIFF_BYTES or exc.start < len(head) - 4:  # not a character cut at the sniff boundary
                line = head[: exc.start].count(b"\n") + 1
                raise InputError(f"dataset is not UTF-8 text (line {line})", source=self.name) from None
        if self.format == "csv":
            self.header()  # a bad header fails now, before any model is loaded

    def header(self) -> list[str] | None:
        """The CSV header (checked), or None for an empty file."""
        assert self.path is not None
        with self.path.open("r", encoding="utf-8-sig", newline="") as f:
            try:
                header = next(csv.reader(f), None)
            except UnicodeDecodeError:
                raise InputError("not UTF-8 text near the start", source=self.name) from None
            except csv.Error as exc:
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
        value = strict_json(text)
    except json.JSONDecodeError as exc:
        return Row(index, line_no, text.rstrip("\r\n"), f"invalid JSON at column {exc.colno}: {exc.msg}")
    except RecursionError:
        return Row(index, line_no, text.rstrip("\r\n")[:200], "the JSON nests too deeply")
    except ValueError as exc:  # NaN, a duplicate key, an integer of more than 4,300 digits
        return Row(index, line_no, text.rstrip("\r\n")[:200], f"invalid JSON: {quote(str(exc), 80)[1:-1]}")
    if has_surrogate(value):  # valid JSON ("\ud800"), but not text that can be written back out
        return Row(index, line_no, text.rstrip("\r\n"), "holds a lone surrogate (such as \\ud800), not valid Unicode")
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


def row_inputs(spec: Spec, row: Row, fmt: str, fields: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The row's fields that are spec inputs (the rest are carried through, not passed on).

    ``fields`` maps input names to the data's field names (``--field tweet=text``); other
    inputs read the field of their own name. CSV cells are text: a cell for a non-string
    input is read as JSON (``3`` -> 3), and an empty cell for an input with a default counts
    as missing.
    """
    data: Mapping[str, Any] = row.data
    values = {name: data[field_for(name, fields)] for name in spec.inputs if field_for(name, fields) in data}
    if fmt != "csv":
        return values
    out: dict[str, Any] = {}
    for name, cell in values.items():
        schema = spec.inputs[name]
        if cell == "" and "default" in schema:
            continue
        out[name] = typed_value(schema, cell)
    return out


def field_for(name: str, fields: Mapping[str, str] | None) -> str:
    """The data field that feeds input ``name``."""
    return fields.get(name, name) if fields else name


def parse_fields(pairs: Iterable[str], spec: Spec) -> dict[str, str]:
    """``INPUT=FIELD`` pairs (``--field``) as a mapping, each input checked against the spec."""
    from .errors import did_you_mean

    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, field_name = pair.partition("=")
        name, field_name = name.strip(), field_name.strip()
        if not sep or not name or not field_name:
            raise InputError(f"--field expects INPUT=FIELD (the data field that feeds an input), got {quote(pair)}")
        if name not in spec.inputs:
            known = ", ".join(spec.inputs) or "none"
            raise InputError(
                f"--field: unknown input {quote(name)}{did_you_mean(name, spec.inputs)}; the spec's inputs: {known}"
            )
        out[name] = field_name
    return out


def row_hash(data: Any) -> int:
    """A short stable hash of a row as read (to check ``--resume`` is given the same data)."""
    text = json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")


# ============================================================================ resuming and the output file


@dataclass
class Existing:
    """What a previous run already wrote: row index -> hash of its input."""

    done: dict[int, int] = field(default_factory=dict)
    repaired: bool = False
    good_end: int = 0  # bytes of whole result lines; a cut-off line after them is dropped on repair
    size: int = 0


_RESULT_START = (b'{"index":', b'{"index" :', b'{ "index":')


def _result_line(item: Any) -> bool:
    """A line a dataset run wrote: its row's index and input, and a value or an error (a JSONL
    file of the user's with an ``index`` column is not one)."""
    return (
        isinstance(item, dict)
        and isinstance(item.get("index"), int)
        and not isinstance(item["index"], bool)
        and "input" in item
        and ("value" in item or "error" in item)
    )


def _result_start(cut: bytes) -> bool:
    """A cut-off line that is the start of a result line, however early the cut (even ``{"in``)."""
    return any(cut.startswith(start) or start.startswith(cut) for start in _RESULT_START)


def scan_output(path: Path, on_line: Callable[[dict[str, Any]], None] | None = None) -> Existing:
    """Read a results file back for ``--resume``. It only reads: see :func:`repair_output`.

    Every whole line must be a promptdsl result line, and a cut-off last line must look like
    the start of one; anything else means the file is not ours, and it is refused untouched.
    """
    found = Existing()
    if not path.exists():
        return found
    not_ours = (
        "is not a promptdsl result line, so this file cannot be resumed (give a new --out, or drop --resume "
        "to overwrite it)"
    )
    try:
        with path.open("rb") as f:
            for line_no, raw in enumerate(f, 1):
                if not raw.endswith(b"\n"):
                    if not _result_start(raw.lstrip()):
                        raise InputError(f"line {line_no} {not_ours}", source=str(path))
                    break  # cut off mid-line by a crash: dropped on repair, that row runs again
                found.good_end += len(raw)
                if not raw.strip():
                    continue
                try:
                    item = json.loads(raw)
                except (ValueError, RecursionError):
                    item = None
                if not _result_line(item):
                    raise InputError(f"line {line_no} {not_ours}", source=str(path))
                found.done[item["index"]] = row_hash(item.get("input"))
                if on_line is not None:
                    on_line(item)
        found.size = path.stat().st_size
    except OSError as exc:
        raise InputError(f"cannot read results to resume: {exc.strerror}", source=str(path)) from None
    return found


def check_resume(data: DataFile, found: Existing, limit: int | None = None) -> None:
    """Refuse, before anything is written, results that were made from other data. Standard
    input can be read only once: the run itself checks it, row by row, as it reads (the rows
    already done come first, so a mismatch is still found before anything is written)."""
    if not found.done or data.path is None:
        return
    last = max(found.done)
    for row in data.rows():
        if row.index > last or (limit is not None and row.index >= limit):
            return
        check_resumed_row(data, found, row)


def check_resumed_row(data: DataFile, found: Existing, row: Row) -> bool:
    """True when ``row`` is already in the results; InputError when the results hold another input there."""
    known = found.done.get(row.index)
    if known is not None and known != row_hash(row.data):
        raise InputError(
            f"--resume: the results hold a different input for {row.where()} than the data; "
            "they were written for another file (give a new --out, or drop --resume)",
            source=data.name,
        )
    return known is not None


class OutputLock:
    """``--out`` held by this run alone: an exclusive lock, taken before the file is read or changed.

    A second run on the same file is refused while the first holds it. The file is created
    empty if needed (and removed again if the run never starts writing); it is truncated
    (a new run) or repaired (``--resume``) only by :meth:`open`, after every check passed.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._started = False
        try:
            self._created = not path.exists()
            self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise InputError(f"cannot open the results file: {exc.strerror}", source=str(path)) from None
        if not _try_lock(self._fd):
            os.close(self._fd)
            self._fd = None
            raise InputError(
                "the results file is in use by another promptdsl run (it holds the lock); "
                "wait for that run or give another --out",
                source=str(path),
            )

    def open(self, resume: Existing | None) -> IO[str]:
        """Truncate (new run) or cut a half-written line (resume), then append through the lock."""
        assert self._fd is not None
        try:
            if resume is None:
                os.ftruncate(self._fd, 0)
            elif resume.good_end < resume.size:
                os.ftruncate(self._fd, resume.good_end)
                resume.repaired = True
            self._started = True
            os.lseek(self._fd, 0, os.SEEK_END)
            return os.fdopen(os.dup(self._fd), "a", encoding="utf-8", newline="\n")
        except OSError as exc:
            raise InputError(f"cannot write results: {exc.strerror}", source=str(self.path)) from None

    def close(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        if self._created and not self._started:
            with contextlib.suppress(OSError):
                self.path.unlink()
        os.close(fd)  # closing releases the lock

    def __enter__(self) -> OutputLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no advisory locks, the run goes unlocked
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True
