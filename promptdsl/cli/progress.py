"""The progress bar of long runs, drawn with rich on stderr (only on a terminal by default)."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

#: A redraw costs ~2 ms of CPU on its own thread, and on a machine whose cores all run llama.cpp
#: threads (which wait for each other) that stalls the model: rich's default of 10 a second
#: would cost a dataset run ~2%; twice a second is enough for a row counter.
REFRESHES_PER_SECOND = 2


def format_duration(seconds: float) -> str:
    """``42s``, ``3m07s``, ``1h02m``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class RowProgress:
    """Counts finished rows (cached and failed ones too) on a rich progress bar.

    ``enabled=None`` draws only when stderr is a terminal, so logs and pipes stay clean.
    Implements :class:`promptdsl.dataset.ProgressSink`.
    """

    def __init__(
        self,
        total: int | None,
        *,
        initial: int = 0,
        enabled: bool | None = None,
        description: str = "rows",
        console: Console | None = None,
    ) -> None:
        console = console or Console(stderr=True)
        self.enabled = console.is_terminal if enabled is None else enabled
        self.cached = 0
        self.errors = 0
        self._progress = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[extra]}"),
            console=console,
            disable=not self.enabled,
            transient=False,
            refresh_per_second=REFRESHES_PER_SECOND,
        )
        self._task: TaskID = self._progress.add_task(description, total=total, completed=initial, rate="", extra="")
        self._initial = initial

    def __enter__(self) -> RowProgress:
        self._progress.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self._progress.stop()

    def update(self, n: int = 1, *, cached: bool = False, error: bool = False) -> None:
        self.cached += n if cached else 0
        self.errors += n if error else 0
        extra = []
        if self.cached:
            extra.append(f"{self.cached} cached")
        if self.errors:
            extra.append(f"{self.errors} errors")
        task = self._progress.tasks[0]
        elapsed = task.elapsed or 0.0
        done = task.completed + n - self._initial
        rate = f"{done / elapsed:.1f} rows/s" if elapsed > 0 else ""
        total = task.total
        if total is not None and task.completed + n > total:  # the count was short (a CSV with a stray quote)
            total = task.completed + n
        self._progress.update(self._task, total=total, advance=n, rate=rate, extra=", ".join(extra))
