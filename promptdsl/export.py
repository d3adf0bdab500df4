"""Instruction data from a spec and labelled rows, for tuning a model on the spec's own prompts.

Every row is rendered by the spec's compiler, so a model tuned on the export sees exactly the
prompt it will see at inference; the answer is the gold label rendered as the spec's examples
render theirs, and must parse back through the spec's output block. A contamination report
compares the rows with an evaluation file and the spec's ``tests`` the way lm-evaluation-harness
decontaminates: lowercase, strip punctuation, split into words, look for shared word n-grams
(n = 8 and 13) and exact matches.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import string
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .compiler import Compiler, render_output
from .datafile import DataFile, Row, row_inputs
from .errors import InputError, PromptDSLError, did_you_mean, field_list
from .inputs import validate_inputs
from .outputs import ParseFailure, parse_output
from .prompt import Prompt
from .schema import json_equal
from .spec import OutputType, Spec

NGRAM_SIZES = (8, 13)
FORMATS = ("alpaca", "sharegpt", "openai", "prompt-completion")


# ============================================================================ rows


@dataclass(frozen=True)
class InstructionRow:
    """One labelled row, compiled: the prompt the model sees and the answer it should give."""

    index: int  # 0-based row index in the data file
    values: dict[str, Any]  # the validated inputs
    prompt: Prompt
    answer: str  # the gold label as the model should write it
    label: str  # the gold label as a class name (for distributions)
    line: int = 0  # the file line the row starts on (1-based; 0 when unknown)

    def where(self) -> str:
        """Where the row is in its file, as data errors name it: ``line 3 (row 2)``."""
        return f"line {self.line} (row {self.index})" if self.line else f"row {self.index}"

    @property
    def response(self) -> str:
        """What follows the prompt: the continuation prefix (completion mode) and the answer."""
        return self.prompt.continuation_prefix + self.answer


def zero_shot(spec: Spec) -> Spec:
    """The same spec without its few-shot examples."""
    return dataclasses.replace(spec, examples=[])


def gold_answer(spec: Spec, gold: Any) -> Any:
    """The gold label as a value of the spec's output: a choice matched ignoring case, a JSON
    label given as text parsed (a JSON value kept as it is); a ``text`` or ``regex`` label must be
    a non-empty string. Raise ParseFailure when it does not fit the output block."""
    out = spec.output
    if out.type in (OutputType.TEXT, OutputType.REGEX):
        if not isinstance(gold, str):
            raise ParseFailure(f"a {out.type} output's label must be text, not {_json_kind(gold)}")
        if not gold.strip():
            raise ParseFailure("the label is empty")
        return gold
    if out.type is OutputType.CHOICE:
        text = str(gold).strip()
        for choice in out.choices:
            if choice == text or choice.casefold() == text.casefold():
                return choice
        raise ParseFailure(f"label {text!r} is not one of the choices: {', '.join(out.choices)}")
    if out.type is OutputType.JSON and isinstance(gold, str):
        return parse_output(out, gold)
    return gold


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


def compile_rows(spec: Spec, data: DataFile, label: str) -> Iterator[InstructionRow]:
    """Compile every row of ``data``; a row that cannot be used stops with one line naming it."""
    if label in spec.inputs:
        raise InputError(f"--label '{label}' is one of the spec's inputs; the label must be a separate field")
    compiler = Compiler(spec)
    for row in data.rows():
        yield compile_row(spec, compiler, row, data, label)


def compile_row(spec: Spec, compiler: Compiler, row: Row, data: DataFile, label: str) -> InstructionRow:
    def fail(message: str) -> InputError:
        return InputError(f"{row.where()}: {message}", source=data.name)

    if row.error is not None:
        raise fail(row.error)
    if label not in row.data:
        hint = did_you_mean(label, [k for k in map(str, row.data) if k not in spec.inputs][:1000])
        raise fail(f"no label field '{label}'{hint}; the row has: {field_list(row.data)}")
    if row.data[label] is None:
        raise fail(f"the label field '{label}' is null")
    try:
        values = validate_inputs(spec, row_inputs(spec, row, data.format))
    except InputError as exc:
        raise fail(exc.message) from None
    try:
        value = gold_answer(spec, row.data[label])
        answer = render_output(spec, value)
        parse_output(spec.output, answer)  # the answer must read back as a valid output
    except ParseFailure as exc:
        raise fail(f"the label does not fit the spec's output: {exc}") from None
    return InstructionRow(row.index, values, compiler.compile(values), answer, answer, row.line)


# ============================================================================ formats


def _messages(r: InstructionRow) -> list[dict[str, str]]:
    if r.prompt.mode == "chat":
        return [m.to_dict() for m in r.prompt.messages]
    return [{"role": "user", "content": r.prompt.text}]


def _alpaca(r: InstructionRow) -> dict[str, Any]:
    if r.prompt.mode == "completion":
        return {"instruction": r.prompt.text, "input": "", "output": r.response}
    *context, query = r.prompt.messages
    return {"instruction": "\n\n".join(m.content for m in context), "input": query.content, "output": r.answer}


def _sharegpt(r: InstructionRow) -> dict[str, Any]:
    who = {"system": "system", "user": "human", "assistant": "gpt"}
    turns = [{"from": who[m["role"]], "value": m["content"]} for m in _messages(r)]
    return {"conversations": [*turns, {"from": "gpt", "value": r.answer}]}


def _openai(r: InstructionRow) -> dict[str, Any]:
    return {"messages": [*_messages(r), {"role": "assistant", "content": r.answer}]}


def _prompt_completion(r: InstructionRow) -> dict[str, Any]:
    if r.prompt.mode == "completion":
        return {"prompt": r.prompt.text, "completion": r.response}
    return {"prompt": _messages(r), "completion": [{"role": "assistant", "content": r.answer}]}


#: One record per row, by ``--format``. Completion-mode prompts keep their exact text (the
#: answer carries the target delimiter); chat prompts keep their messages.
RENDERERS: dict[str, Callable[[InstructionRow], dict[str, Any]]] = {
    "alpaca": _alpaca,
    "sharegpt": _sharegpt,
    "openai": _openai,
    "prompt-completion": _prompt_completion,
}


# ============================================================================ contamination


_PUNCT = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> list[str]:
    """lm-evaluation-harness's normalisation: lowercase, drop ASCII punctuation, split on spaces."""
    return text.lower().translate(_PUNCT).split()


def ngrams(words: Sequence[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def input_text(values: Mapping[str, Any], inputs: Mapping[str, Mapping[str, Any]]) -> str:
    """The text of a row's inputs (what can leak between sets), in the spec's input order.

    An input at its default counts as left out, whether the row gave it or the run filled it in:
    a training row (defaults filled) and the same row of an evaluation file (as read) give the
    same text, and a long default is not an n-gram every row shares."""
    parts = []
    for name, schema in inputs.items():
        if name not in values or ("default" in schema and json_equal(values[name], schema["default"])):
            continue
        v = values[name]
        parts.append(v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, sort_keys=True))
    return "\n".join(parts)


@dataclass
class Reference:
    """A set of texts rows must not leak into: exact texts and word n-grams by size."""

    name: str
    rows: int = 0
    exact: set[str] = field(default_factory=set)
    grams: dict[int, set[tuple[str, ...]]] = field(default_factory=lambda: {n: set() for n in NGRAM_SIZES})
    texts: list[list[str]] = field(default_factory=list)

    def add(self, text: str) -> None:
        words = normalize(text)
        self.rows += 1
        self.exact.add(" ".join(words))
        self.texts.append(words)
        for n in NGRAM_SIZES:
            self.grams[n] |= ngrams(words, n)


@dataclass
class Overlap:
    """How one reference set overlaps the rows (row counts, both directions)."""

    name: str
    reference_rows: int
    exact: int = 0  # rows whose normalised text equals a reference text
    ngram: dict[int, int] = field(default_factory=dict)  # rows sharing an n-gram with the reference
    reference_hit: dict[str, int] = field(default_factory=dict)  # reference rows that leak into the rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.name,
            "reference_rows": self.reference_rows,
            "exact": self.exact,
            **{f"ngram_{n}": k for n, k in self.ngram.items()},
            "reference_rows_hit": self.reference_hit,
        }


@dataclass
class Contamination:
    rows: int
    overlaps: list[Overlap]
    flagged: set[int]  # row positions with an exact match or a shared 8-gram

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "flagged": len(self.flagged),
            "rule": f"exact match or a shared word {min(NGRAM_SIZES)}-gram",
            "by_reference": [o.to_dict() for o in self.overlaps],
        }

    def format(self) -> str:
        lines = [f"contamination ({self.rows} rows; text lowercased, punctuation stripped, word n-grams):"]
        for o in self.overlaps:
            grams = "  ".join(f"{n}-gram: {k}" for n, k in o.ngram.items())
            hit = ", ".join(f"{k} {v}" for k, v in o.reference_hit.items())
            lines.append(
                f"  vs {o.name} ({o.reference_rows} rows): exact: {o.exact}  {grams}   ({o.name} rows hit: {hit})"
            )
        lines.append(f"  rows with an exact match or a shared {min(NGRAM_SIZES)}-gram: {len(self.flagged)}")
        return "\n".join(lines)


def contamination(texts: Sequence[str], references: Sequence[Reference]) -> Contamination:
    """Which of ``texts`` overlap each reference, and which reference rows overlap ``texts``."""
    words = [normalize(t) for t in texts]
    own = Reference("rows")
    for t in texts:
        own.add(t)
    flagged: set[int] = set()
    overlaps = []
    small = min(NGRAM_SIZES)
    for ref in references:
        o = Overlap(ref.name, ref.rows, ngram={n: 0 for n in NGRAM_SIZES})
        for i, w in enumerate(words):
            exact = " ".join(w) in ref.exact
            o.exact += exact
            hits = {n: bool(ngrams(w, n) & ref.grams[n]) for n in NGRAM_SIZES}
            for n, hit in hits.items():
                o.ngram[n] += hit
            if exact or hits[small]:
                flagged.add(i)
        o.reference_hit = {
            "exact": sum(" ".join(w) in own.exact for w in ref.texts),
            **{f"ngram_{n}": sum(bool(ngrams(w, n) & own.grams[n]) for w in ref.texts) for n in NGRAM_SIZES},
        }
        overlaps.append(o)
    return Contamination(len(texts), overlaps, flagged)


def eval_reference(spec: Spec, data: DataFile) -> Reference:
    """The inputs of an evaluation file (rows that cannot be read are skipped: they hold no text)."""
    ref = Reference(f"eval {data.name}")
    for row in data.rows():
        if row.error is None and isinstance(row.data, dict):
            ref.add(input_text(row_inputs(spec, row, data.format), spec.inputs))
    return ref


def tests_reference(spec: Spec) -> Reference:
    ref = Reference("the spec's tests")
    for test in spec.tests:
        ref.add(input_text(test.input, spec.inputs))
    return ref


# ============================================================================ export


def spec_hash(spec: Spec) -> str:
    """sha256 of the resolved spec (after ``extends``), so the meta data names what was rendered.

    Taken from the typed spec (not the file): where the file lives and how it is laid out do
    not change it."""
    fields = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec) if f.name not in ("path", "source")}
    text = json.dumps(_plain(fields), ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def file_hash(path: Path | None) -> str | None:
    if path is None:
        return None
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class ExportResult:
    files: dict[str, Path]
    meta: dict[str, Any]
    contamination: Contamination | None
    dropped: int
    #: A train/val file in the folder that this export did not write and no earlier export did:
    #: left as it is, but a trainer pointed at the folder would take it for this export's.
    foreign: list[Path] = field(default_factory=list)


def split_rows(rows: list[InstructionRow], split: float | None, seed: int) -> dict[str, list[InstructionRow]]:
    """``{"train": ...}``, or train/val shuffled by ``seed`` with ``split`` of the rows in train."""
    if split is None or split >= 1.0:
        return {"train": rows}
    order = list(rows)
    random.Random(seed).shuffle(order)
    cut = round(len(order) * split)
    return {"train": order[:cut], "val": order[cut:]}


def default_format(spec: Spec) -> str:
    """``openai`` (chat messages) for a chat spec, ``prompt-completion`` for a completion spec: a
    model tuned on the data then sees the prompt as the spec sends it, the answer after the target
    delimiter (``" joy"``), not a chat turn it will never be given."""
    return "prompt-completion" if spec.mode == "completion" else "openai"


def export(
    spec: Spec,
    data: DataFile,
    label: str,
    out_dir: Path,
    *,
    fmt: str | None = None,
    split: float | None = None,
    seed: int = 0,
    eval_data: DataFile | None = None,
    decontaminate: bool = False,
    zero_shot_prompts: bool = False,
    force: bool = False,
) -> ExportResult:
    """Render, check, split and write ``train.jsonl`` (+ ``val.jsonl``) and ``meta.json``.

    Nothing is written until every row has compiled; files are written to temporary names and
    renamed, and existing files are kept unless ``force``. ``fmt`` defaults to :func:`default_format`.
    """
    fmt = default_format(spec) if fmt is None else fmt
    if fmt not in RENDERERS:
        raise InputError(f"unknown format '{fmt}'; choose one of: {', '.join(FORMATS)}")
    if split is not None and not 0.0 < split <= 1.0:
        raise InputError(f"--split must be in (0, 1], not {split}")
    used = zero_shot(spec) if zero_shot_prompts else spec
    rows = list(compile_rows(used, data, label))
    if not rows:
        raise InputError("no rows to export", source=data.name)
    references = [tests_reference(spec)] if spec.tests else []
    if eval_data is not None:
        references.insert(0, eval_reference(spec, eval_data))
    report = None
    dropped = 0
    if references:
        report = contamination([input_text(r.values, spec.inputs) for r in rows], references)
        if decontaminate:
            rows = [r for i, r in enumerate(rows) if i not in report.flagged]
            dropped = len(report.flagged)
            if not rows:
                raise InputError("--decontaminate dropped every row", source=data.name)
    parts = split_rows(rows, split, seed)
    empty = [name for name, part in parts.items() if not part]
    if empty:
        raise InputError(
            f"--split {split:g} of {len(rows)} rows leaves {empty[0]}.jsonl empty; give more rows or another --split",
            source=data.name,
        )
    files = {name: out_dir / f"{name}.jsonl" for name in parts}
    meta_path = out_dir / "meta.json"
    # A val.jsonl left from an export with --split would sit next to a train set that holds its rows;
    # it is removed only when the earlier export's meta.json shows that export wrote it.
    stale = [out_dir / f"{name}.jsonl" for name in ("train", "val") if name not in parts and _exported(meta_path, name)]
    targets = [*files.values(), meta_path, *stale]
    inputs: list[tuple[str, Path | None]] = [
        ("the --data file", data.path),
        ("the --eval file", eval_data.path if eval_data else None),
        ("the spec file", spec.path),
        *(("a file the spec is built from (its examples_file or an 'extends' file)", p) for p in spec.files),
    ]
    _refuse_inputs([*files.values(), meta_path], stale, inputs)
    if not force:
        existing = [str(p) for p in targets if p.exists()]
        if existing:
            raise InputError(f"{existing[0]} exists (use --force to overwrite)")
    meta = {
        "spec": spec.name,
        "spec_file": str(spec.path) if spec.path else None,
        "spec_sha256": spec_hash(spec),
        "data": data.name,
        "data_sha256": file_hash(data.path),
        "label_field": label,
        "format": fmt,
        "mode": spec.mode,
        "zero_shot": zero_shot_prompts,
        "split": split,
        "seed": seed,
        "counts": {"rows": len(rows) + dropped, "decontaminated": dropped, **{k: len(v) for k, v in parts.items()}},
        "labels": dict(Counter(r.label for r in rows).most_common()),
        "labels_by_split": {k: dict(Counter(r.label for r in v).most_common()) for k, v in parts.items()},
        "contamination": report.to_dict() if report else None,
    }
    render = RENDERERS[fmt]
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, path in files.items():
            _write_atomic(path, (json.dumps(render(r), ensure_ascii=False) + "\n" for r in parts[name]))
        _write_atomic(meta_path, [json.dumps(meta, ensure_ascii=False, indent=2) + "\n"])
        for path in stale:
            path.unlink(missing_ok=True)
    except OSError as exc:
        raise PromptDSLError(f"cannot write {out_dir}: {exc.strerror}") from None
    others = [out_dir / f"{name}.jsonl" for name in ("train", "val") if name not in parts]
    foreign = [path for path in others if path not in stale and path.exists()]
    return ExportResult({**files, "meta": meta_path}, meta, report, dropped, foreign)


def _exported(meta_path: Path, name: str) -> bool:
    """Whether the export that wrote ``meta_path`` wrote ``name``.jsonl (its counts name it)."""
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    counts = meta.get("counts") if isinstance(meta, dict) else None
    return isinstance(counts, dict) and name in counts and "spec_sha256" in meta


def _same_file(a: Path, b: Path) -> bool:
    """The same path once resolved (symlinks followed), or the same file by another name (a hard link)."""
    try:
        if a.resolve() == b.resolve():
            return True
    except (OSError, RuntimeError):  # a symlink loop: compare the files themselves
        pass
    try:
        return os.path.samefile(a, b)
    except OSError:  # either is missing or unreadable: not an input this export could clobber
        return False


def _refuse_inputs(written: Iterable[Path], removed: Iterable[Path], inputs: Iterable[tuple[str, Path | None]]) -> None:
    """An export never writes over, or removes, a file it reads (``--data``, ``--eval``, and every file the
    spec is built from: its own, its ``extends`` chain, its ``examples_file``), ``--force`` or not."""
    inputs = list(inputs)
    for verb, targets in (("overwrite", written), ("delete", removed)):
        for target in targets:
            for what, source in inputs:
                if source is not None and _same_file(target, source):
                    raise InputError(f"--out would {verb} {what}; choose another --out", source=str(target))


def _write_atomic(path: Path, chunks: Iterable[str]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            for chunk in chunks:
                f.write(chunk)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
