"""Ctrl+B: switch backend and model from the installed plugins."""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.widgets import Button, Input, Label, Select

from promptdsl.backend import BackendInfo, split_options
from promptdsl.errors import InputError
from promptdsl.inputs import parse_options as core_parse_options
from promptdsl.registry import list_backends

from ..plain import plain
from ..session import BackendChoice, check_options


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
        options = [(Text(_describe(i)), i.name) for i in self.infos if not i.error]
        models = sorted({m for b, m in self.used if m} | {"default"})
        with Vertical(classes="dialog", id="backend-box"):
            yield Label("Backend and model  (Enter switches · Esc cancels)", classes="dialog-title")
            with VerticalScroll(id="backend-fields"):  # scrolls on a small terminal; the buttons stay
                yield Label("Backend", classes="field-label")
                if self.current.name in names:
                    yield Select(options, value=self.current.name, allow_blank=False, id="backend", compact=True)
                else:  # the current backend is not an installed plugin (Select.BLANK is not a value)
                    yield Select(options, allow_blank=True, prompt="choose…", id="backend", compact=True)
                broken = [i for i in self.infos if i.error]
                if broken:
                    yield Label(plain("\n".join(_describe(i) for i in broken)), classes="hint error-text")
                yield Label("Model  (alias, .gguf path or remote id; empty = the backend's default)",
                            classes="field-label")
                yield Input(
                    self.current.model or "", placeholder="default", id="model", compact=True,
                    suggester=SuggestFromList(models, case_sensitive=False),
                )
                yield Label("Options  (key=value …, e.g. base_url=http://127.0.0.1:8000/v1 temperature=0.2)",
                            classes="field-label")
                yield Input(format_options(dict(self.current.options)), id="options", compact=True)
            yield Label("", id="backend-error", classes="error-text")
            with Horizontal(classes="buttons"):
                yield Button("Switch", variant="primary", id="switch", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#backend", Select).focus()

    @on(Select.Changed, "#backend")
    def _backend_changed(self, event: Select.Changed) -> None:
        """Another backend: the old one's model and options mean nothing to it; the generation settings
        (temperature, max_tokens…) are the chat's and stay."""
        same = event.value == self.current.name
        kept = dict(self.current.options) if same else split_options(self.current.options)[0]
        self.query_one("#model", Input).value = (self.current.model or "") if same else ""
        self.query_one("#options", Input).value = format_options(kept)

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
            check_options(options)
        except ValueError as exc:
            self.query_one("#backend-error", Label).update(plain(f"Options: {exc}"))  # it quotes what was typed
            return
        except InputError as exc:
            self.query_one("#backend-error", Label).update(plain(exc.message))
            return
        self.dismiss(BackendChoice(name, None if model in ("", "default") else model, options))

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
