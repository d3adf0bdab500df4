"""One spec: its input form, the compiled prompt on demand, and the run's structured result.

Runs go through :class:`promptdsl.runner.Runner` in a thread worker, exactly as
``promptdsl run`` does; generated text streams into the raw pane as it comes.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Button, Collapsible, Header, Label, Static

from promptdsl.errors import OutputError, PromptDSLError
from promptdsl.result import Result
from promptdsl.runner import Runner
from promptdsl.spec import Spec

from ..clipboard import copy_and_tell
from ..history import HistoryStore
from ..session import Session
from ..specs import short_path
from ..tools import ChatTools, show_step
from ..widgets.footer import KeyFooter
from ..widgets.result_view import ResultView
from ..widgets.spec_form import SpecForm


def describe(spec: Spec) -> Text:
    text = Text()
    text.append(spec.name, style="bold")
    if spec.description:
        text.append(f" — {spec.description}")
    out = spec.output
    details = [f"{spec.mode} mode", f"output {out.type}"]
    if out.choices:
        details.append("choices: " + ", ".join(out.choices))
    details.append(f"method {out.method}")
    if spec.examples:
        details.append(f"{len(spec.examples)} examples")
    text.append("\n" + " · ".join(details), style="dim")
    if spec.path is not None:
        text.append(f"\n{short_path(spec.path)}", style="dim")
    return text


class SpecScreen(Screen[None]):
    """Fill the form, run (Ctrl+R), look at the prompt (Ctrl+T); Esc stops a run or goes back."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+r", "run", "Run", priority=True),
        Binding("ctrl+t", "prompt", "Prompt", priority=True),
        Binding("ctrl+g", "copy_result", "Copy result"),
        Binding("escape", "back", "Back"),
    ]

    @dataclass
    class RunChunk(Message, bubble=False):
        run: int
        chunk: str

    @dataclass
    class RunFinished(Message, bubble=False):
        run: int
        result: Result | None = None
        error: str | None = None
        raw: str | None = None

    @dataclass
    class PromptReady(Message, bubble=False):
        text: str | None = None
        error: str | None = None

    def __init__(
        self,
        spec: Spec,
        session: Session,
        options: Mapping[str, Any],
        *,
        store: HistoryStore | None = None,
        remembered: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.session = session
        self.options = dict(options)
        self.store = store
        self.remembered = remembered if remembered is not None else {}
        self.key = str(spec.path.resolve()) if spec.path is not None else ""
        self._run_values: dict[str, Any] = {}
        self._runner: Runner | None = None
        self._runner_lock = threading.Lock()
        self._run_id = 0
        self._stop: threading.Event | None = None  # set = stop requested
        self.raw = ""

    def compose(self) -> ComposeResult:
        yield Header(icon="◆")
        with VerticalScroll(id="spec-body"):
            yield Static(describe(self.spec), id="spec-title")
            yield SpecForm(self.spec, id="form")
            with Horizontal(classes="buttons"):
                yield Button("Run  ^R", variant="primary", id="run")
                yield Button("Show prompt  ^T", id="show-prompt")
                yield Button("Back  Esc", id="back")
            with Collapsible(title="Compiled prompt", collapsed=True, id="prompt-box"):
                yield Static("", id="prompt-text")
            yield Label("", id="run-state", classes="hint")
            yield Vertical(id="tool-steps")
            yield Static("", id="raw")
            yield ResultView(id="result")
            with Collapsible(title="Earlier runs", collapsed=True, id="runs-box"):
                yield Static("", id="runs-text")
        yield KeyFooter()

    def on_mount(self) -> None:
        self.title = "promptdsl"
        self.sub_title = f"spec: {self.spec.name}"
        self.query_one("#raw").display = False
        values = self.remembered.get(self.key)
        if values is None and self.store is not None:
            runs = self.store.spec_runs(self.spec.name, self.key, limit=1)
            values = runs[0].inputs if runs else None
        if values:
            self.form.set_values(values)
        self._show_runs()
        self.query_one(SpecForm).focus_first()

    def on_unmount(self) -> None:
        if self._stop is not None:
            self._stop.set()
        self.tools.stop.set()

    @cached_property
    def tools(self) -> ChatTools:
        """Tool approvals ("Always" lasts as long as this screen) and step cards."""
        return ChatTools(self.app, lambda kind, step: show_step(self.query_one("#tool-steps", Vertical), kind, step))

    @on(SpecForm.ValuesChanged)
    def _values_changed(self) -> None:
        self.remembered[self.key] = self.form.values()
        if not self.query_one("#prompt-box", Collapsible).collapsed:
            values = self.form.validate(show=False)
            if values is None:
                self.query_one("#prompt-text", Static).update(
                    Text("The inputs have errors; the prompt shows again once they are fixed.", style="italic"))
            else:
                self._prepare(values)

    def _show_runs(self) -> None:
        runs = self.store.spec_runs(self.spec.name, self.key, limit=10) if self.store is not None else []
        box = self.query_one("#runs-box", Collapsible)
        box.display = bool(runs)
        box.title = f"Earlier runs ({len(runs)}{'+' if len(runs) == 10 else ''}, newest first)"
        text = Text()
        for run in runs:
            when = time.strftime("%m-%d %H:%M", time.localtime(run.created))
            inputs = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)[:40]}" for k, v in run.inputs.items())
            outcome = run.error[:80] if run.error else json.dumps(run.value, ensure_ascii=False)[:80]
            text.append(f"{when}  ", style="dim")
            text.append(inputs)
            text.append("  →  ")
            text.append(outcome, style="red" if run.error else "bold")
            text.append("\n")
        self.query_one("#runs-text", Static).update(text)

    def _keep_run(self, result: Result | None, error: str | None) -> None:
        if self.store is None:
            return
        try:
            if result is not None:
                self.store.add_spec_run(self.spec.name, self.key, self._run_values, result.value,
                                        backend=result.backend, model=result.model)
            else:
                self.store.add_spec_run(self.spec.name, self.key, self._run_values, error=error or "failed")
        except Exception as exc:  # a full disk must not hide the result
            self.notify(f"run not saved in history: {exc}", severity="error")
            return
        self._show_runs()

    @property
    def form(self) -> SpecForm:
        return self.query_one(SpecForm)

    @property
    def result_view(self) -> ResultView:
        return self.query_one(ResultView)

    @property
    def running(self) -> bool:
        return self._stop is not None

    def _state(self, text: str) -> None:
        self.query_one("#run-state", Label).update(text)

    # ------------------------------------------------------------------ the runner (built off the UI thread)

    def runner(self) -> Runner:
        """A Runner on the chat's backend if the user chose one, else on the spec's own."""
        with self._runner_lock:
            backend = self.session.backend() if self.session.explicit else None
            if self._runner is None or (backend is not None and self._runner.backend is not backend):
                self._runner = Runner(self.spec, backend, options=self.options, tool_settings=self.tools.settings())
            return self._runner

    # ------------------------------------------------------------------ run

    @on(Button.Pressed, "#run")
    @on(SpecForm.Submitted)
    def action_run(self) -> None:
        if self.running:
            self.notify("Still running: Esc stops it.", severity="warning")
            return
        values = self.form.validate()
        if values is None:
            n = len(self.form.errors())
            self._state(f"Fix the {n} input{'s' if n != 1 else ''} marked in red." if n else "Fix the inputs.")
            self.result_view.clear()  # an old result under a form that changed would mislead
            self.query_one("#raw").display = False
            self.call_after_refresh(self.form.show_first_error)
            return
        self._run_values = values
        self._run_id += 1
        self._stop = threading.Event()
        self.raw = ""
        raw = self.query_one("#raw", Static)
        raw.update("")
        raw.display = False
        self.result_view.clear()
        self.query_one("#tool-steps", Vertical).remove_children()
        self._state("running…")
        self._run(self._run_id, values, self._stop)

    @work(thread=True, group="spec-run", exit_on_error=False)
    def _run(self, run: int, values: dict[str, Any], stop: threading.Event) -> None:
        self.session.model_thread.call(self._run_now, run, values, stop)

    def _run_now(self, run: int, values: dict[str, Any], stop: threading.Event) -> None:
        response = None
        try:
            runner = self.runner()
            response = runner.response(values)
            for chunk in response:
                if stop.is_set():
                    response.close()
                    self.post_message(self.RunFinished(run, error="stopped", raw=response.partial))
                    return
                self.post_message(self.RunChunk(run, chunk))
            self.post_message(self.RunFinished(run, result=response.result()))
        except OutputError as exc:
            self.post_message(self.RunFinished(run, error=str(exc), raw=exc.raw))
        except PromptDSLError as exc:
            self.post_message(self.RunFinished(run, error=str(exc)))
        except Exception as exc:  # a plugin bug must not take the app down
            self.post_message(self.RunFinished(run, error=f"{type(exc).__name__}: {exc}"))

    def on_spec_screen_run_chunk(self, event: SpecScreen.RunChunk) -> None:
        if event.run != self._run_id:
            return
        self.raw += event.chunk
        raw = self.query_one("#raw", Static)
        raw.display = True
        raw.update(Text(self.raw))

    def on_spec_screen_run_finished(self, event: SpecScreen.RunFinished) -> None:
        if event.run != self._run_id:
            return
        self._stop = None
        if event.result is not None:
            self.query_one("#raw").display = False
            self.result_view.show_result(self.spec, event.result)
            self._state("")
            self._keep_run(event.result, None)
            self.call_after_refresh(self.result_view.scroll_visible, animate=False)
            return
        error = event.error or "failed"
        if error == "stopped":
            self._state("stopped")
            self._keep_run(None, "stopped")  # every run is kept, a stopped one too
            return
        self._state("failed")
        self.result_view.show_error(error)
        self._keep_run(None, error)
        self.call_after_refresh(self.result_view.scroll_visible, animate=False)
        self.notify(error, title="Run failed", severity="error", timeout=10)

    # ------------------------------------------------------------------ prompt

    @on(Button.Pressed, "#show-prompt")
    def action_prompt(self) -> None:
        box = self.query_one("#prompt-box", Collapsible)
        if not box.collapsed:
            box.collapsed = True
            return
        values = self.form.validate()
        if values is None:
            self._state("Fix the inputs marked in red to see the prompt.")
            return
        self._prepare(values)

    @work(thread=True, group="spec-prompt", exclusive=True, exit_on_error=False)
    def _prepare(self, values: dict[str, Any]) -> None:
        try:
            _, prompt = self.session.model_thread.call(lambda: self.runner().prepare(values))
        except PromptDSLError as exc:
            self.post_message(self.PromptReady(error=str(exc)))
            return
        self.post_message(self.PromptReady(text=prompt.render()))

    def on_spec_screen_prompt_ready(self, event: SpecScreen.PromptReady) -> None:
        if event.error is not None:
            self.notify(event.error, title="Cannot compile", severity="error", timeout=10)
            return
        self.query_one("#prompt-text", Static).update(Text(event.text or ""))
        box = self.query_one("#prompt-box", Collapsible)
        if box.collapsed:
            box.collapsed = False
            box.scroll_visible()

    # ------------------------------------------------------------------ other actions

    def action_copy_result(self) -> None:
        text = self.result_view.copy_text()
        if text is None:
            self.notify("No result to copy yet.", severity="warning")
            return
        copy_and_tell(self.app, text)  # a clipboard tool, else it asks the terminal (and says so)

    @on(Button.Pressed, "#back")
    def action_back(self) -> None:
        if self._stop is not None:
            self._stop.set()
            self._stop = None
            self._state("stopped")
            return
        self.dismiss(None)
