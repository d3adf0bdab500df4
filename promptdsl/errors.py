"""The exception hierarchy: one root, four kinds, each with structured fields.

Every error a user can cause is a :class:`PromptDSLError`. Front ends print
``str(error)`` (one line that says what and where) and exit with ``exit_code``;
nothing else needs a traceback.

    PromptDSLError
    ├── SpecError      a spec file is unreadable, invalid or fails to compile
    ├── InputError     an input value (CLI, stdin or a dataset row) is invalid
    ├── BackendError   a backend is unknown, broken, unreachable or refused
    └── OutputError    the model's text cannot be parsed or validated
"""

from __future__ import annotations

import difflib
import json
import os
import re
import threading
from collections.abc import Iterable, Sequence
from enum import Enum
from typing import Any


def format_path(path: Sequence[str | int]) -> str:
    """Render a key path the way JSON Path does: ``$.output.choices[1]``."""
    out = "$"
    for part in path:
        # masked whole, then cut: cut first, a token could be too short to be seen as one
        out += f"[{part}]" if isinstance(part, int) else f".{quote(mask_secrets(str(part)), 40)[1:-1]}"
    return out


#: Names a message lists before it counts the rest (a data row may hold 250,000 fields).
MAX_NAMES_SHOWN = 20


def field_list(names: Iterable[Any]) -> str:
    """Field or column names as a message lists them: quoted, the first :data:`MAX_NAMES_SHOWN`,
    then how many more (an error line stays one short line)."""
    shown: list[str] = []
    more = 0
    for name in names:
        if len(shown) < MAX_NAMES_SHOWN:
            shown.append(quote(str(name), 40))
        else:
            more += 1
    return ", ".join(shown) + (f" and {more:,} more" if more else "") if shown else "no fields"


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` when a close option exists, else an empty string."""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class PromptDSLError(Exception):
    """Root of every error promptdsl raises on purpose."""

    exit_code: int = 2

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        # One line, whatever a value in it held (newlines, ANSI codes), and never a secret.
        return mask_secrets(escape(self._text()))

    def _text(self) -> str:
        return self.message


class SpecError(PromptDSLError):
    """A spec is malformed: ``file:line:col: message (at $.key.path)``."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        col: int | None = None,
        path: Sequence[str | int] = (),
    ) -> None:
        super().__init__(message)
        self.file = file
        self.line = line
        self.col = col
        self.path = tuple(path)
        self.also: list[SpecError] = []  # further problems found in the same pass
        self.via: str | None = None  # the spec being loaded, when the problem is in a file it extends

    def __str__(self) -> str:
        # One line per problem found in the same pass, each escaped and masked.
        return "\n".join(mask_secrets(escape(e._line())) for e in [self, *self.also])

    def _text(self) -> str:
        return "\n".join(e._line() for e in [self, *self.also])

    def _line(self) -> str:
        where = ""
        if self.file:
            where = escape(self.file)
            if self.line is not None:
                where += f":{self.line}"
                if self.col is not None:
                    where += f":{self.col}"
            where += ": "
        at = f" (at {format_path(self.path)})" if self.path else ""
        via = f" (loading {escape(self.via)}, which extends it)" if self.via and self.via != self.file else ""
        return f"{where}{self.message}{at}{via}"


class InputError(PromptDSLError):
    """An input value breaks its schema, or an input source is unreadable."""

    def __init__(
        self,
        message: str,
        *,
        name: str | None = None,
        source: str | None = None,
    ) -> None:
        super().__init__(message)
        self.name = name
        self.source = source

    def _text(self) -> str:
        return f"{self.source}: {self.message}" if self.source else self.message


class NamedEnum(str, Enum):
    """A string enum that prints as its value (``str(Method.SCORE) == "score"``), in messages and JSON alike."""

    def __str__(self) -> str:
        return str(self.value)


class BackendErrorKind(NamedEnum):
    """What went wrong at a backend; front ends decide by kind, never by message text."""

    CONNECT = "connect"  # nothing answers at the address
    AUTH = "auth"  # the key is missing or refused (401, 403)
    NOT_FOUND = "not_found"  # unknown model or endpoint (404)
    BAD_REQUEST = "bad_request"  # the server refused the request as malformed (other 4xx)
    CONTEXT_LENGTH = "context_length"  # the prompt does not fit the model's context
    CONFIG = "config"  # unknown backend or option, missing model file, missing capability
    RATE_LIMIT = "rate_limit"  # 429 after retries
    TIMEOUT = "timeout"
    SERVER = "server"  # 5xx after retries
    STREAM = "stream"  # the connection dropped mid-answer
    FAILED = "failed"  # anything else that failed while running


#: The exit code of each kind: 2 for what the user fixes in the command or setup, 1 for a run that failed.
BACKEND_EXIT_CODES: dict[BackendErrorKind, int] = {
    BackendErrorKind.CONNECT: 2,
    BackendErrorKind.AUTH: 2,
    BackendErrorKind.NOT_FOUND: 2,
    BackendErrorKind.BAD_REQUEST: 2,
    BackendErrorKind.CONTEXT_LENGTH: 2,
    BackendErrorKind.CONFIG: 2,
    BackendErrorKind.RATE_LIMIT: 1,
    BackendErrorKind.TIMEOUT: 1,
    BackendErrorKind.SERVER: 1,
    BackendErrorKind.STREAM: 1,
    BackendErrorKind.FAILED: 1,
}


class BackendError(PromptDSLError):
    """A backend cannot be found, loaded or reached, or it refused a request.

    ``kind`` (a :class:`BackendErrorKind`) says what happened and decides ``exit_code``
    through :data:`BACKEND_EXIT_CODES`. Plugins that only pass ``exit_code`` get ``failed``
    for 1 and ``config`` otherwise (2, the root's default).
    """

    def __init__(
        self,
        message: str,
        *,
        backend: str | None = None,
        model: str | None = None,
        kind: BackendErrorKind | None = None,
        exit_code: int | None = None,
    ) -> None:
        if kind is None:
            kind = BackendErrorKind.FAILED if exit_code == 1 else BackendErrorKind.CONFIG
        super().__init__(message, exit_code=BACKEND_EXIT_CODES[kind] if exit_code is None else exit_code)
        self.backend = backend
        self.model = model
        self.kind = kind

    def _text(self) -> str:
        return f"{self.backend}: {self.message}" if self.backend else self.message


class OutputError(PromptDSLError):
    """The model answered, but the answer does not fit the spec's output."""

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        spec: str | None = None,
        input: Any = None,
        raw: str | None = None,
    ) -> None:
        super().__init__(message)
        self.spec = spec
        self.input = input
        self.raw = raw

    def _text(self) -> str:
        where = f"{self.spec}: " if self.spec else ""
        raw = "" if self.raw is None else f"; raw text: {quote(self.raw, 200)}"
        inp = "" if self.input is None else f"; input: {quote(self.input, 200)}"
        return f"{where}{self.message}{inp}{raw}"


def clip(text: str, limit: int) -> str:
    """At most ``limit`` characters, the cut marked with an ellipsis (the one clipping rule)."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def one_line(text: str, limit: int | None = None) -> str:
    """Whitespace (newlines too) collapsed to single spaces, clipped to ``limit`` when given."""
    flat = " ".join(text.split())
    return flat if limit is None else clip(flat, limit)


# ---------------------------------------------------------------------------- quoting untrusted text

#: Characters that would break a one-line message or drive a terminal: C0/C1 controls, DEL,
#: line/paragraph separators, bidi overrides, and lone surrogates.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def escape(text: str) -> str:
    """``text`` with every control character (newline, NUL, ESC...) written as an escape."""
    return _UNSAFE.sub(lambda m: m.group().encode("unicode_escape", "backslashreplace").decode("ascii"), text)


def quote(value: Any, limit: int = 60, *, python: bool = False) -> str:
    """A value as an error message may show it: quoted, escaped, at most ``limit`` characters;
    written as JSON (what a spec's author writes), or as Python (``python``: a plugin's attributes).

    Messages name what is wrong; they must never replay a file (``extends: /etc/shadow``) or a
    multi-megabyte value, nor let a value's newlines or ANSI codes forge further lines.
    """
    text = value if isinstance(value, str) else repr(value) if python else _json_text(value)
    text = clip(escape(text), limit)
    return f"'{text}'" if isinstance(value, str) else text


def _json_text(value: Any) -> str:
    """A value as the spec's author wrote it (JSON: ``true``, ``null``, ``{"a": 1}``); repr for what
    JSON cannot hold. Only a short prefix is ever shown, so a huge value is cut before it is written."""
    if isinstance(value, (dict, list, tuple, bool, int, float)) or value is None:
        try:
            return json.dumps(value, ensure_ascii=False, allow_nan=True)[:100_000]
        except (TypeError, ValueError, RecursionError):
            pass
    return repr(value)


# ---------------------------------------------------------------------------- secrets

_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@'\"]*):([^@\s/'\"]+)@")
#: a URL whose user info is one long word (``https://TOKEN@host``, as GitHub and some gateways take a token)
_URL_TOKEN = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^/\s:@'\"]{12,})@")
#: ``prefix-`` or ``prefix_`` then a long body with a digit: sk-..., gsk_..., ghp_..., xoxb-..., hf_...
_PREFIXED_KEY = re.compile(r"(?<![A-Za-z0-9])([A-Za-z][A-Za-z0-9]{0,11}[-_])([A-Za-z0-9*][A-Za-z0-9_*\-]{5,})")
#: a known vendor's key prefix, then a body with an unbroken run of 16+ letters and digits holding a
#: digit (``sk-1234...``, any case; ``hf_smollm2_135m_q8`` is a file name, not a key)
_VENDOR_KEY = re.compile(
    r"(?<![A-Za-z0-9])((?:sk|gsk|ghp|gho|ghu|ghs|ghr|github_pat|xox[abeprs]|hf|glpat|pplx|r8)[-_])([A-Za-z0-9_\-]{16,})"
)
_LONG_RUN = re.compile(r"[A-Za-z0-9]{16,}")
_AWS_KEY = re.compile(r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[0-9A-Z]{16}(?![A-Za-z0-9])")
_BARE_TOKEN = re.compile(r"(?<![A-Za-z0-9_\-])[A-Za-z0-9_\-]{32,}(?![A-Za-z0-9_\-])")
_ASSIGNED = re.compile(
    r"(?i)\b((?:api[_-]?key|access[_-]?token|auth[_-]?token|secret|password|passwd|token|authorization)"
    r"[\"']?\s*[:=]\s*[\"']?(?:bearer\s+)?)([^\s\"',;}]{3,})"
)
_BEARER = re.compile(r"(?i)\b(bearer\s+)([^\s\"',;}]{3,})")
#: Environment variables whose values are secrets by their name (masked wherever they appear).
_SECRET_NAME = re.compile(r"(?i)(key|token|secret|passw|credential|auth)")
MIN_SECRET_LEN = 4  # shorter values are too common in ordinary text to mask

#: A piece of a registered key this long or longer is masked too ("invalid key sk-proj-abc...").
MIN_SECRET_PIECE = 8

#: Registered secrets: value -> also masked in any case and in pieces (a generated key).
_known: dict[str, bool] = {}
_known_lock = threading.Lock()


def register_secret(value: str | None, *, key: bool = False) -> None:
    """Remember a secret (say, a password a backend read) so no message or file ever shows it.

    ``key``: it is an API key, which servers echo in another case or cut short, so it is also
    masked in any letter case and in pieces of :data:`MIN_SECRET_PIECE`+ characters, when it
    looks generated (16+ characters, letters and digits): a placeholder such as
    ``sk-no-key-required`` or ``EMPTY`` would take ordinary words out of every message. Values
    that look like settings or words (``none``, ``EMPTY``) are not registered at all."""
    if value and _looks_secret(value):
        pieces = key and _generated(value)
        with _known_lock:
            _known[value] = _known.get(value, False) or pieces


def _generated(value: str) -> bool:
    return len(value) >= 16 and any(c.isdigit() for c in value) and any(c.isalpha() for c in value)


def _key_like(body: str) -> bool:
    """A token body that looks generated rather than written: digits and letters, mixed or long."""
    if "*" in body:  # a key a server echoed half-masked ("sk-abc***wxyz")
        return True
    has_alpha = any(c.isalpha() for c in body)
    mixed_case = any(c.isupper() for c in body) and any(c.islower() for c in body)
    # One long random run with a digit in it; words joined by dashes (model names) are not keys.
    runs = [r for r in re.split(r"[-_]", body) if len(r) >= 12 and any(c.isdigit() for c in r)]
    return bool(runs) and has_alpha and (mixed_case or len(body) >= 32)


#: Values of secret-named variables that are settings, not secrets (TOKENIZERS_PARALLELISM=false).
_PLAIN_VALUES = frozenset({"true", "false", "yes", "no", "none", "null", "auto", "on", "off", "default", "disabled"})


def _looks_secret(value: str) -> bool:
    if len(value) < MIN_SECRET_LEN or value.isdigit() or value.lower() in _PLAIN_VALUES:
        return False
    return not (value.isalpha() and len(value) < 8)  # short plain words are settings


def _secrets_in_environment() -> list[str]:
    return [v for k, v in os.environ.items() if _SECRET_NAME.search(k) and _looks_secret(v)]


def _lower_in_place(text: str) -> str:
    """``text`` lower-cased character by character, positions kept (``'İ'.lower()`` is two characters)."""
    low = text.lower()
    return low if len(low) == len(text) else "".join(c if len(c.lower()) != 1 else c.lower() for c in text)


def _piece_spans(text: str, secret: str) -> list[tuple[int, int]]:
    """Where ``text`` holds a piece of ``secret`` of :data:`MIN_SECRET_PIECE`+ characters, in any case.

    For registered keys only: any long piece of one is a leak, whereas the values of
    secret-named variables may be paths or words that ordinary text shares pieces with.
    """
    low, secret = _lower_in_place(text), secret.lower()
    if len(secret) < MIN_SECRET_PIECE:
        return []
    grams = {secret[i:i + MIN_SECRET_PIECE] for i in range(len(secret) - MIN_SECRET_PIECE + 1)}
    spans: list[tuple[int, int]] = []
    i = 0
    while i <= len(low) - MIN_SECRET_PIECE:
        if low[i:i + MIN_SECRET_PIECE] not in grams:
            i += 1
            continue
        end = i + MIN_SECRET_PIECE
        while end < len(low) and low[i:end + 1] in secret:
            end += 1
        spans.append((i, end))
        i = end
    return spans


def mask_secrets(text: str) -> str:
    """``text`` with every secret replaced by ``***``: the one masking rule for messages and files.

    Masked: values registered with :func:`register_secret` (a key also in any letter case and
    in pieces of :data:`MIN_SECRET_PIECE` characters or more) and values of environment variables
    named like secrets (``*KEY*``, ``*TOKEN*``, ``*SECRET*``, ``*PASSWORD*``, any length from 4
    characters), passwords in URLs (``http://user:***@host``) and user infos of 12 characters or
    more (``https://***@host``: a token), ``Bearer``/``api_key=`` values,
    and key-like strings of any vendor (``sk-``, ``gsk_``, ``ghp_``, ``xoxb-``, ``AKIA``..., or a
    long mixed-case token).
    """
    with _known_lock:
        known = dict(_known)
    keys = [secret for secret, pieces in known.items() if pieces]
    for secret in sorted({*known, *_secrets_in_environment()}, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "***")
    for secret in keys:  # servers echo keys in another case, or cut short
        spans = sorted(_piece_spans(text, secret))
        if spans:
            text = _replace_spans(text, spans)
    text = _URL_PASSWORD.sub(r"\1:***@", text)
    text = _URL_TOKEN.sub(r"\1***@", text)
    text = _ASSIGNED.sub(lambda m: m.group(1) + "***", text)
    text = _BEARER.sub(lambda m: m.group(1) + "***", text)
    text = _AWS_KEY.sub("***", text)
    text = _VENDOR_KEY.sub(lambda m: m.group(1) + "***" if _generated_run(m.group(2)) else m.group(0), text)
    text = _PREFIXED_KEY.sub(lambda m: m.group(1) + "***" if _key_like(m.group(2)) else m.group(0), text)
    return _BARE_TOKEN.sub(lambda m: "***" if _key_like(m.group(0)) and _mixed(m.group(0)) else m.group(0), text)


def _replace_spans(text: str, spans: list[tuple[int, int]]) -> str:
    """``text`` with each of the sorted, non-overlapping ``spans`` replaced by ``***``, in one pass."""
    out, at = [], 0
    for start, end in spans:
        out += [text[at:start], "***"]
        at = end
    return "".join([*out, text[at:]])


def _generated_run(body: str) -> bool:
    return any(any(c.isdigit() for c in run) for run in _LONG_RUN.findall(body))


def _mixed(token: str) -> bool:
    return any(c.isupper() for c in token) and any(c.islower() for c in token) and any(c.isdigit() for c in token)
