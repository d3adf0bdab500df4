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
- what the SDK would read from the environment by itself (``OPENAI_CUSTOM_HEADERS``,
  ``OPENAI_ORG_ID``, ``OPENAI_PROJECT_ID``) is read here and goes where the key goes: an
  untrusted spec-chosen ``base_url`` gets none of it.
- ``timeout`` (each wait, default 60 s, at most 3600), ``deadline`` (a whole request, default
  600 s, at most 86400) and ``max_retries`` (default 2, at most 10) are bounded wherever they
  come from, so a spec cannot make a request wait or retry for ever; a spec file's own values are
  lowered further, to at most 300 s, 1800 s and 5 retries (:data:`SPEC_LIMITS`).

The user config file is ``$PROMPTDSL_HOME/openai.yaml`` (else ``openai.yaml`` in the platform's
user config directory), a mapping of ``base_url``, ``api_key_env``, ``organization``,
``project``, ``timeout``, ``deadline``, ``max_retries``, ``trusted_base_urls``; a value of the
wrong type is an error naming the file and the key.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import platformdirs

from promptdsl.errors import BackendError, SpecError, quote, register_secret
from promptdsl.spec import FromSpec
from promptdsl.yamlsource import parse_yaml, read_text

OPENAI_URL = "https://api.openai.com/v1"
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
DEFAULT_TIMEOUT = 60.0
DEFAULT_DEADLINE = 600.0
DEFAULT_MAX_RETRIES = 2
#: The most one reply may hold (a streamed answer counts in all); see :mod:`.transport`.
MAX_REPLY_BYTES = 32 << 20
#: Placeholder sent to local servers that do not check keys (the SDK insists on one).
NO_KEY = "no-key"

#: Numeric settings: (type, lowest, highest, lowest allowed itself). Options, the options schema
#: and the user config file share these; a spec cannot make a request wait or retry for ever.
NUMBERS: dict[str, tuple[type[int] | type[float], float, float, bool]] = {
    "timeout": (float, 0, 3600, False),  # seconds to wait for a connection or the next piece of a reply
    "deadline": (float, 0, 86400, False),  # seconds one request may take in all, streamed answer included
    "max_retries": (int, 0, 10, True),
    "n_ctx": (int, 1, 1 << 24, True),
}
#: The most a spec file's own ``timeout``, ``deadline`` and ``max_retries`` may ask for; a larger one
#: is lowered to it (``OpenAIBackend.spec_options``). The user's ``-o`` and config file go up to NUMBERS'.
SPEC_LIMITS: dict[str, float] = {"timeout": 300, "deadline": 1800, "max_retries": 5}

KNOWN_OPTIONS = frozenset(
    {"base_url", "timeout", "deadline", "max_retries", "api_key_env", "grammar", "n_ctx", "organization", "tools"}
)
CONFIG_NAME = "openai.yaml"
CONFIG_KEYS = frozenset({"base_url", "api_key_env", "organization", "project", "timeout", "deadline", "max_retries",
                         "trusted_base_urls"})
TRUST_ENV = "PROMPTDSL_TRUSTED_BASE_URLS"
#: Variables the SDK would read on its own; here they are read once, and only sent where the key may go.
HEADERS_ENV, ORG_ENV, PROJECT_ENV = "OPENAI_CUSTOM_HEADERS", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"
MAX_CONFIG_BYTES = 64 << 10

_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SECRET_HEADER = re.compile(r"(?i)auth|key|token|secret|passw|cookie|session|credential")
_USERINFO = re.compile(r"(?<=//)[^/@]*@")


@dataclass(frozen=True)
class Settings:
    """Resolved connection settings. ``repr`` never shows the key or the headers."""

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
    deadline: float = DEFAULT_DEADLINE
    project: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)  # OPENAI_CUSTOM_HEADERS

    @property
    def is_openai(self) -> bool:
        """True for api.openai.com, which needs a real key and rejects llama.cpp extensions."""
        return self.base_url.rstrip("/") == OPENAI_URL

    @property
    def where(self) -> str:
        """``base_url`` as messages show it: a user name or token in it (``http://tok@host``) masked."""
        return shown_url(self.base_url)


def shown_url(url: str) -> str:
    return _USERINFO.sub("***@", url)


def _fail(message: str) -> BackendError:
    return BackendError(message, backend="openai", exit_code=2)


def _number(raw: Any, key: str, where: str) -> Any:
    """``raw`` as the number setting ``key`` takes, or an exit-2 error naming ``where`` it came from.

    Text that reads as a number is taken (Python callers pass it); booleans never are, and
    integer settings take whole numbers only.
    """
    kind, low, high, low_ok = NUMBERS[key]
    unit = " of seconds" if key in ("timeout", "deadline") else ""
    span = f"from {low:g} to {high:g}" if low_ok else f"above {low:g} and at most {high:g}"
    problem = _fail(f"{where} must be {'a whole number' if kind is int else 'a number'}{unit} {span}, "
                    f"got {quote(raw)}")
    value: Any = raw
    if isinstance(raw, str):
        try:
            value = float(raw.strip())
        except ValueError:
            raise problem from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise problem
    if isinstance(value, float) and not math.isfinite(value):
        raise problem
    if kind is int:
        if value != int(value):
            raise problem
        value = int(value)
    if value > high or value < low or (value == low and not low_ok):
        raise problem
    return kind(value)


def spec_bounded(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` a spec file chose, its ``timeout``, ``deadline`` and ``max_retries`` lowered to
    :data:`SPEC_LIMITS`. A value that is no such number is left for :func:`resolve` to refuse. A key,
    or the variable the key is read from, is a SpecError at its place in the file, so ``validate``
    refuses such a spec as ``run`` does."""
    if "api_key" in options:
        raise SpecError("do not put API keys in specs; set OPENAI_API_KEY (or name another variable with "
                        "-o api_key_env=NAME)", path=("model", "options", "api_key"))
    if "api_key_env" in options:
        raise SpecError(
            "refused: a spec file may not choose which environment variable is sent as the API key; pass "
            f"-o api_key_env=NAME yourself or set api_key_env in {config_path(os.environ)}",
            path=("model", "options", "api_key_env"),
        )
    out = dict(options)
    for key, most in SPEC_LIMITS.items():
        if out.get(key) is None:
            continue
        try:
            value = _number(out[key], key, f"option {key}")
        except BackendError:
            continue
        if value > most:
            out[key] = NUMBERS[key][0](most)
    return out


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
        # as a spec is read: file:line:col for a slip, one line for a binary or huge file
        data = parse_yaml(read_text(path, what="config file", limit=MAX_CONFIG_BYTES), str(path)).data
    except SpecError as exc:
        raise _fail(str(exc)) from None
    except (OSError, ValueError) as exc:
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
    settings = {k: v for k, v in data.items() if v is not None}  # "key:" with no value is not set
    for key in ("base_url", "api_key_env", "organization", "project"):
        if key in settings and not isinstance(settings[key], str):
            raise _fail(f"config file {path}: {key} must be text, got {quote(settings[key])}")
    if "base_url" in settings:
        _check_url(settings["base_url"], f"config file {path}: base_url")
    if "api_key_env" in settings:
        _check_variable(settings["api_key_env"], f"config file {path}: api_key_env")
    for key in NUMBERS.keys() & settings.keys():
        settings[key] = _number(settings[key], key, f"config file {path}: {key}")
    return settings


def _check_url(url: str, where: str) -> None:
    """An http(s) URL with a host; a token or password in it (``http://tok@host``) is registered as a secret."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname if parts.port is None or parts.port > 0 else None
    except ValueError:  # an unclosed IPv6 bracket, a port past 65535
        parts, host = None, None
    if parts is not None:
        register_secret(parts.password, key=True)
        if parts.password is None:
            register_secret(parts.username, key=True)  # a token as the user name
    if not url.strip().lower().startswith(("http://", "https://")):
        raise _fail(f"{where} must start with http:// or https://, got {quote(shown_url(url))}")
    if not host or _CONTROL.search(url) or " " in url.strip():
        raise _fail(f"{where} is not a URL with a host, got {quote(shown_url(url))}")


def _check_variable(name: str, where: str) -> None:
    if not _VARIABLE.fullmatch(name):
        raise _fail(f"{where} must name an environment variable (letters, digits, _), got {quote(name)}")


def _env_headers(env: Mapping[str, str]) -> dict[str, str]:
    """``OPENAI_CUSTOM_HEADERS`` as the SDK reads it (``Name: value`` per line); values never shown."""
    out: dict[str, str] = {}
    for number, line in enumerate(env.get(HEADERS_ENV, "").split("\n"), 1):
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        name, value = name.strip(), value.strip()
        if _SECRET_HEADER.search(name) or len(value) >= 8:
            register_secret(value)
        if not colon or not _HEADER_NAME.fullmatch(name) or _CONTROL.search(value):
            raise _fail(f"{HEADERS_ENV} line {number} is not a header: write 'Name: value' per line "
                        "(a header name, a colon, printable text)")
        out[name] = value
    return out


def _check_key(key: str, key_env: str) -> None:
    """A key with a line break or blank in it (pasted from a file) cannot be sent; say so, never show it."""
    register_secret(key.strip(), key=True)

    def bad(text: str) -> bool:
        return bool(_CONTROL.search(text)) or any(c.isspace() for c in text)

    if not bad(key):
        return
    what = ("starts or ends with whitespace or a line break (pasted with it?)" if key.strip() and not bad(key.strip())
            else "holds whitespace or a control character")
    raise _fail(f"the API key in {key_env} {what}; set {key_env} to the key alone")


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
    decide credentials. The SDK is given every credential and header explicitly (see
    ``backend._Client``): what it would read from the environment itself (``OPENAI_ORG_ID``,
    ``OPENAI_PROJECT_ID``, ``OPENAI_CUSTOM_HEADERS``) is read here, and withheld from an
    untrusted spec-chosen ``base_url`` like the key.
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
    if options.get("api_key_env"):
        _check_variable(str(options["api_key_env"]), "option api_key_env")
    numbers = {key: _number(options[key], key, f"option {key}") for key in NUMBERS if options.get(key) is not None}
    merged = {**{k: v for k, v in config.items() if k in KNOWN_OPTIONS}, **options, **numbers}
    base_url, from_spec, source = _base_url(options, config, env)
    _check_url(base_url, source)
    grammar = _flag(options, "grammar")
    key_env = str(options.get("api_key_env") or config.get("api_key_env") or "OPENAI_API_KEY")
    key = env.get(key_env, "")
    register_secret(key, key=True)
    headers = _env_headers(env)
    given_org = options.get("organization")
    organization = given_org or config.get("organization") or env.get(ORG_ENV) or None
    project = config.get("project") or env.get(PROJECT_ENV) or None
    withheld = ""
    untrusted = from_spec and not _trusted(base_url, config, env)
    if untrusted:
        spec_org = given_org if isinstance(given_org, FromSpec) else None
        kept = [what for what, value in (
            (f"the API key in {key_env}", key), (f"the headers in {HEADERS_ENV}", headers),
            ("your organization", bool(organization) and organization != spec_org), ("your project", project),
        ) if value]
        if kept:
            where = shown_url(base_url)
            withheld = (
                f"{' and '.join(kept)} {'was' if len(kept) == 1 else 'were'} not sent, because base_url {where} "
                f"comes from the spec file, not from you; to send {'it' if len(kept) == 1 else 'them'} there, pass "
                f"-o base_url={where}, set OPENAI_BASE_URL, or add the URL to trusted_base_urls in {config_path(env)}"
            )
        key, headers, organization, project = "", {}, spec_org, None
    if key:
        _check_key(key, key_env)
    else:
        if base_url == OPENAI_URL:
            raise _fail(f"no API key: set {key_env} (or -o base_url=... for a local server)")
        key = NO_KEY
    return Settings(
        base_url=base_url,
        timeout=float(merged.get("timeout", DEFAULT_TIMEOUT)),
        max_retries=int(merged.get("max_retries", DEFAULT_MAX_RETRIES)),
        grammar=grammar,
        n_ctx=numbers.get("n_ctx"),
        organization=str(organization) if organization else None,
        api_key=key,
        key_source=key_env if key != NO_KEY else "",
        key_withheld=withheld,
        destination_from_spec=untrusted,
        deadline=float(merged.get("deadline", DEFAULT_DEADLINE)),
        project=str(project) if project else None,
        headers=headers,
    )


def _base_url(options: Mapping[str, Any], config: Mapping[str, Any],
              env: Mapping[str, str]) -> tuple[str, bool, str]:
    """(the URL, whether the spec chose it, where it came from): the user's choices first, the spec's last."""
    given = options.get("base_url")
    user = None if isinstance(given, FromSpec) else given
    for candidate, from_spec, source in (
        (user, False, "option base_url"), (env.get("OPENAI_BASE_URL"), False, "OPENAI_BASE_URL"),
        (config.get("base_url"), False, "base_url"), (given, True, "model.options.base_url"),
    ):
        if candidate:
            return str(candidate).strip().rstrip("/"), from_spec, source
    return OPENAI_URL, False, "base_url"
