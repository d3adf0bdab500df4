"""A form built from a spec's ``inputs`` JSON Schemas; validation errors show under each field.

Widget per schema: ``enum`` -> Select, boolean -> Switch, integer/number -> Input (read as
JSON: ``3.5x-2`` is an error, not 352), short string -> Input, long string -> TextArea,
anything else -> TextArea holding JSON. Each field shows its limits up front, and every
field's every error is shown at once; the values that pass are then checked with
:func:`promptdsl.inputs.validate_inputs`, the same check the CLI runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, cast

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Input, Label, Select, Switch, TextArea

from promptdsl.errors import InputError, clip
from promptdsl.inputs import strict_json, validate_inputs
from promptdsl.spec import Spec

from ..plain import plain

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


#: How each limit keyword reads in a field's hint (value formatted with ``{}``).
LIMIT_TEXT: tuple[tuple[str, str], ...] = (
    ("minimum", "at least {}"),
    ("exclusiveMinimum", "more than {}"),
    ("maximum", "at most {}"),
    ("exclusiveMaximum", "less than {}"),
    ("multipleOf", "a multiple of {}"),
    ("minLength", "at least {} characters"),
    ("maxLength", "at most {} characters"),
    ("pattern", "matching {}"),
    ("format", "format {}"),
    ("minItems", "at least {} items"),
    ("maxItems", "at most {} items"),
)


def limits(schema: dict[str, Any]) -> str:
    """A field's type, limits and default in one line (shown before anything is typed)."""
    parts: list[str] = []
    kind = schema.get("type")
    if "enum" in schema:
        parts.append("one of " + ", ".join(v if isinstance(v, str) else json.dumps(v) for v in schema["enum"]))
    elif isinstance(kind, str):
        parts.append(kind)
    parts += [_singular(text.format(schema[key]), schema[key]) for key, text in LIMIT_TEXT if key in schema]
    if "default" in schema:
        parts.append(f"default {json.dumps(schema['default'], ensure_ascii=False)}")
    else:
        parts.append("required")
    return " · ".join(parts)


def schema_errors(name: str, schema: dict[str, Any], value: Any) -> list[str]:
    """Every problem of one value against its schema (the CLI's check stops at the first)."""
    from promptdsl.schema import errors  # the spec's patterns run with a time limit, refs never fetched

    out = []
    for err in sorted(errors(schema, value, formats=True), key=lambda e: (list(e.absolute_path), e.message)):
        sub = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path)
        out.append(f"input '{name}{sub}': {err.message}")
    return out


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

    @dataclass
    class ValuesChanged(Message):
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
                yield Label(plain(f"{f.name}{star}"), classes="field-label")
                desc = f.schema.get("description")
                if desc:
                    yield Label(plain(str(desc)), classes="hint")
                yield Label(plain(limits(f.schema)), classes="hint limits")  # a pattern: "[a-z]+"
                yield self._widget(f)
                err = Label("", id=f.error_id, classes="field-error")
                err.display = False
                yield err

    def _widget(self, f: FormField) -> Widget:
        default = f.schema.get("default", _MISSING)
        wid = f.widget_id
        if f.kind == "enum":
            choices = list(f.schema["enum"])
            options = [(Text(v if isinstance(v, str) else json.dumps(v)), i) for i, v in enumerate(choices)]
            if default in choices:
                return Select(options, value=choices.index(default), allow_blank=False, id=wid)
            return Select(options, allow_blank=True, prompt="choose…", id=wid)
        if f.kind == "bool":
            return Switch(value=bool(default) if default is not _MISSING else False, id=wid)
        text = "" if default is _MISSING else default if isinstance(default, str) else json.dumps(default)
        if f.kind in ("integer", "number"):
            # not type=: that drops what it rejects. Left empty, the field means its default: say so.
            hint = f.kind if default is _MISSING else f"{f.kind} (empty: the default, {clip(text, 30)})"
            return Input(text, id=wid, placeholder=hint)
        if f.kind == "line":
            return Input(text, id=wid)
        if f.kind == "json":
            text = "" if default is _MISSING else json.dumps(default, indent=2, ensure_ascii=False)
        area = TextArea(text, id=wid, soft_wrap=True, classes=f"input-{f.kind}")
        if f.kind == "json" and default is not _MISSING:
            area.placeholder = f"empty: the default, {clip(json.dumps(default, ensure_ascii=False), 40)}"
        return area

    # ------------------------------------------------------------------ values

    def raw_values(self) -> tuple[dict[str, Any], dict[str, str]]:
        """(values as typed, per-field parse errors); empty number and JSON fields are left out (their
        default applies, or the input is missing); an empty text field is the empty text, unless the
        input is required (then it is missing)."""
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
            select = self.query_one(f"#{f.widget_id}", Select)
            return _MISSING if select.is_blank() else f.schema["enum"][int(cast(int, select.value))]
        if f.kind == "bool":
            return self.query_one(f"#{f.widget_id}", Switch).value
        if f.kind in ("integer", "number", "line"):
            text = self.query_one(f"#{f.widget_id}", Input).value
        else:
            text = self.query_one(f"#{f.widget_id}", TextArea).text
        if f.kind in ("line", "text"):
            if text == "" and f.required:
                return _MISSING  # required: "missing input", as the CLI says, not a run with ""
            return text  # emptied, it is the empty text: the default was in the field, and the user removed it
        if text.strip() == "":
            return _MISSING  # a number or JSON cannot be empty: the default (the placeholder says so), or missing
        what = {"integer": "an integer", "number": "a number"}.get(f.kind, "JSON")
        try:
            value = strict_json(text)  # as the CLI reads inputs: no NaN, no duplicate keys
        except json.JSONDecodeError as exc:
            where = f" ({exc.msg} at line {exc.lineno} column {exc.colno})" if f.kind == "json" else ""
            raise ValueError(f"input '{f.name}': {text.strip()!r} is not {what}{where}") from None
        except (ValueError, RecursionError) as exc:  # NaN, a duplicate key, 5,000 digits, deep nesting
            why = "it nests too deeply" if isinstance(exc, RecursionError) else str(exc)
            raise ValueError(f"input '{f.name}': {clip(text.strip(), 60)!r} is not {what} ({why})") from None
        if f.kind == "integer" and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"input '{f.name}': {text.strip()!r} is not {what}")
        if f.kind == "number" and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"input '{f.name}': {text.strip()!r} is not {what}")
        return value

    def validate(self, *, show: bool = True) -> dict[str, Any] | None:
        """Validated values (defaults filled), or None with the errors shown under their fields."""
        if not show:
            return self._check(lambda _name, _message: None)
        self._checked = True
        found: dict[str, str] = {}
        values = self._check(lambda name, message: self._collect(found, name, message))
        self._show_errors(found)
        return values

    def _check(self, report: Callable[[str | None, str], None]) -> dict[str, Any] | None:
        values, errors = self.raw_values()
        problems: dict[str, list[str]] = {name: [message] for name, message in errors.items()}
        for f in self.fields:
            if f.name in problems:
                continue
            if f.name not in values:
                if f.required:
                    problems[f.name] = [f"missing input '{f.name}' (it has no default)"]
                continue
            found = schema_errors(f.name, f.schema, values[f.name])
            if found:
                problems[f.name] = found
        for name, messages in problems.items():
            report(name, "\n".join(messages))
        if problems:
            return None
        try:
            return validate_inputs(self.spec, values)
        except InputError as exc:
            report(exc.name, str(exc))
            return None

    def values(self) -> dict[str, Any]:
        """The values as typed that parse (for remembering the form), without checking them."""
        return self.raw_values()[0]

    def errors(self) -> dict[str, str]:
        """Errors currently shown, by input name (for tests and the status line)."""
        out = {}
        for f in self.fields:
            label = self.query_one(f"#{f.error_id}", Label)
            if label.display:
                out[f.name] = str(label.content)
        return out

    def show_first_error(self) -> None:
        """Scroll the first field with an error into view (the form can be taller than the screen)."""
        for f in self.fields:
            if self.query_one(f"#{f.error_id}", Label).display:
                self.query_one(f"#{f.widget_id}").scroll_visible(animate=False)
                return

    def _collect(self, found: dict[str, str], name: str | None, message: str) -> None:
        if any(f.name == name for f in self.fields):
            found[str(name)] = message
        else:
            self.notify(message, severity="error")

    def _show_errors(self, found: dict[str, str]) -> None:
        """Show ``found`` under the fields, touching only labels that change (each change costs a layout)."""
        for f in self.fields:
            label = self.query_one(f"#{f.error_id}", Label)
            message = found.get(f.name)
            if message is None:
                if label.display:
                    label.display = False
                continue
            if not label.display or str(label.content) != message:
                label.update(plain(message))  # it quotes the value typed, e.g. "[/]"
                label.display = True

    def set_values(self, values: dict[str, Any]) -> None:
        """Fill the fields given (a remembered form); values that no longer fit the spec are skipped."""
        for name, value in values.items():
            try:
                self.set_value(name, value)
            except (StopIteration, ValueError, TypeError):
                continue

    def set_value(self, name: str, value: Any) -> None:
        """Fill a field programmatically (tests, a remembered form)."""
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
        self.post_message(self.ValuesChanged(self))


def _singular(text: str, value: object) -> str:
    """'at least 1 character', not '1 characters'."""
    if value == 1 and not isinstance(value, bool) and text.endswith(("characters", "items")):
        return text[:-1]
    return text
