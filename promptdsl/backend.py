"""The backend plugin interface: everything a backend author needs, and nothing else.

A backend is a subclass of :class:`Backend` exposed through the entry-point
group ``promptdsl.backends``::

    [project.entry-points."promptdsl.backends"]
    mybackend = "my_package:MyBackend"

The runner reads :attr:`Backend.capabilities` to choose an output method
(``score`` > ``constrain`` > ``generate``), so a backend only implements what
it declares. Every failure must surface as :class:`~promptdsl.errors.BackendError`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

from .errors import BackendError
from .prompt import Prompt

#: JSON Schema of one backend's settings: an object whose properties are the option names.
OptionsSchema = Mapping[str, Any]


class CutOff(str):
    """The empty piece a stream yields last when generation was stopped by a limit instead of
    by the model's own end or a stop string: :data:`CUT_OFF` for ``max_tokens``,
    :data:`CONTEXT_FULL` when the context had no room left.

    It joins as ``""``, so a caller that only joins text never sees it; the runner takes it to
    mark the result ``truncated`` and to say so (and which limit to raise) when the cut text does
    not parse. A backend that cannot tell why generation ended yields nothing extra; one that
    cannot tell the two limits apart yields :data:`CUT_OFF`.
    """

    reason: str  # "max_tokens" or "context"

    def __new__(cls, reason: str = "max_tokens") -> CutOff:
        piece = super().__new__(cls, "")
        piece.reason = reason
        return piece


#: Yielded last when ``max_tokens`` stopped generation.
CUT_OFF = CutOff("max_tokens")
#: Yielded last when the model's context was full (prompt plus answer reached ``n_ctx``).
CONTEXT_FULL = CutOff("context")

#: How every front end words a cut answer (a result's ``truncated``), and what gives it room.
CUT_WORDS = {"max_tokens": "the answer was cut off at max_tokens",
             "context": "the answer was cut off where the model's context ends"}
CUT_REMEDY = {"max_tokens": "raise max_tokens", "context": "a larger n_ctx, or a shorter prompt, leaves it room"}


#: Characters (and pieces) a streamed answer may hold per token of ``max_tokens``: far more than any
#: real token (the longest of SmolLM2's vocabulary is 81 characters), so only a plugin that ignores
#: ``max_tokens`` reaches it; a stream is never ended below :data:`MIN_STREAM_CHARS`.
CHARS_PER_TOKEN = 1024
MIN_STREAM_CHARS = 1_000_000
#: The ``max_tokens`` assumed for that bound when none is set.
UNBOUNDED_TOKENS = 32768


def bounded(chunks: Iterator[str], max_tokens: int | None, backend: str) -> Iterator[str]:
    """``chunks`` as they come, ended with a BackendError once they run far past ``max_tokens``:
    a plugin that ignores it would otherwise stream until the memory is full."""
    limit = max(MIN_STREAM_CHARS, (max_tokens or UNBOUNDED_TOKENS) * CHARS_PER_TOKEN)
    size = pieces = 0
    for chunk in chunks:
        size, pieces = size + (len(chunk) if isinstance(chunk, str) else 0), pieces + 1
        if size > limit or pieces > limit:
            raise BackendError(f"the stream went on past {limit:,} characters (or pieces), far more than "
                               f"max_tokens={max_tokens or UNBOUNDED_TOKENS} allows; the plugin seems to ignore "
                               "max_tokens", backend=backend, exit_code=1)
        yield chunk


def close_stream(stream: object) -> None:
    """Close a stream if it can be closed (a generator can; a list cannot): releases a model or a connection."""
    close = getattr(stream, "close", None)
    if callable(close):
        close()


class Capability(str, Enum):
    """What a backend can do; the runner picks methods from these."""

    CHAT = "chat"  # accepts chat-mode prompts (message lists)
    COMPLETION = "completion"  # accepts completion-mode prompts (plain text)
    STREAM = "stream"  # yields text as it is generated
    SCORE = "score"  # log p(continuation | prompt) for given continuations
    GRAMMAR = "grammar"  # decoding limited by Constraint (choices and JSON Schema)
    JSON_SCHEMA = "json_schema"  # server-side JSON Schema response format
    TOOLS = "tools"  # tool / function calling

    def __str__(self) -> str:
        return self.value


#: Keys of ``model.options`` that are generation settings; the rest configure the backend.
GENERATION_KEYS = frozenset({"temperature", "max_tokens", "stop", "seed", "top_p", "top_k"})


def refused_options(schema: OptionsSchema | None) -> dict[str, str]:
    """Options a backend declares only to refuse them with a reason (marked ``deprecated``): name ->
    the reason. They are not offered (``promptdsl backends``) nor suggested (a did-you-mean)."""
    props: Mapping[str, Any] = (schema or {}).get("properties", {})
    return {k: str(v.get("description", "refused")) for k, v in props.items()
            if isinstance(v, Mapping) and v.get("deprecated") is True}


def split_options(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(generation settings, backend settings) from ``model.options`` / ``-o key=value``."""
    gen = {k: v for k, v in options.items() if k in GENERATION_KEYS}
    back = {k: v for k, v in options.items() if k not in GENERATION_KEYS}
    return gen, back


@dataclass(frozen=True)
class GenerationOptions:
    """Sampling settings for one request. ``temperature=0`` means greedy."""

    temperature: float = 0.0
    max_tokens: int | None = 256
    stop: tuple[str, ...] = ()
    seed: int | None = 0
    top_p: float | None = None
    top_k: int | None = None

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> GenerationOptions:
        """Build from a spec's ``model.options`` (non-generation keys are ignored)."""
        kwargs: dict[str, Any] = {k: options[k] for k in GENERATION_KEYS if k in options}
        stop = kwargs.get("stop")
        if isinstance(stop, str):
            kwargs["stop"] = (stop,)
        elif stop is not None:
            kwargs["stop"] = tuple(stop)
        return cls(**kwargs)

    def given(self, *names: str) -> dict[str, Any]:
        """The named settings that are set (not None), as keyword arguments for a backend's own API."""
        return {name: value for name in names if (value := getattr(self, name)) is not None}


@dataclass(frozen=True)
class Constraint:
    """Limits decoding: to exactly one of ``choices``, or to JSON valid against ``json_schema``."""

    choices: tuple[str, ...] | None = None
    json_schema: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token and its log-probability under the model (see :meth:`Backend.generate_logprobs`)."""

    text: str
    logprob: float


@dataclass(frozen=True)
class BackendInfo:
    """What ``promptdsl backends`` shows for one installed plugin."""

    name: str
    version: str
    capabilities: frozenset[Capability] = frozenset()
    distribution: str = ""
    error: str | None = None  # set when the plugin failed to load
    options_schema: OptionsSchema | None = None  # the backend's declared options (None: not declared)
    probed_capabilities: frozenset[Capability] = frozenset()  # more an instance may find its server has


class Backend(ABC):
    """Base class of every backend.

    Subclasses set :attr:`name` and :attr:`capabilities`, implement
    :meth:`stream`, and implement :meth:`score` when they declare ``SCORE``.
    ``model`` is backend-specific (alias, path, remote id; ``None`` means the
    backend's default); ``options`` are the non-generation keys of the spec's
    ``model.options`` (e.g. ``base_url``, ``n_ctx``).
    """

    name: ClassVar[str] = ""
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    #: Capabilities an instance may add once it has asked its server (an OpenAI-compatible llama.cpp
    #: server scores and takes grammars; OpenAI's does not): ``validate`` refuses a spec's ``method``
    #: only when neither set makes it possible, and ``backends`` lists them as "per server".
    probed_capabilities: ClassVar[frozenset[Capability]] = frozenset()
    #: True for in-process models whose requests run one at a time: batch runs then use no thread pool.
    local: ClassVar[bool] = False
    #: Environment variables read when an instance starts; instances are reused only while they are unchanged.
    env_keys: ClassVar[tuple[str, ...]] = ()
    #: The backend's own settings as a JSON Schema object (see :func:`check_options`). Unknown keys are
    #: refused unless the schema says otherwise; ``None`` means "not declared" and accepts anything.
    options_schema: ClassVar[OptionsSchema | None] = None
    #: Options ``promptdsl doctor`` retries with when a local decode crashed the process (the likely fix).
    safe_options: ClassVar[Mapping[str, Any] | None] = None
    #: True when requests go where the spec, not the user, chose (a spec's untrusted ``base_url``):
    #: then no tool the spec lists runs without asking, since its results travel to that server.
    spec_chose_destination: bool = False

    def __init__(self, model: str | None = None, options: Mapping[str, Any] | None = None):
        self.model = model
        self.options: dict[str, Any] = dict(options or {})

    @property
    def model_id(self) -> str:
        """The model's name as results report it."""
        return self.model or "default"

    @abstractmethod
    def stream(
        self,
        prompt: Prompt,
        options: GenerationOptions,
        constraint: Constraint | None = None,
    ) -> Iterator[str]:
        """Yield the generated text piece by piece, then :data:`CUT_OFF` if ``max_tokens`` (or
        the context) cut it short.

        Closing the iterator early must stop generation and leave the backend
        ready for the next request.
        """

    def complete(
        self,
        prompt: Prompt,
        options: GenerationOptions,
        constraint: Constraint | None = None,
    ) -> str:
        """The whole generated text (joins :meth:`stream` unless overridden)."""
        stream = self.stream(prompt, options, constraint)
        try:
            return "".join(bounded(stream, options.max_tokens, self.name))
        finally:
            close_stream(stream)

    def score(self, prompt: Prompt, continuations: Sequence[str]) -> list[float]:
        """Summed log-probability of each continuation right after ``prompt``."""
        raise BackendError("this backend cannot score continuations", backend=self.name)

    @property
    def scores_together(self) -> bool:
        """True when :meth:`score_many` evaluates prompts together (then dataset runs hand it groups of rows;
        otherwise rows go one at a time, each written as soon as it is scored)."""
        return False

    def score_many(self, prompts: Sequence[Prompt], continuations: Sequence[str]) -> list[list[float] | BackendError]:
        """:meth:`score` for several prompts (dataset runs); a prompt that fails gets its error in its place.

        Optional: a local backend overrides it to evaluate the prompts together.
        """
        out: list[list[float] | BackendError] = []
        for prompt in prompts:
            try:
                out.append(self.score(prompt, continuations))
            except BackendError as exc:
                out.append(exc)
        return out

    def generate_logprobs(self, prompt: Prompt, options: GenerationOptions) -> list[TokenLogprob] | None:
        """Generate like :meth:`complete`, returning each token with its log-probability.

        Optional (``None`` means the backend cannot tell). The conformance kit
        (:mod:`promptdsl.testing`) uses it to check that :meth:`score` agrees
        with the model's own log-probabilities during generation.
        """
        return None

    def context_length(self) -> int | None:
        """The model's context window in tokens, if known."""
        return None

    def count_tokens(self, prompt: Prompt) -> int | None:
        """How many tokens ``prompt`` takes, if the backend can tell cheaply."""
        return None

    def fingerprint(self) -> list[Any]:
        """What identifies the weights beyond ``model_id`` (e.g. a file's size and mtime), for result caches."""
        return []

    @classmethod
    def names_file(cls, model: str) -> bool:
        """True when ``model`` names a local file (a spec's is then found from the spec's folder
        and held to its folder rule, like ``extends``); False for a name a server resolves."""
        return False

    @classmethod
    def check_model(cls, model: str) -> None:
        """Raise :class:`BackendError` when ``model`` (not a file: see :meth:`names_file`) is a name
        this backend can never load, so ``validate`` says so without loading anything. The default
        takes any name (a server's models are only known by asking it)."""
        return None

    @classmethod
    def spec_options(cls, model: str | None, options: Mapping[str, Any]) -> dict[str, Any]:
        """The options a spec file chose (never the user's ``-o``), bounded as a file shared like
        code may decide them: lower a value, drop it, or raise :class:`SpecError` with its path.
        The default takes them as given; the user's own values never pass through here."""
        return dict(options)

    @classmethod
    def diagnostics(cls) -> list[tuple[str, str]]:
        """(label, value) lines for a bug report (``promptdsl doctor``), found without loading a model."""
        return []

    def close(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Release resources (models, connections). Safe to call twice."""

    def supports(self, capability: Capability) -> bool:
        return capability in self.capabilities



def options_schema(properties: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """A backend's :attr:`Backend.options_schema` from ``{name: JSON Schema}``, unknown keys forbidden."""
    return {"type": "object", "properties": dict(properties), "additionalProperties": False}


def check_options(backend: str, schema: OptionsSchema | None, options: Mapping[str, Any]) -> None:
    """Hold backend options to the backend's declared schema before anything loads.

    Raises one exit-2 :class:`BackendError` naming the first bad key (with a
    suggestion for a misspelt one). Generation keys never reach here.
    """
    if schema is None:
        return
    from .errors import did_you_mean
    from .schema.quick import surely_valid

    known = dict(schema.get("properties", {}))
    if schema.get("additionalProperties", True) is False:
        for key in options:
            if key not in known:
                names = ", ".join(sorted(known)) or "none"
                generation = ", ".join(sorted(GENERATION_KEYS))
                raise BackendError(
                    f"unknown option '{key}'{did_you_mean(key, [*known, *GENERATION_KEYS])}; this backend's "
                    f"options: {names} (and the generation settings {generation})",
                    backend=backend,
                    exit_code=2,
                )
    if surely_valid(schema, dict(options)):
        return
    from .schema import RegexProblem, regex_budget, validator  # the plugin's patterns on a spec's values: timed

    try:
        with regex_budget():
            err = next(iter(validator(schema).iter_errors(dict(options))), None)
    except RegexProblem as exc:
        raise BackendError(f"options: {exc}", backend=backend, exit_code=2) from None
    if err is not None:
        key = err.absolute_path[0] if err.absolute_path else "options"
        raise BackendError(f"option '{key}': {err.message}", backend=backend, exit_code=2)
