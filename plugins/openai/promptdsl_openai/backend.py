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
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import openai

from promptdsl.backend import (
    CUT_OFF,
    Backend,
    Capability,
    Constraint,
    GenerationOptions,
    TokenLogprob,
    options_schema,
)
from promptdsl.errors import BackendError, quote
from promptdsl.prompt import Prompt

from . import replies
from .config import (
    DEFAULT_OPENAI_MODEL,
    HEADERS_ENV,
    MAX_REPLY_BYTES,
    NUMBERS,
    ORG_ENV,
    PROJECT_ENV,
    TRUST_ENV,
    Settings,
    _flag,
    config_path,
    resolve,
    spec_bounded,
    user_config,
)
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
from .transport import GuardedClient, peek, read_body

BASE_CAPABILITIES = frozenset(
    {Capability.CHAT, Capability.COMPLETION, Capability.STREAM, Capability.JSON_SCHEMA, Capability.TOOLS}
)
_PROBE_TEXT = "zq"
_BOOST = 100.0  # logit bias that makes the continuation's own tokens win over any other spelling

# Probe results per (base_url, model): a server's abilities do not change while we run.
_probed: dict[tuple[str, str], tuple[bool, bool]] = {}


class _Client(openai.OpenAI):
    """The SDK client with nothing read from the environment: every credential and header is the plugin's.

    ``openai.OpenAI`` fills what it is not given from ``OPENAI_ORG_ID``, ``OPENAI_PROJECT_ID``,
    ``OPENAI_ADMIN_KEY``, ``OPENAI_WEBHOOK_SECRET`` and ``OPENAI_CUSTOM_HEADERS`` (an
    ``Authorization`` line there even replaces the key), on construction and on every
    ``with_options`` copy. :func:`.config.resolve` reads those itself and decides where they
    may go; here whatever the SDK read on its own is put back to what it was given.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.organization = kwargs.get("organization")
        self.project = kwargs.get("project")
        self.admin_api_key = None
        self.webhook_secret = None
        self._custom_headers = dict(kwargs.get("default_headers") or {})
        self._ambient_authorizations = frozenset()

    @property
    def user_agent(self) -> str:
        return super().user_agent.replace(f"{type(self).__name__}/", "OpenAI/", 1)  # as the SDK's own client


def _options_schema() -> dict[str, Any]:
    def number(key: str, description: str) -> dict[str, Any]:
        kind, low, high, low_ok = NUMBERS[key]
        # Text is let through to config.resolve (Python callers pass "30"); booleans never are.
        schema: dict[str, Any] = {"description": description, "maximum": high,
                                  "type": ["integer" if kind is int else "number", "string"]}
        schema["minimum" if low_ok else "exclusiveMinimum"] = low
        return schema

    return options_schema({
        "base_url": {"type": "string", "description": "server URL (default $OPENAI_BASE_URL, else api.openai.com)"},
        "timeout": number("timeout", "seconds to wait for a connection or the next piece of a reply (default 60)"),
        "deadline": number("deadline", "seconds one request may take in all, answer included (default 600)"),
        "max_retries": number("max_retries", "retries after a timeout, 429 or 5xx (default 2)"),
        "api_key_env": {"type": "string", "description": "variable holding the key (default OPENAI_API_KEY)"},
        "api_key": {"deprecated": True,
                    "description": "keys come only from the environment ($OPENAI_API_KEY or api_key_env's)"},
        "grammar": {"description": "auto/true/false: llama.cpp grammar extensions"},
        "n_ctx": number("n_ctx", "context size in tokens"),
        "organization": {"type": "string", "description": "OpenAI organization"},
        "tools": {"description": "true/false: native tool calls (default: off on llama.cpp-family servers)"},
    })


@dataclass(frozen=True)
class _Plan:
    """How one request is constrained."""

    grammar: str | None = None
    boost: str | None = None  # text whose tokens get a large logit bias (forced decoding for scores)
    schema: Mapping[str, Any] | None = None  # sent as response_format
    unwrap: bool = False  # the reply is {"answer": <choice>}; yield just the choice


class OpenAIBackend(Backend):
    """OpenAI, or any OpenAI-compatible server via ``base_url``.

    Options (``model.options`` / ``-o``): ``base_url``, ``timeout`` (seconds to wait for a
    connection or the next piece of a reply), ``deadline`` (seconds a request may take in all),
    ``max_retries``, ``api_key_env`` (variable holding the key, default
    ``OPENAI_API_KEY``), ``grammar`` (``auto``/``true``/``false``: use the llama.cpp
    ``grammar`` and ``logit_bias`` extensions), ``n_ctx`` (the context size, as llamacpp names it), ``organization``.
    A spec's own ``timeout``, ``deadline`` and ``max_retries`` are bounded lower (:meth:`spec_options`).
    """

    name = "openai"
    capabilities = BASE_CAPABILITIES
    probed_capabilities = frozenset({Capability.GRAMMAR, Capability.SCORE})  # a llama.cpp-family server's
    env_keys = ("OPENAI_API_KEY", "OPENAI_BASE_URL", HEADERS_ENV, ORG_ENV, PROJECT_ENV, TRUST_ENV, "PROMPTDSL_HOME")
    #: Types and ranges (a spec cannot ask for endless retries); config.resolve checks again, and says more.
    options_schema = _options_schema()

    def __init__(self, model: str | None = None, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(model, options)
        self.settings: Settings = resolve(self.options)
        self.spec_chose_destination = self.settings.destination_from_spec
        self.client: openai.OpenAI = _Client(
            api_key=self.settings.api_key,
            base_url=self.settings.base_url,
            timeout=self.settings.timeout,
            max_retries=self.settings.max_retries,
            organization=self.settings.organization,
            project=self.settings.project,
            default_headers=dict(self.settings.headers),
            http_client=GuardedClient(deadline=self.settings.deadline, max_bytes=MAX_REPLY_BYTES,
                                      timeout=self.settings.timeout),
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

    @classmethod
    def spec_options(cls, model: str | None, options: Mapping[str, Any]) -> dict[str, Any]:
        """The options a spec file chose (not ``-o``, the environment or the user config file), bounded
        as a file shared like code may decide them: its ``timeout`` is lowered to at most 300 s, its
        ``deadline`` to 1800 s and its ``max_retries`` to 5, so a spec (which may also pick the server)
        cannot hold a row for hours. The user's own values go up to the limits of :data:`.config.NUMBERS`."""
        return spec_bounded(options)

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

    @classmethod
    def diagnostics(cls) -> list[tuple[str, str]]:
        """The user config file (a broken one is a problem) and where the key comes from; never a value."""
        import os

        path = config_path()
        config = user_config()  # raises on a broken file: doctor reports it
        key_env = str(config.get("api_key_env") or "OPENAI_API_KEY")
        return [
            ("config file", str(path) if path.exists() else f"{path} (none)"),
            ("api key", f"{key_env} is {'set' if os.environ.get(key_env) else 'not set'}"),
            ("base_url", "from OPENAI_BASE_URL" if os.environ.get("OPENAI_BASE_URL")
             else "from the config file" if config.get("base_url") else "api.openai.com unless -o base_url"),
        ]

    def _error(self, exc: BaseException, during: str = "request") -> BackendError:
        return map_error(exc, self.settings, self._model_name or None, during=during)

    @contextmanager
    def _request(self, during: str = "request") -> Iterator[None]:
        """One exchange with the server, or reading one: any failure leaves as one BackendError."""
        try:
            yield
        except Exception as exc:
            raise self._error(exc, during) from None

    def _server_model(self) -> str:
        """The first model a compatible server lists (local servers usually serve one)."""
        with self._request("listing models"):
            try:
                raw = self.client.models.with_raw_response.list()
            except openai.NotFoundError:
                return "default"
            page = _parsed(raw, "/models", replies.model_id)
        return page or "default"

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
            with self._request("probing the server"):
                try:
                    reply = self._send(self.client, prompt, opts, plan, stream=False)
                except openai.APIStatusError:
                    continue  # the server rejects the field (or lacks this endpoint): try the other one
                return replies.reply_text(reply, prompt.mode)
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
        """One SDK call, its reply checked to be what was asked for; exceptions are left to the caller to map."""
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
            raw = client.chat.completions.with_raw_response.create(messages=messages, **kwargs)
            return _parsed(raw, "/chat/completions", stream=stream)
        if logprobs:
            kwargs["logprobs"] = 1
        raw = client.completions.with_raw_response.create(prompt=prompt.text, **kwargs)
        return _parsed(raw, "/completions", stream=stream)

    def _create(self, prompt: Prompt, options: GenerationOptions, plan: _Plan, *, stream: bool,
                logprobs: bool = False) -> Any:
        """Send, falling back from ``json_schema`` to ``json_object`` + schema once a server rejects it."""
        with self._request():
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
            f"{self.settings.where} cannot constrain completion-mode output (no 'grammar' support); "
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
        cut = False
        held: list[str] = []
        pieces: Iterable[tuple[str, str | None]]
        try:
            with self._request("stream"):
                if isinstance(chunks, _Whole):
                    pieces = [(replies.reply_text(chunks.reply, prompt.mode), replies.reply_finish(chunks.reply) or "")]
                else:
                    pieces = (replies.chunk_piece(chunk, prompt.mode) for chunk in chunks)
                for text, reason in pieces:
                    finished = finished or reason is not None
                    cut = cut or reason == "length"
                    if text:
                        if plan.unwrap:
                            held.append(text)
                        else:
                            yield text
        finally:
            chunks.close()
        if not finished:
            self._diagnose(prompt, options, plan)
        if plan.unwrap:
            yield _unwrap("".join(held))
        if cut:
            yield CUT_OFF

    def _diagnose(self, prompt: Prompt, options: GenerationOptions, plan: _Plan) -> None:
        """A stream ended without a finish reason: ask again without streaming to learn why."""
        short = GenerationOptions(temperature=0.0, max_tokens=1, seed=options.seed)
        reply = self._create(prompt, short, plan, stream=False)  # raises the server's real error, if any
        with self._request():
            replies.reply_text(reply, prompt.mode)  # or says what is wrong with its replies
        raise BackendError(
            f"{self.settings.where} ended the stream before the answer was finished",
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
        with self._request():
            text = replies.reply_text(reply, prompt.mode)
        return _unwrap(text) if plan.unwrap else text

    def tool_turn(
        self,
        prompt: Prompt,
        steps: Sequence[Any],
        tools: Sequence[Mapping[str, Any]],
        choice: str,
        options: GenerationOptions,
    ) -> Any:
        """One native tool-calling request: the calls so far go back as ``tool`` messages.

        A call without a tool's name is dropped (a reply of only such calls is an error); its
        arguments go to the tool loop as sent, which tells the model when they are not an object.
        """
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
        with self._request("tool call"):
            raw = self.client.chat.completions.with_raw_response.create(
                messages=messages, tools=functions, tool_choice=tool_choice_param(choice), **kwargs
            )
            reply = _parsed(raw, "/chat/completions")
            turn = replies.tool_calls(reply)
        if turn is None:
            return ToolTurn()
        text, calls = turn
        return ToolTurn(text=text, calls=[ToolCall(name, tool_arguments(arguments), ident)
                                          for name, arguments, ident in calls],
                        cut_off=CUT_OFF if replies.reply_finish(reply) == "length" else None)

    def generate_logprobs(self, prompt: Prompt, options: GenerationOptions) -> list[TokenLogprob] | None:
        self._check_mode(prompt)
        return self._logprobs(prompt, options, _Plan())

    def _logprobs(self, prompt: Prompt, options: GenerationOptions, plan: _Plan) -> list[TokenLogprob] | None:
        reply = self._create(prompt, options, plan, stream=False, logprobs=True)
        with self._request():
            return replies.logprob_tokens(reply, prompt.mode)

    def score(self, prompt: Prompt, continuations: Sequence[str]) -> list[float]:
        if not self.can_score:
            raise BackendError(
                f"{self.settings.where} cannot score continuations (no 'grammar' + 'logit_bias' support); "
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
                f"forcing {quote(text)} returned {quote(got)} with{'out' if tokens is None else ''} "
                "log-probabilities; the server does not honour 'grammar' (use -o grammar=false)",
                backend=self.name,
                exit_code=1,
            )
        return sum(t.logprob for t in tokens)


def _chat_probe() -> Prompt:
    from promptdsl.prompt import Message

    return Prompt(mode="chat", messages=(Message("user", "Say something."),))


@dataclass(frozen=True)
class _Whole:
    """A whole (not streamed) JSON reply to a streaming request."""

    reply: Any

    def close(self) -> None:
        pass


def _parsed(raw: Any, endpoint: str, read: Any = None, *, stream: bool = False) -> Any:
    """The SDK object in a raw reply, once it is sure to be one; a reply that is not is :class:`Malformed`.

    A stream goes to :func:`_streamed`; anything else must parse as a JSON object (a login page
    at ``base_url`` answers 200 with HTML, which the SDK hands back as a string). ``read``, if
    given, is applied to the parsed object with the same guard.
    """
    content_type = str(raw.headers.get("content-type", ""))
    if stream:
        return _streamed(raw, endpoint, content_type)
    if "json" not in content_type.lower():  # the SDK takes JSON under any type, and returns anything else as text
        try:
            json.loads(raw.http_response.content)
        except (ValueError, RecursionError) as exc:
            raise replies.not_json(content_type, endpoint, cut=_cut(raw.http_response.content, exc)) from None
    try:
        parsed = raw.parse()
    except (ValueError, RecursionError) as exc:  # the body is not JSON
        raise replies.not_json(content_type, endpoint, cut=_cut(raw.http_response.content, exc)) from None
    except (AttributeError, TypeError, KeyError):  # JSON, but not an object the SDK can wrap
        raise replies.Malformed(f"{endpoint} answered JSON that is not an object") from None
    if isinstance(parsed, (str, bytes)):
        raise replies.not_json(content_type, endpoint)
    if isinstance(parsed, (list, int, float, bool)) or parsed is None:
        raise replies.Malformed(f"{endpoint} answered a JSON {type(parsed).__name__}, not an object")
    return read(parsed) if read is not None else parsed


def _cut(body: bytes, exc: BaseException) -> bool:
    """Whether ``body`` is JSON that stops before its end: a reply sent without a length or chunks, whose
    connection closed mid-way, looks complete to HTTP and only the JSON shows what happened.

    The parser stops where the JSON cannot go on: at the end, at the start of a string left open
    (most of a reply is its text), or at a literal, number or escape cut short."""
    if not isinstance(exc, json.JSONDecodeError) or body.lstrip()[:1] not in (b"{", b"["):
        return False
    if exc.msg.startswith("Unterminated string"):
        return True
    rest = exc.doc[exc.pos:].rstrip()
    if exc.msg.startswith("Invalid \\uXXXX escape"):
        return len(rest) < 6  # the escape itself runs to the end
    literal = any(word.startswith(rest) for word in ("true", "false", "null"))
    return rest == "" or literal or _CUT_NUMBER.fullmatch(rest) is not None


#: What is left of a number cut short (``-``, ``1.``, ``2e``, ``3e+``), where JSON stops reading.
_CUT_NUMBER = re.compile(r"[-+.eE0-9]{1,24}")


def _streamed(raw: Any, endpoint: str, content_type: str) -> Any:
    """The chunks of a streamed reply, or :class:`_Whole` when the server sent one JSON reply instead.

    A body is read as an event stream whatever its Content-Type says, as the SDK reads it: proxies
    and small servers label one ``text/plain``, ``application/json``, ``application/x-ndjson``
    or nothing. What the type or the body's first character shows to be something else is
    not: a web page (``text/html``, or ``<``; a login page at ``base_url``) is refused, a JSON
    value (``{``, ``[``) is read whole. Looking costs no more than the first piece of the body,
    read by the deadline and within the size cap like the rest.
    """
    kind = content_type.lower()
    if "event-stream" in kind:
        return raw.parse()
    first = b"<" if "html" in kind else peek(raw.http_response).lstrip()[:1]
    if first == b"<":
        raw.http_response.close()
        raise replies.not_json(content_type, endpoint, "an event stream")
    if first in (b"{", b"["):  # a server that ignores stream: true and sends the whole answer at once
        body = read_body(raw.http_response)
        try:
            return _Whole(json.loads(body))
        except (ValueError, RecursionError) as exc:
            raise replies.not_json(content_type, endpoint, cut=_cut(body, exc)) from None
    return raw.parse()


def _unwrap(text: str) -> str:
    """``{"answer": "X"}`` -> ``X``; anything else is returned as is for the parser to judge."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # also integers past Python's digit limit, deep nesting
        return text
    if isinstance(value, dict) and isinstance(value.get(ANSWER_KEY), str):
        return str(value[ANSWER_KEY])
    return text
