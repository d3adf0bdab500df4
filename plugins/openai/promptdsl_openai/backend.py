"""The ``openai`` backend: OpenAI and OpenAI-compatible servers through the official SDK.

Chat prompts go to ``/chat/completions``, completion prompts to ``/completions``.
What every compatible server offers (chat, completion, streaming, JSON through
``response_format``) is declared on the class. Two llama.cpp request extensions
are detected once per instance (one tiny request each), and add

- ``grammar`` (a GBNF ``grammar`` field is honoured): choices and JSON are
  constrained by a grammar, in both prompt modes;
- ``score`` (also ``logit_bias`` keyed by token *text*, ``logit_bias_type:
  tokens``, as llama-cpp-python's server takes it): exact log p(continuation |
  prompt). The continuation is forced with a grammar while its own tokens get a
  large bias, so the model walks exactly the continuation's canonical tokens;
  the server reports the unbiased log-probability of each, and they are summed.

Routes that did not work on llama-cpp-python's server, and why they are not
used: ``echo`` + ``logprobs`` on ``/completions`` pairs each prompt token with
the wrong row of logits for models without a BOS token (SmolLM2), giving
values off by several nats; a grammar alone makes the model spell the
continuation in whatever small pieces are greedily likeliest (``N``, ``ega``,
``ti``, ``ve``), a path far less likely than the real tokenization.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import openai

from promptdsl.backend import Backend, Capability, Constraint, GenerationOptions, TokenLogprob, options_schema
from promptdsl.errors import BackendError
from promptdsl.prompt import Prompt

from .config import DEFAULT_OPENAI_MODEL, Settings, _flag, resolve
from .errors import map_error
from .formats import (
    ANSWER_KEY,
    choice_schema,
    exact_grammar,
    function_tools,
    grammar_for,
    json_object_format,
    json_schema_format,
    rejects_json_schema,
    tool_arguments,
    tool_choice_param,
    tool_messages,
)

BASE_CAPABILITIES = frozenset(
    {Capability.CHAT, Capability.COMPLETION, Capability.STREAM, Capability.JSON_SCHEMA, Capability.TOOLS}
)
_PROBE_TEXT = "zq"
_BOOST = 100.0  # logit bias that makes the continuation's own tokens win over any other spelling

# Probe results per (base_url, model): a server's abilities do not change while we run.
_probed: dict[tuple[str, str], tuple[bool, bool]] = {}


@dataclass(frozen=True)
class _Plan:
    """How one request is constrained."""

    grammar: str | None = None
    boost: str | None = None  # text whose tokens get a large logit bias (forced decoding for scores)
    schema: Mapping[str, Any] | None = None  # sent as response_format
    unwrap: bool = False  # the reply is {"answer": <choice>}; yield just the choice


class OpenAIBackend(Backend):
    """OpenAI, or any OpenAI-compatible server via ``base_url``.

    Options (``model.options`` / ``-o``): ``base_url``, ``timeout`` (seconds),
    ``max_retries``, ``api_key_env`` (variable holding the key, default
    ``OPENAI_API_KEY``), ``grammar`` (``auto``/``true``/``false``: use the llama.cpp
    ``grammar`` and ``logit_bias`` extensions), ``n_ctx`` (the context size, as llamacpp names it), ``organization``.
    """

    name = "openai"
    capabilities = BASE_CAPABILITIES
    env_keys = ("OPENAI_API_KEY", "OPENAI_BASE_URL")
    #: Names only: values are checked by config.resolve, whose messages say more.
    options_schema = options_schema({
        "base_url": {"description": "server URL (default $OPENAI_BASE_URL, else api.openai.com)"},
        "timeout": {"description": "seconds per request"}, "max_retries": {"description": "retries"},
        "api_key_env": {"description": "variable holding the key (default OPENAI_API_KEY)"},
        "api_key": {"description": "refused: keys come only from the environment"},
        "grammar": {"description": "auto/true/false: llama.cpp grammar extensions"},
        "n_ctx": {"description": "context size in tokens"}, "organization": {"description": "OpenAI organization"},
        "tools": {"description": "true/false: native tool calls (default: off on llama.cpp-family servers)"},
    })

    def __init__(self, model: str | None = None, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(model, options)
        self.settings: Settings = resolve(self.options)
        self.spec_chose_destination = self.settings.destination_from_spec
        self.client = openai.OpenAI(
            api_key=self.settings.api_key,
            base_url=self.settings.base_url,
            timeout=self.settings.timeout,
            max_retries=self.settings.max_retries,
            organization=self.settings.organization,
        )
        self._model_name = model or (DEFAULT_OPENAI_MODEL if self.settings.is_openai else "")
        if not self._model_name:
            self._model_name = self._server_model()
        self._json_schema_ok: bool | None = True if self.settings.is_openai else None
        wanted = self.settings.grammar
        if wanted is None:
            self.grammar, self.can_score = (False, False) if self.settings.is_openai else self._probe()
        else:
            self.grammar = self.can_score = wanted
        extra = {Capability.GRAMMAR} if self.grammar else set()
        if self.can_score:
            extra.add(Capability.SCORE)
        # Native tool calls, except on llama.cpp-family servers (grammar honoured): there the prompted path decodes
        # arguments under a grammar (reliable even for small models), and llama-cpp-python's tool-call formats drop
        # tool results. -o tools=true / tools=false decide either way.
        flag = _flag(self.options, "tools")
        native_tools = (not self.grammar) if flag is None else flag
        if extra or not native_tools:
            # Per-instance capabilities: this server turned out to support more (or was told to use less).
            caps = BASE_CAPABILITIES | extra
            self.capabilities = caps if native_tools else caps - {Capability.TOOLS}  # type: ignore[misc]

    # ------------------------------------------------------------------ identity

    @property
    def model_id(self) -> str:
        return self._model_name

    def context_length(self) -> int | None:
        return self.settings.n_ctx

    def fingerprint(self) -> list[Any]:
        """The server as resolved: a URL from $OPENAI_BASE_URL or the config file is not in the
        options, and two servers may serve models of the same name (result caches key on this)."""
        return [self.settings.base_url]

    def close(self) -> None:
        self.client.close()

    def _error(self, exc: BaseException, during: str = "request") -> BackendError:
        return map_error(exc, self.settings, self._model_name or None, during=during)

    def _server_model(self) -> str:
        """The first model a compatible server lists (local servers usually serve one)."""
        try:
            models = self.client.models.list()
        except openai.NotFoundError:
            return "default"
        except Exception as exc:
            raise self._error(exc, "listing models") from None
        first = next(iter(models.data), None)
        return first.id if first is not None else "default"

    def _probe(self) -> tuple[bool, bool]:
        """(grammar honoured, token-text logit_bias honoured): two tiny requests, cached per server."""
        key = (self.settings.base_url, self._model_name)
        if key not in _probed:
            forced = self._probe_reply(_Plan(grammar=exact_grammar(_PROBE_TEXT)))
            grammar = forced == _PROBE_TEXT
            biased = self._probe_reply(_Plan(boost=_PROBE_TEXT)) if grammar else None
            _probed[key] = (grammar, bool(biased) and set(biased or "") <= set(_PROBE_TEXT))
        return _probed[key]

    def _probe_reply(self, plan: _Plan) -> str | None:
        """The text a probe request returns, or None if the server rejects it (in both modes)."""
        opts = GenerationOptions(temperature=0.0, max_tokens=2, seed=0)
        for prompt in (Prompt(mode="completion", text="Say something:"), _chat_probe()):
            try:
                reply = self._send(self.client, prompt, opts, plan, stream=False)
            except openai.APIStatusError:
                continue  # the server rejects the field (or lacks this endpoint): try the other one
            except Exception as exc:
                raise self._error(exc, "probing the server") from None
            return _reply_text(reply, prompt.mode)
        return None

    def _no_retry(self) -> openai.OpenAI:
        return self.client.with_options(max_retries=0)

    # ------------------------------------------------------------------ requests

    def _check_mode(self, prompt: Prompt) -> None:
        if prompt.mode == "chat" and not prompt.messages:
            raise BackendError("a chat prompt needs at least one message", backend=self.name, exit_code=2)

    def _send(
        self,
        client: openai.OpenAI,
        prompt: Prompt,
        options: GenerationOptions,
        plan: _Plan,
        *,
        stream: bool,
        response_format: Mapping[str, Any] | None = None,
        logprobs: bool = False,
    ) -> Any:
        """One SDK call; exceptions are left to the caller to map."""
        kwargs: dict[str, Any] = {"model": self._model_name, "temperature": options.temperature, "stream": stream}
        extra: dict[str, Any] = {}
        if options.max_tokens is not None:
            field = "max_completion_tokens" if self.settings.is_openai and prompt.mode == "chat" else "max_tokens"
            kwargs[field] = options.max_tokens
        if options.stop:
            kwargs["stop"] = list(options.stop)
        kwargs.update(options.given("seed", "top_p"))
        extra.update(options.given("top_k"))  # not in OpenAI's API; llama.cpp-family servers read it
        if plan.grammar is not None:
            extra["grammar"] = plan.grammar
        if plan.boost is not None:
            extra.update(logit_bias={plan.boost: _BOOST}, logit_bias_type="tokens")
        if extra:
            kwargs["extra_body"] = extra
        if prompt.mode == "chat":
            if response_format is not None:
                kwargs["response_format"] = response_format
            if logprobs:  # llama-cpp-python's server only returns them with top_logprobs set
                kwargs.update(logprobs=True, top_logprobs=1)
            messages: list[Any] = [m.to_dict() for m in prompt.messages]
            return client.chat.completions.create(messages=messages, **kwargs)
        if logprobs:
            kwargs["logprobs"] = 1
        return client.completions.create(prompt=prompt.text, **kwargs)

    def _create(self, prompt: Prompt, options: GenerationOptions, plan: _Plan, *, stream: bool,
                logprobs: bool = False) -> Any:
        """Send, falling back from ``json_schema`` to ``json_object`` + schema once a server rejects it."""
        try:
            if plan.schema is None:
                return self._send(self.client, prompt, options, plan, stream=stream, logprobs=logprobs)
            if self._json_schema_ok is not False:
                client = self.client if self._json_schema_ok else self._no_retry()
                try:
                    reply = self._send(client, prompt, options, plan, stream=stream, logprobs=logprobs,
                                       response_format=json_schema_format(plan.schema))
                except openai.APIStatusError as exc:
                    if self._json_schema_ok or not rejects_json_schema(f"{exc.message} {exc.body}"):
                        raise
                    self._json_schema_ok = False
                else:
                    self._json_schema_ok = True
                    return reply
            return self._send(self.client, prompt, options, plan, stream=stream, logprobs=logprobs,
                              response_format=json_object_format(plan.schema))
        except Exception as exc:
            raise self._error(exc) from None

    def _plan(self, prompt: Prompt, constraint: Constraint | None) -> _Plan:
        if constraint is None:
            return _Plan()
        prefix = prompt.continuation_prefix
        if constraint.choices is not None:
            if self.grammar:
                return _Plan(grammar=grammar_for(constraint.choices, None, prefix))
            if prompt.mode == "chat":
                bare = [c[len(prefix):] if prefix and c.startswith(prefix) else c for c in constraint.choices]
                return _Plan(schema=choice_schema(bare), unwrap=True)
        else:
            schema = constraint.json_schema or {}
            if prompt.mode == "chat":
                return _Plan(schema=schema)
            if self.grammar:
                return _Plan(grammar=grammar_for(None, schema, prefix))
        raise BackendError(
            f"{self.settings.base_url} cannot constrain completion-mode output (no 'grammar' support); "
            "use mode: chat, or output.method: generate",
            backend=self.name,
            exit_code=2,
        )

    # ------------------------------------------------------------------ Backend API

    def stream(
        self, prompt: Prompt, options: GenerationOptions, constraint: Constraint | None = None
    ) -> Iterator[str]:
        self._check_mode(prompt)
        plan = self._plan(prompt, constraint)
        return self._stream(prompt, options, plan)

    def _stream(self, prompt: Prompt, options: GenerationOptions, plan: _Plan) -> Iterator[str]:
        chunks = self._create(prompt, options, plan, stream=True)
        finished = False
        held: list[str] = []
        try:
            for chunk in chunks:
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                text = choice.delta.content if prompt.mode == "chat" else choice.text
                finished = finished or choice.finish_reason is not None
                if text:
                    if plan.unwrap:
                        held.append(text)
                    else:
                        yield text
        except Exception as exc:
            raise self._error(exc, "stream") from None
        finally:
            chunks.close()
        if not finished:
            self._diagnose(prompt, options, plan)
        if plan.unwrap:
            yield _unwrap("".join(held))

    def _diagnose(self, prompt: Prompt, options: GenerationOptions, plan: _Plan) -> None:
        """A stream ended without a finish reason: ask again without streaming to learn why."""
        short = GenerationOptions(temperature=0.0, max_tokens=1, seed=options.seed)
        self._create(prompt, short, plan, stream=False)  # raises the server's real error, if any
        raise BackendError(
            f"{self.settings.base_url} ended the stream before the answer was finished",
            backend=self.name,
            model=self._model_name,
            exit_code=1,
        )

    def complete(
        self, prompt: Prompt, options: GenerationOptions, constraint: Constraint | None = None
    ) -> str:
        self._check_mode(prompt)
        plan = self._plan(prompt, constraint)
        reply = self._create(prompt, options, plan, stream=False)
        text = _reply_text(reply, prompt.mode)
        return _unwrap(text) if plan.unwrap else text

    def tool_turn(
        self,
        prompt: Prompt,
        steps: Sequence[Any],
        tools: Sequence[Mapping[str, Any]],
        choice: str,
        options: GenerationOptions,
    ) -> Any:
        """One native tool-calling request: the calls so far go back as ``tool`` messages."""
        from promptdsl.tools import ToolCall
        from promptdsl.tools.native import ToolTurn

        self._check_mode(prompt)
        kwargs: dict[str, Any] = {"model": self._model_name, "temperature": options.temperature}
        if options.max_tokens is not None:
            kwargs["max_completion_tokens" if self.settings.is_openai else "max_tokens"] = options.max_tokens
        if options.seed is not None:
            kwargs["seed"] = options.seed
        messages: list[Any] = [m.to_dict() for m in prompt.messages] + tool_messages(steps)
        functions: Any = function_tools(tools)
        try:
            reply = self.client.chat.completions.create(
                messages=messages, tools=functions, tool_choice=tool_choice_param(choice), **kwargs
            )
        except Exception as exc:
            raise self._error(exc, "tool call") from None
        message = reply.choices[0].message if reply.choices else None
        if message is None:
            return ToolTurn()
        raw_calls: list[Any] = list(message.tool_calls or [])
        calls = [
            ToolCall(c.function.name, tool_arguments(c.function.arguments), c.id or "")
            for c in raw_calls
            if getattr(c, "function", None) is not None
        ]
        return ToolTurn(text=message.content or "", calls=calls)

    def generate_logprobs(self, prompt: Prompt, options: GenerationOptions) -> list[TokenLogprob] | None:
        self._check_mode(prompt)
        return self._logprobs(prompt, options, _Plan())

    def _logprobs(self, prompt: Prompt, options: GenerationOptions, plan: _Plan) -> list[TokenLogprob] | None:
        reply = self._create(prompt, options, plan, stream=False, logprobs=True)
        choice = reply.choices[0] if reply.choices else None
        if choice is None or choice.logprobs is None:
            return None
        if prompt.mode == "chat":
            content = choice.logprobs.content or []
            return [TokenLogprob(t.token, float(t.logprob)) for t in content]
        tokens = choice.logprobs.tokens or []
        values = choice.logprobs.token_logprobs or []
        return [TokenLogprob(t, float(v)) for t, v in zip(tokens, values, strict=False) if v is not None]

    def score(self, prompt: Prompt, continuations: Sequence[str]) -> list[float]:
        if not self.can_score:
            raise BackendError(
                f"{self.settings.base_url} cannot score continuations (no 'grammar' + 'logit_bias' support); "
                "use output.method: constrain or generate",
                backend=self.name,
                exit_code=2,
            )
        self._check_mode(prompt)
        return [self._forced_logprob(prompt, text) for text in continuations]

    def _forced_logprob(self, prompt: Prompt, text: str) -> float:
        """log p(text | prompt): force ``text``'s own tokens; add up their (unbiased) log-probabilities."""
        if not text:
            raise BackendError("cannot score an empty continuation", backend=self.name, exit_code=2)
        opts = GenerationOptions(temperature=0.0, max_tokens=len(text.encode("utf-8")) + 2, seed=0)
        tokens = self._logprobs(prompt, opts, _Plan(grammar=exact_grammar(text), boost=text))
        got = "".join(t.text for t in tokens or ())
        if tokens is None or got != text:
            raise BackendError(
                f"forcing {text!r} returned {got!r} with{'out' if tokens is None else ''} log-probabilities; "
                "the server does not honour 'grammar' (use -o grammar=false)",
                backend=self.name,
                exit_code=1,
            )
        return sum(t.logprob for t in tokens)


def _chat_probe() -> Prompt:
    from promptdsl.prompt import Message

    return Prompt(mode="chat", messages=(Message("user", "Say something."),))


def _reply_text(reply: Any, mode: str) -> str:
    if not reply.choices:
        return ""
    choice = reply.choices[0]
    text = choice.message.content if mode == "chat" else choice.text
    return text or ""


def _unwrap(text: str) -> str:
    """``{"answer": "X"}`` -> ``X``; anything else is returned as is for the parser to judge."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # also integers past Python's digit limit, deep nesting
        return text
    if isinstance(value, dict) and isinstance(value.get(ANSWER_KEY), str):
        return str(value[ANSWER_KEY])
    return text
