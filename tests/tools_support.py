"""A scripted backend for the tool loop's rules: it plays a list of calls, then answers."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

from promptdsl import Backend, Capability, Constraint, GenerationOptions, Prompt
from promptdsl.tools import Step, ToolCall
from promptdsl.tools.native import ToolTurn

Call = tuple[str, Any]  # (tool name, arguments)


class ScriptedTools(Backend):
    """Prompted path: ``score`` picks the next scripted tool (or 'answer'), the JSON grammar call yields its arguments."""

    name = "scripted"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.CHAT, Capability.COMPLETION, Capability.STREAM, Capability.SCORE, Capability.GRAMMAR}
    )
    local: ClassVar[bool] = True  # one script and one pending call: dataset rows must not run at once

    def __init__(self, script: Sequence[Call], answer: str = "42") -> None:
        super().__init__("scripted-model", {})
        self.script = list(script)
        self.answer = answer
        self.pending: Call | None = None
        self.prompts: list[Prompt] = []
        self.scored: list[list[str]] = []

    def score(self, prompt: Prompt, continuations: Sequence[str]) -> list[float]:
        self.prompts.append(prompt)
        self.scored.append(list(continuations))
        self.pending = self.script.pop(0) if self.script else None
        want = "answer" if self.pending is None else self.pending[0]
        return [0.0 if c.strip() == want else -9.0 for c in continuations]

    def stream(self, prompt: Prompt, options: GenerationOptions, constraint: Constraint | None = None) -> Iterator[str]:
        self.prompts.append(prompt)
        schema = constraint.json_schema if constraint is not None else None
        if schema and "tool" in schema.get("properties", {}):
            call = self.pending if self.pending is not None else self.script.pop(0)
            self.pending = None
            yield json.dumps({"tool": call[0], "arguments": call[1]})
            return
        yield self.answer


class NativeScripted(Backend):
    """Native path: declares TOOLS and answers each ``tool_turn`` from the script (a string = a text answer)."""

    name = "native-scripted"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.CHAT, Capability.STREAM, Capability.TOOLS}
    )

    def __init__(self, script: Sequence[Call | str | ToolTurn], answer: str = "42") -> None:
        super().__init__("native-model", {})
        self.script = list(script)
        self.answer = answer
        self.turns: list[tuple[list[Step], list[str], str]] = []
        self.prompts: list[Prompt] = []

    def tool_turn(self, prompt: Prompt, steps: Sequence[Step], tools: Sequence[Mapping[str, Any]], choice: str,
                  options: GenerationOptions) -> ToolTurn:
        self.turns.append((list(steps), [t["name"] for t in tools], choice))
        item = self.script.pop(0) if self.script else self.answer
        if isinstance(item, ToolTurn):
            return item
        if isinstance(item, str):
            return ToolTurn(text=item)
        return ToolTurn(calls=[ToolCall(item[0], item[1], id=f"id{len(steps)}")])

    def stream(self, prompt: Prompt, options: GenerationOptions, constraint: Constraint | None = None) -> Iterator[str]:
        self.prompts.append(prompt)
        yield self.answer
