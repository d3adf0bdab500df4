"""Ctrl+B: switch backend and model from the installed plugins."""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from typing import Any, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.widgets import Button, Input, Label, Select

from promptdsl.backend import BackendInfo
from promptdsl.errors import InputError
from promptdsl.inputs import parse_options as core_parse_options
from promptdsl.registry import list_backends

from ..session import BackendChoice


def parse_options(text: str) -> dict[str, Any]:
    """``key=value key2=value2`` (values read as JSON when they parse) -> dict."""
    try:
        return core_parse_options(shlex.split(text))
    except InputError as exc:
        raise ValueError(exc.message) from None


def format_options(options: dict[str, Any]) -> str:
    return " ".join(f"{k}={shlex.quote(v if isinstance(v, str) else json.dumps(v))}" for k, v in options.items())


def _describe(info: BackendInfo) -> str:
    if info.error:
        return f"{info.name}  (broken: {info.error})"
    caps = ", ".join(sorted(c.value for c in info.capabilities))
    return f"{info.name} {info.version}  ({caps})"


class BackendScreen(ModalScreen[BackendChoice | None]):
    """Returns the chosen backend, model and options; the app loads it in a worker."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, current: BackendChoice, used: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__()
        self.current = current
        self.used = list(used)
        self.infos = list_backends()

    def compose(self) -> ComposeResult:
        names = {i.name for i in self.infos}
        options = [(_describe(i), i.name) for i in self.infos if not i.error]
        value = self.current.name if self.current.name in names else Select.BLANK
        models = sorted({m for b, m in self.used if m} | {"default"})
        with Vertical(classes="dialog", id="backend-box"):
            yield Label("Backend and model", classes="dialog-title")
            yield Label("Backend", classes="field-label")
            yield Select(options, value=value, allow_blank=False, id="backend")
            broken = [i for i in self.infos if i.error]
            if broken:
                yield Label("\n".join(_describe(i) for i in broken), classes="hint error-text")
            yield Label("Model  (alias, .gguf path or remote id; empty = the backend's default)", classes="field-label")
            yield Input(
                self.current.model or "", placeholder="default", id="model",
                suggester=SuggestFromList(models, case_sensitive=False),
            )
            yield Label("Backend options  (key=value …, e.g. base_url=http://127.0.0.1:8000/v1)",
                        classes="field-label")
            yield Input(format_options(dict(self.current.options)), id="options")
            yield Label("", id="backend-error", classes="error-text")
            with Horizontal(classes="buttons"):
                yield Button("Switch", variant="primary", id="switch")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#backend", Select).focus()

    @on(Button.Pressed, "#switch")
    @on(Input.Submitted)
    def _switch(self) -> None:
        name = self.query_one("#backend", Select).value
        if not isinstance(name, str):
            self.query_one("#backend-error", Label).update("Choose a backend.")
            return
        model = self.query_one("#model", Input).value.strip()
        try:
            options = parse_options(self.query_one("#options", Input).value)
        except ValueError as exc:
            self.query_one("#backend-error", Label).update(f"Options: {exc}")
            return
        self.dismiss(BackendChoice(name, None if model in ("", "default") else model, options))

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
