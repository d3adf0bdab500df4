"""A one-line progress bar on stderr (count, bar, rate, ETA) for long dataset runs.

It draws only on a terminal, so logs and pipes stay clean; redraws are throttled so
a fast run (cache hits) does not spend its time printing.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO

REFRESH_SECONDS = 0.1


def format_duration(seconds: float) -> str:
    """``42s``, ``3m07s``, ``1h02m``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class Progress:
    """Counts finished items; ``enabled=None`` means "draw if the stream is a terminal"."""

    def __init__(
        self,
        total: int | None = None,
        *,
        initial: int = 0,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        label: str = "",
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.total = total
        self.initial = initial
        self.done = initial
        self.cached = 0
        self.errors = 0
        self.label = label
        self.start = time.perf_counter()
        self._last_draw = 0.0
        self._drawn = False

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @property
    def rate(self) -> float:
        """Items finished per second in this run (resumed items not counted)."""
        elapsed = self.elapsed
        return (self.done - self.initial) / elapsed if elapsed > 0 else 0.0

    def update(self, n: int = 1, *, cached: bool = False, error: bool = False) -> None:
        self.done += n
        self.cached += n if cached else 0
        self.errors += n if error else 0
        if self.enabled:
            now = time.perf_counter()
            if now - self._last_draw >= REFRESH_SECONDS:
                self._last_draw = now
                self._draw()

    def line(self, width: int = 80) -> str:
        """The text of the bar, fitted to ``width`` columns."""
        rate = self.rate
        extra = []
        if self.cached:
            extra.append(f"{self.cached} cached")
        if self.errors:
            extra.append(f"{self.errors} errors")
        tail = f" ({', '.join(extra)})" if extra else ""
        speed = f"{rate:.1f} it/s" if rate < 100 else f"{rate:.0f} it/s"
        if self.total:
            frac = min(1.0, self.done / self.total)
            remaining = max(0, self.total - self.done)
            eta = format_duration(remaining / rate) if rate > 0 else "?"
            head = f"{self.label}{self.done}/{self.total} {frac * 100:5.1f}% "
            info = f" {speed} ETA {eta}{tail}"
            bar_width = width - len(head) - len(info) - 2
            if bar_width >= 10:
                filled = int(frac * bar_width)
                return f"{head}|{'#' * filled}{'.' * (bar_width - filled)}|{info}"
            return (head + info)[:width]
        return f"{self.label}{self.done} done, {speed}, {format_duration(self.elapsed)}{tail}"[:width]

    def _draw(self) -> None:
        width = shutil.get_terminal_size((80, 20)).columns - 1
        self.stream.write("\r" + self.line(width).ljust(width))
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Draw the final state and end the line (no-op when not drawing)."""
        if self.enabled:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()

    def clear(self) -> None:
        """Erase the bar so a message can be printed on a clean line."""
        if self.enabled and self._drawn:
            width = shutil.get_terminal_size((80, 20)).columns - 1
            self.stream.write("\r" + " " * width + "\r")
            self.stream.flush()
