"""Score several prompts in one ``llama_decode`` with exactly the one-at-a-time scores.

A dataset run scores prompts that differ only in their last ~30 tokens. Here a second
llama.cpp context on the same weights gives every sequence its own KV *stream*
(``kv_unified=false``): sequence 0 holds the common prefix, each prompt of a group gets a copy
of it in its own stream and one batch carries every prompt's own tokens. The choices' first
tokens are read at each prompt's last token; choices of several tokens get a second decode (one
stream per prompt and distinct first token, copied from the prompt's stream); choices of three
or more tokens are scored one at a time.

Why it is exact (docs/performance.md, "Batching several items per decode"): llama.cpp's
attention sums over KV cells in SIMD lanes, so a score depends on which cells an item's tokens
sit in, and a batch whose sequences have unequal lengths is split into micro-batches that
change the numbers again. In its own stream an item's cells sit where they would one at a
time; every prompt of a group is padded on the right to the group's longest (attention is
causal, so tokens after the last real one cannot change it) and prompts are grouped by length,
so the padding stays small: a prompt joins a group only where the decode it saves is worth more
than its padding (:func:`_plan`). Tests compare the scores for equality.

The streams' cells beyond the prefix are freed after every group, so memory stays flat.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from promptdsl.errors import BackendError
from promptdsl.prompt import Prompt

from . import _interrupts_held, _log_softmax  # the one-at-a-time path's: equal scores need the same arithmetic

if TYPE_CHECKING:
    from . import _LoadedModel

#: Streams of the batch context: the prefix and up to 8 prompts (or fewer prompts and their
#: choice prefixes). Each stream costs KV memory for a whole prompt.
MAX_SEQUENCES = 9
#: Item tokens per decode (padding included): past ~256 tokens llama.cpp's prompt speed no
#: longer rises on CPU (benchmarks/bench_decode.py measures the curve).
BATCH_TOKENS = 256
#: Longest choice (in tokens) scored together; longer ones are scored one at a time (see score_many).
MAX_CHOICE_TOKENS = 2
#: llama.cpp pads the cells attention reads to a multiple of 256; streams are sized alike.
CELL_PAD = 256
#: KV cells of all streams together (the prefix is held once per stream): long prompts get
#: fewer streams, so memory stays within about twice the main context's.
MAX_CELLS = 2 * 4608
#: A decode's fixed cost, in tokens' time, for planning groups. Measured (``--only decode``):
#: about 4 on an AVX-512 CPU (9 ms against 2.2 ms a token), about 1 on an older AVX2 one. At 2
#: the plan is no slower than one at a time on either, in the cost model.
DECODE_FIXED = 2

_contexts: weakref.WeakKeyDictionary[Any, _BatchContext] = weakref.WeakKeyDictionary()
_contexts_lock = threading.Lock()


def _choice_prefixes(conts: Sequence[list[int]]) -> list[tuple[int, ...]]:
    """Distinct token prefixes the choices' later tokens are read after (the second round's streams)."""
    return sorted({tuple(c[:-1]) for c in conts if len(c) > 1})


def _pad(n: int) -> int:
    return max(CELL_PAD, -(-n // CELL_PAD) * CELL_PAD)


def _streams(cells: int) -> int:
    """Streams a batch context gets when each must hold ``cells`` (long prompts get fewer)."""
    return max(2, min(MAX_SEQUENCES, MAX_CELLS // _pad(cells)))


class _BatchContext:
    """A llama.cpp context with one KV stream per sequence on a loaded model's weights."""

    def __init__(self, llm: Any, stream_cells: int) -> None:
        import llama_cpp

        params = type(llm.context_params).from_buffer_copy(llm.context_params)
        self.stream_cells = _pad(stream_cells)
        self.n_seq = max(2, min(_streams(stream_cells), int(llama_cpp.llama_max_parallel_sequences())))
        params.n_seq_max = self.n_seq
        params.kv_unified = False  # a stream per sequence: cells sit where they would alone
        params.n_ctx = self.n_seq * self.stream_cells
        params.n_batch = max(int(params.n_batch), self.stream_cells)
        with _interrupts_held():  # llama.cpp logs through Python while it builds a context
            ctx = llama_cpp.llama_init_from_model(llm._model.model, params)
        if ctx is None:
            raise BackendError("cannot create a batch context for the model", backend="llamacpp")
        self.n_batch = int(params.n_batch)
        # A group larger than a micro-batch would be split, which changes the numbers: groups stay within it.
        self.n_ubatch = min(int(params.n_ubatch), self.n_batch)
        batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self.ctx, self.batch = ctx, batch
        self.mem = llama_cpp.llama_get_memory(ctx)
        self.n_vocab = int(llm.n_vocab())
        self.prefix: list[int] = []  # the tokens sequence 0 holds
        self._free = (llama_cpp.llama_batch_free, llama_cpp.llama_free)  # usable while Python shuts down
        self.closed = False
        llm._stack.callback(self.close)  # before the weights: the exit stack runs callbacks last-in first-out

    def close(self) -> None:
        """Free the context now (a larger one replaces it, or the model is closing)."""
        if not self.closed:
            self.closed = True
            batch_free, free = self._free
            batch_free(self.batch)
            free(self.ctx)

    # -------------------------------------------------------------- low level

    def _decode(self, tokens: Sequence[tuple[int, int, int, bool]]) -> None:
        """Decode (token, position, sequence, wants logits) rows as one batch."""
        import llama_cpp

        if not tokens:
            return
        if len(tokens) > self.n_batch:  # llama.cpp aborts the process on this; the plan prevents it
            raise BackendError(f"a batch of {len(tokens)} tokens exceeds n_batch {self.n_batch}", backend="llamacpp")
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
        """Make sequence 0 hold exactly ``prefix`` (evaluating only what it does not hold yet)."""
        import llama_cpp

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

    def _clear(self, n: int) -> None:
        """Free every cell of sequences 1..n-1: only the prefix stays."""
        import llama_cpp

        for seq in range(1, n):
            llama_cpp.llama_memory_seq_rm(self.mem, seq, -1, -1)

    # -------------------------------------------------------------- one group

    def score_group(
        self, prompts: Sequence[list[int]], conts: Sequence[list[int]], shared: int
    ) -> list[list[float]]:
        """Summed log p of each continuation after each prompt; the prompts share ``shared`` tokens."""
        import llama_cpp

        self._set_prefix(list(prompts[0][:shared]))
        width = max(len(t) for t in prompts) - shared
        rows: list[tuple[int, int, int, bool]] = []
        last: list[int] = []  # batch index of each prompt's last real token
        used = len(prompts) + 1
        try:
            for i, toks in enumerate(prompts, start=1):
                llama_cpp.llama_memory_seq_cp(self.mem, 0, i, -1, -1)  # the prefix's stream, copied whole
                own = toks[shared:]
                for k in range(width):  # right padding repeats the last token; causal attention ignores it
                    rows.append((own[min(k, len(own) - 1)], shared + k, i, k == len(own) - 1))
                    if k == len(own) - 1:
                        last.append(len(rows) - 1)
            self._decode(rows)
            first = [self._logprobs(j) for j in last]

            # Choices of several tokens: a stream per (prompt, distinct choice prefix), all padded alike.
            keys = _choice_prefixes(conts)
            later: dict[tuple[int, tuple[int, ...]], list[np.ndarray]] = {}
            if keys:
                key_width = max(len(k) for k in keys)
                rows, where = [], []
                for i, toks in enumerate(prompts, start=1):
                    if not llama_cpp.llama_memory_seq_rm(self.mem, i, len(toks), -1):  # drop the padding
                        raise BackendError("cannot drop a prompt's padding from its stream", backend="llamacpp")
                    for key in keys:
                        llama_cpp.llama_memory_seq_cp(self.mem, i, used, -1, -1)
                        start = len(rows)
                        for k in range(key_width):
                            rows.append((key[min(k, len(key) - 1)], len(toks) + k, used, k < len(key)))
                        where.append((i - 1, key, start))
                        used += 1
                self._decode(rows)
                for i, key, start in where:
                    later[(i, key)] = [self._logprobs(start + k) for k in range(len(key))]
        finally:
            self._clear(used)  # memory stays flat, also after an error

        out = []
        for i in range(len(prompts)):
            scores = []
            for c in conts:
                total = float(first[i][c[0]])
                steps = later.get((i, tuple(c[:-1])), [])
                total += sum(float(lp[tok]) for lp, tok in zip(steps, c[1:], strict=True))
                scores.append(total)
            out.append(scores)
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
    lengths: Sequence[int], shared: int, conts: Sequence[list[int]], n_seq: int, n_batch: int, budget: int
) -> list[list[int]]:
    """Prompt indices in groups of similar length: every round of a group fits ``n_batch`` rows
    (one micro-batch, padding counted), and the group's streams fit the context.

    Of the ways to cut the prompts, sorted by length, into such groups, the one with the least
    estimated decode time: a decode costs :data:`DECODE_FIXED` tokens' time plus its rows, padding
    included. Filling every group up to the limits padded 14.5% of the tokens in calls of 16
    tweets and made batching slower than one prompt at a time (docs/performance.md)."""
    keys = _choice_prefixes(conts)
    key_width = max((len(k) for k in keys), default=0)
    per_item = 1 + len(keys)
    cap = max(1, (n_seq - 1) // per_item)
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    widths = [lengths[i] - shared for i in order]

    def cost(n: int, width: int) -> int | None:
        """Estimated time of ``n`` prompts padded to ``width``, or None where a group cannot go."""
        if n == 1:  # one at a time: a decode, then one for each choice prefix
            return DECODE_FIXED + width + len(keys) * (DECODE_FIXED + key_width)
        if n > cap or n * width > budget or n * len(keys) * key_width > n_batch:
            return None
        return DECODE_FIXED + n * width + (DECODE_FIXED + n * len(keys) * key_width if keys else 0)

    best: list[int] = [0]  # best[j]: least cost of the first j prompts; cut[j]: where its last group starts
    cut: list[int] = [0]
    for j in range(1, len(order) + 1):
        options = []
        for i in range(max(0, j - cap), j):
            c = cost(j - i, widths[j - 1])  # widths ascend: the group's last is its longest
            if c is not None:
                options.append((best[i] + c, -i))  # on a tie the later cut: earlier groups fill up
        total, start = min(options)  # a group of one always goes, so there is an option
        best.append(total)
        cut.append(-start)
    groups: list[list[int]] = []
    j = len(order)
    while j > 0:
        groups.append(order[cut[j] : j])
        j = cut[j]
    return groups[::-1]


def _context(model: _LoadedModel, stream_cells: int) -> _BatchContext:
    """The model's batch context, replaced by a larger one when a prompt needs more cells."""
    with _contexts_lock:
        ctx = _contexts.get(model.llm)
        if ctx is None or ctx.stream_cells < stream_cells:
            if ctx is not None:
                del _contexts[model.llm]  # never left in place closed, even if the new one fails
                ctx.close()
            ctx = _BatchContext(model.llm, stream_cells)
            _contexts[model.llm] = ctx
        return ctx


def _batchable(model: _LoadedModel) -> bool:
    """Attention-only models: recurrent state cannot be trimmed to a position (the padding)."""
    import llama_cpp

    m = model.llm._model.model
    return not (llama_cpp.llama_model_is_recurrent(m) or llama_cpp.llama_model_is_hybrid(m))


def score_many(
    model: _LoadedModel, prompts: Sequence[Prompt], continuations: Sequence[str], *, budget: int = BATCH_TOKENS
) -> list[list[float] | BackendError]:
    """``score`` for several prompts; a prompt that cannot be scored gets its error in its place."""
    out: list[list[float] | BackendError] = [BackendError("not scored", backend="llamacpp")] * len(prompts)
    todo: list[tuple[int, list[int]]] = []
    alone: list[int] = []
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
        cells = max((len(t) for _, t in todo), default=0) + longest
        keys = len(_choice_prefixes(conts))
        ctx: _BatchContext | None = None
        # Choices of three or more tokens go one at a time: there each of their later tokens is a
        # one-token decode reading the one before, which llama.cpp rounds unlike a longer decode.
        # Else: no group would hold two prompts, or recurrent state.
        if (
            len(todo) > 1
            and longest <= MAX_CHOICE_TOKENS
            and (_streams(cells) - 1) // (1 + keys) >= 2
            and _batchable(model)
        ):
            try:
                ctx = _context(model, cells)
            except BackendError:
                ctx = None  # no memory for a second context: one at a time still works
        if ctx is None:
            alone += [i for i, _ in todo]
        else:
            token_lists = [t for _, t in todo]
            shared = _common_prefix(token_lists)
            lengths = [len(t) for t in token_lists]
            for group in _plan(lengths, shared, conts, ctx.n_seq, ctx.n_ubatch, min(max(budget, 1), ctx.n_ubatch)):
                scores = None
                if len(group) > 1:  # a group of one has nothing to share a decode with
                    try:
                        scores = ctx.score_group([token_lists[g] for g in group], conts, shared)
                    except BackendError:
                        scores = None  # one at a time instead, which reports its own errors
                if scores is None:
                    alone += [todo[g][0] for g in group]
                    continue
                for g, s in zip(group, scores, strict=True):
                    out[todo[g][0]] = s
    for i in alone:  # the one-at-a-time path takes the lock itself
        try:
            out[i] = model.score(prompts[i], continuations)
        except BackendError as exc:
            out[i] = exc
    return out
