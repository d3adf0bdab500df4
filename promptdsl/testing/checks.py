"""The backend contract as executable checks.

Each check takes a :class:`Kit` (a backend plus the prompts to use) and
either returns a one-line summary of what it verified, or raises
:class:`CheckFailed` / :class:`NotApplicable`. A check runs in every prompt
mode the backend supports, at temperature 0 and with small token budgets, so
the whole contract takes seconds on a small model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from ..backend import Backend, Capability, Constraint, CutOff, GenerationOptions, bounded
from ..errors import BackendError, quote
from ..prompt import Message, Prompt


class CheckFailed(AssertionError):
    """The backend broke the contract; the message says how."""


class NotApplicable(Exception):
    """The backend does not declare what this check needs."""


@dataclass(frozen=True)
class KitPrompts:
    """Prompts the checks use; override them for models that answer these badly."""

    completion: str = "Once upon a time, there was a"
    chat: str = "Write a short poem about the sea."
    json_completion: str = "A person, as JSON with name and age:"
    json_chat: str = "Describe a person as a JSON object with name and age."
    choice_completion: str = "Question: Is the sky blue?\nAnswer:"
    choice_chat: str = "Is the sky blue? Answer Yes or No."
    choices: tuple[str, ...] = ("Yes", "No")
    json_schema: dict[str, Any] = field(
        default_factory=lambda: {
            "type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
            "required": ["name", "age"],
            "additionalProperties": False,
        }
    )


@dataclass
class Kit:
    """What every check receives."""

    backend: Backend
    prompts: KitPrompts = field(default_factory=KitPrompts)

    def stream(self, prompt: Prompt, options: GenerationOptions, constraint: Constraint | None = None) -> Iterator[str]:
        """The backend's stream, ended with an error once it runs far past ``max_tokens``: a backend that
        ignores it fails the check, instead of filling the memory until the time limit."""
        return bounded(self.backend.stream(prompt, options, constraint), options.max_tokens, self.backend.name)

    @property
    def modes(self) -> list[str]:
        """The prompt modes the backend declares, completion first (none: the check does not apply,
        rather than passing having tried nothing; the capabilities check fails such a backend)."""
        caps = self.backend.capabilities
        modes = [m for m, c in (("completion", Capability.COMPLETION), ("chat", Capability.CHAT)) if c in caps]
        if not modes:
            raise NotApplicable("the backend declares neither 'chat' nor 'completion'")
        return modes

    def prompt(self, mode: str, kind: str = "") -> Prompt:
        """The kit's prompt of ``kind`` ('' plain, 'json', 'choice') in ``mode``."""
        text = getattr(self.prompts, f"{kind}_{mode}" if kind else mode)
        if mode == "chat":
            return Prompt(mode="chat", messages=(Message("user", text),))
        return Prompt(mode="completion", text=text, continuation_prefix=" " if kind == "choice" else "")


def greedy(max_tokens: int, stop: tuple[str, ...] = ()) -> GenerationOptions:
    return GenerationOptions(temperature=0.0, max_tokens=max_tokens, stop=stop, seed=0)


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


# ---------------------------------------------------------------------------- checks


def check_capabilities(kit: Kit) -> str:
    """Name, capabilities and model id are well-formed; at least one prompt mode."""
    b = kit.backend
    _expect(isinstance(b.name, str) and bool(b.name), "Backend.name must be a non-empty string")
    caps = b.capabilities
    _expect(isinstance(caps, frozenset), f"capabilities must be a frozenset, got {type(caps).__name__}")
    bad = [c for c in caps if not isinstance(c, Capability)]
    _expect(not bad, f"capabilities holds non-Capability values: {bad!r}")
    _expect(bool(caps & {Capability.CHAT, Capability.COMPLETION}), "the backend declares neither chat nor completion")
    _expect(isinstance(b.model_id, str) and bool(b.model_id), "model_id must be a non-empty string")
    return f"{b.name} ({b.model_id}): {', '.join(sorted(c.value for c in caps))}"


def check_stream_equals_complete(kit: Kit) -> str:
    """At temperature 0, the streamed pieces join to exactly what complete() returns, every time."""
    done = []
    for mode in kit.modes:
        prompt, opts = kit.prompt(mode), greedy(16)
        pieces = list(kit.stream(prompt, opts))
        _expect(all(isinstance(p, str) for p in pieces), f"{mode}: stream yielded non-str pieces")
        streamed = "".join(pieces)
        whole = kit.backend.complete(prompt, opts)
        again = kit.backend.complete(prompt, opts)
        _expect(bool(whole), f"{mode}: complete() returned no text")
        _expect(streamed == whole, f"{mode}: stream gave {quote(streamed)} but complete gave {quote(whole)}")
        _expect(again == whole, f"{mode}: two greedy runs differ: {quote(whole)} vs {quote(again)}")
        done.append(f"{mode} {sum(not isinstance(p, CutOff) for p in pieces)} pieces")  # a cut-off marker is none
    return "; ".join(done)


def check_max_tokens(kit: Kit) -> str:
    """A small max_tokens cuts the same greedy text short (and within budget, where tokens are visible)."""
    done = []
    for mode in kit.modes:
        prompt = kit.prompt(mode)
        long = kit.backend.complete(prompt, greedy(12))
        for n in (1, 3):
            short = kit.backend.complete(prompt, greedy(n))
            _expect(bool(short), f"{mode}: max_tokens={n} gave no text")
            _expect(long.startswith(short),
                    f"{mode}: max_tokens={n} gave {quote(short)}, not a prefix of {quote(long)}")
            _expect(len(short) < len(long), f"{mode}: max_tokens={n} was not honoured ({quote(short)})")
            tokens = kit.backend.generate_logprobs(prompt, greedy(n))
            if tokens is not None:
                _expect(len(tokens) <= n, f"{mode}: max_tokens={n} generated {len(tokens)} tokens")
        done.append(mode)
    return "honoured in " + ", ".join(done)


def _stop_word(text: str) -> str | None:
    """A word of ``text`` that first occurs after its start (the stop string for the check)."""
    for word in text.split()[1:]:
        if text.find(word) >= 1:
            return word
    return None


def check_stop_sequences(kit: Kit) -> str:
    """Generation ends right before the first stop sequence, which is not included; streaming too."""
    done = []
    for mode in kit.modes:
        prompt = kit.prompt(mode)
        base = kit.backend.complete(prompt, greedy(16))
        word = _stop_word(base)
        if word is None:
            raise CheckFailed(f"{mode}: the greedy text {quote(base)} has no second word to stop at")
        expected = base[: base.find(word)]
        got = kit.backend.complete(prompt, greedy(16, (word,)))
        _expect(got == expected, f"{mode}: stop={word!r} gave {quote(got)}, expected {quote(expected)}")
        streamed = "".join(kit.stream(prompt, greedy(16, ("\u241e", word))))
        _expect(streamed == expected, f"{mode}: streaming with stop={word!r} gave {quote(streamed)}")
        done.append(f"{mode} stop={word!r}")
    return "; ".join(done)


def _close_enough(a: float, b: float) -> bool:
    return math.isfinite(a) and math.isfinite(b) and abs(a - b) <= 0.02 + 1e-3 * abs(b)


def check_score(kit: Kit) -> str:
    """score() is a log-probability per continuation and equals generation's own log-probabilities."""
    if Capability.SCORE not in kit.backend.capabilities:
        raise NotApplicable("the backend does not declare 'score'")
    done = []
    for mode in kit.modes:
        prompt = kit.prompt(mode)
        tokens = kit.backend.generate_logprobs(prompt, greedy(4))
        text = kit.backend.complete(prompt, greedy(4))
        conts = [text, text[: max(1, len(text) // 2)]]
        scores = kit.backend.score(prompt, conts)
        _expect(len(scores) == len(conts), f"{mode}: score returned {len(scores)} values for {len(conts)}")
        _expect(all(isinstance(s, float) and s <= 1e-6 for s in scores), f"{mode}: not log-probabilities: {scores}")
        again = kit.backend.score(prompt, conts)
        _expect(all(_close_enough(a, b) for a, b in zip(scores, again, strict=True)),
                f"{mode}: score is not deterministic: {scores} vs {again}")
        _expect(conts[0] == conts[1] or scores[0] != scores[1],
                f"{mode}: score gives {quote(conts[0])} and {quote(conts[1])} the same value {scores[0]}")
        if tokens is None:
            continue
        gen = "".join(t.text for t in tokens)
        _expect(gen == text, f"{mode}: generate_logprobs text {quote(gen)} differs from complete {quote(text)}")
        first, total = tokens[0].logprob, sum(t.logprob for t in tokens)
        s_first, s_total = kit.backend.score(prompt, [tokens[0].text, text])
        _expect(_close_enough(s_first, first),
                f"{mode}: score({tokens[0].text!r}) = {s_first:.4f} but generation gave {first:.4f}")
        _expect(_close_enough(s_total, total),
                f"{mode}: score({quote(text)}) = {s_total:.4f} but generation's tokens sum to {total:.4f}")
        done.append(f"{mode} {len(tokens)} tokens, {s_total:.3f} vs {total:.3f}")
    if not done:  # only shape and determinism were checked: say so rather than pass
        raise NotApplicable("generate_logprobs returns None, so scores cannot be compared with generation "
                            "(they are deterministic log-probabilities); implement it to check score")
    return "; ".join(done)


def _constrain_modes(kit: Kit) -> Iterator[tuple[str, bool]]:
    """(mode, must_work): with 'grammar' every mode must constrain; with only 'json_schema', chat must."""
    caps = kit.backend.capabilities
    if not caps & {Capability.GRAMMAR, Capability.JSON_SCHEMA}:
        raise NotApplicable("the backend declares neither 'grammar' nor 'json_schema'")
    for mode in kit.modes:
        yield mode, Capability.GRAMMAR in caps or mode == "chat"


def _constrained(kit: Kit, prompt: Prompt, opts: GenerationOptions, constraint: Constraint,
                 must_work: bool) -> str | None:
    try:
        return "".join(kit.stream(prompt, opts, constraint))
    except BackendError:
        if must_work:
            raise
        return None  # a clean refusal is allowed where the capability does not promise it


def check_json_schema(kit: Kit) -> str:
    """Output constrained to a JSON Schema parses and validates."""
    from jsonschema import Draft202012Validator

    schema = kit.prompts.json_schema
    done = []
    for mode, must in _constrain_modes(kit):
        text = _constrained(kit, kit.prompt(mode, "json"), greedy(64), Constraint(json_schema=schema), must)
        if text is None:
            done.append(f"{mode} refused cleanly")
            continue
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):  # also integers past Python's digit limit, deep nesting
            raise CheckFailed(f"{mode}: constrained output is not JSON: {quote(text)}") from None
        errors = list(Draft202012Validator(schema).iter_errors(value))
        _expect(not errors, f"{mode}: {value!r} breaks the schema: {errors[0].message if errors else ''}")
        done.append(f"{mode} {json.dumps(value)}")
    return "; ".join(done)


def check_choices(kit: Kit) -> str:
    """Output constrained to choices is exactly one of them (the prefix is optional)."""
    done = []
    for mode, must in _constrain_modes(kit):
        prompt = kit.prompt(mode, "choice")
        choices = tuple(prompt.continuation_prefix + c for c in kit.prompts.choices)
        text = _constrained(kit, prompt, greedy(8), Constraint(choices=choices), must)
        if text is None:
            done.append(f"{mode} refused cleanly")
            continue
        _expect(text.strip() in kit.prompts.choices, f"{mode}: {quote(text)} is not one of {kit.prompts.choices}")
        done.append(f"{mode} {text.strip()!r}")
    return "; ".join(done)


def check_cancel(kit: Kit) -> str:
    """Closing a stream early (or before reading it) stops it and leaves the backend ready."""
    mode = kit.modes[0]
    small = kit.prompt(mode)
    reference = kit.backend.complete(small, greedy(6))
    stream = kit.backend.stream(kit.prompt(kit.modes[-1]), greedy(64))
    first = next(iter(stream), None)
    _expect(first is not None, "the stream yielded nothing")
    _close(stream)
    _expect(kit.backend.complete(small, greedy(6)) == reference, "after closing a stream, the next answer changed")
    unread = kit.backend.stream(small, greedy(64))
    _close(unread)
    again = "".join(kit.stream(small, greedy(6)))
    _expect(again == reference, f"after closing an unread stream, streaming gave {quote(again)}")
    return f"closed after {first!r}; next requests answered {quote(reference)}"


def _close(stream: Any) -> None:
    close = getattr(stream, "close", None)
    if not callable(close):
        raise CheckFailed("stream() must return a closable iterator (a generator)")
    close()


def check_errors(kit: Kit) -> str:
    """Failures surface as BackendError (too-long prompt when the context length is known, unsupported calls),
    and the backend recovers."""
    b = kit.backend
    mode = kit.modes[0]
    seen = []
    n_ctx = b.context_length()
    if n_ctx is None:  # "unknown" is allowed by the contract: no length can be called too long
        seen.append("(context length unknown: no too-long prompt tried)")
    else:
        words = "word " * (2 * n_ctx + 16)
        huge = (Prompt(mode="completion", text=words) if mode == "completion"
                else Prompt(mode="chat", messages=(Message("user", words),)))
        for name, call in (("stream", lambda: "".join(b.stream(huge, greedy(4)))),
                           ("complete", lambda: b.complete(huge, greedy(4)))):
            _expect_backend_error(f"{name} of a {2 * n_ctx}-word prompt", call)
            seen.append(name)
    if Capability.SCORE not in b.capabilities:
        _expect_backend_error("score() without the 'score' capability", lambda: b.score(kit.prompt(mode), ["x"]))
        seen.append("score")
    for missing, cap in (("completion", Capability.COMPLETION), ("chat", Capability.CHAT)):
        if cap not in b.capabilities:
            unsupported = kit.prompt(missing)
            _expect_backend_error(f"a {missing} prompt", partial(b.complete, unsupported, greedy(4)))
            seen.append(f"{missing} prompt")
    text = b.complete(kit.prompt(mode), greedy(4))
    _expect(bool(text), "no answer after the errors")
    return f"BackendError from {', '.join(seen)}; recovered with {quote(text)}"


def _expect_backend_error(what: str, call: Callable[[], object]) -> None:
    try:
        call()
    except BackendError:
        return
    except Exception as exc:
        raise CheckFailed(f"{what} raised {type(exc).__name__} ({exc}), not BackendError") from None
    raise CheckFailed(f"{what} raised no error")


#: Every check, in the order they run; names are stable (reports and test ids use them).
CHECKS: dict[str, Callable[[Kit], str]] = {
    "capabilities": check_capabilities,
    "stream_equals_complete": check_stream_equals_complete,
    "max_tokens": check_max_tokens,
    "stop_sequences": check_stop_sequences,
    "score_matches_generation": check_score,
    "json_schema": check_json_schema,
    "choices": check_choices,
    "cancel_releases": check_cancel,
    "errors_are_backend_errors": check_errors,
}
