"""What ``promptdsl tune`` shows while it works: stages, a training bar, evaluation bars (rich, on stderr)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..tune import Listener
from .common import say
from .progress import RowProgress


class CliListener(Listener):
    """Stages as status lines; training steps and evaluation rows on rich progress bars."""

    def __init__(self) -> None:
        self.console = Console(stderr=True)
        self.bar: Progress | None = None
        self.task: Any = None
        self.in_training = False  # Ctrl+C then waits for the end of the step (see cli.tune)

    def stage(self, text: str) -> None:
        self.close()
        say(f"promptdsl: {text}")

    def step(self, step: int, total: int, loss: float) -> None:
        if self.bar is None:
            self.bar = Progress(
                TextColumn("step"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
                disable=not self.console.is_terminal,
            )
            self.bar.start()
            self.task = self.bar.add_task("train", total=total, completed=step, loss=f"{loss:.4f}")
        else:
            self.bar.update(self.task, completed=step, loss=f"{loss:.4f}")
        if not self.console.is_terminal and (step == total or step % 25 == 0):
            say(f"promptdsl: step {step}/{total} loss {loss:.4f}")

    def training(self, active: bool) -> None:
        self.in_training = active

    def eval_progress(self, label: str, total: int | None) -> Any:
        return _EvalBar(total, label.strip())

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


class _EvalBar(RowProgress):
    """A row progress bar that starts at once and ends with ``close()`` (what tune expects)."""

    def __init__(self, total: int | None, description: str) -> None:
        super().__init__(total, description=description)
        self.__enter__()

    def close(self) -> None:
        self.__exit__(None, None, None)
