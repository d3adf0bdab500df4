"""The native path: backends that declare ``tools`` and implement :meth:`NativeTools.tool_turn`.

The backend gets the prompt, the calls made so far with their results, and
the tools; it answers with text or calls. Only the first call of a turn runs
(the model may ask for the next one in the next turn). The final answer goes
through the runner as plain messages (see :mod:`.transcript`), because servers
differ in how they show tool results (llama-cpp-python's
``chatml-function-calling`` format drops them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..backend import Backend, Capability, CutOff, GenerationOptions
from ..errors import BackendError
from ..prompt import Prompt
from .base import Step, Tool, ToolCall
from .transcript import final_prompt

if TYPE_CHECKING:
    from ..runner import Runner


@dataclass
class ToolTurn:
    """What a backend answered in one tool step: text, or calls (``arguments`` parsed when they are JSON).

    ``cut_off``: :data:`~promptdsl.backend.CUT_OFF` (or ``CONTEXT_FULL``) when a limit ended the
    text, as a stream ends with it, so an answer the loop keeps is marked ``truncated``."""

    text: str = ""
    calls: list[ToolCall] = field(default_factory=list)
    cut_off: CutOff | None = None


@runtime_checkable
class NativeTools(Protocol):
    """Implemented by backends with native tool calls (besides declaring ``Capability.TOOLS``)."""

    def tool_turn(
        self,
        prompt: Prompt,
        steps: Sequence[Step],
        tools: Sequence[Mapping[str, Any]],
        choice: str,
        options: GenerationOptions,
    ) -> ToolTurn: ...


def native_capable(backend: Backend) -> bool:
    return backend.supports(Capability.TOOLS) and isinstance(backend, NativeTools)


class NativeDriver:
    def __init__(self, runner: Runner, tools: Sequence[Tool]) -> None:
        self.runner = runner
        self.backend: Any = runner.backend
        self.described = [t.describe() for t in tools]
        self.how = {"select": "native", "arguments": "native"}

    def decide(self, prompt: Prompt, steps: Sequence[Step], choice: str, accept: Any = None) -> Any:
        """``accept`` is not used: the server writes the arguments, nothing is listed."""
        from .loop import Decision

        if prompt.mode != "chat":
            raise ValueError("native tool calls need a chat prompt")
        from ..runner import _call

        numbered = [s if s.id else _with_id(s, i) for i, s in enumerate(steps)]
        # Under the runner's guard, as every other call into a plugin: its stray exception is its error.
        turn = _call(self.backend, lambda: self.backend.tool_turn(
            prompt, numbered, self.described, choice, self.runner.generation))
        problem = _turn_problem(turn)
        if problem:
            raise BackendError(f"tool_turn returned {problem}", backend=self.backend.name, exit_code=1)
        if turn.calls:
            call = turn.calls[0]
            return Decision(call=ToolCall(call.tool, call.arguments, call.id or f"call_{len(steps)}"))
        return Decision(text=turn.text, cut_off=turn.cut_off)

    def final_prompt(self, prompt: Prompt, steps: Sequence[Step]) -> Prompt:
        return final_prompt(prompt, steps)


def _turn_problem(turn: Any) -> str | None:
    """What is wrong with a plugin's answer to one tool step, if anything (a plugin bug, said as such)."""
    if not isinstance(turn, ToolTurn):
        return f"{type(turn).__name__}, not a ToolTurn"
    if not isinstance(turn.text, str):
        return f"text of type {type(turn.text).__name__}"
    if turn.cut_off is not None and not isinstance(turn.cut_off, CutOff):
        return f"cut_off of type {type(turn.cut_off).__name__}, not a CutOff"
    if not isinstance(turn.calls, list):
        return f"calls of type {type(turn.calls).__name__}"
    for call in turn.calls:
        if not isinstance(call, ToolCall) or not isinstance(call.tool, str) or not isinstance(call.id or "", str):
            return "a call that is not a ToolCall with a tool name"
    return None


def _with_id(step: Step, i: int) -> Step:
    step.id = f"call_{i}"
    return step
