"""The tool plugin interface: what a tool is, how a spec uses one, and what a call leaves behind.

A tool is a :class:`Tool` subclass (made with its options) or a ready
:class:`Tool` instance (e.g. from :func:`promptdsl.tools.tool`), exposed
through the entry-point group ``promptdsl.tools``::

    [project.entry-points."promptdsl.tools"]
    weather = "my_package:WeatherTool"

A tool's ``call`` may raise anything: the loop turns the exception into text
for the model and keeps it in the trace, so a broken tool never ends a run.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import NamedEnum, PromptDSLError

#: Seconds a call may take when the spec does not say.
DEFAULT_TIMEOUT = 10.0

EMPTY_OBJECT: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}


class ToolError(PromptDSLError):
    """A tool is unknown, broken, misconfigured or unusable (exit code 2: the user can fix it)."""


class ToolFailure(Exception):
    """Raised by a tool for an expected failure; its message goes back to the model as is."""


def result_text(tool_name: str, value: Any) -> str:
    """A tool's result as the model reads it: text as is, anything else as JSON.

    A value JSON cannot hold (an object, a set, bytes, NaN) is the tool's error, not its repr: a
    ``<Opaque object at 0x7f…>`` sent to the model, or made the answer of a ``direct`` tool, would
    pass for a result.
    """
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:  # not serialisable, NaN/inf, a cycle
        why = "it nests too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise ToolFailure(f"tool '{tool_name}' returned a value JSON cannot hold ({why}); return text, "
                          "numbers, booleans, None, lists or dicts") from None


class Approval(NamedEnum):
    """Who decides whether a call runs: ``auto`` runs it, ``ask`` asks the user, ``deny`` refuses."""

    AUTO = "auto"
    ASK = "ask"
    DENY = "deny"


class Tool:
    """Base class of every tool.

    Subclasses set :attr:`name`, :attr:`description`, :attr:`parameters` (a JSON
    Schema for the arguments object, with every string bounded) and, if they take
    options, :attr:`options_schema`; they implement :meth:`call`. ``read_only``
    tools default to approval ``auto``, every other tool to ``ask``.
    """

    name: str = ""
    description: str = ""
    parameters: dict[str, Any] = EMPTY_OBJECT
    options_schema: dict[str, Any] = {"type": "object", "additionalProperties": False}  # noqa: RUF012
    read_only: bool = False
    #: Running it is free, local and changes nothing (arithmetic, not a remote API): a ``direct``
    #: tool that says so may be run on every call the prompted path lists, to keep only those
    #: whose result is a valid answer. False by default: a tool is run only when the model calls it.
    cheap: bool = False

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        self.options: dict[str, Any] = dict(options or {})

    def call(self, arguments: dict[str, Any]) -> str:
        """Run with validated ``arguments``; return the result as text."""
        raise NotImplementedError

    @classmethod
    def prepare_options(cls, options: Mapping[str, Any], *, base_dir: Path | None, trusted: bool) -> dict[str, Any]:
        """Resolve options before use (paths against the spec's folder); ``trusted`` when the user gave them."""
        return dict(options)

    def with_options(self, options: Mapping[str, Any]) -> Tool:
        """A copy configured with ``options`` (tool instances that are registered ready-made)."""
        clone = copy.copy(self)
        clone.options = dict(options)
        return clone

    def close(self) -> None:
        """Release resources (MCP sessions, files). Safe to call twice."""

    def release(self) -> None:
        """:meth:`close`, which a plugin may get wrong in any way (even ``sys.exit``): closing must
        never fail a run whose work is done, nor end the process."""
        with contextlib.suppress(Exception, SystemExit):
            self.close()

    def describe(self) -> dict[str, Any]:
        """Name, description and argument schema, as prompts and native tool calls show them."""
        return {"name": self.name, "description": self.description, "parameters": self.parameters}


@dataclass(frozen=True)
class ToolExample:
    """A worked call for the prompted path: for this input, the model should call the tool with these arguments."""

    input: dict[str, Any]
    arguments: dict[str, Any]


@dataclass(frozen=True)
class ToolUse:
    """One entry of a spec's ``tools`` list (or of ``-T``): which tool, configured how."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    approval: Approval | None = None  # None: auto for read-only tools, ask for the rest
    timeout: float = DEFAULT_TIMEOUT
    direct: bool = False  # the result of a successful call is the answer (parsed as the spec's output)
    examples: tuple[ToolExample, ...] = ()  # worked calls shown to models without native tool calls
    shots: int | None = None  # how many examples to show (the most similar to the input); None: all

    @classmethod
    def from_data(cls, item: Any) -> ToolUse:
        """From the spec's YAML: a name, or ``{name, options, approval, timeout, direct, examples, shots}``."""
        if isinstance(item, str):
            return cls(item)
        approval = item.get("approval")
        return cls(
            name=str(item["name"]),
            options=dict(item.get("options") or {}),
            approval=Approval(approval) if approval else None,
            timeout=float(item.get("timeout", DEFAULT_TIMEOUT)),
            direct=bool(item.get("direct", False)),
            examples=tuple(ToolExample(dict(e["input"]), dict(e["arguments"])) for e in item.get("examples") or ()),
            shots=int(item["shots"]) if item.get("shots") is not None else None,
        )


@dataclass
class ToolCall:
    """A call the model asked for (``id`` is the backend's, when it has one)."""

    tool: str
    arguments: dict[str, Any]
    id: str = ""


@dataclass
class Step:
    """One tool call in a run's trace: what was asked, whether it ran, what came back."""

    tool: str
    arguments: Any
    result: str | None = None
    error: str | None = None
    approved: bool | None = None  # None: never asked (unknown tool, bad arguments)
    seconds: float = 0.0
    id: str = ""
    #: What the tool raised, for ``--debug`` to show its traceback; never written anywhere (see to_dict).
    exception: BaseException | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The step as results files and ``--json`` hold it: a secret a tool read (a token in a
        ``.git/config``) is masked there as in any message."""
        from ..errors import mask_secrets

        return {
            "tool": self.tool,
            "arguments": self.arguments,
            "result": None if self.result is None else mask_secrets(self.result),
            "error": None if self.error is None else mask_secrets(self.error),
            "approved": self.approved,
            "seconds": round(self.seconds, 4),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Step:
        """A step back from :meth:`to_dict` (a saved trace shown again)."""
        return cls(str(data.get("tool", "")), data.get("arguments"), data.get("result"), data.get("error"),
                   data.get("approved"), float(data.get("seconds") or 0.0))

    def feedback(self) -> str:
        """What the model reads back: the result, or the error as text."""
        return self.result if self.error is None and self.result is not None else f"error: {self.error}"


class StopReason(NamedEnum):
    ANSWER = "answer"
    MAX_STEPS = "max_steps"
    DENIED = "denied"
    ERROR = "error"
