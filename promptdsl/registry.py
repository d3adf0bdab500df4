"""Backend discovery through the ``promptdsl.backends`` entry-point group.

Built-in and third-party backends are found the same way. A plugin that fails
to import, or exposes the wrong type, is reported by name and never stops the
others from loading.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from .backend import Backend, BackendInfo, check_options
from .errors import BackendError, did_you_mean

GROUP = "promptdsl.backends"
DEFAULT_BACKEND = "llamacpp"

_lock = threading.Lock()
#: One instance per (name, model, options), with a hash of the environment it read (``Backend.env_keys``).
_instances: dict[tuple[str, str | None, str], tuple[str, Backend]] = {}


def _entry_points() -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=GROUP):
        found.setdefault(ep.name, ep)
    return found


def _load_class(ep: EntryPoint) -> type[Backend]:
    try:
        obj = ep.load()
    except Exception as exc:  # a third-party import can fail in any way
        raise BackendError(
            f"backend plugin '{ep.name}' ({ep.value}) failed to load: {type(exc).__name__}: {exc}",
            exit_code=2,
        ) from exc
    if not (isinstance(obj, type) and issubclass(obj, Backend)):
        raise BackendError(
            f"backend plugin '{ep.name}' ({ep.value}) is not a promptdsl.backend.Backend subclass",
            exit_code=2,
        )
    return obj


def _version(ep: EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "", "?"
    return dist.metadata["Name"], dist.version


def list_backends() -> list[BackendInfo]:
    """Every installed backend plugin, loaded or with the reason it failed."""
    infos = []
    for name, ep in sorted(_entry_points().items()):
        dist, version = _version(ep)
        try:
            cls = _load_class(ep)
        except BackendError as exc:
            infos.append(BackendInfo(name, version, frozenset(), dist, error=exc.message))
            continue
        infos.append(BackendInfo(name, version, frozenset(cls.capabilities), dist, options_schema=cls.options_schema))
    return infos


def backend_class(name: str) -> type[Backend]:
    """The Backend subclass registered as ``name``."""
    eps = _entry_points()
    if name not in eps:
        known = ", ".join(sorted(eps)) or "none installed"
        raise BackendError(
            f"unknown backend '{name}'{did_you_mean(name, eps)}; installed backends: {known}",
            exit_code=2,
        )
    return _load_class(eps[name])


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
        cached = _instances.get(key)
        if cached is not None and cached[0] == env:
            return cached[1]
        try:
            inst = cls(model, options or {})
        except BackendError as exc:
            exc.backend = exc.backend or name
            raise
        except Exception as exc:
            raise BackendError(
                f"failed to start: {type(exc).__name__}: {exc}", backend=name, model=model, exit_code=2
            ) from exc
        if cached is not None:  # made for an environment that has changed since: replace, do not leak
            cached[1].close()
        _instances[key] = (env, inst)
        return inst


def close_all() -> None:
    """Close every cached backend instance (tests and long-lived front ends)."""
    with _lock:
        for _, inst in _instances.values():
            inst.close()
        _instances.clear()
