"""A run's result, and the lazy :class:`Response` that streams before it is one."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .backend import close_stream
from .errors import OutputError
from .spec import Method


@dataclass
class Result:
    """A parsed, validated answer plus how it was obtained (the contract's §4 JSON)."""

    value: Any
    method: Method
    raw: str
    backend: str
    model: str
    scores: dict[str, float] | None = None
    seconds: float = 0.0
    cached: bool = False
    steps: list[dict[str, Any]] | None = None  # tool calls, when the spec has tools (promptdsl.tools)
    stop_reason: str | None = None  # why the tool loop ended: answer | max_steps | denied | error
    #: the limit that stopped generation before the model's own end: ``max_tokens`` or ``context``
    truncated: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"value": self.value, "method": self.method.value, "raw": self.raw}
        if self.scores is not None:  # a choice that cannot follow the prompt (-inf) is null: JSON has no -Infinity
            out["scores"] = {k: v if math.isfinite(v) else None for k, v in self.scores.items()}
        out["backend"] = self.backend
        out["model"] = self.model
        out["timing"] = {"seconds": round(self.seconds, 4), "cached": self.cached}
        if self.steps is not None:
            out["steps"] = self.steps
            out["stop_reason"] = self.stop_reason
        if self.truncated:
            out["truncated"] = self.truncated
        out.update(self.extra)
        return out


class Response:
    """Streams text when iterated; ``text()`` and ``result()`` force it.

    Closing it (or leaving a ``with`` block) stops generation at once.
    """

    def __init__(self, chunks: Iterator[str], finish: Callable[[str], Result]) -> None:
        self._chunks = chunks
        self._finish = finish
        self._parts: list[str] = []
        self._done = False
        self._closed_early = False
        self._result: Result | None = None

    def __iter__(self) -> Iterator[str]:
        if self._done:
            yield from self._parts
            return
        for chunk in self._chunks:
            self._parts.append(chunk)
            yield chunk
        self._done = True

    def text(self) -> str:
        """The whole raw text (waits for generation to finish)."""
        for _ in self:
            pass
        return "".join(self._parts)

    def result(self) -> Result:
        """The parsed result (raises OutputError when the text does not fit, or when the response
        was closed before the model finished: a cut-off answer is not a result)."""
        if self._result is None:
            if self._closed_early:
                raise OutputError(
                    "the response was closed before the model finished; the text so far is in .partial",
                    raw=self.partial,
                )
            self._result = self._finish(self.text())
        return self._result

    def close(self) -> None:
        """Stop generation; what streamed so far stays in ``partial``."""
        close_stream(self._chunks)
        self._closed_early = self._closed_early or not self._done
        self._done = True

    @property
    def partial(self) -> str:
        return "".join(self._parts)

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
