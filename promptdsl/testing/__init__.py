"""Conformance kit: check any backend plugin against the backend contract.

For plugin authors::

    from promptdsl.testing import check_backend
    report = check_backend(lambda: MyBackend("my-model", {}))
    print(report)          # one line per check: PASS / FAIL / SKIP
    assert report.ok, report.failures

or, in a pytest suite, subclass :class:`promptdsl.testing.suite.BackendConformance`
(one test per check), or run ``python -m promptdsl.testing BACKEND``.

What is checked (see :mod:`promptdsl.testing.checks`): well-formed
capabilities; streaming equals non-streaming text at temperature 0; max_tokens
and stop sequences are honoured; ``score`` agrees with the model's own
log-probabilities during generation; output constrained to a JSON Schema or to
choices is valid; closing a stream early releases the backend; failures are
``BackendError`` and the backend recovers from them. A check whose capability
the backend does not declare is skipped, never failed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from ..backend import Backend
from .checks import CHECKS, CheckFailed, Kit, KitPrompts, NotApplicable

__all__ = [
    "CHECKS",
    "CheckResult",
    "ConformanceReport",
    "KitPrompts",
    "check_backend",
    "run_check",
]

Status = Literal["pass", "fail", "skip"]
DEFAULT_TIMEOUT = 120.0


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check."""

    name: str
    status: Status
    detail: str
    seconds: float = 0.0
    #: the check never finished: its requests still run in a thread, so later checks are not run
    timed_out: bool = False

    def __str__(self) -> str:
        return f"{self.status.upper():4}  {self.name}: {self.detail} ({self.seconds:.2f}s)"


@dataclass
class ConformanceReport:
    """All check results for one backend; ``ok`` when nothing failed."""

    backend: str
    model: str
    results: list[CheckResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == "fail"]

    def __str__(self) -> str:
        head = f"conformance of backend '{self.backend}' (model {self.model}):"
        counts = {s: sum(r.status == s for r in self.results) for s in ("pass", "fail", "skip")}
        tail = f"{counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped"
        return "\n".join([head, *(f"  {r}" for r in self.results), tail])


def run_check(
    backend: Backend, name: str, *, prompts: KitPrompts | None = None, timeout: float = DEFAULT_TIMEOUT
) -> CheckResult:
    """Run one check by name, bounded in time; never raises for a misbehaving backend."""
    check = CHECKS[name]
    kit = Kit(backend, prompts or KitPrompts())
    outcome: list[CheckResult] = []
    start = time.perf_counter()

    def target() -> None:
        try:
            detail, status = check(kit), "pass"
        except NotApplicable as exc:
            detail, status = str(exc), "skip"
        except CheckFailed as exc:
            detail, status = str(exc), "fail"
        except Exception as exc:  # a plugin may raise anything; that is itself a failure
            detail, status = f"raised {type(exc).__name__}: {exc}", "fail"
        except SystemExit as exc:  # a plugin may not end the process it runs in
            detail, status = f"called sys.exit({exc.code!r})", "fail"
        outcome.append(CheckResult(name, status, detail, time.perf_counter() - start))  # type: ignore[arg-type]

    worker = threading.Thread(target=target, name=f"conformance-{name}", daemon=True)
    worker.start()
    worker.join(timeout)
    if not outcome:
        return CheckResult(name, "fail", f"did not finish within {timeout:g}s (a hung request?)", timeout,
                           timed_out=True)
    return outcome[0]


def stuck_since(check: str) -> str:
    """Why a check after one that timed out is not run (every one would wait as long)."""
    return f"not run: the backend is stuck since {check}"


def check_backend(
    backend: Backend | Callable[[], Backend],
    *,
    checks: Iterable[str] | None = None,
    prompts: KitPrompts | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> ConformanceReport:
    """Run the conformance checks on a backend (or a factory that makes one, closed afterwards)."""
    names = list(CHECKS if checks is None else checks)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise ValueError(f"unknown check(s) {unknown}; known: {list(CHECKS)}")
    owned = not isinstance(backend, Backend)
    instance = backend() if not isinstance(backend, Backend) else backend
    try:
        model = str(instance.model_id)
    except (Exception, SystemExit) as exc:  # the report still comes, and says so
        model = f"? (model_id raised {type(exc).__name__}: {exc})"
    report = ConformanceReport(instance.name, model)
    stuck: str | None = None  # the check after which the backend never answered
    try:
        for name in names:
            if stuck is not None:
                report.results.append(CheckResult(name, "skip", stuck_since(stuck), 0.0))
                continue
            result = run_check(instance, name, prompts=prompts, timeout=timeout)
            report.results.append(result)
            if result.timed_out:
                stuck = name
    finally:
        if owned:
            instance.close()
    return report
