"""Spec + input values -> :class:`Prompt`, as the contract's §2 lays out.

``[task description] [examples] [input]``; the same spec, input and seed
always give the same bytes.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from typing import Any

from .errors import SpecError
from .prompt import Message, Prompt
from .spec import Example, OutputType, Spec
from .templates import TemplateFailure, render


def render_output(spec: Spec, value: Any) -> str:
    """An example's answer as the model should write it.

    The loader holds text and choice answers to strings; anything else that reaches here (a
    label read from a data file) is written as JSON, never as Python's ``repr``."""
    if spec.output.type is OutputType.JSON or not isinstance(value, str):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return value


def select_examples(spec: Spec) -> list[Example]:
    """The few-shot examples to show, by ``fewshot.select`` (deterministic for a seed)."""
    examples = list(spec.examples)
    shot = spec.fewshot
    k = len(examples) if shot.k is None else min(shot.k, len(examples))
    if shot.select == "random":
        return random.Random(shot.seed).sample(examples, k)
    if shot.select == "balanced":
        return _balanced(spec, examples, k)
    return examples[:k]


def _balanced(spec: Spec, examples: list[Example], k: int) -> list[Example]:
    """Round-robin over labels so each label is shown about equally often."""
    groups: dict[str, list[Example]] = {}
    for label in spec.output.choices:
        groups[label] = []
    for ex in examples:
        groups.setdefault(render_output(spec, ex.output), []).append(ex)
    rng = random.Random(spec.fewshot.seed)
    queues = [list(g) for g in groups.values() if g]
    for q in queues:
        rng.shuffle(q)
    chosen: list[Example] = []
    while len(chosen) < k:
        for q in queues:
            if q and len(chosen) < k:
                chosen.append(q.pop(0))
    return chosen


class Compiler:
    """Compiles one spec; the example part is rendered once and reused for every input."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.examples = select_examples(spec)
        self._shots: list[tuple[str, str]] | None = None

    def _render(self, key: str, source: str, values: Mapping[str, Any]) -> str:
        context = {**values, "output": self.spec.output.as_context()}
        try:
            return render(source, context)
        except TemplateFailure as exc:
            where = self.spec.source.where((key,)) if self.spec.source else (self.spec.label, None, None)
            file, line, col = where
            raise SpecError(f"template '{key}': {exc}", file=file, line=line, col=col, path=(key,)) from None

    def _item(self, values: Mapping[str, Any]) -> str:
        return self._render("template", self.spec.item_template(), self._with_defaults(values))

    def _with_defaults(self, values: Mapping[str, Any]) -> dict[str, Any]:
        out = {n: s["default"] for n, s in self.spec.inputs.items() if "default" in s}
        out.update(values)
        return out

    def shots(self) -> list[tuple[str, str]]:
        """(rendered item, rendered answer) for each chosen example."""
        if self._shots is None:
            self._shots = [(self._item(ex.input), render_output(self.spec, ex.output)) for ex in self.examples]
        return self._shots

    def _own_parts(self, values: Mapping[str, Any]) -> tuple[str | None, str | None, str]:
        """(instruction, system, item) rendered for one input: everything but the shots. No system
        in completion mode, which never sends one."""
        spec = self.spec
        values = self._with_defaults(values)
        instruction = self._render("instruction", spec.instruction, values) if spec.instruction is not None else None
        query = self._item(values)
        chat_system = spec.system if spec.mode != "completion" else None
        system = self._render("system", chat_system, values) if chat_system is not None else None
        return instruction, system, query

    def check(self, values: Mapping[str, Any]) -> None:
        """Render what depends on one input without building the prompt: validating a spec's every
        example and test must not join all the shots once per item."""
        self._own_parts(values)

    def compile(self, values: Mapping[str, Any]) -> Prompt:
        """Compile the prompt for one (already validated) input."""
        spec = self.spec
        instruction, system, query = self._own_parts(values)
        if spec.mode == "completion":
            delim = spec.fewshot.target_delimiter
            parts = [item + delim + answer for item, answer in self.shots()]
            body = spec.fewshot.separator.join([*parts, query])
            text = f"{instruction}\n\n{body}" if instruction else body
            return Prompt("completion", text=text, continuation_prefix=delim)
        messages: list[Message] = []
        sys_text = "\n\n".join(p for p in (system, instruction) if p)
        if sys_text:
            messages.append(Message("system", sys_text))
        for item, answer in self.shots():
            messages.append(Message("user", item))
            messages.append(Message("assistant", answer))
        messages.append(Message("user", query))
        return Prompt("chat", messages=tuple(messages))


def compile_prompt(spec: Spec, values: Mapping[str, Any]) -> Prompt:
    """Compile one prompt (convenience over :class:`Compiler`)."""
    return Compiler(spec).compile(values)
