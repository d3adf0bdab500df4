"""Data files and input values that are unusual but real: numbers too large for a float, a
late byte that is not UTF-8, nullable string inputs, huge rows, BOMs, UTF-16 files, and the
progress bar's row count.

Fast tier: the runs use the example ``echo`` backend (plugins/example), made visible to the
plugin registry as a throwaway installed distribution; no model, no server.
"""

from __future__ import annotations

import io
import json
import sys
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_dist import fake_distribution
from test_plugins import Ran

from promptdsl import datafile, registry
from promptdsl.cli import main
from promptdsl.cli.progress import RowProgress
from promptdsl.datafile import DataFile, Row
from promptdsl.errors import InputError
from promptdsl.inputs import has_surrogate, strict_json, typed_value

ROOT = Path(__file__).resolve().parent.parent
ECHO_SOURCE = ROOT / "plugins" / "example" / "promptdsl_echo" / "__init__.py"

ECHO = """\
version: 1
name: echo
instruction: Repeat the text.
inputs:
  text: {type: string}
template: "{{ text }}"
model: {backend: echo}
output: {type: text}
"""

TYPED = """\
version: 1
name: typed
instruction: Repeat.
inputs:
  text: {type: string}
  x: {type: number, default: 1.5}
  obj: {type: object, default: {}}
template: "{{ text }} {{ x }} {{ obj }}"
model: {backend: echo}
output: {type: text}
"""

NULLABLE = """\
version: 1
name: nullable
instruction: Repeat.
inputs:
  text: {type: [string, "null"]}
template: "{{ text }}"
model: {backend: echo}
output: {type: text}
"""


@pytest.fixture
def cli(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Callable[..., Ran]]:
    """``promptdsl ARGS...`` in this process with the echo backend installed (stdin from a string)."""
    monkeypatch.setattr(registry, "_instances", {})  # this test's echo instance is not left behind
    entry = {"echo": "promptdsl_echo:EchoBackend"}
    module = {"promptdsl_echo": ECHO_SOURCE.read_text(encoding="utf-8")}
    with fake_distribution(
        tmp_path / "site", monkeypatch, "promptdsl-echo", "0.1.0", "promptdsl.backends", entry, module
    ):

        def run(*args: str, stdin: str = "") -> Ran:
            capsys.readouterr()
            monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
            code = main(list(args))
            out = capsys.readouterr()
            return Ran(code, out.out, out.err)

        yield run


def spec(tmp_path: Path, text: str = ECHO) -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def results(path: Path) -> list[dict[str, Any]]:
    """The results file, read as strict JSON (``Infinity`` or ``NaN`` in it fails the test)."""

    def refuse(name: str) -> Any:
        raise AssertionError(f"{path} holds {name}, which is not JSON")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text(encoding="utf-8").splitlines()]


def one_error_line(ran: Ran, message: str) -> None:
    assert ran.returncode == 2, ran.stderr
    assert ran.stderr.count("\n") == 1 and "Traceback" not in ran.stderr, ran.stderr
    assert message in ran.stderr, ran.stderr


# ---------------------------------------------------------------------------- 1e400 is not Infinity


def test_strict_json_refuses_numbers_too_large_for_a_float() -> None:
    assert strict_json("[1e308, -2.5e-400, 1.5, 12]") == [1e308, -0.0, 1.5, 12]  # underflow to 0 is finite
    for text in ("1e400", "-1e999", '{"x": [1E400]}'):
        with pytest.raises(ValueError, match="is not a finite number"):
            strict_json(text)


def test_an_overflowing_number_is_a_bad_row_or_exit_2_never_infinity(cli: Callable[..., Ran], tmp_path: Path) -> None:
    typed = spec(tmp_path, TYPED)
    data = tmp_path / "inf.jsonl"
    data.write_text('{"text": "hi", "x": 1e400}\n{"text": "ok", "x": 2}\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    ran = cli("run", typed, "--data", str(data), "--out", str(out), "--no-cache")
    assert ran.returncode == 1, ran.stderr
    bad, good = results(out)
    assert bad["error"] == "line 1 (row 0): invalid JSON: 1e400 is not a finite number"
    assert good["value"] == "ok 2 {}"

    cells = tmp_path / "inf.csv"
    cells.write_text("text,x\nhi,1e400\nok,3\n", encoding="utf-8")
    ran = cli("run", typed, "--data", str(cells), "--out", str(out), "--no-cache")
    assert ran.returncode == 1, ran.stderr
    bad, good = results(out)
    assert bad["error"] == "line 2 (row 0): input 'x': invalid JSON: 1e400 is not a finite number"
    assert good["value"] == "ok 3 {}"

    one_error_line(
        cli("run", typed, "-i", "text=hi", "-i", "x=1e400"), "input 'x': invalid JSON: 1e400 is not a finite"
    )
    one_error_line(cli("run", typed, "-i", "-", stdin='{"text": "hi", "x": -1e999}'), "stdin: invalid JSON: -1e999 is")
    assert cli("run", typed, "-i", "text=hi", "-i", "x=1e300").stdout == "hi 1e+300 {}\n"


# ---------------------------------------------------------------------------- a late byte that is not UTF-8


def test_a_late_invalid_byte_in_a_csv_is_one_bad_row_on_its_own_line(cli: Callable[..., Ran], tmp_path: Path) -> None:
    """Past the 8 KB sniff, a byte that is not UTF-8 spoils its row only, and the error names its line."""
    data = tmp_path / "late.csv"
    with data.open("wb") as f:
        f.write(b"text\n" + b"".join(b"row %d\n" % i for i in range(3000)))  # lines 2..3001
        f.write(b"caf\xe9\n")  # line 3002, row 3000
        f.write(b"".join(b"after %d\n" % i for i in range(5)))
    out = tmp_path / "out.jsonl"
    ran = cli("run", spec(tmp_path), "--data", str(data), "--out", str(out), "--no-cache")
    assert ran.returncode == 1, ran.stderr
    lines = results(out)
    assert len(lines) == 3006
    bad = lines[3000]
    assert bad["error"] == "line 3002 (row 3000): not UTF-8 text"
    assert bad["input"] == {"_fields": ["caf\ufffd"]}
    assert [x["value"] for x in lines[3001:]] == [f"after {i}" for i in range(5)]
    assert all("value" in x for i, x in enumerate(lines) if i != 3000)


# ---------------------------------------------------------------------------- nullable string inputs


def test_an_input_that_takes_a_string_keeps_typed_text_as_text(cli: Callable[..., Ran], tmp_path: Path) -> None:
    nullable = spec(tmp_path, NULLABLE)
    assert cli("run", nullable, "-i", "text=12345").stdout == "12345\n"
    assert cli("run", nullable, "-i", "text=true").stdout == "true\n"
    data = tmp_path / "zip.csv"
    data.write_text("text\n12345\nhello\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert cli("run", nullable, "--data", str(data), "--out", str(out), "--no-cache").returncode == 0
    assert [x["value"] for x in results(out)] == ["12345", "hello"]

    assert typed_value({"type": ["string", "null"]}, "12345", "t") == "12345"
    assert typed_value({"type": ["integer", "string"]}, "7", "t") == 7  # valid as JSON: the JSON value
    assert typed_value({"type": ["integer", "null"]}, "7", "n") == 7  # no string: read as JSON
    assert typed_value({"type": ["integer", "null"]}, "null", "n") is None


# ---------------------------------------------------------------------------- huge rows, has_surrogate


def test_has_surrogate_scans_in_c_not_a_python_loop_per_character() -> None:
    assert has_surrogate("ok \udc80") and has_surrogate({"k": ["x", "\ud800"]}) and has_surrogate({"\udfff": 1})
    assert not has_surrogate("plain text, ünïcödé, 🙂") and not has_surrogate({"a": [1, None, "b"]})
    calls = 0

    def count(frame: object, event: str, arg: object) -> None:
        nonlocal calls
        calls += event == "call"  # a Python-level call (a generator resuming counts too)

    text = "a" * 10_000
    sys.setprofile(count)
    try:
        has_surrogate(text)
    finally:
        sys.setprofile(None)
    assert calls <= 5, f"{calls} Python-level calls for one string"


def test_a_jsonl_line_over_16_mib_is_one_bad_row(cli: Callable[..., Ran], tmp_path: Path) -> None:
    data = tmp_path / "big.jsonl"
    with data.open("w", encoding="utf-8") as f:
        f.write('{"text": "first"}\n')
        f.write('{"text": "' + "a" * (17 << 20) + '"}\n')
        f.write('{"text": "last"}\n')
    out = tmp_path / "out.jsonl"
    ran = cli("run", spec(tmp_path), "--data", str(data), "--out", str(out), "--no-cache")
    assert ran.returncode == 1, ran.stderr
    first, big, last = results(out)
    assert (first["value"], last["value"]) == ("first", "last")
    assert big["error"] == "line 2 (row 1): the row is larger than 16 MiB"
    assert big["input"] == '{"text": "' + "a" * 190  # the start of the line, not 17 MiB of it
    assert out.stat().st_size < 10_000


def _peak_while(run: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_row_over_the_cap_is_not_read_whole(fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An 8 MB line past a 1 KB cap is skipped a piece at a time (the real cap is 16 MiB)."""
    monkeypatch.setattr(datafile, "MAX_ROW_BYTES", 1000)
    data = tmp_path / f"d.{fmt}"
    if fmt == "jsonl":
        data.write_text('{"text": "a"}\n{"text": "' + "x" * 8_000_000 + '"}\n{"text": "b"}\n', encoding="utf-8")
    else:
        data.write_text("text\na\n" + "x" * 8_000_000 + "\nb\n", encoding="utf-8")
    rows: list[Row] = []
    peak = _peak_while(lambda: rows.extend(DataFile(data).rows()))
    assert [(r.line, r.error) for r in rows] == [
        (1 + (fmt == "csv"), None),
        (2 + (fmt == "csv"), datafile.TOO_LARGE),
        (3 + (fmt == "csv"), None),
    ]
    assert peak < 4_000_000, peak


def test_a_csv_record_over_the_cap_ends_where_its_quotes_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Too-large records (a long line, a long quoted cell over many lines with "" and commas in
    it, a CRLF line cut by the limit just after its \\r) become bad rows, and the rows after
    each are read whole and with their right line numbers."""
    monkeypatch.setattr(datafile, "MAX_ROW_BYTES", 100)
    cell = '"' + "\r\n".join(f'part {i}, with ""quotes""' for i in range(20)) + '"'  # lines 4..23
    text = (
        "text,n\r\n"
        "one,1\r\n"
        + "y" * 150
        + ",2\r\n"  # line 3
        + cell
        + ",3\r\n"
        + "four,4\r\n"  # line 24
        + "z" * 98
        + ",5\r\n"  # line 25: 100 characters, then \r at the limit and \n after it
        + '"six\r\nsix",6\r\n'  # lines 26-27
        + "w" * 200  # line 28, no line end
    )
    data = tmp_path / "d.csv"
    data.write_bytes(text.encode("utf-8"))
    rows = list(DataFile(data).rows())
    too_large = datafile.TOO_LARGE
    assert [(r.index, r.line, r.error) for r in rows] == [
        (0, 2, None),
        (1, 3, too_large),
        (2, 4, too_large),
        (3, 24, None),
        (4, 25, too_large),
        (5, 26, None),
        (6, 28, too_large),
    ]
    assert [r.data for r in rows if r.error is None] == [
        {"text": "one", "n": "1"},
        {"text": "four", "n": "4"},
        {"text": "six\r\nsix", "n": "6"},
    ]
    assert rows[1].data == "y" * 101 and rows[2].data == '"part 0, with ""quotes""'  # a row's start, as read
    assert DataFile(data).count() == 7


# ---------------------------------------------------------------------------- the progress bar's total


def test_count_is_rows_not_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Multi-line CSV cells, empty CSV lines, blank JSONL lines and a BOM: the count is the rows
    the run will read, also when a line end or a quote falls across the reader's chunks."""
    csv_text = '\ufefftext,n\r\n"a\r\nb",1\r\n\r\n"c ""q""\nd",2\n"",\rlast,"x\ry"'
    jsonl_text = '\ufeff\n{"a": 1}\r\n  \n\t\r\n{"a": 2}\n\n{"a": 3}'
    for chunk in (1, 2, 3, 5, 1 << 20):
        monkeypatch.setattr(datafile, "_CHUNK", chunk)
        for name, text in (("d.csv", csv_text), ("d.jsonl", jsonl_text)):
            path = tmp_path / name
            path.write_bytes(text.encode("utf-8"))
            data = DataFile(path)
            assert data.count() == len(list(data.rows())) == (4 if name == "d.csv" else 3), (name, chunk)


def test_the_bar_grows_when_rows_outrun_the_count() -> None:
    from rich.console import Console

    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=120, color_system=None)
    with RowProgress(2, console=console) as bar:
        for _ in range(3):
            bar.update()
    assert "3/3" in screen.getvalue() and "3/2" not in screen.getvalue()


# ---------------------------------------------------------------------------- BOMs and UTF-16


def test_a_bom_is_not_part_of_an_input_file_or_stdin(cli: Callable[..., Ran], tmp_path: Path) -> None:
    typed = spec(tmp_path, TYPED)
    (tmp_path / "obj.json").write_bytes(b'\xef\xbb\xbf{"a": 1}\r\n')
    (tmp_path / "text.txt").write_bytes(b"\xef\xbb\xbfhello")
    ran = cli("run", typed, "-i", f"text=@{tmp_path / 'text.txt'}", "-i", f"obj=@{tmp_path / 'obj.json'}")
    assert (ran.returncode, ran.stdout) == (0, 'hello 1.5 {"a": 1}\n'), ran.stderr
    ran = cli("run", spec(tmp_path), "-i", "-", stdin='\ufeff{"text": "hi"}')
    assert (ran.returncode, ran.stdout) == (0, "hi\n"), ran.stderr


@pytest.mark.parametrize(
    ("name", "encoding", "which"),
    [
        ("d.jsonl", "utf-16", "UTF-16"),
        ("d.csv", "utf-16", "UTF-16"),
        ("d.jsonl", "utf-16-be", "UTF-16"),
        ("d.jsonl", "utf-32", "UTF-32"),
    ],
)
def test_a_utf16_data_file_is_named_as_such(
    name: str, encoding: str, which: str, cli: Callable[..., Ran], tmp_path: Path
) -> None:
    data = tmp_path / name
    text = '{"text": "hi"}\n' if name.endswith(".jsonl") else "text\nhi\n"
    data.write_bytes((("\ufeff" if encoding == "utf-16-be" else "") + text).encode(encoding))  # the others add a BOM
    ran = cli("run", spec(tmp_path), "--data", str(data))
    one_error_line(ran, f"{data}: dataset is {which} text, not UTF-8; save it as UTF-8")


# ---------------------------------------------------------------------------- type lists: the JSON value when valid


UNION = """\
version: 1
name: union
instruction: Show.
inputs:
  n: {type: [integer, string]}
  note: {type: [string, "null"]}
template: "{{ n is number }} {{ note is none }} {{ n }} {{ note }}"
model: {backend: echo}
output: {type: text}
"""


def test_a_type_list_takes_the_json_value_when_it_is_valid_else_the_text(
    cli: Callable[..., Ran], tmp_path: Path
) -> None:
    """`[integer, string]` given 3 is the integer 3, and `[string, "null"]` given null is null (as
    before the nullable-string fix), while 12345 and true stay text for `[string, "null"]`."""
    union = spec(tmp_path, UNION)
    assert cli("run", union, "-i", "n=3", "-i", "note=null").stdout == "true true 3 null\n"
    assert cli("run", union, "-i", "n=abc", "-i", "note=12345").stdout == "false false abc 12345\n"
    data = tmp_path / "u.csv"
    data.write_text('n,note\n3,null\nabc,true\n3.5,"""quoted"""\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert cli("run", union, "--data", str(data), "--out", str(out), "--no-cache").returncode == 0
    assert [x["value"] for x in results(out)] == [
        "true true 3 null",
        "false false abc true",
        "false false 3.5 quoted",  # 3.5 is no integer: the text; "quoted" is a JSON string: the string
    ]

    cases: list[tuple[Any, str, Any]] = [
        (["string", "null"], "12345", "12345"),
        (["string", "null"], "true", "true"),
        (["string", "null"], "null", None),
        (["string", "null"], '"null"', "null"),  # the text null, quoted as JSON
        (["integer", "string"], "3", 3),
        (["integer", "string"], "3.0", 3.0),  # an integer to JSON Schema
        (["integer", "string"], "abc", "abc"),
        (["number", "string"], "1e400", "1e400"),  # valid as text, so no "not a finite number" error
        (["boolean", "string"], "true", True),
        ("string", "3", "3"),  # a plain string input: always the text, as typed
        ("string", '"hi"', '"hi"'),
        (["string"], "null", "null"),
    ]
    for kind, text, value in cases:
        got = typed_value({"type": kind}, text, "x")
        assert got == value and type(got) is type(value), (kind, text, got)
    # the JSON value must be valid for the whole schema, not only of a listed type
    assert typed_value({"type": ["integer", "string"], "minimum": 10}, "3", "x") == "3"
    assert typed_value({"type": ["integer", "string"], "minimum": 1}, "3", "x") == 3


def test_a_type_list_value_valid_neither_way_gets_the_same_error_as_before(
    cli: Callable[..., Ran], tmp_path: Path
) -> None:
    short = UNION.replace('note: {type: [string, "null"]}', 'note: {type: [string, "null"], maxLength: 3}')
    ran = cli("run", spec(tmp_path, short), "-i", "n=1", "-i", "note=12345")
    one_error_line(ran, "input 'note': '12345' is too long")
    strict = UNION.replace("n: {type: [integer, string]}", 'n: {type: [integer, "null"]}')
    one_error_line(cli("run", spec(tmp_path, strict), "-i", "n=abc", "-i", "note=x"), "input 'n': 'abc' is not of type")
    ran = cli("run", spec(tmp_path, strict), "-i", "n=1e400", "-i", "note=x")
    one_error_line(ran, "input 'n': invalid JSON: 1e400 is not a finite number")


# ---------------------------------------------------------------------------- the count with a stray quote


def test_a_stray_quote_in_an_unquoted_cell_does_not_collapse_the_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One inch mark (`5" screen`) leaves the quotes unbalanced: the count falls back to the lines,
    minus the header, instead of reading the rest of the file as one quoted cell (a total of 0)."""
    big = tmp_path / "stray1000.csv"
    big.write_text('text,label\n5" screen is great,pos\n' + "".join(f"row {i},neg\n" for i in range(999)))
    assert DataFile(big).count() == len(list(DataFile(big).rows())) == 1000
    small = tmp_path / "stray.csv"
    small.write_bytes(b'\xef\xbb\xbftext,label\r\n5" screen,pos\r\nok,neg\rlast,neg')
    for chunk in (1, 2, 3, 5, 1 << 20):  # a \r\n split across chunks counts once
        monkeypatch.setattr(datafile, "_CHUNK", chunk)
        assert DataFile(small).count() == len(list(DataFile(small).rows())) == 3, chunk


# ---------------------------------------------------------------------------- refused before any row runs

def test_a_quoted_cell_never_closed_is_refused_not_left_to_swallow_the_rows_after_it(
    cli: Callable[..., Ran], tmp_path: Path
) -> None:
    """csv reads an unclosed quote to the end of the file as one cell: the rows after it vanished."""
    data = tmp_path / "q.csv"
    data.write_text('text,label\nI love it,pos\n"Best 5 phone ever,neg\nawful,neg\nwhat a day,pos\n', encoding="utf-8")
    out = tmp_path / "r.jsonl"
    one_error_line(cli("run", spec(tmp_path), "--data", str(data), "--out", str(out)),
                   "q.csv: line 3: a quoted cell opened in this row is never closed, so lines 3-5 would be read as one cell")
    assert not out.exists()
    data.write_text('text,label\nI love it,pos\n5" screen,pos\n"Best phone ever,neg\nawful,neg\n', encoding="utf-8")
    ran = cli("run", spec(tmp_path), "--data", str(data), "--out", str(out))  # a stray evens the count of quotes
    one_error_line(ran, "q.csv: line 4: a quoted cell opened in this row is never closed, so lines 4-5")
    out.unlink(missing_ok=True)
    for text in ('text,label\n5" screen,pos\nok,neg\nlast 7" one,neg',  # strays on a last line without its end
                 'text,label\n"two\nlines",pos\n"no end"'):  # balanced, the last line unfinished
        data.write_text(text, encoding="utf-8")
        assert len(list(DataFile(data).rows())) == 3 - text.startswith("text,label\n\"")


@pytest.mark.parametrize(("name", "content", "message"), [
    ("empty.jsonl", "", "empty.jsonl: the dataset has no rows (the file is empty)"),
    ("blank.jsonl", "\n  \n", "blank.jsonl: the dataset has no rows (only blank lines)"),
    ("header.csv", "text,label\n", "header.csv: the dataset has no rows below its header"),
    ("nothing.csv", "\ufeff", "nothing.csv: the dataset has no rows (the file is empty)"),  # no header either
    ("tweets.csv", "tweet,label\nhi,pos\n",
     "tweets.csv: line 1: no column for input 'text' (did you mean 'tweet'?); map it with --field text=tweet; "
     "the header has: 'tweet', 'label'"),
    ("msg.csv", "msg,label\nhi,pos\n",
     "msg.csv: line 1: no column for input 'text' (map a field to it with --field text=FIELD); "
     "the header has: 'msg', 'label'"),
    ("semi.csv", "text;label\nhi;pos\n",
     "semi.csv: line 1: the header looks semicolon-separated ('text;label'); promptdsl reads CSV with commas: "
     "save the file with commas, or as JSONL"),
    ("one.jsonl", '\n{"tweet": "hi", "label": "pos"}\n',
     "one.jsonl: line 2: no field for input 'text' (did you mean 'tweet'?); map it with --field text=tweet; "
     "the row has: 'label', 'tweet'"),
    ("rows.jsonl", '{"msg": "a"}\nnot json\n{"body": "b", "label": "x"}\n',
     "rows.jsonl: none of the first 2 rows has a field for input 'text' (map a field to it with --field "
     "text=FIELD); their fields: 'body', 'label', 'msg'"),
])
def test_a_file_no_row_of_which_can_run_is_one_line_before_the_model(
    cli: Callable[..., Ran], tmp_path: Path, name: str, content: str, message: str
) -> None:
    """Metrics of 0/0 and a row of errors per row both said nothing useful, with exit 0 and 1."""
    data = tmp_path / name
    data.write_text(content, encoding="utf-8")
    for command in (["run", spec(tmp_path), "--data", str(data)],
                    ["eval", spec(tmp_path), "--data", str(data), "--label", "label"]):
        one_error_line(cli(*command), message)


def test_a_column_mapped_with_field_or_given_a_default_needs_no_header_match(
    cli: Callable[..., Ran], tmp_path: Path
) -> None:
    data = tmp_path / "t.csv"
    data.write_bytes("\ufeff\ufefftweet,label\nhi,pos\n".encode())  # a file converted twice: two byte order marks
    ran = cli("run", spec(tmp_path), "--data", str(data), "--field", "text=tweet")
    assert ran.returncode == 0 and json.loads(ran.stdout)["value"] == "hi", ran.stderr
    assert "promptdsl: 1 row in " in ran.stderr


def test_an_array_or_object_input_that_is_not_valid_json_says_where() -> None:
    """``[{"title":"Budget",}]`` for an array input read "is not of type 'array'"."""
    from promptdsl.errors import InputError
    from promptdsl.inputs import typed_value

    with pytest.raises(InputError, match=r"^input 'topics': invalid JSON at column 20: Expecting property name"):
        typed_value({"type": "array"}, '[{"title":"Budget",}]', "topics")
    with pytest.raises(InputError, match=r"^input 'm': invalid JSON at line 2 column 1: Expecting"):
        typed_value({"type": "object"}, '{"a": 1\n"b": 2}', "m")
    assert typed_value({"type": "integer"}, "abc", "n") == "abc"  # not meant as JSON: the schema's own words follow
    assert typed_value({"type": ["array", "string"]}, "[oops", "t") == "[oops"  # text is a valid value here


def test_a_required_input_that_some_early_row_has_is_left_to_the_rows(tmp_path: Path) -> None:
    """Rows of mixed shapes: the run goes ahead and the rows without the field fail one by one."""
    from promptdsl.dataset import _check_columns
    from promptdsl.loader import loads_spec

    data = tmp_path / "mixed.jsonl"
    data.write_text('{"msg": "a"}\n' * 150 + '{"text": "late"}\n', encoding="utf-8")
    s = loads_spec("version: 1\nname: t\ninputs: {text: {type: string}}\n")
    with pytest.raises(InputError, match="none of the first 100 rows"):  # only the first 100 are looked at
        _check_columns(s, DataFile(data), {}, {})
    data.write_text('{"msg": "a"}\n' * 50 + '{"text": "b"}\n', encoding="utf-8")
    _check_columns(s, DataFile(data), {}, {})
    _check_columns(s, DataFile(data), {"text": "msg"}, {})


def test_field_mappings_twice_or_reversed_are_refused() -> None:
    from promptdsl.datafile import parse_fields
    from promptdsl.loader import loads_spec

    s = loads_spec("version: 1\nname: t\ninputs: {ticket: {type: string}}\n")
    with pytest.raises(InputError, match=r"^--field: input 'ticket' is mapped twice \('msg' and 'label'\); give one$"):
        parse_fields(["ticket=msg", "ticket=label"], s)
    assert parse_fields(["ticket=msg", "ticket=msg"], s) == {"ticket": "msg"}
    with pytest.raises(InputError, match=r"unknown input 'msg' \(did you mean --field ticket=msg\? it is --field INPUT"):
        parse_fields(["msg=ticket"], s)


def test_a_row_of_very_many_fields_is_named_short_and_compared_against_a_bounded_few(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """6 rows of 250,000 fields took 25 s before the run (every field name re-sorted and compared
    after each row) and gave a 17 MB "one-line" error listing them all."""
    import promptdsl.dataset as dataset_module
    from promptdsl.datafile import DataFile
    from promptdsl.dataset import DatasetRun
    from promptdsl.loader import loads_spec

    compared: list[int] = []
    real = dataset_module.did_you_mean

    def counting(word: str, options: Any) -> str:
        options = list(options)
        compared.append(len(options))
        return real(word, options)

    monkeypatch.setattr(dataset_module, "did_you_mean", counting)
    spec = loads_spec("version: 1\nname: w\ninputs: {text: {type: string}}\n")
    data = tmp_path / "wide.jsonl"
    row = {f"k{i}": 1 for i in range(3000)}
    data.write_text((json.dumps(row) + "\n") * 3, encoding="utf-8")
    with pytest.raises(InputError) as info:
        DatasetRun(spec, DataFile(data))
    message = str(info.value)
    assert "none of the first 3 rows has a field for input 'text'" in message and message.endswith(" and 2,980 more")
    assert len(message) < 1000 and compared == [1000]  # once, against the first 1,000 names
