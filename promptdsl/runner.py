"""Run a spec: validate inputs -> compile -> backend -> parse + validate -> Result.

The output method is chosen once per runner from the backend's capabilities,
and each method is one handler in a table.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from . import registry
from .backend import (
    CUT_REMEDY,
    CUT_WORDS,
    Backend,
    Capability,
    Constraint,
    CutOff,
    GenerationOptions,
    bounded,
    close_stream,
    split_options,
)
from .backend import check_options as check_backend_options
from .compiler import Compiler
from .errors import BackendError, InputError, OutputError, PromptDSLError, SpecError
from .inputs import validate_inputs
from .outputs import ParseFailure, parse_output
from .plugin_code import plugin_code
from .prompt import Prompt
from .registry import get_backend, resolve_backend_name
from .result import Response, Result
from .schema import closest_branch, spec_schema
from .schema.quick import surely_valid
from .spec import UNFORCED_CHOICES, Method, OutputType, Spec

if TYPE_CHECKING:
    from pathlib import Path

    from .tools.base import Tool, ToolUse
    from .tools.loop import ToolLoop, ToolSettings

#: Default token budget per output type when neither spec nor options set one.
DEFAULT_MAX_TOKENS = {
    OutputType.TEXT: 256,
    OutputType.CHOICE: 16,
    OutputType.JSON: 512,
    OutputType.REGEX: 64,
}


#: Methods each type supports, strongest first (``auto`` takes the first the backend can do).
METHOD_ORDER: dict[OutputType, tuple[Method, ...]] = {
    OutputType.TEXT: (Method.GENERATE,),
    OutputType.REGEX: (Method.GENERATE,),
    OutputType.JSON: (Method.CONSTRAIN, Method.GENERATE),
    OutputType.CHOICE: (Method.SCORE, Method.CONSTRAIN, Method.GENERATE),
}

#: Capabilities that make a method possible (any one of them suffices).
METHOD_NEEDS: dict[Method, frozenset[Capability]] = {
    Method.SCORE: frozenset({Capability.SCORE}),
    Method.CONSTRAIN: frozenset({Capability.GRAMMAR, Capability.JSON_SCHEMA}),
    Method.GENERATE: frozenset(),
}


def mode_capability(spec: Spec) -> Capability:
    """What a backend must declare to take the spec's prompts (``chat`` or ``completion``)."""
    return Capability.CHAT if spec.mode == "chat" else Capability.COMPLETION


def method_possible(method: Method, capabilities: frozenset[Capability]) -> bool:
    needs = METHOD_NEEDS[method]
    return not needs or bool(needs & capabilities)


def choose_method(spec: Spec, backend: Backend) -> Method:
    """The method to use: the spec's, if the backend can; else the strongest it can."""
    caps = frozenset(backend.capabilities)
    order = METHOD_ORDER[spec.output.type]
    wanted = spec.output.method
    if wanted is not Method.AUTO:
        if not method_possible(wanted, caps):
            raise BackendError(
                f"spec '{spec.name}' asks for method '{wanted}', which this backend cannot do "
                f"(its capabilities: {', '.join(sorted(c.value for c in caps))})",
                backend=backend.name,
                exit_code=2,
            )
        return wanted
    for method in order:
        if method_possible(method, caps):
            return method
    raise BackendError(f"no method for output type '{spec.output.type}'", backend=backend.name, exit_code=2)


class Runner:
    """Runs one spec on one backend, reusing the compiled example part for every input."""

    def __init__(
        self,
        spec: Spec,
        backend: Backend | None = None,
        *,
        backend_name: str | None = None,
        model: str | None = None,
        options: Mapping[str, Any] | None = None,
        tools: Sequence[Tool | ToolUse | str] = (),
        tool_settings: ToolSettings | None = None,
    ) -> None:
        self.spec = spec
        merged = {**spec.model.options, **(options or {})}
        check_options(merged)
        added = [*(tool_settings.extra if tool_settings else ()), *tools]
        if added and spec.tools:  # before a model loads or a server is asked: a name clash is the caller's to fix
            from .tools.loop import check_added_tools

            check_added_tools(spec, added)
        choice = (tool_settings.tool_choice if tool_settings else None) or spec.tool_choice  # the caller's wins
        if not added and not spec.tools and choice not in UNFORCED_CHOICES:  # forces a tool there is none of
            raise spec.error(f"tool_choice '{choice}' needs a tool, and the spec lists none; "
                             "add one for the run (-T NAME)", ("tool_choice",))
        if backend is None:
            name = resolve_backend_name(backend_name, spec.model.backend)
            cls = registry.backend_class(name)  # through the module, as get_backend finds it
            # The spec's model and backend settings are for the backend it names: another one chosen
            # instead (-b) starts from its own defaults (generation settings still apply).
            own = spec.model.backend in (None, name)
            model = model or (spec_model(self.spec, cls) if own else None)
            user = options or {}
            backend = get_backend(name, model, self._backend_options(cls, model, merged if own else user, user))
        self.backend = backend
        self.model_id = _model_id(backend)
        if not backend.supports(mode_capability(spec)):
            raise BackendError(
                f"spec '{spec.name}' is in {spec.mode} mode, which this backend does not support",
                backend=backend.name,
                exit_code=2,
            )
        self.method = choose_method(spec, backend)
        self.generation = self._generation_options(merged, options or {})
        self.compiler = Compiler(spec)
        self._handlers: dict[Method, Callable[[Prompt, dict[str, Any], float], Response]] = {
            Method.SCORE: self._score,
            Method.CONSTRAIN: self._constrain,
            Method.GENERATE: self._generate,
        }
        self.tool_loop: ToolLoop | None = None  # without tools: one answer per input
        if tools or spec.tools or (tool_settings is not None and tool_settings.extra):
            from .tools.loop import ToolSettings, make_loop  # (and jsonschema): only runs with tools need it

            settings = tool_settings or ToolSettings()
            if tools:
                settings = replace(settings, extra=[*settings.extra, *tools])
            self.tool_loop = make_loop(self, settings)

    def _backend_options(
        self, cls: type[Backend], model: str | None, merged: Mapping[str, Any], user: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The backend's options: those the spec chose and the user did not give pass the backend's
        ``spec_options`` first, while the user's own values stay as given."""
        _, options = split_options(merged)
        from_spec = {k: v for k, v in options.items() if k not in user}
        if not from_spec:
            return options
        vetted = spec_options(self.spec, cls, model, from_spec)
        check_spec_options(self.spec, cls.name, cls, vetted)  # as lowered: a spec's n_threads: 10000 is 2
        return {**vetted, **{k: v for k, v in options.items() if k in user}}

    def _generation_options(self, merged: Mapping[str, Any], user: Mapping[str, Any]) -> GenerationOptions:
        """The spec's ``output`` settings win over its ``model.options``; the caller's own options
        (``-o`` on the command line) win over both: the user asked for them by name."""
        out = self.spec.output
        opts = dict(merged)
        if out.stop is not None and "stop" not in user:  # the user's stop is in ``merged`` already
            opts["stop"] = out.stop
        elif "stop" not in opts and self.spec.mode == "completion" and self.spec.fewshot.separator.strip() == "":
            opts["stop"] = (self.spec.fewshot.separator,)
        opts["max_tokens"] = (user.get("max_tokens") or out.max_tokens or opts.get("max_tokens")
                              or DEFAULT_MAX_TOKENS[out.type])
        return GenerationOptions.from_mapping(opts)

    # ------------------------------------------------------------------ public API

    def prepare(self, inputs: Mapping[str, Any]) -> tuple[dict[str, Any], Prompt]:
        """Validate ``inputs`` and compile the prompt (no model call)."""
        values = validate_inputs(self.spec, inputs)
        return values, self.compiler.compile(values)

    def response(self, inputs: Mapping[str, Any]) -> Response:
        """A lazy Response: iterate it for text as it comes, ``result()`` for the value.

        (``Backend.stream`` is the plugin's generator of text pieces; this is the run's answer.)"""
        return self.respond(*self.prepare(inputs))

    def run(self, inputs: Mapping[str, Any]) -> Result:
        """Run one input to a parsed, validated Result."""
        return self.response(inputs).result()

    def respond(self, values: dict[str, Any], prompt: Prompt) -> Response:
        """Like :meth:`response` for an input already through :meth:`prepare` (caches, batch runs)."""
        if self.tool_loop is not None:
            return self.tool_loop.respond(values, prompt)
        return self.answer(values, prompt)

    def answer(self, values: dict[str, Any], prompt: Prompt) -> Response:
        """One answer in the spec's output type, without tools (also the tool loop's last call)."""
        return self._handlers[self.method](prompt, values, time.perf_counter())

    def respond_many(self, items: Sequence[tuple[dict[str, Any], Prompt]]) -> list[Result | PromptDSLError]:
        """Results of several prepared inputs, errors in place. By ``score`` the prompts go to the
        backend together (:meth:`Backend.score_many`: a local model evaluates them in one batch)."""
        prefixes = {p.continuation_prefix for _, p in items}
        if self.tool_loop is not None or self.method is not Method.SCORE or len(items) < 2 or len(prefixes) != 1:
            return [self._settle(self.respond, v, p) for v, p in items]
        start = time.perf_counter()
        prefix = prefixes.pop()
        conts = [prefix + c for c in self.spec.output.choices]
        got = _call(self.backend, lambda: self.backend.score_many([p for _, p in items], conts))
        if not isinstance(got, list | tuple) or len(got) != len(items):
            what = f"{len(got)} results" if isinstance(got, list | tuple) else f"type {type(got).__name__}"
            raise BackendError(
                f"score_many returned {what} for {len(items)} prompts", backend=self.backend.name, exit_code=1
            )
        share = (time.perf_counter() - start) / len(items)  # each row's share of the batch
        out: list[Result | PromptDSLError] = []
        for x in got:
            out.append(x if isinstance(x, PromptDSLError) else self._settle(self._scored, x, share))
        return out

    @staticmethod
    def _settle(fn: Callable[..., Any], *args: Any) -> Result | PromptDSLError:
        try:
            got = fn(*args)
            return got.result() if isinstance(got, Response) else got  # type: ignore[no-any-return]
        except PromptDSLError as exc:
            return exc

    def _scored(self, logps: Sequence[float], seconds: float) -> Result:
        """The choice with the highest log-probability, all scores kept."""
        scores = _checked_scores(self.backend, self.spec.output.choices, logps)
        best = max(scores, key=scores.__getitem__)
        return self._result(best, best, time.perf_counter() - seconds, scores)

    def answer_from_text(self, values: dict[str, Any], raw: str) -> Result:
        """Parse text the backend already wrote (a native tool-calling reply) as the spec's output."""
        return self._parser(values, time.perf_counter())(raw)

    # ------------------------------------------------------------------ method handlers

    def _result(self, value: Any, raw: str, start: float, scores: dict[str, float] | None = None) -> Result:
        return Result(
            value=value,
            method=self.method,
            raw=raw,
            backend=self.backend.name,
            model=self.model_id,
            scores=scores,
            seconds=time.perf_counter() - start,
        )

    def _parser(
        self, values: dict[str, Any], start: float, cut: Callable[[], CutOff | None] = lambda: None
    ) -> Callable[[str], Result]:
        """Parse the text; ``cut()`` is the backend's :class:`CutOff` marker when a limit stopped it."""

        def finish(raw: str) -> Result:
            marker = cut()
            try:
                value = parse_output(self.spec.output, raw)
            except ParseFailure as exc:
                why = f"{exc}; {self._cut_note(marker)}" if marker is not None else str(exc)
                raise OutputError(why, spec=self.spec.label, input=values, raw=raw) from None
            # A constrained value that parsed was closed by its grammar: the limit it met came after.
            truncated = marker.reason if marker is not None and self.method is not Method.CONSTRAIN else None
            return replace(self._result(value, raw, start), truncated=truncated)

        return finish

    def _cut_note(self, marker: CutOff) -> str:
        """Which limit cut an answer short, and which setting gives it room, for a message."""
        limit = f"={self.generation.max_tokens}" if marker.reason == "max_tokens" else ""
        return f"{CUT_WORDS[marker.reason]}{limit} ({CUT_REMEDY[marker.reason]})"

    def _streamed(self, chunks: Iterator[str], values: dict[str, Any], start: float) -> Response:
        """A generated answer: text pieces through, the backend's cut-off marker noted, not shown."""
        seen: list[CutOff] = []

        def pieces() -> Iterator[str]:
            for chunk in _guarded(self.backend, chunks, self.generation.max_tokens):
                if isinstance(chunk, CutOff):
                    seen.append(chunk)
                else:
                    yield chunk

        return Response(pieces(), self._parser(values, start, lambda: seen[-1] if seen else None))

    def _score(self, prompt: Prompt, values: dict[str, Any], start: float) -> Response:
        choices = self.spec.output.choices

        def chunks() -> Iterator[str]:
            conts = [prompt.continuation_prefix + c for c in choices]
            logps = _call(self.backend, lambda: self.backend.score(prompt, conts))
            scores = holder["scores"] = _checked_scores(self.backend, choices, logps)
            yield max(scores, key=scores.__getitem__)

        holder: dict[str, dict[str, float]] = {}

        def finish(raw: str) -> Result:
            return self._result(raw, raw, start, holder["scores"])

        return Response(chunks(), finish)

    def _constrain(self, prompt: Prompt, values: dict[str, Any], start: float) -> Response:
        out = self.spec.output
        if out.type is OutputType.CHOICE:
            constraint = Constraint(choices=tuple(prompt.continuation_prefix + c for c in out.choices))
        else:
            constraint = Constraint(json_schema=out.schema or {})
        chunks = _call(self.backend, lambda: self.backend.stream(prompt, self.generation, constraint))
        return self._streamed(chunks, values, start)

    def _generate(self, prompt: Prompt, values: dict[str, Any], start: float) -> Response:
        chunks = _call(self.backend, lambda: self.backend.stream(prompt, self.generation))
        return self._streamed(chunks, values, start)


def spec_model(spec: Spec, cls: type[Backend]) -> str | None:
    """The spec's ``model.model``. When the backend reads it as a file (its ``names_file``), the file
    is found from the spec's folder and obeys the folder rule of ``extends``: a shared spec may
    not load, or probe for, files elsewhere. A model the user gives is not held to this."""
    text = spec.model.model
    if text is None:
        return text
    with plugin_errors(cls, "names_file()"):
        if not cls.names_file(text):
            return text
    from .loader import spec_file

    return str(spec_file(spec, text, ("model", "model"), "model.model"))


def check_model_name(cls: type[Backend], model: str) -> None:
    """Raise the backend's BackendError when ``model`` is a name (not a file: its ``names_file``)
    it can never load (its ``check_model``); found without loading anything. A plugin's bug in
    either hook is its own BackendError (exit 1)."""
    with plugin_errors(cls, "names_file()"):
        if cls.names_file(model):
            return
    with plugin_errors(cls, "check_model()"):
        cls.check_model(model)


def check_spec_options(spec: Spec, name: str, cls: type[Backend], options: Mapping[str, Any]) -> None:
    """The options ``spec`` itself sets hold to the backend's schema; a bad one is a SpecError at
    its place in the file (``s.yaml:5:20: backend 'x': unknown option 'uper' ...``), so the user
    knows it came from the spec and not from ``-o``."""
    try:
        check_backend_options(name, cls.options_schema, options)
    except BackendError as exc:
        key = next((k for k in options if f"'{k}'" in exc.message), None)
        path: tuple[str, ...] = ("model", "options") if key is None else ("model", "options", key)
        raise spec.error(f"backend '{name}': {exc.message}", path) from None


def spec_options(spec: Spec, cls: type[Backend], model: str | None, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` that ``spec`` chose, as the backend bounds what a shared file may decide (the
    memory, threads or unsafe settings it asks for); a refusal is a SpecError at its place in the file."""
    try:
        with plugin_errors(cls, "spec_options()"):
            vetted = cls.spec_options(model, options)
    except SpecError as exc:
        raise spec.error(exc.message, exc.path) from None
    if not isinstance(vetted, Mapping):  # a forgotten return: say so, not "'NoneType' object is not iterable"
        raise BackendError(f"spec_options() returned {type(vetted).__name__}, not a mapping of options",
                           backend=cls.name, exit_code=1)
    return dict(vetted)


def check_options(options: Mapping[str, Any]) -> None:
    """Options from the CLI or the TUI skip the spec schema; hold them to the same rules."""
    schema = spec_schema()["properties"]["model"]["properties"]["options"]
    if surely_valid(schema, dict(options)):  # plain numbers and strings: no need to import jsonschema
        return
    from jsonschema import Draft202012Validator

    for err in Draft202012Validator(schema).iter_errors(dict(options)):
        key = err.absolute_path[0] if err.absolute_path else "options"
        err = closest_branch(err)  # say what is wrong, not "is not valid under any of the given schemas"
        raise InputError(f"option '{key}': {err.message}")


@contextmanager
def plugin_errors(backend: Backend | type[Backend], hook: str = "") -> Iterator[None]:
    """Any failure inside the plugin leaves as a BackendError that names it (and ``hook``, the method
    that failed, where the user could not tell: ``spec_options() failed: TypeError: ...``). What the
    plugin prints meanwhile is its own (:func:`.plugin_code.plugin_code`), not a result."""
    try:
        with plugin_code():
            yield
    except BackendError as exc:
        exc.backend = exc.backend or backend.name
        raise
    except PromptDSLError:
        raise
    except Exception as exc:
        where = f"{hook} failed: " if hook else ""
        raise BackendError(f"{where}{type(exc).__name__}: {exc}", backend=backend.name, exit_code=1) from exc
    except SystemExit as exc:  # a plugin may not end the user's process (nor its exit code)
        raise BackendError(f"it called sys.exit({exc.code!r})", backend=backend.name, exit_code=1) from None


def _model_id(backend: Backend) -> str:
    """The plugin's ``model_id``, read once: a property that fails (or is no text) is its bug, named."""
    with plugin_errors(backend):
        name = backend.model_id
    if not isinstance(name, str):
        raise BackendError(f"model_id is {type(name).__name__}, not text", backend=backend.name, exit_code=1)
    return name


def _call(backend: Backend, fn: Callable[[], Any]) -> Any:
    """Call into the plugin under :func:`plugin_errors`."""
    with plugin_errors(backend):
        return fn()


def _guarded(backend: Backend, chunks: Iterator[str], max_tokens: int | None = None) -> Iterator[str]:
    """Stream from the plugin under :func:`plugin_errors`; close the source when closed.
    A piece that is not text is the plugin's bug, named here rather than where it is joined, and so
    is a stream far longer than ``max_tokens`` allows (one that never ends would fill the memory)."""
    if not isinstance(chunks, Iterable):
        raise BackendError(f"stream() returned {type(chunks).__name__}, not an iterator of text",
                           backend=backend.name, exit_code=1)
    pieces = bounded(chunks, max_tokens, backend.name)
    try:
        while True:
            with plugin_errors(backend):  # around the plugin's part only: the consumer's writes are not its
                chunk = next(pieces, _END)
            if chunk is _END:
                return
            if not isinstance(chunk, str):
                what = f"stream yielded a piece of type {type(chunk).__name__}, not text"
                raise BackendError(what, backend=backend.name, exit_code=1)
            yield chunk
    finally:
        with plugin_code():  # what its cleanup prints is the plugin's too
            close_stream(chunks)


_END = object()  # the end of a plugin's stream (None could be a piece it wrongly yields)


def _checked_scores(backend: Backend, choices: Sequence[str], logps: Any) -> dict[str, float]:
    """The plugin's log-probabilities by choice: one number per choice, none NaN (-inf is a
    possible log-probability). Anything else is the plugin's bug, reported as such (exit 1)."""

    def bad(why: str) -> BackendError:
        return BackendError(f"score returned {why} for {len(choices)} choices", backend=backend.name, exit_code=1)

    if isinstance(logps, str | bytes | Mapping) or not hasattr(logps, "__len__"):  # lists, tuples, arrays
        raise bad(f"type {type(logps).__name__}, not a list of numbers,")
    if len(logps) != len(choices):
        raise bad("1 value" if len(logps) == 1 else f"{len(logps)} values")
    try:
        values = [float(x) for x in logps]
    except (TypeError, ValueError):
        raise bad("something that is not a number") from None
    if any(math.isnan(v) or v == math.inf for v in values):
        raise bad("NaN or +inf")
    if any(v > 1e-3 for v in values):  # log p <= 0; a little over it is rounding
        raise bad(f"a positive log-probability ({max(values):g}), which no probability has,")
    return dict(zip(choices, values, strict=True))


def run_spec(
    spec: Spec | str | Path,
    inputs: Mapping[str, Any],
    *,
    backend: str | None = None,
    model: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> Result:
    """One-call convenience: run ``spec`` (a loaded spec, or the path of a spec file) on ``inputs``
    and return the Result."""
    if not isinstance(spec, Spec):
        from .loader import load_spec

        spec = load_spec(spec)
    return Runner(spec, backend_name=backend, model=model, options=options).run(inputs)
