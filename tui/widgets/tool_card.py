"""A tool call in the transcript: a collapsible card with its arguments and result (or error)."""

from __future__ import annotations

import json

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import Collapsible, Static

from promptdsl.tools import Step

from ..plain import plain_title

PREVIEW = 60


def card_title(step: Step, running: bool = False) -> str:
    """One line: the call, then how it went (✓ result, ✗ error, ⊘ denied, … running)."""
    args = json.dumps(step.arguments, ensure_ascii=False)
    head = f"🔧 {step.tool} {args if len(args) <= PREVIEW else args[: PREVIEW - 1] + '…'}"
    if running:
        return f"{head}  … running"
    if step.approved is False:
        return f"{head}  ⊘ denied"
    if step.error is not None:
        return f"{head}  ✗ {step.error[:PREVIEW]}"
    result = (step.result or "").replace("\n", " ")
    return f"{head}  ✓ {result[:PREVIEW]}{'…' if len(result) > PREVIEW else ''}  ({step.seconds:.2f}s)"


def card_body(step: Step) -> Text:
    body = Text()
    body.append("arguments\n", style="bold")
    body.append(json.dumps(step.arguments, ensure_ascii=False, indent=2) + "\n")
    if step.error is not None:
        body.append("error\n", style="bold red")
        body.append(step.error)
    else:
        body.append("result\n", style="bold")
        body.append(step.result or "")
    return body


class ToolCard(Collapsible):
    """Collapsed: the one-line title; expanded: the full arguments and result."""

    DEFAULT_CSS = """
    ToolCard { height: auto; margin: 0 0 0 2; border: none; padding: 0; }
    ToolCard > Contents { padding: 0 2; }
    """

    def __init__(self, step: Step, *, running: bool = False) -> None:
        super().__init__(title=plain_title(card_title(step, running)), collapsed=True, classes="tool-card")
        self.step = step
        self._body = Static(card_body(step), classes="tool-card-body")

    def compose(self) -> ComposeResult:
        yield from super().compose()

    def on_mount(self) -> None:
        self.query_one(Collapsible.Contents).mount(self._body)

    def finish(self, step: Step) -> None:
        """The call ended: show its outcome."""
        self.step = step
        self.title = plain_title(card_title(step))  # a result may hold "[/INST]" or "[@click=…]"
        self._body.update(card_body(step))
