"""The prompted path: tools on any backend, built from what it has (``score``, grammars, plain text).

Measured on the embedded 135M model, choosing a tool freely is unreliable
while filling arguments under a grammar is reliable, so each step is two
small, separate decisions:

1. **which**: forced when ``tool_choice`` names a tool (or ``required`` with one
   tool); otherwise a choice among ``answer`` and the tool names, taken by
   ``score`` (log-probability of each option), else by a grammar limited to the
   options, else by free text naming one;
2. **arguments**: when the tool's schema allows only a short list of calls
   (enums, consts, numbers marked ``x-from-input``: see :mod:`.candidates`) and
   the backend can ``score``, the most likely complete call of that list; else
   decoded under a grammar built from ``{"tool": <name>, "arguments": <the
   tool's schema>}`` (every string is bounded, so decoding ends), else generated
   and parsed; the loop validates them either way.

A spec can give a tool worked ``examples`` (input -> arguments); they are shown
as earlier turns before the question, the ``shots`` most similar to the input
(word overlap, weighted by how rare a word is among the examples) closest to
it, since a small model copies the nearest pattern.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..backend import Capability, Constraint, GenerationOptions
from ..errors import BackendError
from ..outputs import _parse_choice
from ..prompt import Message, Prompt
from ..spec import OutputSpec, OutputType
from .base import Step, Tool, ToolCall, ToolUse
from .candidates import copies_within, enumerate_arguments, number_counts, restrict
from .transcript import call_text, final_prompt, render

if TYPE_CHECKING:
    from ..runner import Runner

ANSWER = "answer"
ARGUMENT_TOKENS = 256


def call_schema(tool: Tool, parameters: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The JSON Schema of one call as the model writes it (the tool's name is fixed)."""
    arguments = tool.parameters if parameters is None else parameters
    return {
        "type": "object",
        "properties": {"tool": {"const": tool.name}, "arguments": arguments},
        "required": ["tool", "arguments"],
        "additionalProperties": False,
    }


class PromptedDriver:
    """Asks a backend without native tool calls for each step (see the module docstring)."""

    def __init__(self, runner: Runner, tools: Sequence[Tool], uses: Mapping[str, ToolUse] | None = None) -> None:
        from .loop import Decision

        self._decision = Decision
        self.backend = runner.backend
        self.demos = {name: _demos(runner, use) for name, use in (uses or {}).items()}
        self.shots = {name: use.shots for name, use in (uses or {}).items()}
        self.weights = {name: _idf([_words(item) for item, _ in demos]) for name, demos in self.demos.items()}
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
        self.scores = Capability.SCORE in caps
        how = "grammar" if self.constrained else "generate"
        self.how = {"select": self.select.__name__.removeprefix("_select_by_"),
                    "arguments": f"score when finite, else {how}" if self.scores else how,
                    "examples": ", ".join(f"{n}: {len(d)}" for n, d in self.demos.items()) or "none"}

    # ------------------------------------------------------------------ Driver

    def decide(self, prompt: Prompt, steps: Sequence[Step], choice: str, accept: Any = None) -> Any:
        if choice in self.by_name:
            name = choice
        else:
            options = [t.name for t in self.tools] if choice == "required" else [ANSWER, *self.by_name]
            name = options[0] if len(options) == 1 else self.select(self._ask(prompt, steps, options), options)
            if name == ANSWER:
                return self._decision()
        return self._decision(call=ToolCall(name, self._arguments(prompt, steps, self.by_name[name], accept)))

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

    def _score(self, prompt: Prompt, continuations: list[str]) -> list[float]:
        """The plugin's scores, held to what the runner holds them to (one number per text; its
        failures are BackendErrors that name it)."""
        from ..runner import _call, _checked_scores

        logps = _call(self.backend, lambda: self.backend.score(prompt, continuations))
        scores = _checked_scores(self.backend, continuations, logps)
        return [scores[c] for c in continuations]

    def _complete(self, prompt: Prompt, options: GenerationOptions, constraint: Constraint | None = None) -> str:
        """The plugin's text, as the runner takes it: failures name the plugin, text must be text."""
        from ..runner import _call

        text = _call(self.backend, lambda: self.backend.complete(prompt, options, constraint))
        if not isinstance(text, str):
            raise BackendError(f"complete returned {type(text).__name__}, not text", backend=self.backend.name,
                               exit_code=1)
        return text

    def _select_by_score(self, prompt: Prompt, options: list[str]) -> str:
        prefix = " " if prompt.mode == "completion" else ""
        logps = self._score(prompt, [prefix + o for o in options])
        return max(zip(options, logps, strict=True), key=lambda p: p[1])[0]

    def _select_by_grammar(self, prompt: Prompt, options: list[str]) -> str:
        prefix = " " if prompt.mode == "completion" else ""
        text = self._complete(prompt, self.options, Constraint(choices=tuple(prefix + o for o in options)))
        return text.strip() if text.strip() in options else ANSWER

    def _select_by_text(self, prompt: Prompt, options: list[str]) -> str:
        text = self._complete(prompt, GenerationOptions(max_tokens=16, seed=self.options.seed))
        try:
            return _parse_choice(OutputSpec(OutputType.CHOICE, tuple(options)), text)
        except Exception:
            return ANSWER

    # ------------------------------------------------------------------ its arguments

    def _arguments(self, prompt: Prompt, steps: Sequence[Step], tool: Tool, accept: Any = None) -> Any:
        asked = render(self._with_demos(prompt, tool), self.tools, steps)
        written = number_counts(_conversation(prompt, steps))
        schema = restrict(tool.parameters, list(written))
        candidates = enumerate_arguments(schema) if self.scores else None
        if candidates:  # drop the calls the text cannot mean, and those that surely give no valid answer
            candidates = [c for c in candidates if copies_within(c, written)] or candidates
            if accept is not None:
                candidates = [c for c in candidates if accept(tool.name, c)] or candidates
        if candidates:
            if len(candidates) == 1:
                return candidates[0]
            texts = [prompt.continuation_prefix + call_text(tool.name, c) for c in candidates]
            logps = self._score(asked, texts)
            return max(zip(candidates, logps, strict=True), key=lambda p: p[1])[0]
        if self.constrained:
            constraint = Constraint(json_schema=call_schema(tool, schema))
            text = self._complete(asked, self.options, constraint)
        else:
            text = self._complete(asked, self.options)
        return _arguments_from(text, tool.name)

    def _with_demos(self, prompt: Prompt, tool: Tool) -> Prompt:
        """``prompt`` with the tool's worked calls as earlier turns (most similar to the input last)."""
        demos = self.demos.get(tool.name)
        if not demos:
            return prompt
        query = _words(_query(prompt))
        k = self.shots.get(tool.name) or len(demos)
        weight = self.weights[tool.name]
        chosen = sorted(demos, key=lambda d: _overlap(_words(d[0]), query, weight))[-k:]
        if prompt.mode == "completion":
            shown = "".join(f"{item}\nTool call: {call}\n\n" for item, call in chosen)
            return replace(prompt, text=shown + prompt.text)
        turns = [m for item, call in chosen for m in (Message("user", item), Message("assistant", call))]
        messages = list(prompt.messages)
        return replace(prompt, messages=(*messages[:-1], *turns, messages[-1]))


def _demos(runner: Runner, use: ToolUse) -> list[tuple[str, str]]:
    """(the example's input as the spec's template renders it, the call) for each worked example."""
    out = []
    for example in use.examples:
        item = _query(runner.compiler.compile(example.input))
        out.append((item, call_text(use.name, example.arguments)))
    return out


def _query(prompt: Prompt) -> str:
    """The input as the model reads it: the last user message (chat) or the whole text (completion)."""
    if prompt.mode == "completion":
        return prompt.text
    return next((m.content for m in reversed(prompt.messages) if m.role == "user"), "")


def _conversation(prompt: Prompt, steps: Sequence[Step]) -> list[str]:
    """Where copied values may come from: the input and the results so far."""
    return [_query(prompt), *(s.result for s in steps if s.result is not None)]


def _words(text: str) -> set[str]:
    return set(re.findall(r"[^\W\d_]+", text.lower()))


def _idf(docs: list[set[str]]) -> Callable[[str], float]:
    """Inverse document frequency over the examples: words most examples share ("how", "many") weigh little."""
    n = len(docs)
    counts: dict[str, int] = {}
    for doc in docs:
        for word in doc:
            counts[word] = counts.get(word, 0) + 1
    return lambda word: math.log((1 + n) / (1 + counts.get(word, 0))) + 1.0


def _overlap(a: set[str], b: set[str], weight: Callable[[str], float]) -> float:
    """Weighted Jaccard overlap of two word sets (numbers left out): how alike two inputs are."""
    union = sum(weight(w) for w in a | b)
    return sum(weight(w) for w in a & b) / union if union else 0.0


def _arguments_from(text: str, name: str) -> Any:
    """The ``arguments`` of a call the model wrote; the raw text when it is not one (the loop reports it)."""
    start = text.find("{")
    try:
        value, _ = json.JSONDecoder().raw_decode(text, start) if start >= 0 else (None, 0)
    except (ValueError, RecursionError):  # also integers past Python's digit limit, deep nesting
        return text.strip()
    if isinstance(value, dict) and isinstance(value.get("arguments"), dict):
        return value["arguments"]
    return text.strip() if value is None else value


__all__ = ["ANSWER", "PromptedDriver", "call_schema", "call_text"]
