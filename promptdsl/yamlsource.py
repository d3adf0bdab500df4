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

from .errors import SpecError, quote

MAX_SPEC_BYTES = 1 << 20  # a spec is a few KB; 1 MiB is generous and stops accidents
MAX_NODES = 200_000  # alias bombs expand past this quickly
#: Levels of nesting: a spec needs a dozen. Every node's position is kept under its whole key path,
#: so 400 levels of 200,000 nodes took 840 MB before any other limit spoke.
MAX_DEPTH = 64
#: Text the document holds once its aliases are expanded: a few large strings reused through
#: aliases stay under MAX_NODES yet would be scanned, checked and hashed at full size.
MAX_EXPANDED_CHARS = 16 << 20
MAX_INT_DIGITS = 4000  # Python refuses to read integers past 4300 digits; no spec needs more
MAX_PATH_CHARS = 1024  # longer file names are mistakes (or attacks), not paths
#: The only YAML tags a spec may carry: JSON's data model.
PLAIN_TAGS = frozenset(
    f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "seq", "map", "merge")
)
_SURROGATE = re.compile("[\ud800-\udfff]")

KeyPath = tuple[str | int, ...]
Position = tuple[str, int, int]  # file, line, column (1-based)


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2's core scalars, which are JSON's: dates, times and ``Yes`` / ``on``
    stay strings, ``010`` is ten, ``1e3`` a number. YAML 1.1 read ``choices: [Yes, No]`` as booleans,
    ``12:30`` as 750 and ``010`` as 8."""

    composed = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        """Nodes are counted as they are made, so a document of too many stops there, not after
        the whole of it is parsed (aliases, which make none, are counted by the walk)."""
        self.composed += 1
        if self.composed > MAX_NODES:
            raise _TooManyNodes
        return super().compose_node(parent, index)  # type: ignore[no-any-return]


class _TooManyNodes(Exception):
    """Raised while composing: the document holds more than MAX_NODES nodes."""


def _too_many_nodes(file: str) -> SpecError:
    """A document of more than MAX_NODES nodes, composed (:class:`_Loader`) or with its aliases expanded."""
    return SpecError(f"YAML document expands to more than {MAX_NODES} nodes (alias bomb?)", file=file)


_REPLACED = {f"tag:yaml.org,2002:{t}" for t in ("timestamp", "bool", "int", "float")}
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in _REPLACED]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Loader.add_implicit_resolver(  # before float: "10" is an int
    "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."),
)


def _int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    """YAML 1.2's integers: decimal (a leading zero is no octal), ``0o`` octal, ``0x`` hex. An
    explicit ``!!int`` holding anything else is an error at its line."""
    text = str(loader.construct_scalar(node))
    try:
        if text.startswith(("0o", "0x")):
            return int(text[2:], 8 if text[1] == "o" else 16)
        return int(text, 10)
    except ValueError:
        raise yaml.constructor.ConstructorError(
            None, None, f"{text[:40]!r} is not an integer", node.start_mark) from None


_Loader.add_constructor("tag:yaml.org,2002:int", _int)


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


class TooLarge(Exception):
    """A file holds more than the limit (its size may be unknown: devices and pipes)."""


def read_limited(path: Path, limit: int) -> bytes:
    """At most ``limit`` bytes of ``path``; raise :class:`TooLarge` if there are more.

    ``st_size`` cannot be trusted (``/dev/zero`` and pipes report 0), so this reads ``limit + 1``
    bytes and never more. OSError and ValueError (a NUL in the name) pass through.
    """
    if len(str(path)) > MAX_PATH_CHARS:
        raise OSError(36, f"file name longer than {MAX_PATH_CHARS} characters")
    if path.is_dir():
        raise IsADirectoryError(21, "is a directory")
    with path.open("rb") as f:
        raw = f.read(limit + 1)
    if len(raw) > limit:
        raise TooLarge(f"larger than the limit of {limit} bytes")
    return raw


def read_text(path: Path, *, what: str = "spec file", limit: int = MAX_SPEC_BYTES) -> str:
    """Read a small UTF-8 text file, refusing missing, huge, special and binary files clearly."""
    name = quote(str(path), 200)[1:-1]
    try:
        raw = read_limited(path, limit)
    except FileNotFoundError:
        raise SpecError(f"{what} not found", file=name) from None
    except IsADirectoryError:
        raise SpecError(f"{what} is a directory", file=name) from None
    except TooLarge:
        raise SpecError(f"{what} is too large (the limit is {limit} bytes)", file=name) from None
    except OSError as exc:
        raise SpecError(f"cannot read {what}: {exc.strerror or exc}", file=name) from None
    except ValueError:
        raise SpecError(f"{what} name holds a NUL character", file=name) from None
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
    try:
        loader = _Loader(text)  # the reader checks characters already: inside the try
    except yaml.YAMLError as exc:
        raise _located_yaml_error(exc, file, text) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return Located(None, file)
        positions: dict[KeyPath, Position] = {(): _pos(file, node)}
        _walk(node, (), file, positions, [0, 0])
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise _located_yaml_error(exc, file, text) from None
    except RecursionError:
        raise SpecError("YAML nesting is too deep", file=file) from None
    except _TooManyNodes:
        raise _too_many_nodes(file) from None
    except (ValueError, TypeError, OverflowError) as exc:  # a constructor refused a value
        raise SpecError(f"invalid YAML value: {quote(str(exc), 120)[1:-1]}", file=file) from None
    finally:
        loader.dispose()
    return Located(data, file, positions)


def _located_yaml_error(exc: yaml.YAMLError, file: str, text: str) -> SpecError:
    if isinstance(exc, yaml.MarkedYAMLError):
        return _yaml_error(exc, file)
    if isinstance(exc, yaml.reader.ReaderError):
        before = text[: exc.position]
        line, col = before.count("\n") + 1, exc.position - (before.rfind("\n") + 1) + 1
        char = chr(exc.character) if isinstance(exc.character, int) else str(exc.character)
        return SpecError(
            f"invalid YAML: the character {quote(char)} is not allowed in YAML text "
            "(write control characters as escapes in a double-quoted string)",
            file=file, line=line, col=col,
        )
    return SpecError(f"invalid YAML: {quote(str(exc), 120)[1:-1]}", file=file)


def _pos(file: str, node: yaml.Node) -> Position:
    return (file, node.start_mark.line + 1, node.start_mark.column + 1)


def _walk(
    node: yaml.Node, path: KeyPath, file: str, out: dict[KeyPath, Position], count: list[int]
) -> None:
    count[0] += 1
    if count[0] > MAX_NODES:
        raise _too_many_nodes(file)
    if len(path) > MAX_DEPTH:
        raise SpecError(f"YAML nests more than {MAX_DEPTH} levels deep", file=file,
                        line=node.start_mark.line + 1, col=node.start_mark.column + 1, path=path[:MAX_DEPTH])
    if isinstance(node, yaml.ScalarNode):
        count[1] += len(node.value)
        if count[1] > MAX_EXPANDED_CHARS:
            raise SpecError(
                f"YAML document expands to more than {MAX_EXPANDED_CHARS >> 20} MiB of text (alias bomb?)",
                file=file, line=node.start_mark.line + 1, col=node.start_mark.column + 1, path=path,
            )
    _check_node(node, path, file)
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, Position] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                _walk_merged(value_node, path, file, out, count)
                continue
            here = _pos(file, key_node)
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != "tag:yaml.org,2002:str":
                shown = (
                    f"{quote(key_node.value)} is a {_kind(key_node)} (quote it)"
                    if isinstance(key_node, yaml.ScalarNode) else "this key is a list or mapping"
                )
                raise SpecError(
                    f"keys must be strings, but {shown}",
                    file=file, line=here[1], col=here[2], path=path,
                )
            key = key_node.value
            _check_node(key_node, path, file)
            if key in seen:
                _, line, _ = seen[key]
                raise SpecError(
                    f"duplicate key {quote(key)} (first defined on line {line})",
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


def _walk_merged(
    node: yaml.Node, path: KeyPath, file: str, out: dict[KeyPath, Position], count: list[int]
) -> None:
    """The mapping(s) a ``<<`` merge key brings in: counted and checked like the rest (a merged
    alias bomb or a banned tag gets no pass); their keys' positions never hide a key written here."""
    merged: dict[KeyPath, Position] = {}
    for mapping in node.value if isinstance(node, yaml.SequenceNode) else [node]:
        _walk(mapping, path, file, merged, count)
    for key, where in merged.items():
        out.setdefault(key, where)


def _kind(node: yaml.Node) -> str:
    if not isinstance(node, yaml.ScalarNode):
        return "collection"
    return {"int": "number", "float": "number", "bool": "boolean", "null": "null"}.get(
        node.tag.rsplit(":", 1)[-1], node.tag
    )


def _check_node(node: yaml.Node, path: KeyPath, file: str) -> None:
    """Plain data only: JSON's tags, text without lone surrogates, integers Python can read."""
    line, col = node.start_mark.line + 1, node.start_mark.column + 1
    if node.tag not in PLAIN_TAGS:
        tag = node.tag.replace("tag:yaml.org,2002:", "!!")
        raise SpecError(
            f"invalid YAML: YAML tag {quote(tag)} is not allowed (specs hold plain data only: "
            "text, numbers, booleans, null, lists and mappings)",
            file=file, line=line, col=col, path=path,
        )
    if not isinstance(node, yaml.ScalarNode):
        return
    if _SURROGATE.search(node.value):
        raise SpecError(
            "text holds a lone surrogate (such as \\ud800), which is not valid Unicode",
            file=file, line=line, col=col, path=path,
        )
    if node.tag == "tag:yaml.org,2002:int" and len(node.value) > MAX_INT_DIGITS:
        raise SpecError(
            f"integer of {len(node.value)} digits is too large (the limit is {MAX_INT_DIGITS})",
            file=file, line=line, col=col, path=path,
        )


#: PyYAML's words for the common slips, and what the writer of a spec did: (words, hint), first match.
_YAML_HINTS = (
    ("found character '\\t' that cannot start any token", "a tab; YAML indents with spaces only"),
    ("expected <block end>", "the indentation does not line up: the keys of one mapping start in one column"),
    ("mapping values are not allowed here",
     "a ': ' where no key can start: quote text that holds ': ', or line the key up with its neighbours"),
    ("expected '<document start>'",
     "more than one value in the file: a spec is one YAML mapping (JSON lines of data go to --data)"),
    ("could not find expected ':'", "a line that is no 'key: value' (a missing ':', or a key out of line)"),
    ("found unexpected end of stream", "a quote that is never closed"),
)


def _yaml_error(exc: yaml.MarkedYAMLError, file: str) -> SpecError:
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or "invalid YAML"
    if isinstance(exc, yaml.constructor.ConstructorError) and "constructor for the tag" in problem:
        tag = problem.split("tag", 1)[1].strip(" '")
        tag = tag.replace("tag:yaml.org,2002:", "!!")
        problem = f"YAML tag '{tag}' is not allowed (specs hold plain data only)"
    elif exc.context and exc.problem:
        problem = f"{exc.context}, {exc.problem}"
    problem = next((f"{hint} ({problem})" for words, hint in _YAML_HINTS if words in problem), problem)
    line = mark.line + 1 if mark else None
    col = mark.column + 1 if mark else None
    return SpecError(f"invalid YAML: {problem}", file=file, line=line, col=col)
