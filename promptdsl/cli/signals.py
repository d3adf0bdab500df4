"""Termination signals handled like Ctrl+C, so a supervisor's stop is as graceful as the user's.

``kill PID``, ``timeout``, systemd, Docker and Kubernetes stop a process with SIGTERM; closing its
terminal sends SIGHUP. Python's default for both is to die on the spot, with no checkpoint saved and
no closing line. Wrap a long command in :func:`interrupt_on_term` and they do what Ctrl+C does::

    with interrupt_on_term() as received, stop_on_sigint(stop):
        ...  # a SIGTERM here sets ``stop`` (stop_on_sigint's first Ctrl+C), a second one raises KeyboardInterrupt
    return received.exit_code(130)  # 143 after SIGTERM, 129 after SIGHUP, else 130
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

#: The signals treated like Ctrl+C: SIGTERM, and SIGHUP where the platform has it (not Windows).
TERM_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)
)


@dataclass
class Received:
    """Which termination signal arrived while :func:`interrupt_on_term` was active (None: none did)."""

    signum: int | None = None

    @property
    def name(self) -> str | None:
        """``"SIGTERM"`` or ``"SIGHUP"``; None when no such signal arrived."""
        return None if self.signum is None else signal.Signals(self.signum).name

    def exit_code(self, default: int = 130) -> int:
        """The shell's code for death by the signal (128 + its number: 143 for SIGTERM, 129 for
        SIGHUP) when one arrived, else ``default`` (130, Ctrl+C's)."""
        return default if self.signum is None else 128 + self.signum


def _like_ctrl_c(signum: int, frame: FrameType | None) -> None:
    """Whatever Ctrl+C does at this moment: the SIGINT handler in force (Python's own raises
    KeyboardInterrupt; one such as ``stop_on_sigint``'s sets its stop event), or KeyboardInterrupt
    when SIGINT is ignored or left to the system (a background job started by a script)."""
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signum, frame)
        return
    raise KeyboardInterrupt


@contextmanager
def interrupt_on_term(callback: Callable[[int, FrameType | None], None] | None = None) -> Iterator[Received]:
    """While active, SIGTERM and SIGHUP behave like Ctrl+C; yields a :class:`Received` recording the
    last such signal that arrived (``received.signum``, ``received.exit_code(130)``).

    ``callback(signum, frame)``: what a signal does instead (it may raise, as a signal handler may).
    By default it is what Ctrl+C does when the signal arrives: the SIGINT handler in force is
    called (so a handler installed inside this block, such as ``stop_on_sigint``'s, is honoured:
    the first signal asks for a graceful stop, a second one stops at once), and
    KeyboardInterrupt is raised in the main thread when SIGINT has no Python handler.

    The previous handlers are restored on exit, even when the block raises. A signal ignored when
    the block starts (SIGHUP under ``nohup``) stays ignored. Outside the main thread (where Python
    cannot install handlers) it does nothing but yield.
    """
    received = Received()
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    act = callback or _like_ctrl_c

    def handler(signum: int, frame: FrameType | None) -> None:
        received.signum = signum
        act(signum, frame)

    previous: list[tuple[signal.Signals, Callable[[int, FrameType | None], object] | int]] = []
    try:
        for sig in TERM_SIGNALS:
            if signal.getsignal(sig) is signal.SIG_IGN:  # `nohup`: the user asked for it to be ignored
                continue
            old = signal.signal(sig, handler)
            previous.append((sig, signal.SIG_DFL if old is None else old))  # None: not set from Python
        yield received
    finally:
        for sig, old in reversed(previous):
            signal.signal(sig, old)
