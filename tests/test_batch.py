"""Batched scoring: several rows per llama.cpp decode, same answers as one at a time.

The grouping rules and the dataset runner's batching are checked with a scripted backend;
the real embedded model checks that batched scores equal the one-at-a-time path's, that
choices of several tokens work, and that the items' KV cells are freed after every group.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from promptdsl import Backend, Capability, Constraint, GenerationOptions, Prompt, Runner, loads_spec
from promptdsl.datafile import DataFile
from promptdsl.dataset import run_dataset
from promptdsl.errors import BackendError

ROOT = Path(__file__).resolve().parent.parent

#: Short texts written for these tests (no external data needed).
TEXTS = [
    "I love this phone, the battery lasts for days!",
    "Worst customer service ever. Never again.",
    "The train leaves at nine tomorrow.",
    "@user thanks so much for the birthday wishes :)",
    "Traffic was terrible and I missed my meeting.",
    "Just finished reading the report for Monday.",
    "What a fantastic concert last night, best band ever",
    "My flight got cancelled again, unbelievable",
    "The new library opens on the first of May.",
    "@user that is the funniest thing I have seen all week",
    "I can't believe they raised the prices again",
    "Lunch is at noon in the main hall.",
    "So proud of my sister for finishing the marathon!",
    "The update broke everything on my laptop.",
    "It might rain this afternoon according to the forecast.",
    "Happy to be home after a long trip",
    "This is the third time my order arrived late.",
    "The museum has a new exhibit on ancient Egypt.",
    "@user you made my day, thank you!",
    "Stuck in the rain without an umbrella, great.",
]

SPEC = (ROOT / "specs" / "sentiment.yaml").read_text(encoding="utf-8")

# Choices that tokenize to several tokens and share first tokens, to exercise the second round.
MULTI = """
version: 1
name: places
mode: completion
instruction: Say which city the text is about.
inputs: {text: {type: string}}
template: "Text: {{ text }}\\nCity:"
output: {type: choice, choices: [New York, New Jersey, New Orleans, Boston], method: score}
"""


# ---------------------------------------------------------------------------- grouping rules

from promptdsl_llamacpp.batch import DECODE_FIXED, _common_prefix, _plan, _streams  # noqa: E402


def test_common_prefix_leaves_every_prompt_a_token_of_its_own() -> None:
    assert _common_prefix([[1, 2, 3, 4], [1, 2, 3, 5, 6]]) == 3
    assert _common_prefix([[1, 2, 3], [1, 2, 3, 4]]) == 2  # the shorter one keeps its last token
    assert _common_prefix([[1, 2, 3], [1, 2, 3]]) == 2  # identical prompts
    assert _common_prefix([[7, 1], [8, 1]]) == 0
    assert _common_prefix([[5, 6, 7]]) == 2


def test_long_prompts_get_fewer_streams_so_memory_stays_bounded() -> None:
    assert _streams(130) == 9  # 9 streams of 256 cells: the prefix and 8 prompts
    assert _streams(1024) == 9
    assert _streams(2048) == 4  # 9,216 cells in all at most
    assert _streams(4096) == 2  # a prefix and one prompt: score_many then scores one at a time


def test_plan_groups_by_length_within_budget_streams_and_batch() -> None:
    one = [[1]]  # single-token choices: no second round
    # 10 prompts of 30 own tokens each, budget 100 -> groups of 3 (90 tokens), the last of 1
    assert _plan([130] * 10, 100, one, 9, 512, 100) == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    # a prompt larger than the budget still goes, alone
    assert _plan([100 + 300, 110], 100, one, 9, 512, 100) == [[1], [0]]
    # groups are of similar length, and padding to the longest counts against the budget:
    # own lengths 5, 40, 5, 41, 5 -> [5, 5, 5] then [40, 41] (2 x 41 = 82 <= 100)
    assert _plan([105, 140, 105, 141, 105], 100, one, 9, 512, 100) == [[0, 2, 4], [1, 3]]
    # padding that costs more than the decode it saves is not paid: own lengths 5, 6, 30 fit the
    # budget together (3 x 30 = 90) but 30 goes alone (2 + 12 and 2 + 30, against 2 + 90)
    assert _plan([105, 106, 130], 100, one, 9, 512, 100) == [[0, 1], [2]]
    assert DECODE_FIXED == 2  # the figures above assume it
    # at most n_seq - 1 prompts a group (stream 0 holds the prefix)
    assert [len(g) for g in _plan([101] * 20, 100, one, 9, 512, 10_000)] == [8, 8, 4]
    # two-token choices with 2 distinct prefixes need 3 streams a prompt -> (17 - 1) // 3 = 5
    assert [len(g) for g in _plan([101] * 12, 100, [[1, 2], [1, 3], [4, 5]], 17, 10_000, 10_000)] == [5, 5, 2]
    # the second round (prompts x prefixes x longest prefix) must fit one decode too
    assert [len(g) for g in _plan([101] * 6, 100, [[1, 2, 3], [4, 5, 6]], 64, 8, 10_000)] == [2, 2, 2]
    groups = _plan([101 + (i * 7) % 13 for i in range(50)], 100, one, 9, 512, 256)
    assert sorted(i for g in groups for i in g) == list(range(50))  # every prompt once


# ---------------------------------------------------------------------------- dataset runner


class Recording(Backend):
    """Scores by a fixed rule and records how the prompts arrived (alone or together)."""

    name = "recording"
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.COMPLETION, Capability.SCORE})
    local = True
    scores_together = True  # type: ignore[assignment]  # its score_many takes prompts together

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def stream(self, prompt: Prompt, options: GenerationOptions, constraint: Constraint | None = None) -> Iterator[str]:
        raise AssertionError("not used")

    def score(self, prompt: Prompt, continuations: Sequence[str]) -> list[float]:
        self.calls.append(1)
        if "FAIL" in prompt.text:
            raise BackendError("too long", backend=self.name)
        return self._rule(prompt, continuations)

    def score_many(self, prompts: Sequence[Prompt], continuations: Sequence[str]) -> list[list[float] | BackendError]:
        self.calls.append(len(prompts))
        return [
            BackendError("too long", backend=self.name) if "FAIL" in p.text else self._rule(p, continuations)
            for p in prompts
        ]

    @staticmethod
    def _rule(prompt: Prompt, continuations: Sequence[str]) -> list[float]:
        n = len(prompt.text)
        return [-float((n + 7 * i) % 5) for i in range(len(continuations))]


def _lines(backend: Backend, rows: list[dict[str, Any]], tmp_path: Path, batch: int) -> list[dict[str, Any]]:
    from promptdsl.dataset import DatasetRunner

    data = tmp_path / f"rows{batch}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    runner = Runner(loads_spec(SPEC), backend)
    dr = DatasetRunner(runner, batch=batch)
    lines = [o.to_dict() for o in dr.outcomes(DataFile(data).rows())]
    for line in lines:
        line.pop("timing", None)
    return lines


def test_dataset_runner_batches_rows_with_the_same_lines_in_order(tmp_path: Path) -> None:
    rows: list[dict[str, Any]] = [{"text": t} for t in TEXTS]
    rows[3] = {"text": ""}  # invalid input (minLength 1): an error line, not sent to the model
    rows[7] = {"text": "FAIL here"}  # the backend fails this one only
    one, many = Recording(), Recording()
    alone = _lines(one, rows, tmp_path, batch=1)
    together = _lines(many, rows, tmp_path, batch=8)
    assert together == alone
    assert [x["index"] for x in together] == list(range(len(rows)))
    assert together[3]["error_type"] == "input" and together[7]["error_type"] == "backend"
    assert "too long" in together[7]["error"]
    assert one.calls == [1] * (len(rows) - 1)  # every scoreable row alone
    assert many.calls == [8, 8, 3]  # 19 scoreable rows, 8 at a time


def test_no_batches_for_a_remote_backend_that_scores_one_at_a_time(tmp_path: Path) -> None:
    remote = Recording()
    remote.local = False  # type: ignore[misc]
    remote.scores_together = False  # type: ignore[misc]
    _lines(remote, [{"text": t} for t in TEXTS[:5]], tmp_path, batch=8)
    assert remote.calls == [1] * 5


def test_run_dataset_batches_only_for_backends_that_score_together(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS), encoding="utf-8")
    for together in (True, False):
        backend = Recording()
        backend.scores_together = together  # type: ignore[misc]
        out: list[str] = []
        summary = run_dataset(Runner(loads_spec(SPEC), backend), DataFile(data), out.append)
        assert summary.ok == len(TEXTS) and len(out) == len(TEXTS)
        # One at a time, each row is written as soon as it is scored (and Ctrl+C stops after it).
        assert (max(backend.calls) > 1) is together


# ---------------------------------------------------------------------------- real model


def _group_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every group scored together from now on (the real scoring still runs)."""
    from promptdsl_llamacpp import batch

    groups: list[int] = []
    real = batch._BatchContext.score_group

    def spy(self: Any, prompts: Any, conts: Any, shared: int) -> Any:
        groups.append(len(prompts))
        return real(self, prompts, conts, shared)

    monkeypatch.setattr(batch._BatchContext, "score_group", spy)
    return groups


def _alone(backend: Any, prompts: Sequence[Prompt], conts: list[str]) -> list[list[float]]:
    """One-at-a-time scores, each prompt's own tokens evaluated in one decode after the shared
    prefix, as a dataset run does (not, say, partly reused from an earlier test's prompt)."""
    from promptdsl_llamacpp.batch import _common_prefix

    model = backend._model
    shared = _common_prefix([model.tokens(p) for p in prompts])
    out = []
    for p in prompts:
        model.llm.n_tokens = min(model.llm.n_tokens, shared)  # keep only the shared prefix
        out.append(backend.score(p, conts))
    return out


@pytest.mark.model
def test_batched_scores_agree_with_one_at_a_time(llamacpp_backend: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from promptdsl_llamacpp.batch import score_many

    from promptdsl.compiler import Compiler

    spec = loads_spec(SPEC)
    prompts = [Compiler(spec).compile({"text": t}) for t in TEXTS]
    conts = [prompts[0].continuation_prefix + c for c in spec.output.choices]
    alone = _alone(llamacpp_backend, prompts, conts)
    groups = _group_sizes(monkeypatch)
    assert score_many(llamacpp_backend._model, prompts, conts) == alone  # bit for bit
    assert sum(groups) >= len(TEXTS) // 2 and max(groups) >= 3  # most prompts shared a decode
    monkeypatch.undo()
    assert llamacpp_backend.score_many(prompts[:3], conts) == alone[:3]  # batching is off by default
    # many small groups (a small token budget) and single prompts left alone: equal too
    assert score_many(llamacpp_backend._model, prompts, conts, budget=40) == alone


@pytest.mark.model
@pytest.mark.parametrize(
    "choices",
    [
        "[New York, New Jersey, New Orleans, Boston]",  # two tokens at most: one shared first token
        "[San Francisco Bay Area, Salt Lake City, New York City, Boston]",  # 3-5 tokens, unequal
        "[New York, San Jose, Boston]",  # two tokens, two distinct first tokens (3 streams a prompt)
    ],
)
def test_batched_multi_token_choices_equal_one_at_a_time(
    llamacpp_backend: Any, choices: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from promptdsl.compiler import Compiler

    spec = loads_spec(MULTI.replace("[New York, New Jersey, New Orleans, Boston]", choices))
    texts = ["The Big Apple never sleeps.", "Jazz and gumbo in the French Quarter.", "Red Sox at Fenway tonight.",
             "Cable cars and fog over the Golden Gate.", "Skiing near the Great Salt Lake."]
    prompts = [Compiler(spec).compile({"text": t}) for t in texts]
    conts = [prompts[0].continuation_prefix + c for c in spec.output.choices]  # type: ignore[union-attr]
    lengths = [len(llamacpp_backend._model._cont_tokens(c)) for c in conts]
    assert max(lengths) > 1  # the second round is exercised
    if "Bay Area" in choices:
        assert max(lengths) >= 3 and len(set(lengths)) > 2  # several tokens after the first, padded alike
    alone = _alone(llamacpp_backend, prompts, conts)
    from promptdsl_llamacpp import batch

    groups = _group_sizes(monkeypatch)
    assert batch.score_many(llamacpp_backend._model, prompts, conts) == alone
    # Up to two tokens a choice, prompts share decodes; longer choices go one at a time (exact only so).
    assert bool(groups) is (max(lengths) <= batch.MAX_CHOICE_TOKENS)


@pytest.mark.model
def test_a_group_that_fails_is_scored_one_at_a_time(llamacpp_backend: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from promptdsl_llamacpp import batch

    from promptdsl.compiler import Compiler

    spec = loads_spec(SPEC)
    prompts = [Compiler(spec).compile({"text": t}) for t in TEXTS[:6]]
    conts = [prompts[0].continuation_prefix + c for c in spec.output.choices]  # type: ignore[union-attr]
    alone = _alone(llamacpp_backend, prompts, conts)
    calls: list[int] = []

    def fail(self: Any, prompts: Any, conts: Any, shared: int) -> Any:
        calls.append(len(prompts))
        raise BackendError("llama_decode failed (1)", backend="llamacpp")

    monkeypatch.setattr(batch._BatchContext, "score_group", fail)
    assert batch.score_many(llamacpp_backend._model, prompts, conts) == alone  # every prompt still scored
    assert calls and max(calls) > 1  # a group was tried first


@pytest.mark.model
def test_batch_frees_the_items_cells_after_each_group(llamacpp_backend: Any) -> None:
    """Memory stays flat: after a call only the shared prefix (sequence 0) holds cells."""
    import llama_cpp
    from promptdsl_llamacpp.batch import _contexts, score_many

    from promptdsl.compiler import Compiler

    spec = loads_spec(SPEC)
    prompts = [Compiler(spec).compile({"text": t}) for t in TEXTS]
    conts = [prompts[0].continuation_prefix + c for c in spec.output.choices]
    from promptdsl_llamacpp.batch import _common_prefix, _plan

    model = llamacpp_backend._model
    toks = [model.tokens(p) for p in prompts]
    assert max(map(len, _plan([len(t) for t in toks], _common_prefix(toks), [[1]], 9, 512, 256))) > 1
    _contexts.pop(llamacpp_backend.llama, None)  # a fresh context: nothing left from other tests
    score_many(model, prompts, conts)
    ctx = _contexts[llamacpp_backend.llama]
    assert ctx.prefix == toks[0][: _common_prefix(toks)]
    assert llama_cpp.llama_memory_seq_pos_max(ctx.mem, 0) == len(ctx.prefix) - 1 > 50
    for seq in range(1, ctx.n_seq):
        assert llama_cpp.llama_memory_seq_pos_max(ctx.mem, seq) == -1


@pytest.mark.model
def test_dataset_run_with_batch_option_agrees_with_unbatched(tmp_path: Path, llamacpp_backend: Any) -> None:
    from promptdsl.registry import get_backend

    batching = get_backend("llamacpp", None, {**llamacpp_backend.options, "batch": True})
    assert batching._model is llamacpp_backend._model  # the same loaded weights
    rows = [{"text": t, "id": i} for i, t in enumerate(TEXTS)]
    together = _lines(batching, rows, tmp_path, batch=16)
    alone = _lines(llamacpp_backend, rows, tmp_path, batch=1)
    assert [x["index"] for x in together] == list(range(len(TEXTS)))
    assert [x["input"] for x in together] == [x["input"] for x in alone]
    assert [x["scores"] for x in together] == [x["scores"] for x in alone]
    assert [x["value"] for x in together] == [x["value"] for x in alone]


@pytest.mark.model
def test_batched_scores_equal_when_padding_crosses_a_256_cell_boundary(llamacpp_backend: Any) -> None:
    """llama.cpp reads the cells in blocks of 256; a group padded past a block boundary that
    some of its prompts end before still gives those prompts their one-at-a-time scores."""
    from promptdsl_llamacpp.batch import _common_prefix, score_many

    from promptdsl.compiler import Compiler

    model = llamacpp_backend._model
    for repeats in range(60, 300, 3):  # an instruction long enough that the prompts straddle 256 tokens
        instruction = "Decide whether the text is positive, negative or neutral." + " Please" * repeats
        spec = loads_spec(re.sub(r"(?m)^instruction:.*$", f"instruction: {json.dumps(instruction)}", SPEC, count=1))
        prompts = [Compiler(spec).compile({"text": t}) for t in TEXTS]
        lengths = [len(model.tokens(p)) for p in prompts]
        if min(lengths) < 256 < max(lengths):
            break
    else:
        pytest.fail("no instruction length puts the prompts on both sides of 256 tokens")
    from promptdsl_llamacpp.batch import _context, _contexts

    conts = [prompts[0].continuation_prefix + c for c in spec.output.choices]  # type: ignore[union-attr]
    short = [Compiler(loads_spec(SPEC)).compile({"text": t}) for t in TEXTS[:6]]
    assert score_many(model, short, conts) == _alone(llamacpp_backend, short, conts)  # a 256-cell context
    small = _contexts[model.llm]
    assert score_many(model, prompts, conts) == _alone(llamacpp_backend, prompts, conts)
    assert _contexts[model.llm] is not small and small.closed  # replaced by a larger one
    assert score_many(model, short, conts) == _alone(llamacpp_backend, short, conts)  # the larger one, short again
    # The plan groups these only when the padding is cheap, so the group is made here: the longest
    # prompt below 256 tokens, padded past the block it ends in to the shortest one above.
    toks = [model.tokens(p) for p in prompts]
    below = max((i for i, t in enumerate(toks) if len(t) < 256), key=lambda i: len(toks[i]))
    above = min((i for i, t in enumerate(toks) if len(t) > 256), key=lambda i: len(toks[i]))
    pair = [toks[below], toks[above]]
    cont_ids = [model._cont_tokens(c) for c in conts]
    with model.lock:
        together = _context(model, len(pair[1]) + 1).score_group(pair, cont_ids, _common_prefix(pair))
    assert together == _alone(llamacpp_backend, [prompts[below], prompts[above]], conts)
