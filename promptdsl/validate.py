"""Whole-spec validation: what ``promptdsl validate`` and the TUI's spec picker both check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .backend import Backend, refused_options, split_options
from .backend import check_options as check_backend_options
from .compiler import Compiler
from .errors import BackendError
from .inputs import validate_inputs
from .loader import load_spec
from .registry import backend_class, resolve_backend_name
from .spec import UNFORCED_CHOICES, Method, Spec


def validate_spec(source: str | Path | Spec, *, check_backend: bool = True) -> Spec:
    """Load a spec (unless given one) and compile it with every example's and test's inputs.

    Loading checks the schema and the templates statically; compiling with real inputs catches
    what only rendering shows. With ``check_backend``, a ``model.backend`` the spec names must be
    installed and take its options (a front end that lets the user pick another backend passes
    False). Raises the first :class:`~promptdsl.errors.PromptDSLError`.
    """
    from .schema import spec_budget

    with spec_budget():  # loading and compiling share it
        return _validate(source, check_backend)


def _validate(source: str | Path | Spec, check_backend: bool) -> Spec:
    spec = source if isinstance(source, Spec) else load_spec(source)
    if check_backend:
        _check_backend(spec)
    compiler = Compiler(spec)
    items = [*(ex.input for ex in spec.examples), *(t.input for t in spec.tests)]
    for i, item in enumerate(items):
        values = validate_inputs(spec, item)
        if i == 0:
            compiler.compile(values)  # once whole: the shots and how they join
        else:
            compiler.check(values)  # the rest by its own parts: linear in the examples, not quadratic
    return spec


def spec_notes(spec: Spec) -> list[str]:
    """What a valid spec holds that has no effect, for ``validate`` to point out (never an error:
    a spec may keep ``system`` for when it is switched to chat mode, as the contract's example does)."""
    notes = []
    if spec.mode == "completion" and spec.system is not None:
        notes.append("'system' is not used in completion mode (only chat mode sends a system message)")
    notes += _unused_inputs(spec)
    notes += _required_typos(spec)
    if not spec.tools and spec.tool_choice not in UNFORCED_CHOICES:
        notes.append(f"tool_choice '{spec.tool_choice}' forces a tool, yet the spec lists none: each run needs one "
                     "given with -T NAME")
    options = split_options(spec.model.options)[1]
    model = spec.model.model
    if spec.model.backend is None and (options or model is not None):  # maybe for another backend than the default
        default = _default_backend()
        if default is None:  # no default backend to hold them to: run says so in its own words
            return notes
        name, cls = default
        problems: list[str | None] = []
        try:
            check_backend_options(name, cls.options_schema, options)
        except BackendError as exc:
            problems.append(exc.message)
        if model is not None:
            problems.append(_model_refused(cls, model))
        notes += [f"with the default backend '{name}': {problem}; run refuses it unless -b picks a backend that "
                  "takes it (or name one in model.backend)" for problem in problems if problem is not None]
    return notes


def _required_typos(spec: Spec) -> list[str]:
    """A ``required`` name in a spec's own schema that looks like a typo of one of its properties."""
    from .schema.keywords import required_typo
    from .spec import OutputType

    schemas: list[tuple[str, Any]] = [(f"input '{name}'", schema) for name, schema in spec.inputs.items()]
    if spec.output.type is OutputType.JSON:
        schemas.append(("the output schema", spec.output.schema))
    schemas += [(f"test[{i}]'s expected schema", t.expect["schema"]) for i, t in enumerate(spec.tests)
                if isinstance(t.expect, dict) and "schema" in t.expect]
    notes = []
    for what, schema in schemas:
        found = required_typo(schema)
        if found is not None:
            notes.append(f"{what} {found[0]}")
    return notes


def _unused_inputs(spec: Spec) -> list[str]:
    """Inputs no template names: a run requires (or defaults) them, yet the model never sees them,
    which is most often a template that forgot one or misspelt an input's name."""
    if spec.template is None:  # the default template shows every input
        return []
    from .loader import TEMPLATE_KEYS
    from .templates import free_names

    used: set[str] = set()
    for key in TEMPLATE_KEYS:  # the keys the loader checks as templates
        source = getattr(spec, key)
        if source is not None:
            used |= free_names(source)
    return [f"input '{name}' is used by no template (system, instruction, template), so the model never sees it"
            for name in spec.inputs if name not in used]


def _check_backend(spec: Spec) -> None:
    """The backend a spec names is installed and takes its options: else ``run`` would be the
    first to say so. Only the backend's class is loaded (no model, no connection). A spec that
    names none still gets the bounds ``run`` applies with the default backend (its model file,
    what a shared file may set); its options' schema is left to ``run``, which may get ``-b``."""
    from .runner import check_spec_options, method_possible, mode_capability, spec_model, spec_options

    name = spec.model.backend
    options = split_options(spec.model.options)[1]
    if name is None:
        _taken_by_some_backend(spec, options)
        if spec.model.model is None and not options:
            return
        default = _default_backend()
        if default is None:  # no default backend installed: run says so
            return
        cls = default[1]
    else:
        try:
            cls = backend_class(name)
        except BackendError as exc:
            raise spec.error(exc.message, ("model", "backend")) from None
        if mode_capability(spec) not in cls.capabilities:  # run would say so only after loading the model
            other = "completion" if spec.mode == "chat" else "chat"
            raise spec.error(f"backend '{name}' does not support {spec.mode} mode (its capabilities: "
                             f"{', '.join(sorted(str(c) for c in cls.capabilities))}); use mode: {other}",
                             ("mode",))
        method = spec.output.method
        if method is not Method.AUTO and not method_possible(method, cls.capabilities | cls.probed_capabilities):
            raise spec.error(f"backend '{name}' cannot do method '{method}' (its capabilities: "
                             f"{', '.join(sorted(str(c) for c in cls.capabilities))}); use method: auto",
                             ("output", "method"))
    model = spec_model(spec, cls)  # a model file: found from the spec's folder, under the rule of extends
    if name is not None and spec.model.model is not None:
        refused = _model_refused(cls, spec.model.model)
        if refused is not None:
            raise spec.error(f"backend '{name}': {refused}", ("model", "model"))
    if options:
        vetted = spec_options(spec, cls, model, options)  # what a shared file may decide (a llamacpp n_ctx, say)
        if name is not None:  # as run checks them: once lowered
            check_spec_options(spec, name, cls, vetted)


def _taken_by_some_backend(spec: Spec, options: dict[str, Any]) -> None:
    """An option of a spec that names no backend must be one that some installed backend takes:
    ``-b`` may pick another backend than the default, but none would take ``n_thread``."""
    from .errors import did_you_mean
    from .registry import list_backends

    if not options:
        return
    declared: set[str] = set()
    refused: dict[str, str] = {}
    takers: dict[str, list[str]] = {}  # option -> the backends that declare it
    for info in list_backends():
        schema = info.options_schema
        if info.error is not None:
            continue
        if schema is None or schema.get("additionalProperties", True) is not False:
            return  # a backend that takes any key: nothing to hold the names to
        refused |= refused_options(schema)
        names = set(schema.get("properties", {})) - set(refused)
        declared |= names
        for key in names:
            takers.setdefault(key, []).append(info.name)
    for key in options:
        if key in refused and key not in declared:  # its backend's own reason (an API key in a spec, say)
            raise spec.error(f"option '{key}' is refused: {refused[key]}", ("model", "options", key))
        if key not in declared:
            raise spec.error(f"no installed backend takes the option '{key}'{did_you_mean(key, declared)}; "
                             f"their options: {', '.join(sorted(declared)) or 'none'}", ("model", "options", key))
    for key, value in options.items():
        _refused_from_a_spec_by_all(spec, key, value, takers[key])


def _refused_from_a_spec_by_all(spec: Spec, key: str, value: Any, names: list[str]) -> None:
    """An option that every backend declaring it refuses from a spec file (``api_key_env``: only the
    user may choose which variable is sent as the key) is an error, not a note that ``-b`` may help."""
    from .errors import PromptDSLError, SpecError
    from .runner import plugin_errors, spec_model

    reason: SpecError | None = None
    for name in names:
        cls = backend_class(name)
        try:
            model = spec_model(spec, cls)  # as run would ask (a model file's own context length, say)
            with plugin_errors(cls, "spec_options()"):
                cls.spec_options(model, {key: value})
        except SpecError as exc:
            reason = reason or exc
            continue
        except PromptDSLError:  # cannot tell here (the embedded model not installed, a plugin's bug): run will
            return
        return  # this one takes it
    if reason is not None:
        raise spec.error(reason.message, reason.path or ("model", "options", key))


def _model_refused(cls: type[Backend], model: str) -> str | None:
    """Why the backend can never load the model name ``model`` (its ``check_model``), or None (a
    file is checked by ``spec_model``, from the spec's folder)."""
    from .runner import check_model_name

    try:
        check_model_name(cls, model)
    except BackendError as exc:
        if exc.exit_code != 2:  # the plugin's bug, not the spec's
            raise
        return exc.message
    return None


def _default_backend() -> tuple[str, type[Backend]] | None:
    """The backend a spec that names none runs on, with its class; None when it is not installed."""
    try:
        name = resolve_backend_name(None)
        return name, backend_class(name)
    except BackendError:
        return None
