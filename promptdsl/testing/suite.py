"""The conformance kit as a pytest suite: subclass, provide a backend, get one test per check.

::

    import pytest
    from promptdsl.testing.suite import BackendConformance

    class TestMyBackend(BackendConformance):
        @pytest.fixture(scope="class")
        @classmethod  # a class-scoped fixture is a classmethod (pytest 9 deprecates instance methods)
        def conformance_backend(cls):
            backend = MyBackend("my-model", {})
            yield backend
            backend.close()

A check the backend has no capability for is reported as skipped.
"""

from __future__ import annotations

import weakref
from typing import ClassVar

import pytest

from ..backend import Backend
from . import CHECKS, DEFAULT_TIMEOUT, KitPrompts, run_check, stuck_since

#: Backends after whose check a later one would wait in vain, and that check (forgotten with the backend).
_stuck: weakref.WeakKeyDictionary[Backend, str] = weakref.WeakKeyDictionary()


class BackendConformance:
    """Base class: override the ``conformance_backend`` fixture (and optionally the prompts)."""

    conformance_prompts: ClassVar[KitPrompts] = KitPrompts()
    conformance_timeout: ClassVar[float] = DEFAULT_TIMEOUT

    @pytest.fixture(scope="class")
    @classmethod
    def conformance_backend(cls) -> Backend:
        raise NotImplementedError("override the conformance_backend fixture in your subclass")

    @pytest.mark.parametrize("check", list(CHECKS))
    def test_conformance(self, conformance_backend: Backend, check: str) -> None:
        stuck = _stuck.get(conformance_backend)
        if stuck is not None:
            pytest.skip(stuck_since(stuck))
        result = run_check(
            conformance_backend, check, prompts=self.conformance_prompts, timeout=self.conformance_timeout
        )
        if result.timed_out:
            _stuck[conformance_backend] = check
        if result.status == "skip":
            pytest.skip(result.detail)
        assert result.status == "pass", f"{check}: {result.detail}"
