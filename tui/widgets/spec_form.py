"""A form built from a spec's ``inputs`` JSON Schemas; validation errors show under each field.

Widget per schema: ``enum`` -> Select, boolean -> Switch, integer/number -> numeric Input,
short string -> Input, long string -> TextArea, anything else -> TextArea holding JSON.
Values are checked with :func:`promptdsl.inputs.validate_inputs`, the same check the CLI runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal, cast

from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Input, Label, Select, Switch, TextArea

from promptdsl.errors import InputError
from promptdsl.inputs import validate_inputs
from promptdsl.spec import Spec

Kind = Literal["enum", "bool", "integer", "number", "line", "text", "json"]
SHORT_STRING = 200  # maxLength at or below this gets a one-line Input
_MISSING = object()


def field_kind(schema: dict[str, Any]) -> Kind:
    """Which widget a JSON Schema gets."""
    if "enum" in schema:
        return "enum"
    kind = schema.get("type")
    if kind == "boolean":
        return "bool"
    if kind in ("integer", "number"):
        return "integer" if kind == "integer" else "number"
    if kind == "string":
        short = "format" in schema or schema.get("maxLength", SHORT_STRING + 1) <= SHORT_STRING
        return "line" if short else "text"
    return "json"


@dataclass
class FormField:
    index: int
    name: str
    schema: dict[str, Any]
    kind: Kind

    @property
    def required(self) -> bool:
        return "default" not in self.schema

    @property
    def widget_id(self) -> str:
        return f"in-{self.index}"

    @property
    def error_id(self) -> str:
        return f"err-{self.index}"


class SpecForm(Vertical):
    """Inputs of one spec. Posts :class:`SpecForm.Submitted` when Enter is pressed in a one-line field."""

    @dataclass
    class Submitted(Message):
        form: SpecForm

    def __init__(self, spec: Spec, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.spec = spec
        self.fields = [FormField(i, n, dict(s), field_kind(s)) for i, (n, s) in enumerate(spec.inputs.items())]
        self._checked = False  # after the first run attempt, errors update as the user types

    # ------------------------------------------------------------------ building

    def compose(self) -> ComposeResult:
        if not self.fields:
            yield Label("This spec takes no inputs.", classes="hint")
        for f in self.fields:
            with Vertical(classes="field"):
                star = " *" if f.required else ""
                yield Label(f"{f.name}{star}", classes="field-label")
                desc = f.schema.get("description")
                if desc:
                    yield Label(str(desc), classes="hint")
                yield self._widget(f)
                err = Label("", id=f.error_id, classes="field-error")
                err.display = False
                yield err

    def _widget(self, f: FormField) -> Widget:
        default = f.schema.get("default", _MISSING)
        wid = f.widget_id
        if f.kind == "enum":
            choices = list(f.schema["enum"])
            options = [(v if isinstance(v, str) else json.dumps(v), i) for i, v in enumerate(choices)]
            value: Any = choices.index(default) if default in choices else Select.BLANK
            return Select(options, value=value, allow_blank=value is Select.BLANK, id=wid)
        if f.kind == "bool":
            return Switch(value=bool(default) if default is not _MISSING else False, id=wid)
        text = "" if default is _MISSING else default if isinstance(default, str) else json.dumps(default)
        if f.kind in ("integer", "number"):
            return Input(text, type=f.kind, id=wid, placeholder=f.kind)
        if f.kind == "line":
            return Input(text, id=wid)
        if f.kind == "json":
            text = "" if default is _MISSING else json.dumps(default, indent=2, ensure_ascii=False)
        area = TextArea(text, id=wid, soft_wrap=True, classes=f"input-{f.kind}")
        return area

    # ------------------------------------------------------------------ values

    def raw_values(self) -> tuple[dict[str, Any], dict[str, str]]:
        """(values as typed, per-field parse errors); empty fields with a default are left out."""
        values: dict[str, Any] = {}
        errors: dict[str, str] = {}
        for f in self.fields:
            try:
                value = self._value(f)
            except ValueError as exc:
                errors[f.name] = str(exc)
                continue
            if value is not _MISSING:
                values[f.name] = value
        return values, errors

    def _value(self, f: FormField) -> Any:
        if f.kind == "enum":
            sel = self.query_one(f"#{f.widget_id}", Select).value
            return _MISSING if sel is Select.BLANK else f.schema["enum"][int(cast(int, sel))]
        if f.kind == "bool":
            return self.query_one(f"#{f.widget_id}", Switch).value
        if f.kind in ("integer", "number", "line"):
            text = self.query_one(f"#{f.widget_id}", Input).value
        else:
            text = self.query_one(f"#{f.widget_id}", TextArea).text
        if text.strip() == "" and (not f.required or f.kind not in ("line", "text")):
            return _MISSING
        if f.kind in ("line", "text"):
            return text
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            what = {"integer": "an integer", "number": "a number"}.get(f.kind, "JSON")
            raise ValueError(f"not {what}: {exc.msg} at line {exc.lineno} column {exc.colno}") from None

    def validate(self) -> dict[str, Any] | None:
        """Validated values (defaults filled), or None with the errors shown under their fields."""
        self._checked = True
        self._clear_errors()
        values, errors = self.raw_values()
        for name, message in errors.items():
            self._show_error(name, message)
        if errors:
            return None
        try:
            return validate_inputs(self.spec, values)
        except InputError as exc:
            self._show_error(exc.name, str(exc))
            return None

    def errors(self) -> dict[str, str]:
        """Errors currently shown, by input name (for tests and the status line)."""
        out = {}
        for f in self.fields:
            label = self.query_one(f"#{f.error_id}", Label)
            if label.display:
                out[f.name] = str(label.content)
        return out

    def _clear_errors(self) -> None:
        for f in self.fields:
            self.query_one(f"#{f.error_id}", Label).display = False

    def _show_error(self, name: str | None, message: str) -> None:
        target = next((f for f in self.fields if f.name == name), None)
        if target is None:
            self.notify(message, severity="error")
            return
        label = self.query_one(f"#{target.error_id}", Label)
        label.update(message)
        label.display = True

    def set_value(self, name: str, value: Any) -> None:
        """Fill a field programmatically (tests, "run again with…")."""
        f = next(f for f in self.fields if f.name == name)
        if f.kind == "enum":
            self.query_one(f"#{f.widget_id}", Select).value = f.schema["enum"].index(value)
        elif f.kind == "bool":
            self.query_one(f"#{f.widget_id}", Switch).value = bool(value)
        elif f.kind in ("integer", "number", "line"):
            self.query_one(f"#{f.widget_id}", Input).value = value if isinstance(value, str) else json.dumps(value)
        else:
            text = value if isinstance(value, str) and f.kind == "text" else json.dumps(value, indent=2)
            self.query_one(f"#{f.widget_id}", TextArea).text = text

    def focus_first(self) -> None:
        if self.fields:
            self.query_one(f"#{self.fields[0].widget_id}").focus()

    # ------------------------------------------------------------------ events

    @on(Input.Submitted)
    def _enter(self, event: Input.Submitted) -> None:
        event.stop()
        self.post_message(self.Submitted(self))

    @on(Input.Changed)
    @on(TextArea.Changed)
    @on(Select.Changed)
    @on(Switch.Changed)
    def _changed(self) -> None:
        if self._checked:
            self.validate()
