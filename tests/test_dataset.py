"""Dataset runs end to end on the real embedded model, with a few TweetEval rows.

Resume after a real Ctrl+C (SIGINT to a child process), a half-written last line, bad rows
(skipped or stopping the run), CSV input, carried-through fields, the cache on a re-run, bad
dataset files. The concurrency test uses a scripted slow backend: it needs exact control of
timing to prove that the order is kept and the bound respected.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from promptdsl import Backend, Capability, Constraint, GenerationOptions, Prompt, Runner, loads_spec
from promptdsl.cli import main
from promptdsl.cli.progress import RowProgress
from promptdsl.datafile import DataFile, scan_output
from promptdsl.dataset import run_dataset

ROOT = Path(__file__).resolve().parent.parent
SENTIMENT = str(ROOT / "specs" / "sentiment.yaml")
TWEETS = ROOT / "tests" / "data" / "tweeteval-sentiment-val500.jsonl"  # source and licence: tests/data/README.md
CHOICES = {"Positive", "Negative", "Neutral"}


def tweets(n: int, start: int = 0) -> list[dict[str, Any]]:
    with TWEETS.open(encoding="utf-8") as f:
        return [json.loads(line) for line in itertools.islice(f, start, start + n)]


def write_jsonl(path: Path, rows: Sequence[Any]) -> Path:
    path.write_text("".join(r if isinstance(r, str) else json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["run", SENTIMENT, *args])
    out = capsys.readouterr()
    return code, out.out, out.err


pytestmark = pytest.mark.usefixtures("home")


# ---------------------------------------------------------------------------- real model


@pytest.mark.model
def test_jsonl_run_writes_one_result_per_row_with_fields_carried(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], llamacpp_backend: object
) -> None:
    rows = [{**r, "id": f"t{i}"} for i, r in enumerate(tweets(3))]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    out = tmp_path / "r.jsonl"
    code, _, err = run_cli(capsys, "--data", str(data), "--out", str(out))
    assert code == 0, err
    lines = read_lines(out)
    assert [x["index"] for x in lines] == [0, 1, 2]
    for line, row in zip(lines, rows, strict=True):
        assert line["input"] == row  # the row as read: label and id carried through
        assert line["value"] in CHOICES and line["method"] == "score"
        assert set(line["scores"]) == CHOICES and line["value"] == max(line["scores"], key=line["scores"].get)
        assert line["backend"] == "llamacpp" and line["model"] == "smollm2"
        assert line["timing"]["cached"] is False and line["timing"]["seconds"] > 0
    assert "3 rows" in err and "3 ok" in err


@pytest.mark.model
def test_rerun_is_served_from_the_cache_and_no_cache_skips_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], llamacpp_backend: object
) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", tweets(3, start=10))
    first, second, third = (tmp_path / f"r{i}.jsonl" for i in range(3))
    assert run_cli(capsys, "--data", str(data), "--out", str(first))[0] == 0
    code, _, err = run_cli(capsys, "--data", str(data), "--out", str(second))
    assert code == 0 and "3 from the cache" in err
    a, b = read_lines(first), read_lines(second)
    assert [x["timing"]["cached"] for x in b] == [True] * 3
    assert [(x["value"], x["scores"]) for x in a] == [(x["value"], x["scores"]) for x in b]
    code, _, err = run_cli(capsys, "--data", str(data), "--out", str(third), "--no-cache")
    assert code == 0 and "cache" not in err
    assert [x["timing"]["cached"] for x in read_lines(third)] == [False] * 3


@pytest.mark.model
def test_bad_rows_become_error_lines_with_row_and_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], llamacpp_backend: object
) -> None:
    good = tweets(2)
    data = write_jsonl(tmp_path / "d.jsonl", [
        good[0],
        "{not json\n",
        {"text": ""},  # breaks minLength: 1
        "\n",  # blank lines are not rows
        ["a", "list"],
        {"txt": "typo"},
        good[1],
    ])
    out = tmp_path / "r.jsonl"
    code, _, err = run_cli(capsys, "--data", str(data), "--out", str(out))
    assert code == 1  # some rows failed; they are recorded, the others ran
    lines = read_lines(out)
    assert [x["index"] for x in lines] == [0, 1, 2, 3, 4, 5]
    assert "value" in lines[0] and "value" in lines[5] and lines[5]["input"] == good[1]
    errors = {x["index"]: x["error"] for x in lines if "error" in x}
    assert errors[1].startswith("line 2 (row 1): invalid JSON")
    assert errors[2].startswith("line 3 (row 2): input 'text'")
    assert errors[3] == "line 5 (row 3): expected a JSON object of inputs, got an array"
    assert errors[4] == ("line 6 (row 4): no field for input 'text' (did you mean 'txt'?); "
                         "map it with --field text=txt; the row has: 'txt'")
    assert lines[1]["input"] == "{not json" and all(x["error_type"] == "input" for x in lines if "error" in x)
    assert "2 ok" in err and "4 failed" in err


@pytest.mark.model
def test_on_error_stop_ends_the_run_at_the_bad_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], llamacpp_backend: object
) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [*tweets(2), "{oops\n", *tweets(1, start=2)])
    out = tmp_path / "r.jsonl"
    code, _, err = run_cli(capsys, "--data", str(data), "--out", str(out), "--on-error", "stop")
    assert code == 2
    assert [x["index"] for x in read_lines(out)] == [0, 1]  # nothing after, and no error line
    assert "line 3 (row 2): invalid JSON" in err and "--resume" in err
    assert "Traceback" not in err


@pytest.mark.model
def test_csv_input(tmp_path: Path, capsys: pytest.CaptureFixture[str], llamacpp_backend: object) -> None:
    data = tmp_path / "d.csv"
    data.write_text(
        'id,text,label\n'
        '1,"I love this, truly the best day!",positive\n'
        '2,"Terrible service.\nNever again.",negative\n'
        '3,too,many,fields\n',
        encoding="utf-8",
    )
    code, stdout, _ = run_cli(capsys, "--data", str(data))  # no --out: JSONL on stdout
    assert code == 1
    lines = [json.loads(x) for x in stdout.splitlines()]
    assert lines[0]["input"] == {"id": "1", "text": "I love this, truly the best day!", "label": "positive"}
    assert lines[1]["input"]["text"] == "Terrible service.\nNever again."
    assert lines[0]["value"] in CHOICES and lines[1]["value"] in CHOICES
    assert lines[2]["error"] == "line 5 (row 2): has 4 fields but the header has 3"  # row 1 spans lines 3-4


@pytest.mark.model
def test_ctrl_c_stops_cleanly_and_resume_finishes_without_loss_or_repeats(
    tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str], llamacpp_backend: object
) -> None:
    n = 12
    data = write_jsonl(tmp_path / "d.jsonl", tweets(n, start=100))
    out = tmp_path / "r.jsonl"
    args = ["run", SENTIMENT, "--data", str(data), "--out", str(out), "--no-cache"]
    env = {**os.environ, "PROMPTDSL_HOME": str(home)}
    child = subprocess.Popen([sys.executable, "-m", "promptdsl.cli", *args], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None:
        if out.exists() and out.read_text(encoding="utf-8").count("\n") >= 3:
            break
        time.sleep(0.05)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 130, err
    assert "interrupted after" in err and "--resume" in err and "Traceback" not in err
    text = out.read_text(encoding="utf-8")
    assert text.endswith("\n")  # no half-written line
    done = [x["index"] for x in read_lines(out)]
    assert 3 <= len(done) < n and done == list(range(len(done)))

    code = main([*args, "--resume"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"{len(done)} done before" in err
    lines = read_lines(out)
    assert [x["index"] for x in lines] == list(range(n))  # every row once, in order
    assert all(x["value"] in CHOICES for x in lines)
    assert main([*args, "--resume"]) == 0  # nothing left: no "in 0s (0.0 rows/s)"
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"promptdsl: {n} rows: 0 ok, {n} done before; results in {out}"


@pytest.mark.model
def test_resume_repairs_a_half_written_last_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], llamacpp_backend: object
) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", tweets(4, start=20))
    out = tmp_path / "r.jsonl"
    assert run_cli(capsys, "--data", str(data), "--out", str(out), "--limit", "2")[0] == 0
    with out.open("a", encoding="utf-8") as f:
        f.write('{"index": 2, "value": "Posi')  # as if the machine died mid-write
    code, _, err = run_cli(capsys, "--data", str(data), "--out", str(out), "--resume")
    assert code == 0, err
    assert "half-written last line" in err
    assert [x["index"] for x in read_lines(out)] == [0, 1, 2, 3]


@pytest.mark.model  # the runner (and so the model) is set up before the --out file is checked
def test_resume_refuses_results_written_for_other_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"text": "one"}, {"text": "two"}])
    out = write_jsonl(tmp_path / "r.jsonl", [{"index": 0, "value": "Positive", "input": {"text": "other"}}])
    code, _, err = run_cli(capsys, "--data", str(data), "--out", str(out), "--resume")
    assert code == 2
    assert "different input for line 1 (row 0)" in err and len(err.strip().splitlines()) == 1


def test_resume_refuses_a_file_that_is_not_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"text": "one"}])
    out = tmp_path / "notes.jsonl"
    out.write_text("hello\n", encoding="utf-8")
    code, _, err = run_cli(capsys, "--data", str(data), "--out", str(out), "--resume")
    assert code == 2 and "line 1 is not a promptdsl result line" in err
    assert out.read_text(encoding="utf-8") == "hello\n"  # left alone


# ---------------------------------------------------------------------------- bad files: exit 2, one line


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.jsonl", None, "dataset file not found"),
        ("data.txt", b"text\n", "dataset must be a .jsonl, .ndjson, .csv file, not '.txt'"),
        ("data.jsonl", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "dataset is a binary file"),
        ("data.csv", b"\xff\xfe\xfa bad bytes everywhere" * 40, "dataset is not UTF-8 text"),
        ("dup.csv", b"text,text\na,b\n", "column 'text' appears twice in the header"),
    ],
)
def test_bad_dataset_file_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: bytes | None, message: str
) -> None:
    data = tmp_path / name
    if content is not None:
        data.write_bytes(content)
    out = tmp_path / "r.jsonl"
    code, stdout, err = run_cli(capsys, "--data", str(data), "--out", str(out))
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert stdout == ""
    assert not out.exists()


def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"text": "x"}])
    code, _, err = run_cli(capsys, "--data", str(data), "--resume")
    assert code == 2 and "--resume needs --out" in err
    code, _, err = run_cli(capsys, "--data", str(data), "--out", str(tmp_path / "no" / "r.jsonl"))
    assert code == 2 and "does not exist" in err
    code, _, err = run_cli(capsys, "--data", str(data), "--out", str(data))
    assert code == 2 and "the dataset itself" in err


# ---------------------------------------------------------------------------- concurrency (scripted backend)


class SlowRemote(Backend):
    """Answers after a delay that varies by item, and records how many requests overlap."""

    name = "slowremote"
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.COMPLETION, Capability.STREAM})

    def __init__(self) -> None:
        super().__init__("m", {})
        self.lock = threading.Lock()
        self.active = 0
        self.peak = 0

    def stream(self, prompt: Prompt, options: GenerationOptions, constraint: Constraint | None = None) -> Iterator[str]:
        n = int(prompt.text.rsplit(" ", 1)[-1])
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        time.sleep(0.05 if n % 3 == 0 else 0.005)  # early rows finish last
        with self.lock:
            self.active -= 1
        yield f"echo {n}"


ECHO = """\
version: 1
name: echo
mode: completion
inputs: {n: {type: integer}}
template: "item {{ n }}"
output: {type: text}
"""


def test_concurrent_rows_keep_their_order_and_the_bound(tmp_path: Path) -> None:
    data = DataFile(write_jsonl(tmp_path / "d.jsonl", [{"n": i} for i in range(24)]))
    backend = SlowRemote()
    runner = Runner(loads_spec(ECHO), backend)
    lines: list[str] = []
    summary = run_dataset(runner, data, lines.append, concurrency=3)
    got = [json.loads(x) for x in lines]
    assert [x["index"] for x in got] == list(range(24))
    assert [x["value"] for x in got] == [f"echo {i}" for i in range(24)]
    assert 1 < backend.peak <= 3
    assert summary.ok == 24 and summary.rows == 24


HANGING_RUN = """
import os, signal, sys, threading
from promptdsl import Backend, Capability, Runner, loads_spec
from promptdsl.datafile import DataFile
from promptdsl.dataset import run_dataset

class Hang(Backend):
    name = "hang"
    capabilities = frozenset({Capability.COMPLETION, Capability.STREAM})
    def stream(self, prompt, options, constraint=None):
        threading.Event().wait()  # a server that accepted the request and never answers
        yield ""

spec = loads_spec(sys.argv[2])
threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
summary = run_dataset(Runner(spec, Hang("m", {})), DataFile(sys.argv[1]), lambda line: None, concurrency=3)
print("interrupted" if summary.interrupted else "finished")
"""


def test_a_hard_stop_does_not_wait_for_requests_in_flight(tmp_path: Path) -> None:
    """A second Ctrl+C ("stop at once") ends the process although no request in flight will ever
    return: the rows' threads must not be joined at exit (ThreadPoolExecutor's are)."""
    data = write_jsonl(tmp_path / "d.jsonl", [{"n": i} for i in range(10)])
    done = subprocess.run([sys.executable, "-c", HANGING_RUN, str(data), ECHO],
                          capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout.strip()) == (0, "interrupted"), done.stderr


def test_stop_event_leaves_a_resumable_prefix(tmp_path: Path) -> None:
    data = DataFile(write_jsonl(tmp_path / "d.jsonl", [{"n": i} for i in range(30)]))
    runner = Runner(loads_spec(ECHO), SlowRemote())
    stop = threading.Event()
    out = tmp_path / "r.jsonl"
    with out.open("w", encoding="utf-8") as f:

        def write(line: str) -> None:
            f.write(line)
            if line.startswith('{"index": 4,'):
                stop.set()  # as the first Ctrl+C does

        summary = run_dataset(runner, data, write, concurrency=4, stop=stop)
    assert summary.interrupted
    done = scan_output(out)
    assert sorted(done.done) == list(range(len(done.done))) and 5 <= len(done.done) < 30
    with out.open("a", encoding="utf-8") as f:
        rest = run_dataset(runner, data, f.write, concurrency=4, skip=done)
    assert rest.resumed == len(done.done) and not rest.interrupted
    assert [x["index"] for x in read_lines(out)] == list(range(30))


def test_resume_from_standard_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Standard input can be read once: the rows already done are checked as the run reads them."""
    import io

    from promptdsl.dataset import DatasetRun
    from promptdsl.errors import InputError

    rows = "".join(json.dumps({"n": i}) + "\n" for i in range(6))
    out = tmp_path / "r.jsonl"
    spec = loads_spec(ECHO)

    def run(text: str, limit: int | None = None, resume: bool = True) -> None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode("utf-8"))))
        job = DatasetRun(spec, DataFile("-"), out, runner=Runner(spec, SlowRemote()), resume=resume,
                         cache=False, limit=limit)
        try:
            job.execute()
        finally:
            job.close()

    run(rows, limit=3, resume=False)
    run(rows)
    assert [(x["index"], x["value"]) for x in read_lines(out)] == [(i, f"echo {i}") for i in range(6)]
    before = out.read_bytes()
    with pytest.raises(InputError, match=r"different input for line 1 \(row 0\)"):
        run(rows.replace('"n": 0', '"n": 9'))
    assert out.read_bytes() == before  # nothing written


def test_a_new_run_replaces_only_results(tmp_path: Path) -> None:
    """``--out`` that holds an earlier run's results is redone; any other file is left alone."""
    from promptdsl.dataset import DatasetRun
    from promptdsl.errors import InputError

    data = DataFile(write_jsonl(tmp_path / "d.jsonl", [{"n": i} for i in range(3)]))
    spec = loads_spec(ECHO)

    def run(out: Path) -> None:
        job = DatasetRun(spec, data, out, runner=Runner(spec, SlowRemote()), cache=False)
        try:
            job.execute()
        finally:
            job.close()

    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(ECHO, encoding="utf-8")
    with pytest.raises(InputError, match="--out writes JSON lines, not YAML"):
        run(spec_file)  # a slip of the shell: --out spec.yaml
    assert spec_file.read_text(encoding="utf-8") == ECHO
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n", encoding="utf-8")
    with pytest.raises(InputError, match="--out exists and is not a promptdsl results file, so it is left alone"):
        run(notes)
    assert notes.read_text(encoding="utf-8") == "my notes\n"
    table = write_jsonl(tmp_path / "table.jsonl", [{"index": i, "text": f"row {i}"} for i in range(2)])
    with pytest.raises(InputError, match="is not a promptdsl results file"):
        run(table)  # pandas' reset_index().to_json(lines=True): an index, but no result
    assert read_lines(table)[1] == {"index": 1, "text": "row 1"}
    out = tmp_path / "r.jsonl"
    out.write_text("", encoding="utf-8")
    run(out)  # empty: fine
    out.write_text(out.read_text(encoding="utf-8").replace("echo", "old"), encoding="utf-8")
    run(out)  # an earlier run's results: redone
    assert [x["value"] for x in read_lines(out)] == ["echo 0", "echo 1", "echo 2"]


def test_progress_bar_shows_count_rate_and_eta_and_is_quiet_off_a_terminal() -> None:
    import io

    from rich.console import Console

    quiet = io.StringIO()
    with RowProgress(200, console=Console(file=quiet)) as bar:  # StringIO is not a terminal
        bar.update()
    assert not bar.enabled and quiet.getvalue() == ""

    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=120, color_system=None)
    with RowProgress(200, initial=10, console=console) as bar:
        for _ in range(50):
            bar.update()
        bar.update(cached=True)
        bar.update(error=True)
    text = screen.getvalue()
    assert bar.enabled and "62/200" in text and "1 cached, 1 errors" in text and "rows/s" in text and "ETA" in text


TAGGED = """\
version: 1
name: tagged
mode: completion
inputs: {n: {type: integer}, tag: {type: string, default: none}}
template: "item {{ tag }} {{ n }}"
output: {type: text}
"""


def test_input_flags_set_an_input_for_every_row_and_rows_win(tmp_path: Path) -> None:
    data = DataFile(write_jsonl(tmp_path / "d.jsonl", [{"n": 1}, {"n": 2, "tag": "own"}]))
    seen: list[str] = []

    class Recorder(SlowRemote):
        def stream(self, prompt: Prompt, options: GenerationOptions,
                   constraint: Constraint | None = None) -> Iterator[str]:
            seen.append(prompt.text)
            yield "ok"

    lines: list[str] = []
    run_dataset(Runner(loads_spec(TAGGED), Recorder()), data, lines.append, constants={"tag": "all"})
    assert seen == ["item all 1", "item own 2"]


@pytest.mark.server
def test_remote_backend_runs_rows_concurrently_in_order(
    openai_env: Any, tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real openai backend against llama-cpp-python's server, 3 rows in flight."""
    rows = tweets(5, start=40)
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    out = tmp_path / "r.jsonl"
    code, _, err = run_cli(capsys, "--data", str(data), "--out", str(out), "-b", "openai", "--concurrency", "3")
    assert code == 0, err
    lines = read_lines(out)
    assert [x["index"] for x in lines] == list(range(5))
    assert [x["input"] for x in lines] == rows
    assert all(x["value"] in CHOICES and x["backend"] == "openai" for x in lines)
    blob = out.read_bytes() + b"".join(p.read_bytes() for p in (home / "cache").rglob("*") if p.is_file())
    assert openai_env.api_key.encode() not in blob and openai_env.api_key not in err


def test_a_full_standard_output_is_named_as_such(tmp_path: Path) -> None:
    """`promptdsl run --data F > /dev/full` said "None: cannot write results"."""
    import errno
    import io

    from promptdsl.dataset import DatasetRun
    from promptdsl.errors import InputError

    class Full(io.StringIO):
        def write(self, s: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    spec = loads_spec(ECHO)
    data = DataFile(write_jsonl(tmp_path / "d.jsonl", [{"n": 1}]))
    job = DatasetRun(spec, data, None, runner=Runner(spec, SlowRemote()), cache=False)
    with pytest.raises(InputError) as info:
        job.execute(Full())
    assert str(info.value) == "standard output: cannot write results: No space left on device"


def test_a_closed_standard_output_is_no_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Started with stdout closed (`>&-`), Python's sys.stdout is None: the final flush must not fail."""
    monkeypatch.setattr(sys, "stdout", None)
    assert main(["validate", SENTIMENT]) == 0


def test_resume_refuses_results_of_another_spec_or_model(tmp_path: Path) -> None:
    """--resume compared only the inputs, so it folded two specs' (or models') answers into one file."""
    from promptdsl.dataset import DatasetRun
    from promptdsl.errors import InputError

    data = DataFile(write_jsonl(tmp_path / "d.jsonl", [{"n": i} for i in range(6)]))
    out = tmp_path / "r.jsonl"

    def run(spec_text: str, limit: int, resume: bool, model: str = "m", fields: dict[str, str] | None = None) -> None:
        spec = loads_spec(spec_text)
        backend = SlowRemote()
        backend.model = model
        job = DatasetRun(spec, data, out, runner=Runner(spec, backend), resume=resume, limit=limit, cache=False,
                         fields=fields)
        try:
            job.execute()
        finally:
            job.close()

    run(ECHO, 2, resume=False)
    before = out.read_bytes()
    other = ECHO.replace('"item {{ n }}"', '"Item {{ n }}"')
    with pytest.raises(InputError, match=r"--resume: the results were made with another spec, or other --field"):
        run(other, 4, resume=True)
    with pytest.raises(InputError, match=r"made by slowremote with model 'm', and this run uses slowremote with 'm2'"):
        run(ECHO, 4, resume=True, model="m2")
    assert out.read_bytes() == before  # refused before anything was written
    run(ECHO, 4, resume=True)  # the same spec and model go on
    assert [x["index"] for x in read_lines(out)] == [0, 1, 2, 3]
    assert len({x["spec"] for x in read_lines(out)}) == 1


class Outage(SlowRemote):
    """A server that does not answer the rows in ``down`` (as a connection refused does)."""

    def __init__(self, down: set[int]) -> None:
        super().__init__()
        self.down = down

    def stream(self, prompt: Prompt, options: GenerationOptions, constraint: Constraint | None = None) -> Iterator[str]:
        from promptdsl.errors import BackendError, BackendErrorKind

        n = int(prompt.text.rsplit(" ", 1)[-1])
        if n in self.down:
            raise BackendError("cannot connect to http://127.0.0.1:9/v1", backend=self.name, kind=BackendErrorKind.CONNECT)
        yield f"echo {n}"


def test_a_server_that_stops_answering_stops_the_run_resumably(tmp_path: Path) -> None:
    """Three rows in a row that cannot reach the server stop the run without writing them, so
    --resume redoes them (a plugin-level fail-fast used to turn a short restart into error lines)."""
    data = DataFile(write_jsonl(tmp_path / "d.jsonl", [{"n": i} for i in range(10)]))
    spec = loads_spec(ECHO)
    out = tmp_path / "r.jsonl"
    with out.open("w", encoding="utf-8") as f:
        summary = run_dataset(Runner(spec, Outage(set(range(2, 10)))), data, f.write, concurrency=2)
    assert summary.server_down is not None and summary.server_down.row.index == 4
    assert [x["index"] for x in read_lines(out)] == [0, 1] and summary.rows == 2
    done = scan_output(out)
    with out.open("a", encoding="utf-8") as f:
        rest = run_dataset(Runner(spec, Outage(set())), data, f.write, concurrency=2, skip=done)
    assert rest.server_down is None and rest.ok == 8
    assert [x["value"] for x in read_lines(out)] == [f"echo {i}" for i in range(10)]


def test_a_short_outage_is_error_lines_and_the_run_goes_on(tmp_path: Path) -> None:
    data = DataFile(write_jsonl(tmp_path / "d.jsonl", [{"n": i} for i in range(8)]))
    lines: list[str] = []
    summary = run_dataset(Runner(loads_spec(ECHO), Outage({3, 4, 7})), data, lines.append, concurrency=2)
    got = [json.loads(x) for x in lines]
    assert [x["index"] for x in got] == list(range(8)) and summary.server_down is None
    assert [i for i, x in enumerate(got) if "error" in x] == [3, 4, 7] and summary.errors == 3


def test_the_cli_says_the_server_is_down_and_how_to_go_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import promptdsl.cli.dataset as cli_dataset

    spec_file = tmp_path / "echo.yaml"
    spec_file.write_text(ECHO, encoding="utf-8")
    monkeypatch.setattr(cli_dataset, "runner_from_args",
                        lambda spec, args: Runner(spec, Outage(set(range(10)))))
    data = write_jsonl(tmp_path / "d.jsonl", [{"n": i} for i in range(10)])
    out = tmp_path / "r.jsonl"
    assert main(["run", str(spec_file), "--data", str(data), "--out", str(out), "--no-cache"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-2].startswith(f"promptdsl: error: {data}: line 3 (row 2): ") and "cannot connect" in err[-2]
    assert err[-1] == (f"promptdsl: stopped at row 2: 3 rows in a row could not reach the server, so they were "
                       f"not written; 0 rows done before; results in {out}; once it answers, run the same "
                       "command with --resume")
    assert out.read_text(encoding="utf-8") == ""


def test_a_run_whose_results_would_go_to_a_closed_stdout_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With `>&-` the answer went nowhere, with exit 0."""
    monkeypatch.setattr(sys, "stdout", None)
    assert main(["run", SENTIMENT, "-i", "text=hi"]) == 2
    assert "standard output is closed, so the results would be lost" in capsys.readouterr().err


def test_failure_reasons_show_a_single_other_reason_itself(capsys: pytest.CaptureFixture[str]) -> None:
    """'1 more failed for 1 other reason(s)' named a reason it could have shown."""
    from collections import Counter

    from promptdsl.cli.dataset import report_reasons
    from promptdsl.dataset import Summary

    report_reasons(Summary(reasons=Counter({"a": 4, "b": 3, "c": 2, "d": 1})))
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1] == "promptdsl: 1 row failed: d" and len(lines) == 4
    report_reasons(Summary(reasons=Counter({"a": 5, "b": 4, "c": 3, "d": 2, "e": 1})))
    assert capsys.readouterr().err.splitlines()[-1] == "promptdsl: 3 more rows failed for 2 other reasons"


@pytest.mark.parametrize("command", ["run", "eval"])
def test_concurrency_has_a_ceiling_said_before_any_file_is_made(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--concurrency 100000 started a thread per row in flight: minutes of stalling, then a
    "can't start new thread" traceback and an empty --out left behind."""
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "a", "label": "positive"}\n', encoding="utf-8")
    out = tmp_path / "o.jsonl"
    extra = ["--label", "label"] if command == "eval" else []
    with pytest.raises(SystemExit) as exited:  # argparse's own exit, as for any bad flag
        main([command, str(ROOT / "specs" / "sentiment.yaml"), "--data", str(data), "--out", str(out),
              "--concurrency", "100000", *extra])
    code, err = exited.value.code, capsys.readouterr().err
    assert code == 2 and "--concurrency: at most 256 rows in flight, got 100,000" in err and "Traceback" not in err
    assert not out.exists()


_SLOW_CLI = """
import sys, time
from promptdsl import Backend, Capability, registry

class Slow(Backend):
    name = "slow"
    capabilities = frozenset({Capability.CHAT, Capability.COMPLETION})

    def stream(self, prompt, options, constraint=None):
        time.sleep(0.1)
        yield "ok"

registry.backend_class = lambda name: Slow
from promptdsl.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("command", ["run", "eval"])
def test_sigterm_stops_a_dataset_run_as_ctrl_c_does_with_a_line_saying_how_to_resume(
    command: str, tmp_path: Path
) -> None:
    """`kill`, `timeout`, systemd and CI cancellation send SIGTERM: the run died silently (exit 143, no
    line saying how to resume). Now it ends the row in flight, says so, and exits 143."""
    spec = tmp_path / "s.yaml"
    spec.write_text("version: 1\nname: s\ninputs: {text: {type: string}}\ntemplate: '{{ text }}'\n"
                    "output: {type: choice, choices: [ok, no], method: generate}\n", encoding="utf-8")
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": f"t{i}", "label": "ok"}) + "\n" for i in range(200)), encoding="utf-8")
    out = tmp_path / "o.jsonl"
    extra = ["--label", "label"] if command == "eval" else []
    args = [command, str(spec), "--data", str(data), "--out", str(out), "--no-cache", "-b", "slow", *extra]
    env = {**os.environ, "PROMPTDSL_HOME": str(tmp_path / "home")}
    child = subprocess.Popen([sys.executable, "-c", _SLOW_CLI, *args], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out.exists() and out.read_text(encoding="utf-8").count("\n") >= 3):
        time.sleep(0.05)
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 143, err
    assert "promptdsl: interrupted by SIGTERM after" in err and "--resume" in err and "Traceback" not in err
    text = out.read_text(encoding="utf-8")
    assert text.endswith("\n") and 3 <= text.count("\n") < 200


@pytest.mark.parametrize("command", ["run", "eval"])
def test_out_dash_is_refused_not_a_file_named_dash(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "a", "label": "positive"}\n', encoding="utf-8")
    extra = ["--label", "label"] if command == "eval" else []
    code = main([command, str(ROOT / "specs" / "sentiment.yaml"), "--data", str(data), "--out", "-", *extra])
    assert code == 2 and "--out - is no file name" in capsys.readouterr().err
    assert not (tmp_path / "-").exists()
