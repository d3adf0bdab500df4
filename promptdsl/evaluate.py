"""Evaluation: compare a spec's answers with gold labels.

``choice`` outputs get accuracy, per-class precision / recall / F1, macro-F1 and a confusion
matrix; other outputs get the exact-match rate and the schema-valid rate (answers that parsed
and validated). Gold labels are matched to the choices case-insensitively (TweetEval writes
``negative`` where a spec says ``Negative``), and the report says when that happened.
A row whose run failed counts as wrong (column ``(error)``); a row with no label is left out
and counted. A choice's gold label is text; a number or boolean counts as its JSON text (``1``,
``true``), and a list or object is no class name: such rows are left out, counted and named.
Labels are shown escaped and cut short (:data:`LABEL_WIDTH`); the JSON report keeps them whole.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .dataset import Outcome
from .errors import InputError, did_you_mean, quote
from .schema import json_equal
from .spec import OutputType, Spec

if TYPE_CHECKING:
    from .datafile import DataFile

ERROR = "(error)"

#: The most characters of a label the text report shows (escaped; longer ones are cut with "…").
LABEL_WIDTH = 40


def check_label_header(data: DataFile, label: str) -> None:
    """A CSV whose header does not name ``label`` is refused before any model loads (with
    did-you-mean); other files have no header to check."""
    if data.format != "csv":
        return
    header = data.header()
    if header is not None and label not in header:
        raise InputError(
            f"--label '{label}': no such column{did_you_mean(label, header)}; the header has: " + ", ".join(header),
            source=data.name,
        )


def unlabelled(gold: Any) -> bool:
    """No label: a missing field, null, or an empty cell (CSV has no null)."""
    return gold is None or (isinstance(gold, str) and not gold.strip())


def label_text(gold: Any) -> str | None:
    """A choice's gold label as a class name: text stripped, a number or boolean as its JSON text
    (``1``, ``2.5``, ``true``: what the data file holds); None for a list or an object, which name
    no class (``export`` refuses such rows too)."""
    if isinstance(gold, str):
        return gold.strip()
    if isinstance(gold, (bool, int, float)):
        return json.dumps(gold)
    return None


def shown(label: str) -> str:
    """A label as the text report shows it: control characters escaped, at most :data:`LABEL_WIDTH`
    characters (a label comes from the data file: it must not drive the terminal or the layout)."""
    return quote(label, LABEL_WIDTH)[1:-1]


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


@dataclass
class ClassScores:
    label: str
    precision: float
    recall: float
    f1: float
    support: int  # gold rows of this class


#: Gold labels that are not choices, each a class of its own up to this many; later ones share OTHER.
MAX_UNKNOWN_CLASSES = 50
OTHER = "(other labels)"
#: Unknown gold labels the warning line names.
MAX_UNKNOWN_SHOWN = 20


@dataclass
class ChoiceMetrics:
    """Counts (gold, predicted) pairs; every figure is derived from the confusion counts."""

    choices: tuple[str, ...]
    confusion: Counter[tuple[str, str]] = field(default_factory=Counter)
    unlabelled: int = 0
    folded: set[tuple[str, str]] = field(default_factory=set)  # (gold as written, choice it matched)
    unknown: Counter[str] = field(default_factory=Counter)  # gold labels that match no choice
    bad_labels: int = 0  # rows whose label is a list or an object: left out
    #: unknown gold labels with a class of their own; the rest share :data:`OTHER` (a matrix of
    #: 4,000 distinct labels took 15 s, 477 MB and printed 160 MB)
    own_classes: set[str] = field(default_factory=set)

    def gold_label(self, gold: Any) -> str:
        """The choice a gold label names: exact, else case-insensitive; else the label itself
        (a number or boolean as its JSON text; see :func:`label_text`)."""
        text = label_text(gold)
        if text is None:  # add() leaves such rows out before asking
            raise ValueError(f"a label that names no class: {quote(gold)}")
        if text in self.choices:
            return text
        for choice in self.choices:
            if choice.casefold() == text.casefold():
                self.folded.add((text, choice))
                return choice
        self.unknown[text] += 1
        if text in self.own_classes or len(self.own_classes) < MAX_UNKNOWN_CLASSES:
            self.own_classes.add(text)
            return text
        return OTHER

    def add(self, gold: Any, predicted: str | None) -> bool:
        """Record one row (``predicted=None``: the run failed); True when it is correct."""
        if unlabelled(gold):
            self.unlabelled += 1
            return False
        if label_text(gold) is None:
            self.bad_labels += 1
            return False
        label = self.gold_label(gold)
        pred = ERROR if predicted is None else str(predicted)
        self.confusion[(label, pred)] += 1
        return label == pred

    @property
    def total(self) -> int:
        return sum(self.confusion.values())

    @property
    def correct(self) -> int:
        return sum(n for (g, p), n in self.confusion.items() if g == p)

    @property
    def errors(self) -> int:
        return sum(n for (_, p), n in self.confusion.items() if p == ERROR)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    def labels(self) -> list[str]:
        """Classes in report order: the choices, then gold labels and answers that are not choices
        (answers from results written by an older version of the spec, say): every counted row
        stays in the confusion matrix."""
        seen = {g for g, _ in self.confusion} | {p for _, p in self.confusion if p != ERROR}
        extra = sorted(seen - set(self.choices))
        return [*self.choices, *extra]

    def classes(self) -> list[ClassScores]:
        """Per-class scores over the classes seen as gold or predicted (scikit-learn's default)."""
        gold = Counter[str]()
        pred = Counter[str]()
        for (g, p), n in self.confusion.items():
            gold[g] += n
            pred[p] += n
        out = []
        for label in self.labels():
            if gold[label] == 0 and pred[label] == 0:
                continue
            tp = self.confusion[(label, label)]
            precision = tp / pred[label] if pred[label] else 0.0
            recall = tp / gold[label] if gold[label] else 0.0
            out.append(ClassScores(label, precision, recall, _f1(precision, recall), gold[label]))
        return out

    @property
    def macro_f1(self) -> float:
        scores = self.classes()
        return sum(c.f1 for c in scores) / len(scores) if scores else 0.0

    @property
    def majority(self) -> float:
        """Accuracy of always answering the most common gold label (a floor to compare with)."""
        gold = Counter[str]()
        for (g, _), n in self.confusion.items():
            gold[g] += n
        return max(gold.values()) / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, Any]:
        labels = self.labels()
        columns = [*labels, *([ERROR] if self.errors else [])]
        return {
            "type": "choice",
            "rows": self.total,
            "correct": self.correct,
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "majority_accuracy": self.majority,
            "errors": self.errors,
            "unlabelled": self.unlabelled,
            "bad_labels": self.bad_labels,
            "per_class": {c.label: {"precision": c.precision, "recall": c.recall, "f1": c.f1, "support": c.support}
                          for c in self.classes()},
            "confusion": {"labels": labels, "columns": columns,
                          "matrix": [[self.confusion[(g, p)] for p in columns] for g in labels]},
            "labels_case_folded": sorted(f"{a} -> {b}" for a, b in self.folded),
            "unknown_labels": dict(self.unknown),
        }

    def format(self) -> str:
        lines = [
            f"rows: {self.total}   accuracy: {self.accuracy:.4f} ({self.correct}/{self.total})   "
            f"macro-F1: {self.macro_f1:.4f}   majority-class accuracy: {self.majority:.4f}",
        ]
        if self.errors:
            lines.append(f"failed rows (counted as wrong): {self.errors}")
        if self.unlabelled:
            lines.append(f"rows without a label (left out): {self.unlabelled}")
        if self.bad_labels:
            lines.append(f"rows whose label is a list or an object, not a class name (left out): {self.bad_labels}")
        if self.folded:
            pairs = ", ".join(f"{shown(a)} -> {shown(b)}" for a, b in sorted(self.folded))
            lines.append(f"gold labels matched to the choices ignoring case: {pairs}")
        if self.unknown:
            listed = sorted(self.unknown.items())
            names = ", ".join(f"{quote(k, LABEL_WIDTH)} ({n})" for k, n in listed[:MAX_UNKNOWN_SHOWN])
            more = f" and {len(listed) - MAX_UNKNOWN_SHOWN:,} more" if len(listed) > MAX_UNKNOWN_SHOWN else ""
            lines.append(f"warning: gold labels that are not choices (always wrong): {names}{more}")
        lines.append("")
        width = max(len(x) for x in ["class", *map(shown, self.labels()), ERROR])
        lines.append(f"{'class':<{width}}  precision  recall      f1  support")
        for c in self.classes():
            lines.append(f"{shown(c.label):<{width}}  {c.precision:9.4f}  {c.recall:6.4f}  {c.f1:5.4f}  {c.support:7d}")
        lines.append("")
        lines.append("confusion matrix (rows: gold, columns: predicted)")
        d = self.to_dict()["confusion"]
        cols = [shown(c) for c in d["columns"]]
        cell = max(6, *(len(c) for c in cols))
        lines.append(" " * width + "  " + "  ".join(f"{c:>{cell}}" for c in cols))
        for label, row in zip(d["labels"], d["matrix"], strict=True):
            lines.append(f"{shown(label):<{width}}  " + "  ".join(f"{n:>{cell}}" for n in row))
        return "\n".join(lines)


@dataclass
class MatchMetrics:
    """Exact-match and schema-valid rates, for text / json / regex outputs."""

    output_type: str
    total: int = 0
    valid: int = 0
    exact: int = 0
    unlabelled: int = 0

    def add(self, gold: Any, value: Any, ok: bool) -> bool:
        if unlabelled(gold):
            self.unlabelled += 1
            return False
        self.total += 1
        self.valid += ok
        match = ok and same_value(gold, value)
        self.exact += match
        return match

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.output_type,
            "rows": self.total,
            "exact_match": self.exact / self.total if self.total else 0.0,
            "schema_valid": self.valid / self.total if self.total else 0.0,
            "exact": self.exact,
            "valid": self.valid,
            "unlabelled": self.unlabelled,
        }

    def format(self) -> str:
        d = self.to_dict()
        lines = [
            f"rows: {self.total}   exact match: {d['exact_match']:.4f} ({self.exact}/{self.total})   "
            f"schema-valid: {d['schema_valid']:.4f} ({self.valid}/{self.total})"
        ]
        if self.unlabelled:
            lines.append(f"rows without a label (left out): {self.unlabelled}")
        return "\n".join(lines)


def _json(text: str) -> tuple[bool, Any]:
    """(True, value) when ``text`` is JSON; never raises (deep nesting and huge integers too)."""
    try:
        return True, json.loads(text)
    except (ValueError, RecursionError):
        return False, None


def same_value(gold: Any, value: Any) -> bool:
    """Equality of a gold label and a parsed answer. When one is text and the other is not, the
    text is read as JSON first: a label ``42`` from a JSONL file matches a regex answer "42", and a
    JSON object written as text in a CSV cell matches a parsed JSON answer."""
    if isinstance(gold, str) and isinstance(value, str):
        return gold.strip() == value.strip()
    if isinstance(gold, str):
        ok, gold = _json(gold)
        if not ok:
            return False
    elif isinstance(value, str):
        ok, value = _json(value)
        if not ok:
            return False
    try:
        return json_equal(gold, value)  # true is not 1, as JSON has it (Python says it is)
    except RecursionError:
        return False


Metrics = ChoiceMetrics | MatchMetrics


def metrics_for(spec: Spec) -> Metrics:
    if spec.output.type is OutputType.CHOICE:
        return ChoiceMetrics(tuple(spec.output.choices))
    return MatchMetrics(spec.output.type.value)


def score_line(metrics: Metrics, gold: Any, value: Any, ok: bool) -> bool:
    """Feed one row to the metrics; True when it counts as correct."""
    if isinstance(metrics, ChoiceMetrics):
        return metrics.add(gold, value if ok else None)
    return metrics.add(gold, value, ok)


class Evaluation:
    """Scores the rows of a dataset run against the gold labels in field ``label``.

    Pass :meth:`on_resumed_line` and :meth:`on_outcome` to a :class:`DatasetRun` (rows already
    in a resumed output count too); ``metrics`` holds the figures afterwards. ``fields`` is the
    run's ``--field INPUT=FIELD`` mapping: the label must be none of the fields the inputs read.
    """

    def __init__(self, spec: Spec, label: str, fields: Mapping[str, str] | None = None) -> None:
        fields = dict(fields or {})
        for name, source in fields.items():
            if source == label:
                raise InputError(f"--field {name}={source} reads the --label field '{label}' into input "
                                 f"'{name}'; the label must be a separate field")
        if label in spec.inputs and label not in fields:  # the input reads the field of its own name
            raise InputError(f"--label '{label}' is one of the spec's inputs; the label must be a separate field")
        self.label = label
        self.inputs = {fields.get(name, name) for name in spec.inputs}  # the fields the inputs read
        self.metrics: Metrics = metrics_for(spec)
        self.fields: set[str] = set()  # the rows' field names, for a did-you-mean on a misspelt --label
        self.unreadable = 0  # rows that were not an object of fields (invalid JSON, say): no label to score
        self.bad_rows: list[str] = []  # where the first rows whose label names no class are (line 3 (row 2))

    def gold_of(self, data: Any) -> Any:
        if not isinstance(data, dict):
            return None
        if len(self.fields) < 1000:
            self.fields.update(k for k in data if isinstance(k, str))
        return data.get(self.label)

    def on_resumed_line(self, line: dict[str, Any]) -> None:
        data = line.get("input")
        if "error" in line and (not isinstance(data, dict) or "_fields" in data):  # a row that was not read
            self.unreadable += 1
            return
        gold = self.gold_of(data)
        score_line(self.metrics, gold, line.get("value"), "error" not in line)
        if self.bad_label(gold) and len(self.bad_rows) < 3 and isinstance(line.get("index"), int):
            self.bad_rows.append(f"row {line['index']}")

    def on_outcome(self, outcome: Outcome, line: dict[str, Any]) -> None:
        if outcome.row.error is not None:  # not read (invalid JSON, a CSV row of the wrong width): no label known
            self.unreadable += 1
            line["label"] = line["correct"] = None
            return
        gold = self.gold_of(outcome.row.data)
        value = outcome.result.value if outcome.result is not None else None
        line["label"] = gold
        correct = score_line(self.metrics, gold, value, outcome.ok)
        bad = self.bad_label(gold)
        if bad and len(self.bad_rows) < 3:
            self.bad_rows.append(outcome.row.where())
        line["correct"] = None if unlabelled(gold) or bad else correct  # left out of the metrics, so neither

    def bad_label(self, gold: Any) -> bool:
        """A label no choice can be (a list or an object): the row is left out and named."""
        return isinstance(self.metrics, ChoiceMetrics) and not unlabelled(gold) and label_text(gold) is None

    def bad_labels(self) -> str | None:
        """Why some rows were left out for a label that is a list or an object (None: there were none)."""
        n = self.metrics.bad_labels if isinstance(self.metrics, ChoiceMetrics) else 0
        if not n:
            return None
        where = f" ({', '.join(self.bad_rows)}{', ...' if n > len(self.bad_rows) else ''})" if self.bad_rows else ""
        rows = "row has" if n == 1 else "rows have"
        return (f"{n} {rows} a --label '{self.label}' that is a list or an object, not a class name{where}, "
                f"so the metrics leave {'it' if n == 1 else 'them'} out; a label is text (or a number or boolean)")

    def no_labels(self) -> str | None:
        """Why the metrics describe nothing when no row had a label (a misspelt --label, most often)."""
        if self.metrics.total or not self.metrics.unlabelled:
            return None
        n = self.metrics.unlabelled
        if self.label in self.fields:
            return f"--label '{self.label}' is empty in all {n} rows, so there is nothing to score"
        hint = did_you_mean(self.label, self.fields - self.inputs)
        return f"--label '{self.label}': none of the {n} rows has this field{hint}, so there is nothing to score"
