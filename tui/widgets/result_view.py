"""A spec run's outcome: the chosen label with per-choice scores, pretty JSON, or text."""

from __future__ import annotations

import json
import math
from typing import Any

from rich.console import Group, RenderableType
from rich.markdown import Markdown as RichMarkdown
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from promptdsl.backend import CUT_REMEDY, CUT_WORDS
from promptdsl.result import Result
from promptdsl.spec import OutputType, Spec

BAR_WIDTH = 24


def choice_probabilities(scores: dict[str, float]) -> dict[str, float]:
    """Softmax over the choices' summed log-probabilities (how sure the model is, among them)."""
    if not scores:
        return {}
    top = max(scores.values())
    exp = {k: math.exp(v - top) for k, v in scores.items()}
    total = sum(exp.values())
    return {k: v / total for k, v in exp.items()}


def scores_table(value: Any, scores: dict[str, float]) -> Table:
    probs = choice_probabilities(scores)
    table = Table(box=None, show_edge=False, pad_edge=False, header_style="bold")
    table.add_column("")
    table.add_column("choice")
    table.add_column("log p", justify="right")
    table.add_column("p", justify="right")
    table.add_column("", width=BAR_WIDTH)
    for choice, logp in sorted(scores.items(), key=lambda kv: -kv[1]):
        p = probs[choice]
        chosen = choice == value
        bar = Text("█" * max(1, round(p * BAR_WIDTH)), style="green" if chosen else "dim")
        table.add_row("▶" if chosen else "", Text(choice, style="bold" if chosen else ""),
                      f"{logp:.3f}", f"{p:.1%}", bar)
    return table


def render_value(spec: Spec, result: Result) -> RenderableType:
    kind = spec.output.type
    if kind is OutputType.CHOICE:
        parts: list[RenderableType] = [Text(str(result.value), style="bold reverse")]
        if result.scores:
            parts += [Text(""), scores_table(result.value, result.scores)]
        return Group(*parts)
    if kind is OutputType.JSON:
        text = json.dumps(result.value, indent=2, ensure_ascii=False)
        return Syntax(text, "json", theme="ansi_dark", word_wrap=True, background_color="default")
    if kind is OutputType.TEXT:
        return RichMarkdown(str(result.value))
    return Text(str(result.value), style="bold")


class ResultView(Static):
    """Empty until a run finishes; then the value, how it was obtained, or the error."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self.result: Result | None = None

    def show_result(self, spec: Spec, result: Result) -> None:
        self.result = result
        meta = Text(
            f"method {result.method.value} · {result.backend} · {result.model} · {result.seconds:.2f} s",
            style="dim",
        )
        parts: list[RenderableType] = [render_value(spec, result), Text(""), meta]
        if result.truncated:  # as `run` says on stderr: the answer may be missing its end
            why = f"{CUT_WORDS[result.truncated]}, so it may be incomplete ({CUT_REMEDY[result.truncated]})"
            parts.append(Text(why, style="yellow"))
        self.update(Group(*parts))
        self.remove_class("-error")
        self.display = True

    def show_error(self, message: str) -> None:
        self.result = None
        self.update(Text(message, style="bold red"))
        self.add_class("-error")
        self.display = True

    def clear(self) -> None:
        self.result = None
        self.update("")
        self.remove_class("-error")
        self.display = False

    def on_mount(self) -> None:
        self.display = self.result is not None

    def copy_text(self) -> str | None:
        """The value as text (JSON pretty-printed), for the clipboard."""
        if self.result is None:
            return None
        value = self.result.value
        return value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False)
