"""Load a spec file: YAML -> extends -> JSON Schema -> semantic checks -> :class:`Spec`.

Every problem is a :class:`SpecError` located at ``file:line:col`` with the
key path, so a user can jump straight to it.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import schema as schemas
from . import speccache
from .errors import InputError, SpecError, did_you_mean, quote
from .inputs import has_surrogate, strict_json, validate_inputs
from .schema import spec_schema
from .schema.keywords import required_problem
from .schema.quick import surely_usable, surely_valid
from .spec import (
    Example,
    FewShot,
    FromSpec,
    Method,
    ModelConfig,
    OutputSpec,
    OutputType,
    Spec,
    SpecTest,
)
from .templates import TemplateFailure, compile_template, free_names, private_attributes
from .yamlsource import MAX_PATH_CHARS, KeyPath, Located, load_yaml, parse_yaml, read_text

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError

    from .tools.base import ToolUse

TEMPLATE_KEYS = ("system", "instruction", "template")
MAX_EXAMPLES_FILE_BYTES = 64 << 20
#: Examples a spec may hold (inline or in its examples_file): a prompt shows a handful, and each is
#: checked at every load, so 1.7 million (a 64 MiB file) made every run of a shared spec take minutes.
MAX_EXAMPLES = 10_000
MAX_REPORTED = 10  # schema problems listed at once
SPEC_SUFFIXES = (".yaml", ".yml", ".json")

#: Input names a template could not tell apart from its own names: ``output`` is the output
#: block, ``self``/``loop``/``caller``/``varargs``/``kwargs`` are Jinja's, ``none``/``true``/
#: ``false`` are literals, the operators are syntax, and ``range``/``dict``/... are globals.
RESERVED_INPUTS: dict[str, str] = {
    "output": "templates use 'output' for the output block",
    **{n: "Jinja uses it inside templates" for n in ("self", "loop", "super", "caller", "varargs", "kwargs")},
    **{n: "it is a literal in templates" for n in ("none", "None", "true", "True", "false", "False")},
    **{n: "it is an operator in templates" for n in ("and", "or", "not", "in", "is", "if", "else")},
    **{n: "it is a template global" for n in ("range", "dict", "cycler", "joiner", "namespace", "lipsum")},
}


#: What a folder of specs holds (``promptdsl validate specs/``); ``extends`` may also name a .json.
FOLDER_SUFFIXES = (".yaml", ".yml")


def spec_files(path: Path) -> list[Path]:
    """The spec files ``path`` names: itself, or for a folder its ``*.yaml`` and ``*.yml`` entries
    (not its subfolders, hidden files or dangling links), sorted; :func:`check_folder_entry` says
    which of those may not be read.
    A folder with none is an InputError."""
    if not path.is_dir():
        return [path]
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in FOLDER_SUFFIXES and not p.is_dir()
                   and not p.name.startswith(".") and (p.exists() or not p.is_symlink()))  # not .#x.yaml, an
    # editor's lock (a dangling link) or backup, nor any other link to nothing
    if not files:
        raise InputError(f"{path}: a folder with no spec files (*.yaml, *.yml)")
    return files


def check_folder_entry(given: Path, path: Path) -> None:
    """Raise SpecError when ``path``, found by :func:`spec_files` in ``given`` (a folder), is not to
    be read as a spec; nothing for a file named on the command line, which is the user's choice. A
    folder comes from a repository (untrusted, like a spec): a ``*.yaml`` link to a file outside it
    (``/etc/shadow``) would have its lines printed as "unknown key" errors, and a FIFO or device
    would hang the read."""
    if not given.is_dir():
        return
    name = quote(str(path), 200)[1:-1]
    if not path.is_file():
        raise SpecError("not a regular file (a FIFO or a device), so not read", file=name)
    try:
        inside = path.resolve().is_relative_to(given.resolve())
    except (OSError, RuntimeError):  # a link loop
        inside = False
    if not inside:
        raise SpecError(f"a link to a file outside {quote(str(given), 200)}, so not read (name the file itself "
                        "to read it)", file=name)


def real_path(path: Path) -> Path:
    """The file ``path`` is, links followed (one spec found twice is read once); itself, made
    absolute, for a link that loops."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path.absolute()


def load_spec(path: str | Path) -> Spec:
    """Load, merge (``extends``), validate and type a spec file. Its regexes and schema checks
    share one budget (:data:`~promptdsl.schema.SPEC_BUDGET_SECONDS`): each example and test is a
    value with a budget of its own, and a shared spec may hold thousands."""
    with schemas.spec_budget():
        return _load_spec(Path(path))


def _load_spec(path: Path) -> Spec:
    root = _root(path.parent)
    read: list[Path] = []  # every file the spec is built from (Spec.files)
    specs = 0  # how many spec files (this one and its bases) were read; the rest are examples files
    try:
        located = _load_with_extends(path, (), root, read)
        specs = len(read)
        data = located.data
        _validate_schema(located)
        spec = _build(data, located, path, root, read)
        _check_semantics(spec, located)
    except SpecError as exc:
        bases = read[1:specs] if specs else read[1:]  # the spec files this one extends (no examples file)
        for err in (exc, *exc.also):
            if bases and err.file is not None and _root(Path(err.file)) in bases:
                err.via = str(path)  # the base may be fine alone: the cause may be this spec's change to it
        raise
    return spec


def loads_spec(text: str, *, file: str = "<string>", base_dir: Path | None = None) -> Spec:
    """Load a spec from YAML text (``extends`` and ``examples_file`` resolve against, and must lie
    inside, ``base_dir``, else the current directory), on the budget :func:`load_spec` has."""
    with schemas.spec_budget():
        return _loads_spec(text, file, base_dir)


def _loads_spec(text: str, file: str, base_dir: Path | None) -> Spec:
    located = parse_yaml(text, file)
    _require_mapping(located)
    root = _root(base_dir or Path.cwd())
    read: list[Path] = []
    if isinstance(located.data, dict) and "extends" in located.data:
        base = (base_dir or Path.cwd()) / str(located.data["extends"])
        located = _merge_extends(located, base, (Path(file).resolve(),), root, read)
    _validate_schema(located)
    spec = _build(located.data, located, (base_dir or Path.cwd()) / file, root, read)
    _check_semantics(spec, located)
    return spec


# --------------------------------------------------------------------------- extends


def _require_mapping(located: Located) -> None:
    if not isinstance(located.data, dict):
        kind = "empty" if located.data is None else f"a YAML {type(located.data).__name__}"
        raise located.error(f"a spec must be a YAML mapping of keys, but this file is {kind}")


def _load_with_extends(path: Path, chain: tuple[Path, ...], root: Path, read: list[Path]) -> Located:
    """The spec at ``path`` merged with its ``extends`` chain; each file read is added to ``read``
    (before it is parsed, so an error in it can be told to come from a base)."""
    read.append(_root(path))
    located = load_yaml(path)
    _require_mapping(located)
    if "extends" not in located.data:
        return located
    target = located.data["extends"]
    if not isinstance(target, str):
        raise located.error("'extends' must be a file path", ("extends",))
    return _merge_extends(located, path.parent / target, (*chain, path.resolve()), root, read)


def _merge_extends(child: Located, base_path: Path, chain: tuple[Path, ...], root: Path, read: list[Path]) -> Located:
    where: KeyPath = ("extends",)
    _check_path_text(child, str(child.data["extends"]), where, "'extends'")
    if base_path.suffix.lower() not in SPEC_SUFFIXES:
        raise child.error(
            f"'extends' must name a spec file ({', '.join(SPEC_SUFFIXES)}), not {quote(base_path.name)}", where
        )
    try:
        resolved = base_path.resolve()
        exists = base_path.exists()
    except (OSError, ValueError, RuntimeError) as exc:
        raise child.error(f"'extends' file cannot be used: {quote(str(exc), 80)}", where) from None
    if resolved in chain:
        cycle = " -> ".join(str(p) for p in (*chain, resolved))
        raise child.error(f"'extends' cycle: {quote(cycle, 300)}", where)
    if len(chain) >= MAX_EXTENDS:  # hundreds deep ran out of Python's stack, blamed on the last file read
        raise child.error(f"'extends' chain is longer than {MAX_EXTENDS} files", where)
    _check_inside(child, base_path, resolved, root, where, "'extends'")
    if not exists:
        raise child.error(f"'extends' file not found: {quote(str(base_path), 200)}", where)
    _check_regular(child, base_path, resolved, where, "'extends'")
    base = _load_with_extends(base_path, chain, root, read)
    merged = _deep_merge(base.data, child.data)
    merged.pop("extends", None)
    positions = dict(base.positions)
    for key in list(positions):
        if key and isinstance(child.data, dict) and key[0] in child.data and _overridden(child.data, key):
            del positions[key]
    positions.update({k: v for k, v in child.positions.items() if k != ("extends",)})
    return Located(merged, child.file, positions)


#: Files one ``extends`` chain may hold (a base of a base of ... a spec).
MAX_EXTENDS = 32

#: Folders, besides the spec's own, whose files a spec may name (``extends``, ``examples_file``).
READ_DIRS_ENV = "PROMPTDSL_READ_DIRS"


def _root(folder: Path) -> Path:
    try:
        return folder.resolve()
    except (OSError, RuntimeError):
        return folder.absolute()


def _read_dirs() -> list[Path]:
    """The folders the user allows in ``$PROMPTDSL_READ_DIRS`` (``os.pathsep``-separated)."""
    return [_root(Path(d).expanduser()) for d in os.environ.get(READ_DIRS_ENV, "").split(os.pathsep) if d.strip()]


def _check_inside(located: Located, path: Path, resolved: Path, root: Path, where: KeyPath, what: str) -> None:
    """A file a spec names lies (symlinks followed) inside the folder of the spec you named, or a
    folder you allow: a shared spec may not read your other files and send them to its server.
    Checked before the file's existence, which would tell the spec about files outside."""
    if not any(resolved.is_relative_to(r) for r in (root, *_read_dirs())):
        raise located.error(
            f"{what} file {quote(str(path), 200)} is outside the spec's folder {quote(str(root), 200)}; "
            f"a spec may only read files in its own folder (add the file's folder to ${READ_DIRS_ENV} to allow it)",
            where,
        )


def declared_in(located: Located, key: KeyPath, folder: Path) -> Path:
    """The folder a relative path at ``key`` is relative to: that of the file that wrote it. A key a
    base spec wrote (``extends``) names a file next to the base, not next to the spec you run."""
    position = located.positions.get(key)
    return Path(position[0]).parent if position is not None and _inherited(located, key) else folder


def _inherited(located: Located, key: KeyPath) -> bool:
    """Whether a base spec (``extends``), not the file loaded, wrote ``key``."""
    position = located.positions.get(key)
    return position is not None and position[0] != located.file


def spec_file(spec: Spec, text: str, where: KeyPath, what: str) -> Path:
    """The file ``text`` that ``spec`` names at ``where`` (say a backend's model file), held to the rule of
    ``extends`` and ``examples_file``: relative to the folder of the spec file that wrote it, inside the
    spec's folder (symlinks followed) or a folder of ``$PROMPTDSL_READ_DIRS``, existing and a regular
    file. Else a SpecError located at ``where``."""
    located = spec.source or Located({}, spec.label, {})
    top = spec.path.parent if spec.path is not None else Path.cwd()
    folder = declared_in(located, where, top)
    _check_path_text(located, text, where, what)
    path = folder / Path(text).expanduser()
    try:
        resolved = path.resolve()
        exists = path.exists()
    except (OSError, ValueError, RuntimeError) as exc:
        raise located.error(f"{what} file cannot be used: {quote(str(exc), 80)}", where) from None
    _check_inside(located, path, resolved, _root(top), where, what)
    if not exists:
        raise located.error(f"{what} file not found: {quote(str(path), 200)}", where)
    _check_regular(located, path, resolved, where, what)
    return resolved


def _check_regular(located: Located, path: Path, resolved: Path, where: KeyPath, what: str) -> None:
    """Opening a FIFO (or ``/dev/stdin``) would wait forever."""
    if not resolved.is_file():
        raise located.error(f"{what} file {quote(str(path), 200)} is not a regular file", where)


def _check_path_text(located: Located, text: str, where: KeyPath, what: str) -> None:
    if "\0" in text:
        raise located.error(f"{what} holds a NUL character, which no file name can", where)
    if len(text) > MAX_PATH_CHARS:
        raise located.error(f"{what} is {len(text)} characters long; file names are at most {MAX_PATH_CHARS}", where)


def _overridden(child: Mapping[str, Any], key: KeyPath) -> bool:
    """True if ``key`` lies under a value the child replaces rather than merges."""
    node: Any = child
    for part in key:
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
        if not isinstance(node, Mapping):
            return True
    return False


def _deep_merge(base: Any, over: Any, path: tuple[str, ...] = ()) -> Any:
    """``over`` merged into ``base`` key by key. ``key: null`` removes a key ``base`` has (no spec
    key takes null), except inside a JSON Schema (an input's or the output's), where null is a value."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            at = (*path, str(key))
            if value is None and key in base and not _in_json_schema(at):
                del out[key]
            elif key in base:
                out[key] = _deep_merge(base[key], value, at)
            else:
                out[key] = copy.deepcopy(value)
        return out
    return copy.deepcopy(over)


def _in_json_schema(path: tuple[str, ...]) -> bool:
    """A key inside an input's schema (``inputs.NAME.KEY``) or the output schema (``output.schema.KEY``)."""
    return len(path) > 2 and (path[0] == "inputs" or path[:2] == ("output", "schema"))


# --------------------------------------------------------------------------- schema


def _validate_schema(located: Located) -> None:
    key = speccache.digest(located.data)
    if key is not None and speccache.known_valid(key):
        return  # this exact spec passed before (see promptdsl.speccache)
    try:
        errors = sorted(schemas.validator(spec_schema()).iter_errors(located.data), key=_error_order)
    except RecursionError:
        raise located.error("the spec nests too deeply") from None
    if not errors:
        if key is not None:
            speccache.remember(key)
        return
    found: list[SpecError] = []
    seen: set[str] = set()
    for err in errors:  # only the first MAX_REPORTED are shown: a spec of 2,000 bad keys must not take minutes
        for spec_err in _schema_errors(located, err):
            text = str(spec_err)
            if text not in seen:
                seen.add(text)
                found.append(spec_err)
        if len(found) >= MAX_REPORTED:
            break
    first = found[0]
    first.also = found[1:MAX_REPORTED]
    raise first


def _error_order(err: ValidationError) -> tuple[int, list[str]]:
    # Report the deepest, most specific error first: that is the line to fix.
    return (-len(err.absolute_path), [str(p) for p in err.absolute_path])


def _schema_errors(located: Located, err: ValidationError) -> list[SpecError]:
    path: KeyPath = tuple(err.absolute_path)
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        schema = err.schema if isinstance(err.schema, Mapping) else {}
        allowed = list(schema.get("properties", {}))
        if not path:
            where = "at the top level"
        elif len(path) > 1 and isinstance(path[-1], int):  # an item of a list: 'tools[0]'
            where = f"in '{path[-2]}[{path[-1]}]'"
        else:
            where = f"in '{path[-1]}'"
        unknown = [key for key in err.instance if key not in allowed][:MAX_REPORTED]  # not 100,000 did-you-means
        return [located.error(f"unknown key {quote(key)} {where}{did_you_mean(str(key), allowed)}", (*path, key))
                for key in unknown]
    message = schemas.quoted_message(err)
    if err.validator == "required":
        missing = err.message.split("'")[1] if "'" in err.message else err.message
        message = f"missing required key {quote(missing)}"
        path = (*path, missing)  # located at the mapping that lacks it, named in the JSON path
    elif err.validator in ("anyOf", "oneOf") and err.context:
        return _schema_errors(located, schemas.closest_branch(err))
    elif err.validator == "pattern" and path == ("name",):  # the spec's own name (a tool's has other rules)
        message = f"name {quote(err.instance)} must match [a-z0-9][a-z0-9_-]* (lower-case letters, digits, '-' and '_')"
    elif "propertyNames" in err.schema_path and path and path[-1] == "inputs" and isinstance(err.instance, str):
        message = (f"input name {quote(err.instance)} must be an identifier (letters, digits and '_', "
                   "not starting with a digit)")
        path = (*path, err.instance)
    elif err.validator == "enum" and isinstance(err.instance, str):
        choices: Any = err.validator_value
        message += did_you_mean(err.instance, [str(v) for v in choices])
    elif err.validator == "const" and path == ("version",):
        message = f"version must be the number 1 (the only version of the spec language), not {quote(err.instance)}"
    elif err.validator == "type" and err.validator_value == "string":
        message += _quote_it(err.instance)
    return [located.error(message, path)]


# --------------------------------------------------------------------------- build


def _build(data: dict[str, Any], located: Located, path: Path, root: Path, read: list[Path]) -> Spec:
    model = data.get("model", {})
    fewshot = data.get("fewshot", {})
    out = data.get("output", {"type": "text"})
    examples = [Example(dict(e["input"]), e["output"]) for e in data.get("examples", [])]
    if "examples_file" in data:
        if "examples" in data:
            gone = next((k for k in ("examples", "examples_file") if _inherited(located, (k,))), None)
            hint = f"; '{gone}' comes from the spec this one extends: add '{gone}: null' to drop it" if gone else ""
            raise located.error(f"use either 'examples' or 'examples_file', not both{hint}", ("examples_file",))
        _check_path_text(located, data["examples_file"], ("examples_file",), "examples_file")
        folder = declared_in(located, ("examples_file",), path.parent)
        examples = _load_examples_file(folder / data["examples_file"], located, root, read)
    spec = Spec(
        name=data["name"],
        version=data["version"],
        description=data.get("description", ""),
        model=ModelConfig(model.get("backend"), model.get("model"), _spec_options(model.get("options", {}))),
        mode=data.get("mode", "chat"),
        system=data.get("system"),
        instruction=data.get("instruction"),
        inputs={k: dict(v) for k, v in data.get("inputs", {}).items()},
        template=data.get("template"),
        examples=examples,
        fewshot=FewShot(
            k=fewshot.get("k"),
            select=fewshot.get("select", "first"),
            seed=fewshot.get("seed", 0),
            target_delimiter=fewshot.get("target_delimiter", " "),
            separator=fewshot.get("separator", "\n\n"),
        ),
        output=OutputSpec(
            type=OutputType(out["type"]),
            choices=tuple(out.get("choices", ())),
            method=Method(out.get("method", "auto")),
            schema=out.get("schema"),
            pattern=out.get("pattern"),
            stop=_as_tuple(out.get("stop")),
            max_tokens=out.get("max_tokens"),
            strip=out.get("strip", True),
        ),
        tests=[SpecTest(dict(t["input"]), t["expect"], t.get("name", "")) for t in data.get("tests", [])],
        tools=_tool_uses(data),
        tool_choice=data.get("tool_choice", "auto"),
        max_steps=data.get("max_steps", 5),
        path=path,
        source=located,
    )
    spec.files = tuple(read)
    return spec


def _tool_uses(data: dict[str, Any]) -> list[ToolUse]:
    if "tools" not in data:
        return []
    from .tools.check import tool_uses  # the tool machinery (and jsonschema): only specs with tools need it

    return tool_uses(data)


def _spec_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The spec's options, with its strings marked as the spec's (backends trust them less)."""
    return {k: FromSpec(v) if isinstance(v, str) else v for k, v in options.items()}


def _as_tuple(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    return (value,) if isinstance(value, str) else tuple(value)


def _too_many_examples(count: int) -> str:
    return f"holds {count:,} examples; the limit is {MAX_EXAMPLES:,} (a prompt shows a few: choose the pool)"


def _load_examples_file(path: Path, located: Located, root: Path, read: list[Path]) -> list[Example]:
    where: KeyPath = ("examples_file",)
    if path.suffix not in (".jsonl", ".yaml", ".yml", ".json"):
        raise located.error(f"examples_file must be .jsonl, .json or .yaml, not {quote(path.suffix)}", where)
    try:
        exists = path.exists()
        resolved = path.resolve()
    except (OSError, ValueError, RuntimeError) as exc:
        raise located.error(f"examples_file cannot be used: {quote(str(exc), 80)}", where) from None
    _check_inside(located, path, resolved, root, where, "examples_file")
    if not exists:
        raise located.error(f"examples_file not found: {quote(str(path), 200)}", where)
    _check_regular(located, path, resolved, where, "examples_file")
    read.append(resolved)
    rows: list[tuple[Any, str, int | None]] = []
    if path.suffix == ".jsonl":
        text = read_text(path, what="examples file", limit=MAX_EXAMPLES_FILE_BYTES)
        lines = text.splitlines()
        count = sum(1 for line in lines if line.strip())
        if count > MAX_EXAMPLES:  # said before a single row is parsed
            raise SpecError(_too_many_examples(count), file=str(path))
        for n, row_text in enumerate(lines, 1):
            if not row_text.strip():
                continue
            try:
                rows.append((strict_json(row_text), str(path), n))
            except json.JSONDecodeError as exc:
                raise SpecError(f"invalid JSON: {exc.msg}", file=str(path), line=n, col=exc.colno) from None
            except RecursionError:
                raise SpecError("JSON nests too deeply", file=str(path), line=n) from None
            except ValueError as exc:  # NaN, a duplicate key, an integer of more than 4,300 digits
                raise SpecError(f"invalid JSON: {quote(str(exc), 100)[1:-1]}", file=str(path), line=n) from None
    else:
        doc = load_yaml(path, what="examples file")
        if not isinstance(doc.data, list):
            raise doc.error("an examples file must hold a list of {input, output} items")
        if len(doc.data) > MAX_EXAMPLES:
            raise doc.error(_too_many_examples(len(doc.data)))
        rows = [(item, doc.file, doc.where((i,))[1]) for i, item in enumerate(doc.data)]
        for key, pos in doc.positions.items():  # later checks of an example point into this file
            if key and isinstance(key[0], int):
                located.positions[("examples", *key)] = pos
    example_schema = spec_schema()["$defs"]["example"]
    out = []
    for k, (item, file, line) in enumerate(rows):
        located.positions.setdefault(("examples", k), (file, line or 1, 1))  # a JSONL example: its line
        problems = schemas.errors(example_schema, item)
        if problems:  # worded as the same mistake in an inline example, at this file's line
            problems[0].path.extendleft([k, "examples"])  # as if found at examples[k]
            raise _schema_errors(located, problems[0])[0]
        if has_surrogate(item):
            raise SpecError(
                "bad example: text holds a lone surrogate, which is not valid Unicode", file=file, line=line
            )
        out.append(Example(dict(item["input"]), item["output"]))
    return out


# --------------------------------------------------------------------------- semantics


def _check_semantics(spec: Spec, located: Located) -> None:
    """What JSON Schema cannot say: schemas valid, templates parse, examples fit."""
    for name in spec.inputs:
        if name in RESERVED_INPUTS:
            raise located.error(
                f"input name {quote(name)} is reserved ({RESERVED_INPUTS[name]}); choose another name",
                ("inputs", name),
            )
    for key in TEMPLATE_KEYS:
        source = getattr(spec, key)
        if source is not None:
            try:
                compile_template(source)
                names = free_names(source)
            except TemplateFailure as exc:
                raise located.error(f"template '{key}': {exc}", (key,)) from None
            for attr in private_attributes(source):
                raise located.error(
                    f"template '{key}' reaches for the private attribute '{attr}', which the sandbox refuses", (key,)
                )
            known = [*spec.inputs, "output"]
            for name in sorted(names - set(known)):
                raise located.error(
                    f"template '{key}' uses undefined variable '{name}'{did_you_mean(name, known)}; "
                    f"it can use the inputs ({', '.join(spec.inputs) or 'none'}) and 'output'",
                    (key,),
                )
    for name, schema in spec.inputs.items():
        # surely_usable says the schema is valid JSON Schema, not that its 'required' names make sense
        problem = required_problem(schema) if surely_usable(schema) else _spec_schema_problem(schema)
        if problem is not None:
            message, sub = problem
            shown = f"has an {message}" if message.startswith("invalid") else f": {message}"
            raise located.error(f"input {quote(name)} {shown}".replace(" :", ":"), ("inputs", name, *sub))
        default_wrong = "default" in schema and not surely_valid(schema, schema["default"])
        if default_wrong and schemas.errors(schema, schema["default"]):
            raise located.error(f"input '{name}': its default does not fit its own schema", ("inputs", name, "default"))
    _check_output(spec.output, located)
    for i, ex in enumerate(spec.examples):
        _check_input(spec, ex.input, located, ("examples", i, "input"), "example")
        wrong = output_problem(spec.output, ex.output)
        if wrong:
            raise located.error(f"example[{i}]: output {quote(ex.output)} {wrong}", ("examples", i, "output"))
    k = spec.fewshot.k
    if k is not None and k > len(spec.examples):
        raise located.error(f"fewshot.k is {k} but the spec has only {len(spec.examples)} example(s)", ("fewshot", "k"))
    for i, test in enumerate(spec.tests):
        _check_input(spec, test.input, located, ("tests", i, "input"), "test")
        _check_expect(test.expect, located, ("tests", i, "expect"))
        _check_expected_values(spec.output, test.expect, located, ("tests", i, "expect"))
    if spec.tools or spec.tool_choice != "auto":  # with neither, the tool checks have nothing to find
        from .tools.check import check_spec_tools

        check_spec_tools(spec, located)


def _spec_schema_problem(schema: Any) -> tuple[str, KeyPath] | None:
    """What is wrong with a schema the spec's author wrote: what jsonschema refuses, then a misspelt
    keyword (which JSON Schema would silently ignore)."""
    from .schema.keywords import misspelt_keyword

    return schemas.schema_problem(schema) or misspelt_keyword(schema) or required_problem(schema)


def _check_expect(expect: Any, located: Located, where: KeyPath) -> None:
    """A test's ``matches`` and ``schema`` must work before ``promptdsl test`` runs them."""
    if not isinstance(expect, dict):
        return
    if expect.get("contains") == "":
        raise located.error("an empty 'contains' holds for every answer; give the text to look for",
                            (*where, "contains"))
    if isinstance(expect.get("matches"), str):
        try:
            schemas.compile_pattern(expect["matches"])
        except schemas.RegexProblem as exc:
            raise located.error(str(exc), (*where, "matches")) from None
    if "schema" in expect:
        problem = _spec_schema_problem(expect["schema"])
        if problem is not None:
            message, sub = problem
            shown = message if message.startswith("invalid") else f"schema: {message}"
            raise located.error(f"expected {shown}", (*where, "schema", *sub))


def _check_expected_values(out: OutputSpec, expect: Any, located: Located, where: KeyPath) -> None:
    """A test that expects a value the output can never be (``positive`` where the choice is
    ``Positive``) would fail on every run: it is a mistake in the spec, found before any model runs."""
    if not isinstance(expect, dict):
        values: list[tuple[Any, KeyPath]] = [(expect, where)]
    else:
        values = [(expect["equals"], (*where, "equals"))] if "equals" in expect else []
        if isinstance(expect.get("in"), list):
            values += [(v, (*where, "in", j)) for j, v in enumerate(expect["in"])]
    for value, at in values:
        wrong = output_problem(out, value)
        if wrong:
            hint = ""
            if out.type is OutputType.CHOICE and isinstance(value, str):
                same = [c for c in out.choices if c.casefold() == value.casefold()]
                hint = f" (tests compare exactly: did you mean {quote(same[0])}?)" if same else ""
            elif out.type in (OutputType.TEXT, OutputType.REGEX) or (
                    out.type is OutputType.CHOICE and quote(value) in out.choices):
                hint = _quote_it(value)
            raise located.error(f"test[{where[1]}]: expects {quote(value)}, which {wrong}{hint}", at)


def _quote_it(value: Any) -> str:
    """A hint for a number or boolean where text belongs: YAML read the author's text as one. The
    value is not echoed back (YAML has turned 007 into 7 already), and an empty value gets none."""
    if isinstance(value, bool):
        return " (YAML read it as a boolean: put it in quotes)"
    if isinstance(value, (int, float)):
        return " (YAML read it as a number: put it in quotes)"
    return ""


def _check_input(spec: Spec, values: dict[str, Any], located: Located, path: KeyPath, what: str) -> None:
    try:
        validate_inputs(spec, values)
    except InputError as exc:
        sub: KeyPath = (*path, exc.name) if exc.name and exc.name in values else path
        raise located.error(f"{what}[{path[1]}]: {quote(exc.message, 300)[1:-1]}", sub) from None


def _check_output(out: OutputSpec, located: Located) -> None:
    where: KeyPath = ("output",)
    allowed = {
        OutputType.TEXT: {Method.AUTO, Method.GENERATE},
        OutputType.REGEX: {Method.AUTO, Method.GENERATE},
        OutputType.JSON: {Method.AUTO, Method.CONSTRAIN, Method.GENERATE},
        OutputType.CHOICE: set(Method),
    }[out.type]
    if out.method not in allowed:
        options = ", ".join(sorted(m.value for m in allowed))
        raise located.error(
            f"method '{out.method}' does not apply to output type '{out.type}' (use {options})", (*where, "method")
        )
    if out.type is OutputType.REGEX and out.pattern is not None:
        try:
            schemas.compile_pattern(out.pattern)
        except schemas.RegexProblem as exc:
            raise located.error(str(exc), (*where, "pattern")) from None
    if out.type is OutputType.JSON and out.schema is not None:
        problem = _spec_schema_problem(out.schema)
        if problem is not None:
            message, sub = problem
            shown = message if message.startswith("invalid") else f"schema: {message}"
            raise located.error(f"output {shown}", (*where, "schema", *sub))
    for key, used_by in (("choices", OutputType.CHOICE), ("schema", OutputType.JSON), ("pattern", OutputType.REGEX)):
        if key in located.data.get("output", {}) and out.type is not used_by:
            if _inherited(located, ("output", key)):  # the child changed the type: point there
                raise located.error(f"'{key}' (from the spec this one extends) only applies to output type "
                                    f"'{used_by}'; add '{key}: null' under 'output' to drop it", (*where, "type"))
            raise located.error(f"'{key}' only applies to output type '{used_by}'", (*where, key))


def output_problem(out: OutputSpec, value: Any) -> str | None:
    """Why ``value`` is not a valid parsed output for ``out`` (None when it is)."""
    if out.type is OutputType.CHOICE:
        return None if value in out.choices else f"is not one of the choices {list(out.choices)}"
    if out.type is OutputType.JSON:
        errors = schemas.errors(out.schema or {}, value, formats=True)  # as a parsed answer is held
        return f"does not fit the output schema: {schemas.quoted_message(errors[0])}" if errors else None
    if not isinstance(value, str):
        return f"must be a string for output type '{out.type}'"
    return None
