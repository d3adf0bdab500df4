"""promptdsl.cli.signals: SIGTERM and SIGHUP treated like Ctrl+C while a command runs."""

from __future__ import annotations

import gc
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

import pytest

from promptdsl.cli.signals import TERM_SIGNALS, Received, interrupt_on_term


@pytest.fixture(autouse=True)
def _no_gc() -> Iterator[None]:
    """A KeyboardInterrupt raised by a handler must not land in a gc callback (it would be lost)."""
    gc.disable()
    yield
    gc.enable()


def _wait() -> None:
    threading.Event().wait(0.05)  # the handler runs in the main thread, at the next bytecode


def _handlers() -> dict[int, object]:
    return {s: signal.getsignal(s) for s in (signal.SIGINT, *TERM_SIGNALS)}


@pytest.mark.parametrize("sig", TERM_SIGNALS)
def test_a_term_signal_raises_keyboard_interrupt_and_is_recorded(sig: signal.Signals) -> None:
    before = _handlers()
    with pytest.raises(KeyboardInterrupt), interrupt_on_term() as received:
        os.kill(os.getpid(), sig)
        _wait()
    assert received.signum == sig and received.name == sig.name and received.exit_code() == 128 + sig
    assert _handlers() == before


def test_nothing_received_keeps_the_default_exit_code() -> None:
    with interrupt_on_term() as received:
        pass
    assert received == Received() and received.name is None
    assert received.exit_code() == 130 and received.exit_code(1) == 1


def test_the_sigint_handler_in_force_decides_what_a_term_signal_does() -> None:
    """Inside a graceful Ctrl+C handler (stop at the end of the row), SIGTERM asks for the same stop."""
    from promptdsl.cli.dataset import stop_on_sigint

    stop = threading.Event()
    r, w = os.pipe()
    saved = os.dup(2)
    os.dup2(w, 2)  # the handler's notice
    try:
        with interrupt_on_term() as received, stop_on_sigint(stop):
            os.kill(os.getpid(), signal.SIGTERM)
            _wait()
            assert stop.is_set()  # no KeyboardInterrupt: the work stops at its own pace
            with pytest.raises(KeyboardInterrupt):  # a second one stops at once, as a second Ctrl+C does
                os.kill(os.getpid(), signal.SIGTERM)
                _wait()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(w)
    os.close(r)
    assert received.name == "SIGTERM"


def test_a_callback_replaces_the_default_and_sigint_ignored_still_interrupts() -> None:
    heard: list[int] = []

    def callback(signum: int, frame: FrameType | None) -> None:
        heard.append(signum)

    with interrupt_on_term(callback) as received:
        os.kill(os.getpid(), signal.SIGTERM)
        _wait()
    assert heard == [signal.SIGTERM] and received.signum == signal.SIGTERM
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a background job started by a script
    try:
        with pytest.raises(KeyboardInterrupt), interrupt_on_term():
            os.kill(os.getpid(), signal.SIGTERM)
            _wait()
    finally:
        signal.signal(signal.SIGINT, previous)


def test_outside_the_main_thread_it_installs_nothing() -> None:
    before = _handlers()
    seen: list[Received] = []
    inside: list[object] = []

    def work() -> None:
        with interrupt_on_term() as received:
            seen.append(received)
            inside.append(_handlers())  # checked on the main thread: an assert here would only warn

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert seen and seen[0].signum is None and inside == [before]


def test_a_signal_ignored_when_it_starts_stays_ignored_as_nohup_asks() -> None:
    """`nohup promptdsl tune ...` starts with SIGHUP ignored; the handler replaced that, so logging
    out stopped the run."""
    import signal

    old = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with interrupt_on_term():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN  # the other one is still handled
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, old)
