"""The typed view of a validated spec (what the compiler and runner read)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import NamedEnum, SpecError
from .yamlsource import Located

if TYPE_CHECKING:
    from .tools.base import ToolUse

#: The tool_choice values that force no tool (any other, ``required`` or a name, needs one in use).
UNFORCED_CHOICES = ("auto", "none")


class OutputType(NamedEnum):
    TEXT = "text"
    CHOICE = "choice"
    JSON = "json"
    REGEX = "regex"


class Method(NamedEnum):
    AUTO = "auto"
    SCORE = "score"
    CONSTRAIN = "constrain"
    GENERATE = "generate"


class FromSpec(str):
    """A ``model.options`` string that a spec file chose, not the user.

    Specs are shared like code, so backends must not let such a value decide credentials or
    where they are sent (the OpenAI plugin, say, sends no key to a ``base_url`` of this type
    unless the user trusts it). Values from ``-o`` or ``Runner(options=...)`` are plain ``str``.
    It compares, hashes and prints like the text it holds.
    """

    __slots__ = ()


@dataclass(frozen=True)
class ModelConfig:
    backend: str | None = None
    model: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FewShot:
    k: int | None = None  # None: every example
    select: str = "first"  # first | random | balanced
    seed: int = 0
    target_delimiter: str = " "
    separator: str = "\n\n"


@dataclass(frozen=True)
class OutputSpec:
    type: OutputType = OutputType.TEXT
    choices: tuple[str, ...] = ()
    method: Method = Method.AUTO
    schema: dict[str, Any] | None = None
    pattern: str | None = None
    stop: tuple[str, ...] | None = None
    max_tokens: int | None = None
    strip: bool = True

    def as_context(self) -> dict[str, Any]:
        """What templates see as ``output``."""
        ctx: dict[str, Any] = {"type": self.type.value, "method": self.method.value}
        if self.choices:
            ctx["choices"] = list(self.choices)
        if self.schema is not None:
            ctx["schema"] = self.schema
        if self.pattern is not None:
            ctx["pattern"] = self.pattern
        return ctx


@dataclass(frozen=True)
class Example:
    input: dict[str, Any]
    output: Any


@dataclass(frozen=True)
class SpecTest:
    input: dict[str, Any]
    expect: Any
    name: str = ""


@dataclass
class Spec:
    """A loaded, validated spec. Build it with :func:`promptdsl.load_spec`."""

    name: str
    version: int = 1
    description: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    mode: str = "chat"
    system: str | None = None
    instruction: str | None = None
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    template: str | None = None
    examples: list[Example] = field(default_factory=list)
    fewshot: FewShot = field(default_factory=FewShot)
    output: OutputSpec = field(default_factory=OutputSpec)
    tests: list[SpecTest] = field(default_factory=list)
    tools: list[ToolUse] = field(default_factory=list)  # see promptdsl.tools
    tool_choice: str = "auto"  # auto | required | none | a tool's name
    max_steps: int = 5  # tool calls before a final answer is forced
    path: Path | None = None
    source: Located | None = None  # where each key stands in the file, for messages

    @property
    def label(self) -> str:
        """How messages name this spec: its file, else its name."""
        return str(self.path) if self.path else self.name

    def error(self, message: str, path: tuple[str | int, ...]) -> SpecError:
        """A SpecError at ``path`` in the spec: its file, line and column when it was read from one."""
        if self.source is None:
            return SpecError(message, file=self.label, path=path)
        return self.source.error(message, path)

    @property
    def files(self) -> tuple[Path, ...]:
        """Every file this spec was built from, resolved: its own file, each file of its
        ``extends`` chain and its ``examples_file``, as the loader read them (a spec built in code,
        or copied with ``dataclasses.replace``, has none). Not a dataclass field, so the hashes and
        digests taken over the fields are the same as without it."""
        files: tuple[Path, ...] = self.__dict__.get("_files", ())
        return files

    @files.setter
    def files(self, value: tuple[Path, ...]) -> None:
        self.__dict__["_files"] = tuple(value)

    def item_template(self) -> str:
        """The template that renders one item; a plain default when the spec has none."""
        if self.template is not None:
            return self.template
        names = list(self.inputs)
        if len(names) == 1:
            return "{{ " + names[0] + " }}"
        return "\n".join(f"{n}: {{{{ {n} }}}}" for n in names)
