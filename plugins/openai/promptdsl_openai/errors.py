"""SDK and transport exceptions -> one clear :class:`BackendError` line.

Exit code 2 when the user can fix it (wrong URL, no server, bad key, unknown
model, prompt too long); 1 when the run failed at the server (timeouts, rate
limits, 5xx, a connection dropped mid-answer). The key never appears in a
message: the plugin registers it (:func:`promptdsl.errors.register_secret`), so
it is masked out of anything the server sends back, in any case or in pieces.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import openai

from promptdsl.errors import BackendError, BackendErrorKind, mask_secrets, one_line, quote

from .config import Settings
from .replies import Malformed, NotJSON
from .transport import CompressedReply, DeadlinePassed, LostMidReply, ReplyTooLarge, Stalled

_CONTEXT_HINT = re.compile(r"context (length|window)|maximum context|too many tokens|context_length", re.I)


def _one_line(text: str, limit: int = 300) -> str:
    """First meaningful line of a server message, whitespace collapsed, clipped."""
    return one_line(next((ln for ln in str(text).splitlines() if ln.strip()), ""), limit)


def server_message(exc: openai.APIError) -> str:
    """The server's own error message (from the JSON body when there is one)."""
    body: Any = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return _one_line(inner["message"])
        if isinstance(body.get("message"), str):
            return _one_line(body["message"])
        if isinstance(body.get("detail"), str):
            return _one_line(body["detail"])
    msg = exc.message
    msg = re.sub(r"^Error code: \d+ - ", "", msg)
    return _one_line(msg)


def _retries(settings: Settings) -> str:
    n = settings.max_retries
    return f"{n} retr{'y' if n == 1 else 'ies'}"


Handler = Callable[[BaseException, Settings, "str | None", str], "tuple[BackendErrorKind, str]"]


def _timeout(exc: BaseException, settings: Settings, model: str | None, during: str) -> tuple[BackendErrorKind, str]:
    if during == "stream" or isinstance(exc, Stalled):  # a stall mid-answer is not retried
        return BackendErrorKind.TIMEOUT, (f"the answer from {settings.where} stalled: nothing came for "
                                          f"{settings.timeout:g}s; raise it with -o timeout=SECONDS")
    return BackendErrorKind.TIMEOUT, (f"{during} to {settings.where} timed out after {settings.timeout:g}s "
                                      f"({_retries(settings)}); raise it with -o timeout=SECONDS")


def _deadline(exc: BaseException, settings: Settings, model: str | None, during: str) -> tuple[BackendErrorKind, str]:
    what = "the answer from" if during == "stream" else f"{during} to"
    return BackendErrorKind.TIMEOUT, (f"{what} {settings.where} took longer than {settings.deadline:g}s in all "
                                      "(the deadline); raise it with -o deadline=SECONDS")


def _too_large(exc: BaseException, settings: Settings, model: str | None, during: str) -> tuple[BackendErrorKind, str]:
    assert isinstance(exc, ReplyTooLarge)
    size = f"{exc.limit / (1 << 20):g} MiB" if exc.limit >= 1 << 20 else f"{exc.limit} bytes"
    return BackendErrorKind.FAILED, f"{settings.where} sent more than {size} in one reply ({during}); stopped reading"


def _compressed(exc: BaseException, settings: Settings, model: str | None, during: str) -> tuple[BackendErrorKind, str]:
    assert isinstance(exc, CompressedReply)
    return BackendErrorKind.FAILED, (f"{settings.where} sent a compressed reply (Content-Encoding "
                                     f"{quote(exc.encoding, 30)}) although none was asked for ({during})")


def _malformed(exc: BaseException, settings: Settings, model: str | None, during: str) -> tuple[BackendErrorKind, str]:
    if isinstance(exc, NotJSON):
        return BackendErrorKind.FAILED, f"{settings.where} {exc}"
    if isinstance(exc, json.JSONDecodeError):
        return BackendErrorKind.FAILED, (f"{settings.where} sent text that is not JSON where an OpenAI reply "
                                         f"belongs ({during}): {exc.msg} at line {exc.lineno} column {exc.colno}")
    return BackendErrorKind.FAILED, f"{settings.where} sent a reply that is not OpenAI-shaped ({during}): {exc}"


def _connection(exc: BaseException, settings: Settings, model: str | None, during: str) -> tuple[BackendErrorKind, str]:
    cause = exc.__cause__ or exc.__context__
    detail = _one_line(str(cause)) if cause is not None else ""
    if during == "stream" or isinstance(exc, LostMidReply):
        return BackendErrorKind.STREAM, (f"the connection to {settings.where} was lost mid-answer"
                                         + (f": {detail}" if detail else ""))
    return BackendErrorKind.CONNECT, (f"cannot connect to {settings.where}" + (f" ({detail})" if detail else "")
                                      + "; is the server running? (set -o base_url=... or OPENAI_BASE_URL)")


def _auth(exc: BaseException, settings: Settings, model: str | None, during: str) -> tuple[BackendErrorKind, str]:
    where = settings.where
    if settings.key_withheld:
        return BackendErrorKind.AUTH, f"{where} wants an API key (401 unauthorized): {settings.key_withheld}"
    source = f" in {settings.key_source}" if settings.key_source else " (no key set: OPENAI_API_KEY)"
    return BackendErrorKind.AUTH, f"{where} rejected the API key{source} (401 unauthorized)"


def _permission(exc: BaseException, settings: Settings, model: str | None, during: str) -> tuple[BackendErrorKind, str]:
    assert isinstance(exc, openai.APIError)
    return BackendErrorKind.AUTH, f"permission denied by {settings.where} (403): {server_message(exc)}"


def _not_found(exc: BaseException, settings: Settings, model: str | None, during: str) -> tuple[BackendErrorKind, str]:
    assert isinstance(exc, openai.APIError)
    return BackendErrorKind.NOT_FOUND, (f"not found at {settings.where} (404; unknown model {quote(model or '')} "
                                        f"or endpoint?): {server_message(exc)}")


def _rate_limit(exc: BaseException, settings: Settings, model: str | None, during: str) -> tuple[BackendErrorKind, str]:
    assert isinstance(exc, openai.APIError)
    return BackendErrorKind.RATE_LIMIT, (f"rate limited by {settings.where} (429) after {_retries(settings)}: "
                                         f"{server_message(exc)}")


def _status(exc: BaseException, settings: Settings, model: str | None, during: str) -> tuple[BackendErrorKind, str]:
    assert isinstance(exc, openai.APIStatusError)
    msg = server_message(exc)
    status = exc.status_code
    if exc.code == "context_length_exceeded" or _CONTEXT_HINT.search(msg):
        return BackendErrorKind.CONTEXT_LENGTH, (f"the prompt is too long for the model's context ({status}): "
                                                 f"{msg.rstrip('.')}; shorten the input or use fewer examples "
                                                 "(fewshot.k)")
    if status >= 500:
        return BackendErrorKind.SERVER, f"server error {status} from {settings.where}: {msg}"
    return BackendErrorKind.BAD_REQUEST, f"{settings.where} refused the request ({status}): {msg}"


def _api(exc: BaseException, settings: Settings, model: str | None, during: str) -> tuple[BackendErrorKind, str]:
    """An error without an HTTP status, e.g. an error event inside a stream."""
    assert isinstance(exc, openai.APIError)
    msg = server_message(exc)
    if _CONTEXT_HINT.search(msg):
        return BackendErrorKind.CONTEXT_LENGTH, f"the prompt is too long for the model's context: {msg}"
    return BackendErrorKind.FAILED, f"{during} failed: {msg}"


def _sdk(exc: BaseException, settings: Settings, model: str | None, during: str) -> tuple[BackendErrorKind, str]:
    return BackendErrorKind.CONFIG, _one_line(str(exc))


#: SDK exception -> handler, looked up along the exception's MRO (the most specific class wins),
#: as httpx maps transport errors to its own kinds.
HANDLERS: dict[type[BaseException], Handler] = {
    DeadlinePassed: _deadline,
    ReplyTooLarge: _too_large,
    CompressedReply: _compressed,
    Malformed: _malformed,
    json.JSONDecodeError: _malformed,
    openai.APITimeoutError: _timeout,
    openai.APIConnectionError: _connection,
    openai.AuthenticationError: _auth,
    openai.PermissionDeniedError: _permission,
    openai.NotFoundError: _not_found,
    openai.RateLimitError: _rate_limit,
    openai.APIStatusError: _status,
    openai.APIError: _api,
    openai.OpenAIError: _sdk,
}


def map_error(exc: BaseException, settings: Settings, model: str | None, *, during: str = "request") -> BackendError:
    """Turn any exception from the SDK (or its HTTP layer) into a BackendError of the right kind."""
    if isinstance(exc, BackendError):
        return exc
    handler = next((HANDLERS[cls] for cls in type(exc).__mro__ if cls in HANDLERS), None)
    if handler is None:
        kind, message = BackendErrorKind.FAILED, f"{during} failed: {type(exc).__name__}: {_one_line(str(exc))}"
    else:
        kind, message = handler(exc, settings, model, during)
    return BackendError(mask_secrets(message), backend="openai", model=model, kind=kind)
