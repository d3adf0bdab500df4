"""Safe YAML loading that remembers where every key came from.

Errors in specs must point at ``file:line:col``, so loading keeps a map from
each key path to its position in the source. Only plain data is accepted: no
Python tags, no timestamps turned into objects, no runaway alias expansion.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import SpecError

MAX_SPEC_BYTES = 1 << 20  # a spec is a few KB; 1 MiB is generous and stops accidents
MAX_NODES = 200_000  # alias bombs expand past this quickly

KeyPath = tuple[str | int, ...]
Position = tuple[str, int, int]  # file, line, column (1-based)


class _Loader(yaml.SafeLoader):
    """SafeLoader with JSON-like scalars: dates stay strings, only true/false are booleans."""


_Loader.yaml_implicit_resolvers = {
    first: [
        (tag, rx)
        for tag, rx in resolvers
        if tag not in ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:bool")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
# YAML 1.2 booleans only: `choices: [Yes, No]` must stay strings, not become True/False.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


@dataclass
class Located:
    """Loaded data plus the source position of every key path in it."""

    data: Any
    file: str
    positions: dict[KeyPath, Position] = field(default_factory=dict)

    def where(self, path: KeyPath) -> Position:
        """Position of ``path``, or of its nearest ancestor that has one."""
        for n in range(len(path), -1, -1):
            pos = self.positions.get(tuple(path[:n]))
            if pos is not None:
                return pos
        return (self.file, 1, 1)

    def error(self, message: str, path: KeyPath = ()) -> SpecError:
        """A SpecError located at ``path``."""
        file, line, col = self.where(path)
        return SpecError(message, file=file, line=line, col=col, path=path)


def read_text(path: Path, *, what: str = "spec file", limit: int = MAX_SPEC_BYTES) -> str:
    """Read a small UTF-8 text file, refusing missing, huge and binary files clearly."""
    name = str(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise SpecError(f"{what} not found", file=name) from None
    except OSError as exc:
        raise SpecError(f"cannot read {what}: {exc.strerror}", file=name) from None
    if path.is_dir():
        raise SpecError(f"{what} is a directory", file=name)
    if size > limit:
        raise SpecError(f"{what} is too large ({size} bytes; the limit is {limit})", file=name)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SpecError(f"cannot read {what}: {exc.strerror}", file=name) from None
    if b"\0" in raw:
        raise SpecError(f"{what} is binary, not YAML text", file=name)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecError(
            f"{what} is not UTF-8 text (bad byte at offset {exc.start})", file=name
        ) from None


def load_yaml(path: Path, *, what: str = "spec file") -> Located:
    """Load one YAML document safely, with positions. Raises SpecError."""
    text = read_text(path, what=what)
    return parse_yaml(text, str(path))


def parse_yaml(text: str, file: str) -> Located:
    """Parse YAML text (one document) into data plus positions."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return Located(None, file)
        positions: dict[KeyPath, Position] = {(): _pos(file, node)}
        _walk(node, (), file, positions, [0])
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        raise _yaml_error(exc, file) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"invalid YAML: {exc}", file=file) from None
    except RecursionError:
        raise SpecError("YAML nesting is too deep", file=file) from None
    finally:
        loader.dispose()
    return Located(data, file, positions)


def _pos(file: str, node: yaml.Node) -> Position:
    return (file, node.start_mark.line + 1, node.start_mark.column + 1)


def _walk(
    node: yaml.Node, path: KeyPath, file: str, out: dict[KeyPath, Position], count: list[int]
) -> None:
    count[0] += 1
    if count[0] > MAX_NODES:
        raise SpecError(
            f"YAML document expands to more than {MAX_NODES} nodes (alias bomb?)", file=file
        )
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, Position] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            here = _pos(file, key_node)
            if key in seen:
                _, line, _ = seen[key]
                raise SpecError(
                    f"duplicate key '{key}' (first defined on line {line})",
                    file=file,
                    line=here[1],
                    col=here[2],
                    path=(*path, key),
                )
            seen[key] = here
            out[(*path, key)] = here
            _walk(value_node, (*path, key), file, out, count)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[(*path, i)] = _pos(file, item)
            _walk(item, (*path, i), file, out, count)


def _yaml_error(exc: yaml.MarkedYAMLError, file: str) -> SpecError:
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or "invalid YAML"
    if isinstance(exc, yaml.constructor.ConstructorError) and "constructor for the tag" in problem:
        tag = problem.split("tag", 1)[1].strip(" '")
        tag = tag.replace("tag:yaml.org,2002:", "!!")
        problem = f"YAML tag '{tag}' is not allowed (specs hold plain data only)"
    elif exc.context and exc.problem:
        problem = f"{exc.context}, {exc.problem}"
    line = mark.line + 1 if mark else None
    col = mark.column + 1 if mark else None
    return SpecError(f"invalid YAML: {problem}", file=file, line=line, col=col)
