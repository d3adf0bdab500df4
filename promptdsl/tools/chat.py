"""Tools in a free chat: the same loop as spec runs, over chat messages instead of a compiled spec.

A chat has no spec, so :class:`ChatToolLoop` stands one up (chat mode, free
text, the chat's generation settings) and runs :class:`~.loop.ToolLoop` on the
conversation's messages. It stops before the final answer: the caller streams
:attr:`ChatSteps.prompt` with its own settings (a chat reply streams), or shows
:attr:`ChatSteps.text` when the model already answered (native path, direct tool).
Open one per chat and tool set (MCP tools are server processes); close it after.
``tool_choice`` is the spec's: ``required`` makes every reply's first step a call
(small local models seldom choose a tool on their own).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from ..backend import Backend, CutOff, GenerationOptions
from ..prompt import Message, Prompt
from .base import Step, StopReason, Tool, ToolError, ToolUse
from .loop import ToolLoop, ToolSettings

#: Tool calls a chat reply may make before it must answer (as a spec's default ``max_steps``).
CHAT_MAX_STEPS = 5


@dataclass
class ChatSteps:
    """One reply's tool steps: the trace, why they ended, and how to answer."""

    steps: list[Step]
    reason: StopReason
    text: str | None  # the answer when the model (or a direct tool) already gave it
    prompt: Prompt  # else: stream this for the answer (the messages plus each call and its result)
    cut_off: CutOff | None = None  # a limit ended the model's ``text``


class ChatToolLoop:
    """The tool loop for one chat on one backend (the tools stay open between replies)."""

    def __init__(
        self,
        backend: Backend,
        tools: Sequence[Tool | ToolUse | str],
        settings: ToolSettings | None = None,
        generation: GenerationOptions | None = None,
        max_steps: int = CHAT_MAX_STEPS,
        tool_choice: str = "auto",
    ) -> None:
        from ..runner import Runner
        from ..spec import Spec

        settings = settings or ToolSettings()
        spec = Spec(name="chat", mode="chat", max_steps=max_steps)
        settings = replace(settings, extra=[*settings.extra, *tools], tool_choice=tool_choice)
        runner = Runner(spec, backend, tool_settings=settings)
        if generation is not None:
            runner.generation = generation  # the chat's own settings for native tool turns
        if runner.tool_loop is None:
            raise ToolError("a chat tool loop needs at least one tool")
        self.backend = backend
        self.loop: ToolLoop = runner.tool_loop

    @property
    def path(self) -> str:
        """``native`` or ``prompted``: how the model is asked."""
        return self.loop.path

    @property
    def names(self) -> list[str]:
        return list(self.loop.tools)

    def steps(self, messages: Sequence[Message], generation: GenerationOptions | None = None) -> ChatSteps:
        """Run tool steps for the last user message of ``messages`` (runs the model; not the final answer).

        ``generation``: the chat's settings for this reply (native tool turns use them)."""
        if generation is not None:
            self.loop.runner.generation = generation
        prompt = Prompt(mode="chat", messages=tuple(messages))
        steps, reason, text, direct, cut_off = self.loop.steps(prompt)
        answered = text if direct or (text and text.strip()) else None
        return ChatSteps(steps, reason, answered, self.loop.driver.final_prompt(prompt, steps),
                         cut_off if answered is not None and not direct else None)

    def close(self) -> None:
        self.loop.close()


__all__ = ["CHAT_MAX_STEPS", "ChatSteps", "ChatToolLoop"]
