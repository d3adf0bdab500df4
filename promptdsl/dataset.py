"""Dataset runs: one spec over every row of a JSONL or CSV file, streamed end to end.

Rows are read lazily and each result is written (and flushed) as soon as it is ready, in
row order, so memory stays flat however long the file is and an interrupted run leaves only
whole lines behind. ``--resume`` reads the output back, repairs a cut-off last line and skips
the rows already there. A bad row (invalid JSON, an input that breaks its schema) becomes an
error line, or stops the run, as ``--on-error`` says. Deterministic answers come from the
result cache when they can; remote backends run several rows at once, keeping the order.
"""

from __future__ import annotations

import functools
import io
import itertools
import json
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol, TypeVar

from .datafile import (
    DataFile,
    Existing,
    OutputLock,
    Row,
    check_resume,
    check_resumed_row,
    field_for,
    row_inputs,
    scan_output,
)
from .errors import (
    BackendError,
    BackendErrorKind,
    InputError,
    OutputError,
    PromptDSLError,
    did_you_mean,
    field_list,
    one_line,
)
from .prompt import Prompt
from .result import Result
from .runner import Runner
from .spec import Method, Spec

if TYPE_CHECKING:  # the cache (sqlite3, platformdirs) and futures (7 ms) load with the first run that needs them
    from concurrent.futures import Future

    from .cache import ResultCache

_T = TypeVar("_T")

#: Concurrent requests for backends that are not in-process (see ``Backend.local``).
DEFAULT_REMOTE_CONCURRENCY = 4
ON_ERROR = ("skip", "stop")
#: Rows in a row that could not reach the server before a dataset run stops (resumably).
SERVER_DOWN_ROWS = 3
_UNREACHABLE = frozenset({BackendErrorKind.CONNECT, BackendErrorKind.TIMEOUT})
SPEC_KEY = "spec"  # the run digest on every result line (see run_digest)
#: Rows scored together on a local model (``Backend.score_many``); results are still written row by row.
DEFAULT_BATCH_ROWS = 16


# ============================================================================ running rows


@dataclass
class Outcome:
    """One row's result, or why it failed."""

    row: Row
    result: Result | None = None
    error: str | None = None
    error_type: str | None = None
    exit_code: int = 0
    backend: str = ""
    model: str = ""
    unreachable: bool = False  # the backend could not reach its server (cannot connect, timed out)

    @property
    def ok(self) -> bool:
        return self.result is not None

    @property
    def reason(self) -> str:
        """Why the row failed, without which row: equal reasons group together in a report."""
        return (self.error or "").removeprefix(f"{self.row.where()}: ")

    def to_dict(self) -> dict[str, Any]:
        """The result line (contract §4): index, the result's fields (or error), the input."""
        out: dict[str, Any] = {"index": self.row.index}
        if self.result is not None:
            out.update(self.result.to_dict())
        else:
            out["error"] = self.error
            out["error_type"] = self.error_type
            out["backend"] = self.backend
            out["model"] = self.model
        out["input"] = self.row.data
        return out


def _error_type(exc: PromptDSLError) -> str:
    for cls, name in ((InputError, "input"), (OutputError, "output"), (BackendError, "backend")):
        if isinstance(exc, cls):
            return name
    return "error"


class DatasetRunner:
    """Turns rows into outcomes, in row order: validate, compile, cache, then the model.

    With ``concurrency > 1`` model calls run in a thread pool, at most ``concurrency`` at
    a time, while everything else (reading, the cache, writing) stays in the calling thread.
    ``stop`` (an Event) makes it finish the rows in flight and read no more. With one row at a
    time, rows scored on a local model go to it ``batch`` at a time.
    """

    def __init__(
        self,
        runner: Runner,
        *,
        fmt: str = "jsonl",
        cache: ResultCache | None = None,
        concurrency: int = 1,
        constants: Mapping[str, Any] | None = None,
        stop: threading.Event | None = None,
        fields: Mapping[str, str] | None = None,
        batch: int = DEFAULT_BATCH_ROWS,
    ) -> None:
        self.fields = dict(fields or {})  # input name -> data field (--field INPUT=FIELD)
        self.runner = runner
        self.batch = batch
        self.spec = runner.spec
        self.fmt = fmt
        from .cache import CachedRunner

        self.cached = CachedRunner(runner, cache) if cache is not None else None
        self.concurrency = max(1, concurrency)
        self.constants = dict(constants or {})
        self.stop = stop or threading.Event()

    # -------------------------------------------------------------- one row, in steps

    def _fail(self, row: Row, message: str, kind: str, exit_code: int) -> Outcome:
        return Outcome(row, None, one_line(message), kind, exit_code, self.runner.backend.name, self.runner.model_id)

    def _prepare(self, row: Row) -> Outcome | tuple[Row, Prompt, dict[str, Any]]:
        """An Outcome when the row is already decided (bad row, cache hit), else what to run."""
        if row.error is not None:
            return self._fail(row, f"{row.where()}: {row.error}", "input", 2)
        missing = self._missing(row.data)
        if missing:
            return self._fail(row, f"{row.where()}: {missing}", "input", 2)
        try:
            inputs = row_inputs(self.spec, row, self.fmt, self.fields)
            values, prompt = self.runner.prepare({**self.constants, **inputs})
        except PromptDSLError as exc:
            return self._fail(row, f"{row.where()}: {exc}", _error_type(exc), exc.exit_code)
        if self.cached is not None:
            hit = self.cached.lookup(prompt)
            if hit is not None:
                return Outcome(row, hit)
        return row, prompt, values

    def _missing(self, data: Mapping[str, Any]) -> str | None:
        """Say which required input has no field in the row (a typo in a column name, say)."""
        names = list(map(str, data))
        found = _unmatched_input(self.spec, names, self.fields, self.constants)
        if found is None:
            return None
        return f"no field for {found}; the row has: {field_list(names)}"

    def _call(self, prompt: Prompt, values: dict[str, Any]) -> Result | PromptDSLError:
        try:
            return self.runner.respond(values, prompt).result()
        except PromptDSLError as exc:
            return exc

    def _finish(self, row: Row, prompt: Prompt, got: Result | PromptDSLError) -> Outcome:
        if isinstance(got, PromptDSLError):
            failed = self._fail(row, f"{row.where()}: {got}", _error_type(got), got.exit_code)
            failed.unreachable = isinstance(got, BackendError) and got.kind in _UNREACHABLE
            return failed
        if self.cached is not None:
            self.cached.store(prompt, got)
        return Outcome(row, got)

    # -------------------------------------------------------------- all rows

    def outcomes(self, rows: Iterable[Row]) -> Iterator[Outcome]:
        if self.concurrency == 1:
            return self._sequential(rows)
        return self._concurrent(rows)

    def _sequential(self, rows: Iterable[Row]) -> Iterator[Outcome]:
        if self.batch > 1 and self.runner.method is Method.SCORE and self.runner.backend.scores_together:
            yield from self._batched(rows)
            return
        for row in rows:
            step = self._prepare(row)
            if isinstance(step, Outcome):
                yield step
            else:
                row, prompt, values = step
                yield self._finish(row, prompt, self._call(prompt, values))
            if self.stop.is_set():
                return

    def _batched(self, rows: Iterable[Row]) -> Iterator[Outcome]:
        """Rows to score go to the model ``batch`` at a time (one llama.cpp decode for several rows)."""
        steps: list[Outcome | tuple[Row, Prompt, dict[str, Any]]] = []

        def flush() -> Iterator[Outcome]:
            todo = [s for s in steps if not isinstance(s, Outcome)]
            try:
                got = self.runner.respond_many([(values, prompt) for _, prompt, values in todo]) if todo else []
            except PromptDSLError as exc:
                got = [exc] * len(todo)
            results = iter(got)
            for step in steps:
                yield step if isinstance(step, Outcome) else self._finish(step[0], step[1], next(results))
            steps.clear()

        for row in rows:
            steps.append(self._prepare(row))
            if sum(not isinstance(s, Outcome) for s in steps) >= self.batch:
                yield from flush()
            if self.stop.is_set():
                break
        yield from flush()

    def _concurrent(self, rows: Iterable[Row]) -> Iterator[Outcome]:
        window = 2 * self.concurrency  # queued + running: keeps the pool busy while the head waits
        pending: deque[Outcome | tuple[Row, Prompt, Future[Result | PromptDSLError]]] = deque()
        pool = _DaemonPool(self.concurrency, "promptdsl-row")

        def resolve(item: Outcome | tuple[Row, Prompt, Future[Result | PromptDSLError]]) -> Outcome:
            if isinstance(item, Outcome):
                return item
            row, prompt, future = item
            return self._finish(row, prompt, future.result())

        try:
            for row in rows:
                step = self._prepare(row)
                if isinstance(step, Outcome):
                    pending.append(step)
                else:
                    row, prompt, values = step
                    pending.append((row, prompt, pool.submit(self._call, prompt, values)))
                while pending and (len(pending) >= window or _ready(pending[0])):
                    yield resolve(pending.popleft())
                if self.stop.is_set():
                    break
            # On stop: rows not started are dropped (a resume redoes them); started ones finish.
            while pending:
                head = pending[0]
                if self.stop.is_set() and not isinstance(head, Outcome) and head[2].cancel():
                    break
                yield resolve(pending.popleft())
        finally:
            pool.shutdown()


class _DaemonPool:
    """A thread pool whose workers do not hold up the process's exit.

    ``ThreadPoolExecutor`` joins its workers when the interpreter exits, so "Ctrl+C again to stop
    at once" waited until every request in flight had timed out (a minute or more against a
    server that stopped answering). Rows in flight are dropped on a hard stop; ``--resume`` redoes them.
    """

    def __init__(self, workers: int, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = queue.SimpleQueue()
        self._workers = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(workers)]
        for worker in self._workers:
            worker.start()

    def submit(self, fn: Callable[..., _T], *args: Any) -> Future[_T]:
        from concurrent.futures import Future

        future: Future[_T] = Future()
        self._jobs.put((future, functools.partial(fn, *args)))
        return future

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, call = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(call())
            except BaseException as exc:  # handed to whoever waits on the future, as the executor does
                future.set_exception(exc)

    def shutdown(self) -> None:
        """Cancel the rows not started and let the workers end after the ones running."""
        with suppress(queue.Empty):
            while True:
                job = self._jobs.get_nowait()
                if job is not None:
                    job[0].cancel()
        for _ in self._workers:
            self._jobs.put(None)


def run_digest(spec: Spec, fields: Mapping[str, str], constants: Mapping[str, Any]) -> str:
    """What makes a run's prompts: the spec (less its file, tests and description), the --field
    mapping and the --input constants. Result lines carry it, so ``--resume`` can refuse to fold
    results of another spec into one file (and one accuracy)."""
    import dataclasses
    import hashlib

    skip = {"path", "source", "tests", "description"}
    parts = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec) if f.name not in skip}
    text = repr([parts, sorted(fields.items()), sorted((k, repr(v)) for k, v in constants.items())])
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


class _MadeBy:
    """What the lines of a results file say made them: spec digests, and backends with models."""

    def __init__(self) -> None:
        self.specs: set[str] = set()
        self.models: set[tuple[str, str]] = set()

    def tee(self, then: Callable[[dict[str, Any]], None] | None) -> Callable[[dict[str, Any]], None]:
        def seen(line: dict[str, Any]) -> None:
            if isinstance(line.get(SPEC_KEY), str):  # lines of older versions have none
                self.specs.add(line[SPEC_KEY])
            if isinstance(line.get("backend"), str) and isinstance(line.get("model"), str):
                self.models.add((line["backend"], line["model"]))
            if then is not None:
                then(line)

        return seen

    def check_spec(self, digest: str, out: Path) -> None:
        if self.specs - {digest}:
            raise InputError(
                "--resume: the results were made with another spec, or other --field/--input values; "
                "give a new --out, or drop --resume to start over",
                source=str(out),
            )

    def check_model(self, runner: Runner, out: Path) -> None:
        backend = runner.backend
        other = sorted(self.models - {(backend.name, runner.model_id)})
        if other:
            name, model = other[0]
            raise InputError(
                f"--resume: the results were made by {name} with model {model!r}, and this run uses "
                f"{backend.name} with {runner.model_id!r}; give a new --out, or drop --resume to start over",
                source=str(out),
            )


def _stamp(
    digest: str, then: Callable[[Outcome, dict[str, Any]], None] | None, outcome: Outcome, line: dict[str, Any]
) -> None:
    line[SPEC_KEY] = digest
    if then is not None:
        then(outcome, line)


def _below(limit: int, then: Callable[[dict[str, Any]], None], line: dict[str, Any]) -> None:
    if line["index"] < limit:
        then(line)


def _check_replaceable(out: Path) -> None:
    """A new run replaces ``--out`` only when it holds results already (an earlier run's, to redo):
    a mistyped ``--out spec.yaml`` must not wipe the spec."""
    try:
        if out.stat().st_size == 0:
            return
        scan_output(out)
    except FileNotFoundError:
        return
    except InputError:
        raise InputError(
            "--out exists and is not a promptdsl results file, so it is left alone; give a new --out "
            "(or delete the file yourself first)",
            source=str(out),
        ) from None


def _ready(item: Outcome | tuple[Row, Prompt, Future[Any]]) -> bool:
    return isinstance(item, Outcome) or item[2].done()


# ============================================================================ a whole run


@dataclass
class Summary:
    """How a dataset run went."""

    rows: int = 0  # finished in this run
    ok: int = 0
    errors: int = 0
    cached: int = 0
    truncated: int = 0  # answers max_tokens cut short (they parsed, so they are among ``ok``)
    resumed: int = 0  # already in the output before this run
    seconds: float = 0.0
    interrupted: bool = False
    stopped_by: Outcome | None = None  # the failed row that stopped the run (--on-error stop)
    server_down: Outcome | None = None  # the last of SERVER_DOWN_ROWS rows in a row the server did not answer
    reasons: Counter[str] = field(default_factory=Counter)  # why rows failed -> how many
    first_line: dict[str, int] = field(default_factory=dict)  # why rows failed -> the line of the first such row

    def top_reasons(self, n: int = 3) -> list[tuple[str, int]]:
        """The most common reasons rows failed, most frequent first."""
        return self.reasons.most_common(n)


def default_concurrency(runner: Runner) -> int:
    """1 for in-process backends (they run one request at a time anyway), else a few."""
    return 1 if runner.backend.local else DEFAULT_REMOTE_CONCURRENCY


def run_dataset(
    runner: Runner,
    data: DataFile,
    write: Callable[[str], None],
    *,
    cache: ResultCache | None = None,
    concurrency: int | None = None,
    on_error: str = "skip",
    limit: int | None = None,
    skip: Existing | None = None,
    constants: Mapping[str, Any] | None = None,
    progress: ProgressSink | None = None,
    stop: threading.Event | None = None,
    on_outcome: Callable[[Outcome, dict[str, Any]], None] | None = None,
    fields: Mapping[str, str] | None = None,
) -> Summary:
    """Run ``runner`` over ``data``, passing each result line (JSON text + newline) to ``write``.

    ``skip`` holds rows already done (``--resume``); their inputs must match the data.
    ``on_outcome`` may add keys to a line before it is written (evaluation does).
    """
    summary = Summary(resumed=sum(limit is None or i < limit for i in skip.done) if skip else 0)
    start = time.perf_counter()
    found = skip or Existing()

    def todo() -> Iterator[Row]:
        for row in data.rows():
            if limit is not None and row.index >= limit:
                return
            if not check_resumed_row(data, found, row):
                yield row

    runs = DatasetRunner(
        runner,
        fmt=data.format,
        cache=cache,
        concurrency=concurrency or default_concurrency(runner),
        constants=constants,
        stop=stop,
        fields=fields,
    )

    def emit(outcome: Outcome) -> None:
        line = outcome.to_dict()
        if on_outcome is not None:
            on_outcome(outcome, line)
        write(json.dumps(line, ensure_ascii=False) + "\n")
        summary.rows += 1
        summary.ok += outcome.ok
        summary.errors += not outcome.ok
        if not outcome.ok:
            summary.reasons[outcome.reason] += 1
            summary.first_line.setdefault(outcome.reason, outcome.row.line)
        cached = outcome.result is not None and outcome.result.cached
        summary.cached += cached
        summary.truncated += outcome.result is not None and outcome.result.truncated is not None
        if progress is not None:
            progress.update(cached=cached, error=not outcome.ok)

    # Rows the server did not answer (cannot connect, timed out) are held back: after
    # SERVER_DOWN_ROWS of them in a row the run stops without writing them, so --resume redoes
    # them once the server is back, instead of every later row paying the timeout and retries.
    held: list[Outcome] = []
    try:
        for outcome in runs.outcomes(todo()):
            if not outcome.ok and on_error == "stop":
                summary.stopped_by = outcome
                break
            if outcome.unreachable:
                held.append(outcome)
                if len(held) >= SERVER_DOWN_ROWS:
                    summary.server_down = outcome
                    break
                continue
            for earlier in held:
                emit(earlier)
            held.clear()
            emit(outcome)
        else:
            if not (stop and stop.is_set()):
                for earlier in held:  # the last rows of a finished run: failures like any other
                    emit(earlier)
    except KeyboardInterrupt:
        summary.interrupted = True
    summary.interrupted = summary.interrupted or bool(stop and stop.is_set())
    summary.seconds = time.perf_counter() - start
    return summary


class ProgressSink(Protocol):
    """What a dataset run reports each finished row to (the CLI draws a bar from it)."""

    def update(self, n: int = 1, *, cached: bool = False, error: bool = False) -> None: ...


#: Field names a did-you-mean compares against: a row of 250,000 fields made each check sort and
#: compare them all (25 s before the run).
MAX_NAMES_COMPARED = 1000


def _unmatched_input(
    spec: Spec, names: Collection[str], fields: Mapping[str, str], constants: Mapping[str, Any], *, hint: bool = True
) -> str | None:
    """The first required input that none of ``names`` (a row's fields, a CSV header) supplies, as
    "input 'x'" with did-you-mean and the --field that would map it; None when all are there."""
    for name, schema in spec.inputs.items():
        source = field_for(name, fields)
        if source in names or name in constants or "default" in schema:
            continue
        what = f"input '{name}'" if source == name else f"input '{name}' (--field {name}={source})"
        if not hint:
            return what
        close = did_you_mean(source, itertools.islice(names, MAX_NAMES_COMPARED))
        if close and source == name:
            close += f"; map it with --field {name}={close.split(chr(39))[1]}"
        elif source == name:
            close = f" (map a field to it with --field {name}=FIELD)"
        return what + close
    return None


#: JSONL rows looked at before a run for the fields its inputs need.
SCAN_ROWS = 100


def _check_columns(spec: Spec, data: DataFile, fields: Mapping[str, str], constants: Mapping[str, Any]) -> None:
    """A CSV header without a column for a required input, or JSONL whose first rows all lack its
    field, fails now, in one line: otherwise every row would fail alike, after the model loaded."""
    if data.path is None:
        return
    if data.format != "csv":
        _check_fields(spec, data, fields, constants)
        return
    header = data.header()
    found = _unmatched_input(spec, header, fields, constants) if header else None
    if header and found is not None:
        raise InputError(f"line 1: no column for {found}; the header has: {field_list(header)}", source=data.name)


def _check_fields(spec: Spec, data: DataFile, fields: Mapping[str, str], constants: Mapping[str, Any]) -> None:
    """JSONL: a required input that none of the first :data:`SCAN_ROWS` rows has a field for."""
    found: str | None = None  # what the rows so far lack
    names: set[str] = set()
    seen = first = 0
    for names, count, line in data.fields_seen(SCAN_ROWS):
        seen, first = count, first or line
        found = _unmatched_input(spec, names, fields, constants, hint=False)  # the message is made once, below
        if found is None:
            return
    if found is not None:
        ordered = sorted(names)
        found = _unmatched_input(spec, ordered, fields, constants)
        shown = field_list(ordered)
        if seen == 1:
            raise InputError(f"line {first}: no field for {found}; the row has: {shown}", source=data.name)
        raise InputError(f"none of the first {seen} rows has a field for {found}; their fields: {shown}",
                         source=data.name)


class DatasetRun:
    """One dataset run with plain parameters: checked up front, then executed.

    The constructor checks the data and output files before the runner is built (pass it as
    a callable and bad usage costs no model load); ``execute`` opens the output, runs every row and returns the
    :class:`Summary`. Results go to ``out`` when given, else to the ``sink`` passed to
    ``execute`` (or nowhere). Nothing here prints: ``notices`` holds what a front end
    may want to tell the user (a repaired results file, say).
    """

    def __init__(
        self,
        spec: Spec,
        data: DataFile,
        out: Path | None = None,
        *,
        runner: Runner | Callable[[], Runner] | None = None,
        resume: bool = False,
        on_error: str = "skip",
        cache: bool = True,
        concurrency: int | None = None,
        limit: int | None = None,
        constants: Mapping[str, Any] | None = None,
        on_resumed_line: Callable[[dict[str, Any]], None] | None = None,
        fields: Mapping[str, str] | None = None,
        on_cache_problem: Callable[[str], None] | None = None,
    ) -> None:
        if on_error not in ON_ERROR:
            raise InputError(f"on_error must be one of {', '.join(ON_ERROR)}, not {on_error!r}")
        if resume and out is None:
            raise InputError("--resume needs --out (the results file to continue)")
        self.constants = dict(constants or {})
        for name in self.constants:
            if name not in spec.inputs:
                known = ", ".join(spec.inputs) or "none"
                raise InputError(f"unknown input '{name}'{did_you_mean(name, spec.inputs)}; the spec's inputs: {known}")
        if out is not None:
            if out.suffix.lower() in (".csv", ".tsv", ".yaml", ".yml"):  # a reader would choke on JSON lines
                raise InputError(f"--out writes JSON lines, not {out.suffix[1:].upper()}; give it a .jsonl name",
                                 source=str(out))
            if out.exists() and not out.is_file():
                raise InputError("--out is not a file", source=str(out))
            if not out.parent.exists():
                raise InputError(f"--out: directory {out.parent} does not exist", source=str(out))
            if data.path is not None and out.exists() and out.resolve() == data.path.resolve():
                raise InputError("--out is the dataset itself; give another file", source=str(out))
        if data.path is not None and not data.has_rows():
            if data.format == "csv":
                what = "no rows below its header" if data.header() is not None else "no rows (the file is empty)"
            else:
                what = "no rows (the file is empty)" if data.path.stat().st_size == 0 else "no rows (only blank lines)"
            raise InputError(f"the dataset has {what}", source=data.name)
        _check_columns(spec, data, fields or {}, self.constants)
        self.data = data
        self.out = out
        self.on_error = on_error
        self.concurrency = concurrency
        self.limit = limit
        self.fields = dict(fields or {})
        self.notices: list[str] = []
        # The lock comes first: a second run on the same --out is refused before anything is read or
        # changed, and the file is truncated or repaired only in execute(), after every check passed.
        self.lock = OutputLock(out) if out is not None else None
        self.digest = run_digest(spec, self.fields, self.constants)
        made_by = _MadeBy()
        try:
            on_line = on_resumed_line
            if on_resumed_line is not None and limit is not None:  # rows past --limit are not this run's
                on_line = functools.partial(_below, limit, on_resumed_line)
            self.skip = scan_output(out, made_by.tee(on_line)) if resume and out is not None else None
            if not resume and out is not None:
                _check_replaceable(out)
            if self.skip is not None:
                assert out is not None
                made_by.check_spec(self.digest, out)  # before the model loads
                check_resume(data, self.skip, limit)
            if runner is None:
                runner = Runner(spec)
            # Built last: a callable defers loading a model until every file checked out.
            self.runner = runner if isinstance(runner, Runner) else runner()
            if self.skip is not None:
                assert out is not None
                made_by.check_model(self.runner, out)
        except BaseException:
            self.close()
            raise
        from .cache import ResultCache

        self.cache = ResultCache(on_problem=on_cache_problem) if cache else None

    def close(self) -> None:
        """Release --out (and remove it if this run created it and never wrote to it)."""
        if self.lock is not None:
            self.lock.close()

    @property
    def resumed(self) -> int:
        """Rows already in the output before this run."""
        return len(self.skip.done) if self.skip else 0

    def total(self) -> int | None:
        """Rows this run will cover (resumed ones included), when the data can be counted."""
        total = self.data.count()
        if total is not None and self.limit is not None:
            total = min(total, self.limit)
        return total

    def execute(
        self,
        sink: IO[str] | None = None,
        *,
        on_outcome: Callable[[Outcome, dict[str, Any]], None] | None = None,
        progress: ProgressSink | None = None,
        stop: threading.Event | None = None,
    ) -> Summary:
        """Open the output, run every row, close everything; return the summary."""
        try:
            if self.lock is not None:
                out: IO[str] = self.lock.open(self.skip)
                if self.skip is not None and self.skip.repaired:
                    self.notices.append(f"{self.out}: removed a half-written last line; that row runs again")
            else:
                out = sink if sink is not None else _Discard()
            try:

                def write(line: str) -> None:
                    try:
                        out.write(line)
                        out.flush()
                    except BrokenPipeError:
                        raise
                    except OSError as exc:
                        where = "standard output" if self.out is None else str(self.out)
                        raise InputError(f"cannot write results: {exc.strerror}", source=where) from None

                summary = run_dataset(
                    self.runner,
                    self.data,
                    write,
                    cache=self.cache,
                    concurrency=self.concurrency,
                    on_error=self.on_error,
                    limit=self.limit,
                    skip=self.skip,
                    constants=self.constants,
                    progress=progress,
                    stop=stop,
                    on_outcome=functools.partial(_stamp, self.digest, on_outcome),
                    fields=self.fields,
                )
            except BaseException:
                if self.lock is not None:
                    with suppress(OSError):  # a full disk fails the close too: the first error is the one to show
                        out.close()
                raise
            if self.lock is not None:
                try:
                    out.close()
                except OSError as exc:
                    raise InputError(f"cannot write results: {exc.strerror}", source=str(self.out)) from None
            return summary
        finally:
            if self.cache is not None:
                self.cache.close()
            self.close()


class _Discard(io.StringIO):
    def write(self, text: str) -> int:
        return len(text)
