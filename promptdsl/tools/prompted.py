"""The prompted path: tools on any backend, built from what it has (``score``, grammars, plain text).

Measured on the embedded 135M model, choosing a tool freely is unreliable
while filling arguments under a grammar is reliable, so each step is two
small, separate decisions:

1. **which**: forced when ``tool_choice`` names a tool (or ``required`` with one
   tool); otherwise a choice among ``answer`` and the tool names, taken by
   ``score`` (log-probability of each option), else by a grammar limited to the
   options, else by free text naming one;
2. **arguments**: decoded under a grammar built from ``{"tool": <name>,
   "arguments": <the tool's schema>}`` (every string is bounded, so decoding
   ends), else generated and parsed; the loop validates them either way.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..backend import Capability, Constraint, GenerationOptions
from ..outputs import _parse_choice
from ..prompt import Prompt
from ..spec import OutputSpec, OutputType
from .base import Step, Tool, ToolCall
from .transcript import call_text, final_prompt, render

if TYPE_CHECKING:
    from ..runner import Runner

ANSWER = "answer"
ARGUMENT_TOKENS = 256


def call_schema(tool: Tool) -> dict[str, Any]:
    """The JSON Schema of one call as the model writes it (the tool's name is fixed)."""
    return {
        "type": "object",
        "properties": {"tool": {"const": tool.name}, "arguments": tool.parameters},
        "required": ["tool", "arguments"],
        "additionalProperties": False,
    }


class PromptedDriver:
    """Asks a backend without native tool calls for each step (see the module docstring)."""

    def __init__(self, runner: Runner, tools: Sequence[Tool]) -> None:
        from .loop import Decision

        self._decision = Decision
        self.backend = runner.backend
        self.tools = list(tools)
        self.by_name = {t.name: t for t in tools}
        self.options = GenerationOptions(temperature=0.0, max_tokens=ARGUMENT_TOKENS, seed=runner.generation.seed)
        caps = frozenset(self.backend.capabilities)
        selectors: list[tuple[Capability, Callable[[Prompt, list[str]], str]]] = [
            (Capability.SCORE, self._select_by_score),
            (Capability.GRAMMAR, self._select_by_grammar),
        ]
        self.select = next((fn for cap, fn in selectors if cap in caps), self._select_by_text)
        self.constrained = bool({Capability.GRAMMAR, Capability.JSON_SCHEMA} & caps)
        self.how = {"select": self.select.__name__.removeprefix("_select_by_"),
                    "arguments": "grammar" if self.constrained else "generate"}

    # ------------------------------------------------------------------ Driver

    def decide(self, prompt: Prompt, steps: Sequence[Step], choice: str) -> Any:
        if choice in self.by_name:
            name = choice
        else:
            options = [t.name for t in self.tools] if choice == "required" else [ANSWER, *self.by_name]
            name = options[0] if len(options) == 1 else self.select(self._ask(prompt, steps, options), options)
            if name == ANSWER:
                return self._decision()
        return self._decision(call=ToolCall(name, self._arguments(prompt, steps, self.by_name[name])))

    def final_prompt(self, prompt: Prompt, steps: Sequence[Step]) -> Prompt:
        return final_prompt(prompt, steps)

    # ------------------------------------------------------------------ which tool

    def _ask(self, prompt: Prompt, steps: Sequence[Step], options: list[str]) -> Prompt:
        names = ", ".join(o for o in options if o != ANSWER)
        if ANSWER in options:
            question = f"Reply '{ANSWER}' if you can answer now, or the name of the tool to call next ({names})."
        else:
            question = f"Reply with the name of the tool to call next ({names})."
        if prompt.mode == "completion":
            question += "\nNext:"
        return render(prompt, self.tools, steps, question)

    def _select_by_score(self, prompt: Prompt, options: list[str]) -> str:
        prefix = " " if prompt.mode == "completion" else ""
        logps = self.backend.score(prompt, [prefix + o for o in options])
        return max(zip(options, logps, strict=True), key=lambda p: p[1])[0]

    def _select_by_grammar(self, prompt: Prompt, options: list[str]) -> str:
        prefix = " " if prompt.mode == "completion" else ""
        text = self.backend.complete(prompt, self.options, Constraint(choices=tuple(prefix + o for o in options)))
        return text.strip() if text.strip() in options else ANSWER

    def _select_by_text(self, prompt: Prompt, options: list[str]) -> str:
        text = self.backend.complete(prompt, GenerationOptions(max_tokens=16, seed=self.options.seed))
        try:
            return _parse_choice(OutputSpec(OutputType.CHOICE, tuple(options)), text)
        except Exception:
            return ANSWER

    # ------------------------------------------------------------------ its arguments

    def _arguments(self, prompt: Prompt, steps: Sequence[Step], tool: Tool) -> Any:
        asked = render(prompt, self.tools, steps)
        if self.constrained:
            text = self.backend.complete(asked, self.options, Constraint(json_schema=call_schema(tool)))
        else:
            text = self.backend.complete(asked, self.options)
        return _arguments_from(text, tool.name)


def _arguments_from(text: str, name: str) -> Any:
    """The ``arguments`` of a call the model wrote; the raw text when it is not one (the loop reports it)."""
    start = text.find("{")
    try:
        value, _ = json.JSONDecoder().raw_decode(text, start) if start >= 0 else (None, 0)
    except json.JSONDecodeError:
        return text.strip()
    if isinstance(value, dict) and isinstance(value.get("arguments"), dict):
        return value["arguments"]
    return text.strip() if value is None else value


__all__ = ["ANSWER", "PromptedDriver", "call_schema", "call_text"]
