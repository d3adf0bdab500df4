"""Score several prompts in one ``llama_decode``: one sequence per prompt, sharing the prefix's KV cells.

A dataset run scores prompts that differ only in their last ~30 tokens. Evaluated one at a
time, each call is far below llama.cpp's best throughput (a decode has a fixed cost, mostly
thread synchronisation). Here a second llama.cpp context on the same weights, with several
sequences and a unified KV cache, holds the common prefix once in sequence 0; each prompt
gets its own sequence that *shares* the prefix's cells (``llama_memory_seq_cp`` only tags the
cells, it copies nothing), and one batch carries every prompt's own tokens. The choices'
first tokens are read from each sequence's last position; choices of several tokens get a
second decode (one sequence per distinct choice prefix, copied from the prompt's sequence).

Cells beyond the prefix are freed after every group, so memory does not grow with the run.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from promptdsl.errors import BackendError
from promptdsl.prompt import Prompt

if TYPE_CHECKING:
    from . import _LoadedModel

#: Sequences of the batch context (sequence 0 holds the shared prefix).
MAX_SEQUENCES = 64
#: Item tokens per decode: past ~256 tokens llama.cpp's prompt speed no longer rises on CPU
#: (benchmarks/bench_batch.py measures it), and larger batches only grow attention work.
BATCH_TOKENS = 256

_contexts: weakref.WeakKeyDictionary[Any, _BatchContext] = weakref.WeakKeyDictionary()
_contexts_lock = threading.Lock()


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    m = x.max()
    return x - (m + np.log(np.exp(x - m).sum()))  # type: ignore[no-any-return]


class _BatchContext:
    """A multi-sequence llama.cpp context on a loaded model's weights (created on first use)."""

    def __init__(self, llm: Any, n_seq: int = MAX_SEQUENCES) -> None:
        import llama_cpp

        params = type(llm.context_params).from_buffer_copy(llm.context_params)
        self.n_seq = min(n_seq, int(llama_cpp.llama_max_parallel_sequences()))
        params.n_seq_max = self.n_seq
        params.kv_unified = True  # one pool of cells: sequences share the prefix's cells
        ctx = llama_cpp.llama_init_from_model(llm._model.model, params)
        if ctx is None:
            raise BackendError("cannot create a batch context for the model", backend="llamacpp")
        self.n_batch = int(params.n_batch)
        self.n_ctx = int(llama_cpp.llama_n_ctx(ctx))
        batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self.ctx, self.batch = ctx, batch
        self.mem = llama_cpp.llama_get_memory(ctx)
        self.n_vocab = int(llm.n_vocab())
        self.prefix: list[int] = []  # the tokens sequence 0 holds

        def free() -> None:  # before the weights: the Llama's exit stack runs callbacks last-in first-out
            llama_cpp.llama_batch_free(batch)
            llama_cpp.llama_free(ctx)

        llm._stack.callback(free)

    # -------------------------------------------------------------- low level

    def _decode(self, tokens: Sequence[tuple[int, int, int, bool]]) -> None:
        """Decode (token, position, sequence, wants logits) rows as one batch."""
        import llama_cpp

        b = self.batch
        for j, (tok, pos, seq, out) in enumerate(tokens):
            b.token[j] = tok
            b.pos[j] = pos
            b.n_seq_id[j] = 1
            b.seq_id[j][0] = seq
            b.logits[j] = out
        b.n_tokens = len(tokens)
        rc = llama_cpp.llama_decode(self.ctx, b)
        if rc != 0:
            raise BackendError(f"llama_decode failed ({rc}) on a batch of {len(tokens)} tokens", backend="llamacpp")

    def _logprobs(self, j: int) -> np.ndarray:
        import llama_cpp

        ptr = llama_cpp.llama_get_logits_ith(self.ctx, j)
        return _log_softmax(np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)))

    def _set_prefix(self, prefix: list[int]) -> None:
        """Make sequence 0 hold exactly ``prefix`` (evaluating only what it does not hold yet); drop the rest."""
        import llama_cpp

        llama_cpp.llama_memory_seq_keep(self.mem, 0)
        keep = 0
        for a, b in zip(self.prefix, prefix, strict=False):
            if a != b:
                break
            keep += 1
        llama_cpp.llama_memory_seq_rm(self.mem, 0, keep, -1)
        self.prefix = prefix[:keep]
        for start in range(keep, len(prefix), self.n_batch):
            chunk = prefix[start : start + self.n_batch]
            self._decode([(t, start + k, 0, False) for k, t in enumerate(chunk)])
            self.prefix += chunk

    # -------------------------------------------------------------- one group

    def score_group(self, prompts: Sequence[list[int]], conts: Sequence[list[int]]) -> list[list[float]]:
        """Summed log p of each continuation after each prompt (the group fits one decode per round)."""
        import llama_cpp

        shared = _common_prefix(prompts)
        self._set_prefix(list(prompts[0][:shared]))
        rows: list[tuple[int, int, int, bool]] = []
        last: list[int] = []  # batch index of each prompt's last token
        for i, toks in enumerate(prompts, start=1):
            llama_cpp.llama_memory_seq_cp(self.mem, 0, i, -1, -1)
            rows += [(t, shared + k, i, False) for k, t in enumerate(toks[shared:])]
            rows[-1] = (*rows[-1][:3], True)
            last.append(len(rows) - 1)
        self._decode(rows)
        first = [self._logprobs(j) for j in last]

        # Choices of several tokens: one sequence per (prompt, distinct choice prefix).
        keys = sorted({tuple(c[:-1]) for c in conts if len(c) > 1})
        later: dict[tuple[int, tuple[int, ...]], list[np.ndarray]] = {}
        if keys:
            rows, where, seq = [], [], len(prompts) + 1
            for i, toks in enumerate(prompts, start=1):
                for key in keys:
                    llama_cpp.llama_memory_seq_cp(self.mem, i, seq, -1, -1)
                    start = len(rows)
                    rows += [(t, len(toks) + k, seq, True) for k, t in enumerate(key)]
                    where.append((i - 1, key, start))
                    seq += 1
            self._decode(rows)
            for i, key, start in where:
                later[(i, key)] = [self._logprobs(start + k) for k in range(len(key))]

        out = []
        for i in range(len(prompts)):
            scores = []
            for c in conts:
                total = float(first[i][c[0]])
                steps = later.get((i, tuple(c[:-1])), [])
                total += sum(float(lp[tok]) for lp, tok in zip(steps, c[1:], strict=True))
                scores.append(total)
            out.append(scores)
        llama_cpp.llama_memory_seq_keep(self.mem, 0)  # free the items' cells: memory stays flat
        return out


def _common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    """Tokens all ``seqs`` start with, leaving each at least one token of its own (for its logits)."""
    n = min(len(s) for s in seqs) - 1
    first = seqs[0]
    for s in seqs[1:]:
        i = 0
        while i < n and s[i] == first[i]:
            i += 1
        n = i
    return max(n, 0)


def _plan(
    lengths: Sequence[int], shared: int, conts: Sequence[list[int]], ctx: _BatchContext, budget: int
) -> list[list[int]]:
    """Prompt indices in groups whose every round fits one decode, the sequences and the cells."""
    keys = {tuple(c[:-1]) for c in conts if len(c) > 1}
    key_tokens = sum(len(k) for k in keys)
    per_item_seqs = 1 + len(keys)
    groups: list[list[int]] = []
    group: list[int] = []
    tokens = 0
    for i, n in enumerate(lengths):
        own = n - shared
        full = (
            len(group) + 1 > (ctx.n_seq - 1) // per_item_seqs
            or tokens + own > budget
            or (len(group) + 1) * key_tokens > ctx.n_batch
            or shared + tokens + own + (len(group) + 1) * key_tokens > ctx.n_ctx
        )
        if group and full:
            groups.append(group)
            group, tokens = [], 0
        group.append(i)
        tokens += own
    if group:
        groups.append(group)
    return groups


def _context(model: _LoadedModel) -> _BatchContext:
    with _contexts_lock:
        ctx = _contexts.get(model.llm)
        if ctx is None:
            ctx = _contexts[model.llm] = _BatchContext(model.llm)
        return ctx


def score_many(
    model: _LoadedModel, prompts: Sequence[Prompt], continuations: Sequence[str], *, budget: int = BATCH_TOKENS
) -> list[list[float] | BackendError]:
    """``score`` for several prompts; a prompt that cannot be scored gets its error in its place."""
    out: list[list[float] | BackendError] = [BackendError("not scored", backend="llamacpp")] * len(prompts)
    todo: list[tuple[int, list[int]]] = []
    with model.lock:
        conts = [model._cont_tokens(c) for c in continuations]
        longest = max((len(c) for c in conts), default=0)
        for i, prompt in enumerate(prompts):
            try:
                toks = model.tokens(prompt)
                model.check_fits(len(toks), longest, "to score")
            except BackendError as exc:
                out[i] = exc
                continue
            todo.append((i, toks))
        if len(todo) > 1:
            ctx = _context(model)
            token_lists = [t for _, t in todo]
            shared = _common_prefix(token_lists)
            for group in _plan([len(t) for t in token_lists], shared, conts, ctx, max(budget, 1)):
                scores = ctx.score_group([token_lists[g] for g in group], conts)
                for g, s in zip(group, scores, strict=True):
                    out[todo[g][0]] = s
    if len(todo) == 1:  # nothing to batch: the one-at-a-time path (it takes the lock itself)
        i = todo[0][0]
        out[i] = model.score(prompts[i], continuations)
    return out
