"""Backend settings: where the server is, which model, how long to wait.

Every setting comes from the spec's ``model.options`` or ``-o key=value`` on the
command line, then the environment (``OPENAI_BASE_URL``, ``OPENAI_API_KEY``),
then a default. The API key is deliberately *not* an option: a key in a spec
file ends up in version control, so only environment variables can hold it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from promptdsl.errors import BackendError

OPENAI_URL = "https://api.openai.com/v1"
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_RETRIES = 2
#: Placeholder sent to local servers that do not check keys (the SDK insists on one).
NO_KEY = "no-key"

KNOWN_OPTIONS = frozenset(
    {"base_url", "timeout", "max_retries", "api_key_env", "grammar", "context_length", "organization", "tools"}
)


@dataclass(frozen=True)
class Settings:
    """Resolved connection settings. ``repr`` never shows the key."""

    base_url: str
    timeout: float
    max_retries: int
    grammar: bool | None  # None: probe the server once
    context_length: int | None
    organization: str | None
    api_key: str = field(repr=False)
    key_source: str = ""

    @property
    def is_openai(self) -> bool:
        """True for api.openai.com, which needs a real key and rejects llama.cpp extensions."""
        return self.base_url.rstrip("/") == OPENAI_URL


def _fail(message: str) -> BackendError:
    return BackendError(message, backend="openai", exit_code=2)


def _number(options: Mapping[str, Any], key: str, kind: type[float] | type[int], default: Any) -> Any:
    raw = options.get(key, default)
    if raw is None:
        return None
    try:
        value = kind(raw)
    except (TypeError, ValueError):
        raise _fail(f"option {key} must be a number, got {raw!r}") from None
    if value < 0 or (kind is float and value == 0):
        raise _fail(f"option {key} must be positive, got {raw!r}")
    return value


def _flag(options: Mapping[str, Any], key: str) -> bool | None:
    raw = options.get(key, "auto")
    if raw is None or (isinstance(raw, str) and raw.lower() == "auto"):
        return None
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.lower() in {"true", "yes", "on", "1", "false", "no", "off", "0"}:
        return raw.lower() in {"true", "yes", "on", "1"}
    raise _fail(f"option {key} must be true, false or auto, got {raw!r}")


def resolve(options: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from backend options and the environment; bad values are exit-2 BackendErrors."""
    env = os.environ if environ is None else environ
    if "api_key" in options:
        raise _fail(
            "do not put API keys in specs or on the command line; set OPENAI_API_KEY "
            "(or name another variable with -o api_key_env=NAME)"
        )
    unknown = sorted(set(options) - KNOWN_OPTIONS)
    if unknown:
        raise _fail(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(KNOWN_OPTIONS))}")
    base_url = str(options.get("base_url") or env.get("OPENAI_BASE_URL") or OPENAI_URL).rstrip("/")
    if not base_url.startswith(("http://", "https://")):
        raise _fail(f"base_url must start with http:// or https://, got {base_url!r}")
    timeout = float(_number(options, "timeout", float, DEFAULT_TIMEOUT))
    max_retries = int(_number(options, "max_retries", int, DEFAULT_MAX_RETRIES))
    grammar = _flag(options, "grammar")
    context_length = _number(options, "context_length", int, None)
    key_env = str(options.get("api_key_env") or "OPENAI_API_KEY")
    key = env.get(key_env, "")
    if not key:
        if base_url == OPENAI_URL:
            raise _fail(f"no API key: set {key_env} (or -o base_url=... for a local server)")
        key = NO_KEY
    return Settings(
        base_url=base_url,
        timeout=timeout,
        max_retries=max_retries,
        grammar=grammar,
        context_length=context_length,
        organization=options.get("organization") or None,
        api_key=key,
        key_source=key_env if key != NO_KEY else "",
    )
