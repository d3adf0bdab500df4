"""Backend settings: where the server is, which model, how long to wait, which key to send.

Credentials, and where they go, are the user's decision, never a spec file's: a spec is
shared like code, and ``base_url: http://attacker/v1`` in it must not receive the user's key.

- ``base_url``: ``-o base_url=...`` (or ``Runner(options=...)``), then ``OPENAI_BASE_URL``, then
  ``base_url`` in the user config file, then the spec's ``model.options.base_url``, then OpenAI.
  The API key goes to a URL the spec chose only when the user trusts it: it is OpenAI's own, or
  listed in ``trusted_base_urls`` of the user config file or in ``PROMPTDSL_TRUSTED_BASE_URLS``
  (comma-separated). Otherwise the request goes out with no key, and a 401 says why.
- ``api_key_env`` (which variable holds the key): ``-o`` or the user config file; a spec
  naming it is refused, since it could send ``AWS_SECRET_ACCESS_KEY`` anywhere.
- the key itself is never an option: only environment variables hold it.

The user config file is ``$PROMPTDSL_HOME/openai.yaml`` (else ``openai.yaml`` in the platform's
user config directory), a mapping of ``base_url``, ``api_key_env``, ``organization``,
``timeout``, ``max_retries``, ``trusted_base_urls``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs
import yaml

from promptdsl.errors import BackendError, quote, register_secret
from promptdsl.spec import FromSpec
from promptdsl.yamlsource import TooLarge, read_limited

OPENAI_URL = "https://api.openai.com/v1"
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_RETRIES = 2
#: Placeholder sent to local servers that do not check keys (the SDK insists on one).
NO_KEY = "no-key"

KNOWN_OPTIONS = frozenset(
    {"base_url", "timeout", "max_retries", "api_key_env", "grammar", "n_ctx", "organization", "tools"}
)
CONFIG_NAME = "openai.yaml"
CONFIG_KEYS = frozenset({"base_url", "api_key_env", "organization", "timeout", "max_retries", "trusted_base_urls"})
TRUST_ENV = "PROMPTDSL_TRUSTED_BASE_URLS"
MAX_CONFIG_BYTES = 64 << 10


@dataclass(frozen=True)
class Settings:
    """Resolved connection settings. ``repr`` never shows the key."""

    base_url: str
    timeout: float
    max_retries: int
    grammar: bool | None  # None: probe the server once
    n_ctx: int | None
    organization: str | None
    api_key: str = field(repr=False)
    key_source: str = ""
    key_withheld: str = ""  # why no key was sent, when the spec chose an untrusted base_url
    destination_from_spec: bool = False  # the spec chose base_url and the user does not trust it

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
    except (TypeError, ValueError, OverflowError):
        raise _fail(f"option {key} must be a number, got {quote(raw)}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise _fail(f"option {key} must be a finite number, got {quote(raw)}")
    if value < 0 or (kind is float and value == 0):
        raise _fail(f"option {key} must be positive, got {quote(raw)}")
    return value


def _flag(options: Mapping[str, Any], key: str) -> bool | None:
    raw = options.get(key, "auto")
    if raw is None or (isinstance(raw, str) and raw.lower() == "auto"):
        return None
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.lower() in {"true", "yes", "on", "1", "false", "no", "off", "0"}:
        return raw.lower() in {"true", "yes", "on", "1"}
    raise _fail(f"option {key} must be true, false or auto, got {quote(raw)}")


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    """The user config file: ``$PROMPTDSL_HOME/openai.yaml``, else in the user config directory."""
    env = os.environ if environ is None else environ
    home = env.get("PROMPTDSL_HOME", "").strip()
    base = Path(home).expanduser() if home else Path(platformdirs.user_config_dir("promptdsl", appauthor=False))
    return base / CONFIG_NAME


def user_config(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The user config file's settings ({} when there is none); a broken file is an exit-2 error."""
    path = config_path(environ)
    try:
        if not path.exists():
            return {}
        data = yaml.safe_load(read_limited(path, MAX_CONFIG_BYTES).decode("utf-8"))
    except (OSError, ValueError, TooLarge, yaml.YAMLError, RecursionError) as exc:
        raise _fail(f"config file {path} cannot be read: {quote(str(exc), 120)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise _fail(f"config file {path} must be a mapping of settings")
    unknown = sorted(set(data) - CONFIG_KEYS)
    if unknown:
        raise _fail(f"config file {path}: unknown setting(s) {', '.join(map(quote, unknown))}; "
                    f"known: {', '.join(sorted(CONFIG_KEYS))}")
    trusted = data.get("trusted_base_urls", [])
    if not isinstance(trusted, list) or not all(isinstance(u, str) for u in trusted):
        raise _fail(f"config file {path}: trusted_base_urls must be a list of URLs")
    return data


def _normal(url: str) -> str:
    return url.strip().rstrip("/").lower()


def _trusted(url: str, config: Mapping[str, Any], env: Mapping[str, str]) -> bool:
    """True when the user has said this spec-chosen URL may receive their key."""
    if _normal(url) == _normal(OPENAI_URL):
        return True
    listed = [*config.get("trusted_base_urls", []), *env.get(TRUST_ENV, "").split(",")]
    return _normal(url) in {_normal(u) for u in listed if u.strip()}


def resolve(options: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from backend options, the environment and the user config; bad values are exit-2 errors.

    Values the spec file chose arrive as :class:`promptdsl.spec.FromSpec`; values the user
    typed (``-o``) are plain, and only they (with the environment and the user config file)
    decide credentials.
    """
    env = os.environ if environ is None else environ
    if "api_key" in options:
        raise _fail(
            "do not put API keys in specs or on the command line; set OPENAI_API_KEY "
            "(or name another variable with -o api_key_env=NAME)"
        )
    unknown = sorted(set(options) - KNOWN_OPTIONS)
    if unknown:
        raise _fail(f"unknown option(s) {', '.join(map(str, unknown))}; known: {', '.join(sorted(KNOWN_OPTIONS))}")
    for key in ("base_url", "api_key_env", "organization"):
        if options.get(key) is not None and not isinstance(options[key], str):
            raise _fail(f"option {key} must be text, got {quote(options[key])}")
    config = user_config(env)
    if isinstance(options.get("api_key_env"), FromSpec):
        raise _fail(
            f"refused: the spec sets model.options.api_key_env ({quote(options['api_key_env'])}), but a spec file "
            "may not choose which environment variable is sent as the API key; to use that variable, pass "
            f"-o api_key_env=NAME yourself or set api_key_env in {config_path(env)}"
        )
    merged = {**{k: v for k, v in config.items() if k in KNOWN_OPTIONS}, **options}
    base_url, from_spec = _base_url(options, config, env)
    if not base_url.startswith(("http://", "https://")):
        raise _fail(f"base_url must start with http:// or https://, got {quote(base_url)}")
    timeout = float(_number(merged, "timeout", float, DEFAULT_TIMEOUT))
    max_retries = int(_number(merged, "max_retries", int, DEFAULT_MAX_RETRIES))
    grammar = _flag(options, "grammar")
    n_ctx = _number(options, "n_ctx", int, None)
    key_env = str(options.get("api_key_env") or config.get("api_key_env") or "OPENAI_API_KEY")
    key = env.get(key_env, "")
    register_secret(key)
    withheld = ""
    untrusted = from_spec and not _trusted(base_url, config, env)
    if key and untrusted:
        withheld = (
            f"the API key in {key_env} was not sent, because base_url {base_url} comes from the spec file, "
            f"not from you; to send it there, pass -o base_url={base_url}, set OPENAI_BASE_URL, or add the URL "
            f"to trusted_base_urls in {config_path(env)}"
        )
        key = ""
    if not key:
        if base_url == OPENAI_URL:
            raise _fail(f"no API key: set {key_env} (or -o base_url=... for a local server)")
        key = NO_KEY
    organization = merged.get("organization")
    return Settings(
        base_url=base_url,
        timeout=timeout,
        max_retries=max_retries,
        grammar=grammar,
        n_ctx=n_ctx,
        organization=str(organization) if organization else None,
        api_key=key,
        key_source=key_env if key != NO_KEY else "",
        key_withheld=withheld,
        destination_from_spec=untrusted,
    )


def _base_url(options: Mapping[str, Any], config: Mapping[str, Any], env: Mapping[str, str]) -> tuple[str, bool]:
    """(the URL, whether the spec chose it): the user's choices first, the spec's last."""
    given = options.get("base_url")
    user = None if isinstance(given, FromSpec) else given
    for candidate, from_spec in (
        (user, False), (env.get("OPENAI_BASE_URL"), False), (config.get("base_url"), False), (given, True)
    ):
        if candidate:
            return str(candidate).strip().rstrip("/"), from_spec
    return OPENAI_URL, False
