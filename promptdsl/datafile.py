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
import re
import sys
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .errors import InputError, quote
from .inputs import MAX_INPUT_FILE_BYTES, SURROGATE, has_surrogate, json_kind, strict_json, typed_value
from .spec import Spec

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
SNIFF_BYTES = 8192
#: A row (a JSONL line, a CSV record) larger than this is a bad row, read no further than the cap:
#: the same 16 MiB as ``-i name=@file`` (a prompt that large is far past any model's context).
MAX_ROW_BYTES = MAX_INPUT_FILE_BYTES
TOO_LARGE = f"the row is larger than {MAX_ROW_BYTES >> 20} MiB"
_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_UTF32_BOMS = (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")


# ============================================================================ reading rows


def _check_separator(header: list[str] | None, name: str) -> None:
    """A header of one column holding ``;`` or a tab between names: European Excel writes ``;``,
    and a TSV gets saved as .csv. Read with commas, every row would be one cell."""
    if not header or len(header) != 1:
        return
    for sep, what in ((";", "semicolon"), ("\t", "tab")):
        if len([part for part in header[0].split(sep) if part.strip()]) > 1:
            raise InputError(f"line 1: the header looks {what}-separated ({quote(header[0], 60)}); promptdsl reads "
                             "CSV with commas: save the file with commas, or as JSONL", source=name)


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
            # UTF-16 (PowerShell 5's >, Excel's "Unicode text") starts with a BOM, and its ASCII has NUL bytes
            for boms, which in ((_UTF32_BOMS, "UTF-32"), (_UTF16_BOMS, "UTF-16")):
                if head.startswith(boms):
                    raise InputError(f"dataset is {which} text, not UTF-8; save it as UTF-8", source=self.name)
            raise InputError(f"dataset is a binary file, not {self.format.upper()} text", source=self.name)
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as exc:
            if len(head) < SNIFF_BYTES or exc.start < len(head) - 4:  # not a character cut at the sniff boundary
                line = head[: exc.start].count(b"\n") + 1
                raise InputError(f"dataset is not UTF-8 text (line {line})", source=self.name) from None
        self._count: int | None = None
        self._header: tuple[list[str] | None] | None = None  # read once: (the header,)
        if self.format == "csv":
            _check_separator(self.header(), self.name)  # a bad header fails now, before any model is loaded
            self._check_quotes()

    def header(self) -> list[str] | None:
        """The CSV header (checked), or None for an empty file. Read once: the up-front checks of a
        run (columns, --label, no rows) each ask for it."""
        assert self.path is not None
        if self._header is None:
            with self.path.open("r", encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
                lines = _CsvLines(f)
                try:
                    self._header = (_read_header(lines, csv.reader(lines), self.name),)
                except csv.Error as exc:
                    raise InputError(f"line 1: bad CSV header: {exc}", source=self.name) from None
        header = self._header[0]
        return None if header is None else list(header)

    def count(self) -> int | None:
        """Rows in the file, counted fast (for the progress bar); None for stdin.

        JSONL: the lines that are not blank. CSV: the records, minus the header; a line end
        inside a quoted cell does not count. The CSV count follows the quotes without parsing
        fields, so stray quotes inside unquoted cells (``5" screen``) can put it off: the bar
        grows if the rows outrun it. If the quotes do not balance, it counts the lines instead.
        """
        if self.path is None:
            return None
        if self._count is None:
            with self.path.open("rb") as f:
                self._count = _count_csv_records(f)[0] if self.format == "csv" else _count_jsonl_rows(f)
        return self._count

    def _check_quotes(self) -> None:
        """Refuse a CSV file with a quoted cell that is never closed: the reader would take every
        line after it as that one cell, and those rows would be lost without a word."""
        assert self.path is not None
        with self.path.open("rb") as f:
            self._count, balanced = _count_csv_records(f)
        if balanced:
            return
        for _ in self._csv_rows():  # odd quotes may be harmless strays (5" screen): the reading itself says
            pass

    def rows(self) -> Iterator[Row]:
        if self.format == "csv":
            return self._csv_rows()
        return self._jsonl_rows()

    def fields_seen(self, rows: int) -> Iterator[tuple[set[str], int, int]]:
        """After each row that is an object, among the first ``rows``: the field names seen so far,
        how many such rows, and the row's line. The up-front checks of a JSONL file's field names
        (a missing input, a misspelt --label) stop as soon as the names are enough."""
        names: set[str] = set()
        seen = 0
        found = self.rows()
        try:
            for row in found:
                if row.error is None and isinstance(row.data, dict):
                    names.update(str(k) for k in row.data)
                    seen += 1
                    yield names, seen, row.line
                if row.index + 1 >= rows:
                    break
        finally:
            close = getattr(found, "close", None)
            if close is not None:
                close()

    def has_rows(self) -> bool:
        """Whether the file holds a row, good or bad (blank lines and a header are none)."""
        rows = self._csv_rows() if self.format == "csv" else self._jsonl_rows()
        try:
            return next(rows, None) is not None
        finally:
            rows.close()

    def _jsonl_rows(self) -> Generator[Row, None, None]:
        with _open_binary(self) as f:
            index = 0
            line_no = 0
            while raw := f.readline(MAX_ROW_BYTES + 1):  # a multi-GB line is not read whole
                line_no += 1
                if line_no == 1 and raw.startswith(_BOM):
                    raw = raw[3:]
                if len(raw) > MAX_ROW_BYTES:
                    if not raw.endswith(b"\n"):
                        _skip_line(f)
                    yield Row(index, line_no, raw[:200].decode("utf-8", "replace"), TOO_LARGE)
                elif not raw.strip():
                    continue
                else:
                    yield _parse_json_row(raw, index, line_no)
                index += 1

    def _csv_rows(self) -> Generator[Row, None, None]:
        assert self.path is not None
        csv.field_size_limit(64 << 20)
        # Bytes that are not UTF-8 become lone surrogates: that record is a bad row, as in JSONL,
        # and the rows around it still run.
        with self.path.open("r", encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
            lines = _CsvLines(f)
            reader = csv.reader(lines)
            try:
                header = _read_header(lines, reader, self.name)
                if header is None:
                    return
                index = 0
                while True:
                    line = lines.line_no + 1
                    lines.next_record()
                    try:
                        record = next(reader, None)
                    except _TooLarge:
                        lines.skip_record()
                        reader = csv.reader(lines)  # a new reader: the old one holds a part of that record
                        yield Row(index, line, _readable(lines.head).rstrip("\r\n"), TOO_LARGE)
                        index += 1
                        continue
                    if record is None:
                        return
                    if lines.ended and lines.quotes % 2 and lines.line_no > line:
                        # The end of the file cut a quoted cell, across lines (so no stray on a last line
                        # without its end): found up front by _check_quotes, or here when a stray inch
                        # mark evened the file's count of quotes.
                        raise _unclosed_quote_error(self.name, line, lines.line_no)
                    if not record or record == [""]:
                        continue
                    if lines.not_utf8:
                        yield Row(index, line, {"_fields": [_readable(cell) for cell in record]}, "not UTF-8 text")
                    elif len(record) != len(header):
                        fields = f"{len(record)} field{'s' if len(record) != 1 else ''}"
                        error = f"has {fields} but the header has {len(header)}"
                        yield Row(index, line, {"_fields": record}, error)
                    else:
                        yield Row(index, line, dict(zip(header, record, strict=True)))
                    index += 1
            except csv.Error as exc:
                raise InputError(f"line {lines.line_no}: bad CSV: {exc}", source=self.name) from None


class _TooLarge(Exception):
    """Raised through ``csv.reader`` when the record it reads passes :data:`MAX_ROW_BYTES`."""


class _CsvLines:
    """The physical lines of a CSV file for ``csv.reader``, none read past the row cap.

    It counts the lines, and notes for the record being read (:meth:`next_record` starts one)
    its first line and whether it holds bytes that are not UTF-8. A line that would take the
    record past :data:`MAX_ROW_BYTES` is not given to the reader: :class:`_TooLarge` is
    raised instead, and :meth:`skip_record` reads on to the record's end, a piece at a time.
    """

    def __init__(self, f: IO[str]) -> None:
        self.readline = f.readline
        self.held = ""  # a line read ahead, given next
        self.line_no = 0  # physical lines read (begun)
        self.piece = ""  # the line that took the record past the cap, as far as it was read
        self.ended = False  # the file's end was reached
        self.next_record()

    def next_record(self) -> None:
        self.size = 0
        self.quotes = 0
        self.not_utf8 = False
        self.head = ""

    def _read(self) -> str:
        if self.held:
            piece, self.held = self.held, ""
            return piece
        return self.readline(MAX_ROW_BYTES + 1)

    def __iter__(self) -> _CsvLines:
        return self

    def __next__(self) -> str:
        line = self._read()
        if not line:
            self.ended = True
            raise StopIteration
        self.line_no += 1
        if not self.head:
            self.head = line[:200]
        size = len(line)
        if not line.isascii():  # (isascii is a flag look-up: plain lines cost nothing more)
            self.not_utf8 = self.not_utf8 or SURROGATE.search(line) is not None
            size = len(line.encode("utf-8", "surrogateescape"))
        self.size += size
        self.quotes += line.count('"')
        if self.size > MAX_ROW_BYTES:
            self.piece = line
            raise _TooLarge
        return line

    def skip_record(self) -> None:
        """Read on to the end of the record that grew too large: the first line end after an even
        number of quotes since the record began (a line end inside a quoted cell is not one)."""
        piece, self.piece = self.piece, ""
        while True:
            ended = self._ends_line(piece)
            if ended and self.quotes % 2 == 0:
                return
            piece = self._read()
            if not piece:
                return
            self.line_no += ended
            self.quotes += piece.count('"')

    def _ends_line(self, piece: str) -> bool:
        """Whether ``piece``, as readline gave it, ends its line (not when cut at the size limit)."""
        if piece.endswith("\n"):
            return True
        if not piece.endswith("\r"):
            return False
        if len(piece) > MAX_ROW_BYTES:  # cut at the limit just after a \r: a \n next is part of it
            after = self._read()
            if after != "\n":
                self.held = after
        return True


def _readable(text: str) -> str:
    """Text read with ``surrogateescape``, its undecodable bytes shown as U+FFFD (results files are UTF-8)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace") if SURROGATE.search(text) else text


def _skip_line(f: IO[bytes]) -> None:
    """Read on to the end of the current line, a piece at a time."""
    while piece := f.readline(1 << 20):
        if piece.endswith(b"\n"):
            return


#: A line end followed by a line of only whitespace (the lookahead lets blank lines in a row all count).
_BLANK_JSONL_LINE = re.compile(rb"\n[ \t\r\f\v]*(?=\n)")
#: A line end followed by an empty line (CSV: ``csv.reader`` skips only those; "\r" alone ends a line too).
_EMPTY_CSV_LINE = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?=[\r\n])")
_CHUNK = 1 << 20


def _chunks(f: IO[bytes]) -> Iterator[bytes]:
    """The file a chunk at a time, without a UTF-8 BOM at its start."""
    start = f.read(len(_BOM))
    if start and start != _BOM:
        yield start
    while chunk := f.read(_CHUNK):
        yield chunk


def _count_jsonl_rows(f: IO[bytes]) -> int:
    """Lines that are not blank (what :meth:`DataFile._jsonl_rows` reads), a chunk at a time."""
    rows = 0
    blank = True  # the line being read is blank so far
    for chunk in _chunks(f):
        start = chunk.find(b"\n")
        if start < 0:
            blank = blank and (not chunk or chunk.isspace())
            continue
        end = chunk.rfind(b"\n")
        if not (blank and (start == 0 or chunk[:start].isspace())):
            rows += 1  # the line that began before this chunk, or with it
        middle = chunk[start : end + 1]  # whole lines, each after a \n
        rows += middle.count(b"\n") - 1 - len(_BLANK_JSONL_LINE.findall(middle))
        tail = chunk[end + 1 :]
        blank = not tail or tail.isspace()
    return rows + (not blank)


def _count_csv_records(f: IO[bytes]) -> tuple[int, bool]:
    """CSV records, minus the header: the line ends outside quotes, less the empty lines; and
    whether the quotes balance.

    When the file ends inside quotes (an odd number of them: a stray ``5" screen`` in an
    unquoted cell), the quotes say nothing reliable, and the count is the lines, minus the header.
    """
    ends = 0
    lines = 0  # every line end, quoted or not: the count when the quotes do not balance
    quoted = False
    before = b""  # what precedes this chunk's text outside quotes: its last byte, or a quote
    last = b"\n"
    for chunk in _chunks(f):
        lines += _line_ends(chunk) - (last == b"\r" and chunk[:1] == b"\n")  # a \r\n split across chunks
        last = chunk[-1:] or last
        if b'"' in chunk:
            parts = chunk.split(b'"')
            outside = b'"'.join(parts[1 if quoted else 0 :: 2])
            before = b'"' if quoted else before
            quoted ^= len(parts) % 2 == 0  # an odd number of quotes
        elif quoted:
            continue
        else:
            outside = chunk
        text = before + outside  # a \r\n or an empty line across two chunks counts once
        ends += _line_ends(text) - _line_ends(before) - len(_EMPTY_CSV_LINE.findall(text))
        before = b'"' if quoted else text[-1:]
    unfinished = last not in (b"\n", b"\r")  # a last line without its line end
    return max(0, (lines if quoted else ends) + unfinished - 1), not quoted


def _unclosed_quote_error(source: str, start: int, end: int) -> InputError:
    return InputError(
        f"line {start}: a quoted cell opened in this row is never closed, so lines {start}-{end} "
        'would be read as one cell; close the quote (a quote inside a quoted cell is written "")',
        source=source,
    )


def _line_ends(text: bytes) -> int:
    return text.count(b"\n") + text.count(b"\r") - text.count(b"\r\n")


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
    text = text.rstrip("\r\n")  # an error at the line's end is at its last column, not at column 1 of the next
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
        return Row(index, line_no, value, f"expected a JSON object of inputs, got {json_kind(value)}")
    return Row(index, line_no, value)


def _read_header(lines: _CsvLines, reader: Iterator[list[str]], source: str) -> list[str] | None:
    try:
        header = next(reader, None)
    except _TooLarge:
        raise InputError(f"line 1: the header is larger than {MAX_ROW_BYTES >> 20} MiB", source=source) from None
    if header is not None:
        if header:  # a second byte order mark (a file converted twice) is not part of the first name
            header[0] = header[0].lstrip("\ufeff")
        if lines.not_utf8:
            raise InputError("line 1: the header is not UTF-8 text", source=source)
        _check_header(header, source)
    return header


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
    input is read as JSON (``3`` -> 3; a type list with "string" in it is :func:`typed_value`'s
    rule), and an empty cell for an input with a default counts as missing.
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
        out[name] = typed_value(schema, cell, name)
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
            reversed_hint = (f" (did you mean --field {field_name}={name}? it is --field INPUT=FIELD)"
                             if field_name in spec.inputs else did_you_mean(name, spec.inputs))
            raise InputError(f"--field: unknown input {quote(name)}{reversed_hint}; the spec's inputs: {known}")
        if name in out and out[name] != field_name:
            raise InputError(f"--field: input {quote(name)} is mapped twice "
                             f"({quote(out[name])} and {quote(field_name)}); give one")
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
