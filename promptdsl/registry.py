"""Plugin discovery through entry points, and the ``promptdsl.backends`` group.

Built-in and third-party backends are found the same way. A plugin that fails
to import, exits while importing, exposes the wrong type, declares malformed
attributes, or shares its name with another distribution's plugin is reported
by name with the reason, and never stops the others from loading. The checks
run when the plugin loads, so ``promptdsl backends`` and a run agree on what
is broken. The tool registry (:mod:`promptdsl.tools.registry`) shares the
entry-point helpers below.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import os
import re
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from .backend import Backend, BackendInfo, Capability, check_options
from .errors import BackendError, did_you_mean, format_path, quote
from .plugin_code import plugin_code

GROUP = "promptdsl.backends"
DEFAULT_BACKEND = "llamacpp"

_lock = threading.Lock()  # guards the dicts only; never held while a plugin's code runs
#: A lock per (name, model, options) being made, so two threads asking for one backend make it once.
_making: dict[tuple[str, str | None, str], threading.RLock] = {}
#: One instance per (name, model, options), with a hash of the environment it read (``Backend.env_keys``).
_instances: dict[tuple[str, str | None, str], tuple[str, Backend]] = {}


# ---------------------------------------------------------------------------- entry points (backends and tools)


class PluginProblem(Exception):
    """Why a plugin cannot be used, as one line naming it; each registry re-raises it as its own error."""


def _dist_key(ep: EntryPoint) -> str:
    """The distribution's normalized name (PEP 503), so one distribution seen twice counts once."""
    dist = getattr(ep, "dist", None)
    if dist is None:
        return f"?{ep.value}"
    return re.sub(r"[-_.]+", "-", str(dist.metadata["Name"] or "")).lower()


def plugin_entry_points(group: str) -> dict[str, list[EntryPoint]]:
    """Each name in ``group`` with one entry point per distinct distribution that provides it.

    More than one is a conflict (see :func:`load_plugin`): letting one silently win
    would let any installed package replace a built-in.
    """
    found: dict[str, dict[str, EntryPoint]] = {}
    for ep in entry_points(group=group):
        found.setdefault(ep.name, {}).setdefault(_dist_key(ep), ep)
    return {name: list(by_dist.values()) for name, by_dist in found.items()}


def distribution(ep: EntryPoint) -> tuple[str, str]:
    """(distribution name, version) of an entry point, ``("", "?")`` when unknown."""
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "", "?"
    return str(dist.metadata["Name"] or ""), str(dist.version)


def failure_text(exc: BaseException) -> str:
    """An exception as a message tail; ``sys.exit()`` is named as such, since "SystemExit: 1" says little."""
    if isinstance(exc, SystemExit):
        return f"it called sys.exit({exc.code!r})"
    return f"{type(exc).__name__}: {exc}"


def plugin_output() -> contextlib.AbstractContextManager[object]:
    """Standard output while a plugin is imported, made or closed goes to standard error: one ``print``
    in a plugin module would otherwise corrupt ``backends --json`` or ``run --json`` for every user
    who has it installed, even one who never uses it. Under a front end that routes by thread (the
    CLI's ``ResultsOnly``) this thread is marked; else ``sys.stdout`` is swapped for the duration."""
    if getattr(sys.stdout, "routes_plugin_code", False) is True:
        return plugin_code()
    return contextlib.redirect_stdout(sys.stderr)


def load_plugin(kind: str, name: str, eps: Sequence[EntryPoint]) -> tuple[EntryPoint, object]:
    """The entry point registered as ``name`` and the object it names.

    Raises :class:`PluginProblem` when two distributions provide the name, or when
    importing fails in any way, ``sys.exit()`` included (a plugin must never end
    the listing or the process).
    """
    if len(eps) > 1:
        who = " and ".join(f"{'/'.join(filter(None, distribution(ep)))} ({ep.value})" for ep in eps)
        raise PluginProblem(f"{kind} name '{name}' is provided by {len(eps)} distributions: {who}; "
                            "uninstall one of them, or rename its entry point")
    ep = eps[0]
    try:
        with plugin_output():
            return ep, ep.load()
    except (Exception, SystemExit) as exc:  # a third-party import can fail in any way
        raise PluginProblem(f"{kind} plugin '{name}' ({ep.value}) failed to load: {failure_text(exc)}") from exc


#: Top-level keywords of a JSON Schema that can hold sub-schemas (a schema without one, whose
#: values are all mappings, is a properties mapping someone forgot to wrap).
_SCHEMA_KEYWORDS = frozenset({
    "type", "properties", "additionalProperties", "patternProperties", "propertyNames", "required",
    "$schema", "$ref", "$defs", "definitions", "$id", "allOf", "anyOf", "oneOf", "not", "if", "then", "else",
    "dependentSchemas", "unevaluatedProperties", "enum", "const", "title", "description", "default", "examples",
})


def object_schema_problem(schema: Any) -> str | None:
    """Why a plugin's declared schema (options or arguments) is not a usable JSON Schema object; None if it is."""
    if not isinstance(schema, Mapping):
        return f"is not a JSON Schema object (a dict) but {type(schema).__name__} {quote(schema, python=True)}"
    if schema and all(isinstance(v, Mapping) for v in schema.values()) and not set(schema) & _SCHEMA_KEYWORDS:
        return ("looks like a mapping of properties, not a schema (every option would be taken unchecked): "
                "wrap it as {'type': 'object', 'properties': {...}}, as promptdsl.backend.options_schema({...}) does")
    from .schema.quick import surely_usable

    if not surely_usable(schema):  # the common plain schemas need no jsonschema import
        from .schema import schema_problem

        found = schema_problem(schema)
        if found is not None:
            message, path = found
            return f"is unusable: {message}" + (f" (at {format_path(path)})" if path else "")
    if schema.get("type", "object") != "object":
        return f"must describe an object (type: object), not type {quote(schema.get('type'))}"
    return None


def name_problem(kind: str, name: str, declared: object, fix: str) -> str | None:
    """The entry-point name is the plugin's name: a different declared ``name`` is a problem (empty is not)."""
    if not isinstance(declared, str):
        return f"has a name that is not a string ({quote(declared, python=True)}); {fix}"
    if declared and declared != name:
        return (f"declares name '{declared}' but is installed as '{name}' (the entry-point name is the "
                f"{kind}'s name); {fix}, or rename the entry point to '{declared}'")
    return None


# ---------------------------------------------------------------------------- backends


def _capabilities(value: object, attr: str = "capabilities") -> frozenset[Capability] | str:
    """The declared capabilities as Capability members (names given as strings are converted), or why not."""
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        return (f"{attr} must be a set of Capability values, e.g. frozenset({{Capability.CHAT}}), "
                f"not {type(value).__name__} {quote(value, python=True)}")
    caps: set[Capability] = set()
    for item in value:
        try:
            caps.add(Capability(item))
        except (ValueError, TypeError):
            known = ", ".join(c.value for c in Capability)
            where = "" if attr == "capabilities" else f"{attr} "
            return f"{where}declares unknown capability {quote(item, python=True)} (known: {known})"
    return frozenset(caps)


def _check_name(name: str, cls: type[Backend]) -> str | None:
    """Only a name the class itself declares is held to its entry point: a name it inherits (from a
    base class installed under another name, or set there by this registry) is not the class's."""
    declared = cls.__dict__.get("name", "")
    if cls in _named and _named[cls] == declared:  # the registry gave it (one class under two names)
        declared = ""
    problem = name_problem("backend", name, declared, f"set name = '{name}' in the class")
    if problem is None and not declared and cls not in _named:
        cls.name = name  # on this class only, so the backend's own errors say where they come from
        _named[cls] = name
    return problem


#: Classes the registry named (they declared no name): the first entry point's name, not theirs.
_named: dict[type[Backend], str] = {}


def _check_capabilities(name: str, cls: type[Backend]) -> str | None:
    caps = _capabilities(cls.capabilities)
    if isinstance(caps, str):
        return caps
    probed = _capabilities(cls.probed_capabilities, "probed_capabilities")
    if isinstance(probed, str):
        return probed
    cls.capabilities = caps  # listed, compared and printed as Capability members from now on
    cls.probed_capabilities = probed - caps
    return None


def _check_options_schema(name: str, cls: type[Backend]) -> str | None:
    if cls.options_schema is None:
        return None
    problem = object_schema_problem(cls.options_schema)
    return None if problem is None else f"options_schema {problem}"


def _check_implements(name: str, cls: type[Backend]) -> str | None:
    """What the class declares it can do, it has the methods for: else ``backends`` would call it
    healthy and a run would be the first to fail (often with a message blaming the user)."""
    if inspect.isabstract(cls):
        missing = ", ".join(f"{m}()" for m in sorted(cls.__abstractmethods__))
        return f"does not implement {missing}"
    caps = cls.capabilities
    if not caps & {Capability.CHAT, Capability.COMPLETION}:
        return "declares neither 'chat' nor 'completion', so no prompt can run on it"
    if Capability.SCORE in caps and cls.score is Backend.score:
        return "declares 'score' but does not override score(prompt, continuations)"
    if Capability.TOOLS in caps and not callable(getattr(cls, "tool_turn", None)):
        return ("declares 'tools' but has no tool_turn(prompt, steps, tools, choice, options) method "
                "(see promptdsl.tools.native.NativeTools)")
    return None


#: What a backend class must satisfy to be used; the first failing check makes the plugin broken.
_BACKEND_CHECKS: tuple[Callable[[str, type[Backend]], str | None], ...] = (
    _check_name, _check_capabilities, _check_options_schema, _check_implements,
)


def _load_class(name: str, eps: Sequence[EntryPoint]) -> type[Backend]:
    try:
        ep, obj = load_plugin("backend", name, eps)
    except PluginProblem as exc:
        raise BackendError(str(exc), exit_code=2) from exc.__cause__
    if not (isinstance(obj, type) and issubclass(obj, Backend)):
        raise BackendError(
            f"backend plugin '{name}' ({ep.value}) is not a promptdsl.backend.Backend subclass",
            exit_code=2,
        )
    for check in _BACKEND_CHECKS:
        problem = check(name, obj)
        if problem is not None:
            raise BackendError(f"backend plugin '{name}' ({ep.value}): {problem}", exit_code=2)
    return obj


def list_backends() -> list[BackendInfo]:
    """Every installed backend plugin, loaded or with the reason it failed."""
    infos = []
    for name, eps in sorted(plugin_entry_points(GROUP).items()):
        dist, version = distribution(eps[0])
        try:
            cls = _load_class(name, eps)
        except BackendError as exc:
            infos.append(BackendInfo(name, version, frozenset(), dist, error=exc.message))
            continue
        infos.append(BackendInfo(name, version, frozenset(cls.capabilities), dist, options_schema=cls.options_schema,
                                 probed_capabilities=frozenset(cls.probed_capabilities)))
    return infos


def backend_class(name: str) -> type[Backend]:
    """The Backend subclass registered as ``name``."""
    eps = plugin_entry_points(GROUP)
    if name not in eps:
        known = ", ".join(sorted(eps)) or "none installed"
        raise BackendError(
            f"unknown backend '{name}'{did_you_mean(name, eps)}; installed backends: {known}",
            exit_code=2,
        )
    return _load_class(name, eps[name])


def resolve_backend_name(*candidates: str | None) -> str:
    """First given name, then $PROMPTDSL_BACKEND, then the built-in default."""
    for c in candidates:
        if c:
            return c
    return os.environ.get("PROMPTDSL_BACKEND") or DEFAULT_BACKEND


def get_backend(name: str, model: str | None = None, options: Mapping[str, Any] | None = None) -> Backend:
    """A ready backend instance, created once per (name, model, options) in this process.

    Options are checked against the backend's declared schema first, so a typo
    fails in milliseconds instead of after a model load.
    """
    cls = backend_class(name)
    check_options(name, cls.options_schema, options or {})
    env = hashlib.sha256(repr([os.environ.get(k) for k in cls.env_keys]).encode()).hexdigest()  # may hold keys
    key = (name, model, repr(sorted((options or {}).items())))
    with _lock:
        making = _making.setdefault(key, threading.RLock())
    # One lock per instance being made, not the registry's: a backend that makes others in its
    # constructor (a wrapper, even from a thread pool) or a slow model load blocks only its own key.
    with making:
        with _lock:
            cached = _instances.get(key)
        if cached is not None and cached[0] == env:
            return cached[1]
        try:
            with plugin_output():
                inst = cls(model, options or {})
        except BackendError as exc:
            exc.backend = exc.backend or name
            raise
        except (Exception, SystemExit) as exc:  # a plugin's constructor may fail in any way, even exit
            raise BackendError(
                f"failed to start: {failure_text(exc)}", backend=name, model=model, exit_code=2
            ) from exc
        with _lock:
            _instances[key] = (env, inst)
        if cached is not None:  # made for an environment that has changed since: replace, do not leak
            with plugin_output():
                cached[1].close()
        return inst


def release(backend: Backend) -> None:
    """Forget and close ``backend``: a front end that switched away from it (a local model holds
    hundreds of MB). A later :func:`get_backend` with the same settings makes a new one."""
    with _lock:
        for key, (_, inst) in list(_instances.items()):
            if inst is backend:
                del _instances[key]
    with contextlib.suppress(Exception), plugin_output():  # a failing close must not undo the switch
        backend.close()


def close_all() -> None:
    """Close every cached backend instance (tests and long-lived front ends)."""
    with _lock:
        instances = [inst for _, inst in _instances.values()]
        _instances.clear()
    for inst in instances:  # outside the lock: a wrapper's close may release the backends it made
        with plugin_output():
            inst.close()
