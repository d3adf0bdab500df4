"""SDK and transport exceptions -> one clear :class:`BackendError` line.

Exit code 2 when the user can fix it (wrong URL, no server, bad key, unknown
model, prompt too long); 1 when the run failed at the server (timeouts, rate
limits, 5xx, a connection dropped mid-answer). The key never appears in a
message: it is masked out of anything the server sends back.
"""

from __future__ import annotations

import re
from typing import Any

import openai

from promptdsl.errors import BackendError

from .config import Settings

_CONTEXT_HINT = re.compile(r"context (length|window)|maximum context|too many tokens|context_length", re.I)


def _one_line(text: str, limit: int = 300) -> str:
    """First meaningful line of a server message, whitespace collapsed, clipped."""
    line = next((ln.strip() for ln in str(text).splitlines() if ln.strip()), "")
    line = re.sub(r"\s+", " ", line)
    return line if len(line) <= limit else line[: limit - 1] + "…"


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


def _mask(text: str, settings: Settings) -> str:
    key = settings.api_key
    if key and len(key) >= 4 and key in text:
        text = text.replace(key, "***")
    # OpenAI echoes keys back partially masked ("sk-abc***wxyz"); drop those fragments too.
    return re.sub(r"\bsk-[\w*-]{6,}", "***", text)


def map_error(exc: BaseException, settings: Settings, model: str | None, *, during: str = "request") -> BackendError:
    """Turn any exception from the SDK (or its HTTP layer) into a BackendError."""
    where = settings.base_url

    def err(message: str, code: int) -> BackendError:
        return BackendError(_mask(message, settings), backend="openai", model=model, exit_code=code)

    if isinstance(exc, BackendError):
        return exc
    if isinstance(exc, openai.APITimeoutError):
        return err(
            f"{during} to {where} timed out after {settings.timeout:g}s "
            f"({settings.max_retries} retries); raise it with -o timeout=SECONDS",
            1,
        )
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        detail = _one_line(str(cause)) if cause is not None else ""
        if during == "stream":
            return err(f"the connection to {where} was lost mid-answer" + (f": {detail}" if detail else ""), 1)
        return err(
            f"cannot connect to {where}" + (f" ({detail})" if detail else "")
            + "; is the server running? (set -o base_url=... or OPENAI_BASE_URL)",
            2,
        )
    if isinstance(exc, openai.AuthenticationError):
        if settings.key_withheld:
            return err(f"{where} wants an API key (401 unauthorized): {settings.key_withheld}", 2)
        source = f" in {settings.key_source}" if settings.key_source else " (no key set: OPENAI_API_KEY)"
        return err(f"{where} rejected the API key{source} (401 unauthorized)", 2)
    if isinstance(exc, openai.PermissionDeniedError):
        return err(f"permission denied by {where} (403): {server_message(exc)}", 2)
    if isinstance(exc, openai.NotFoundError):
        return err(f"not found at {where} (404; unknown model '{model}' or endpoint?): {server_message(exc)}", 2)
    if isinstance(exc, openai.RateLimitError):
        return err(f"rate limited by {where} (429) after {settings.max_retries} retries: {server_message(exc)}", 1)
    if isinstance(exc, openai.APIStatusError):
        msg = server_message(exc)
        status = exc.status_code
        if exc.code == "context_length_exceeded" or _CONTEXT_HINT.search(msg):
            return err(
                f"the prompt is too long for the model's context ({status}): {msg.rstrip('.')}; "
                "shorten the input or use fewer examples (fewshot.k)",
                2,
            )
        if status >= 500:
            return err(f"server error {status} from {where}: {msg}", 1)
        return err(f"{where} refused the request ({status}): {msg}", 2)
    if isinstance(exc, openai.APIError):  # e.g. an error event inside a stream
        msg = server_message(exc)
        if _CONTEXT_HINT.search(msg):
            return err(f"the prompt is too long for the model's context: {msg}", 2)
        return err(f"{during} failed: {msg}", 1)
    if isinstance(exc, openai.OpenAIError):
        return err(_one_line(str(exc)), 2)
    return err(f"{during} failed: {type(exc).__name__}: {_one_line(str(exc))}", 1)
