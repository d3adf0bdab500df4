"""Reading server replies without trusting their shape.

The SDK builds its reply objects without validating them, so a server (or a login page at
``base_url``) can put anything anywhere: ``choices: "oops"``, ``content: 42``, a tool call
named ``5``. Every field promptdsl reads goes through here; anything not OpenAI-shaped is a
:class:`Malformed` naming the field, which :mod:`.errors` turns into one line.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from promptdsl.backend import TokenLogprob
from promptdsl.errors import quote


class Malformed(ValueError):
    """A reply promptdsl cannot read; the message says what was wrong (never the whole reply)."""


class NotJSON(Malformed):
    """A reply that is not JSON at all (a login page at ``base_url``, say); the message starts with a verb."""


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return f"text ({quote(value, 40)})"
    if isinstance(value, (list, tuple)):
        return "a list"
    return "an object" if isinstance(value, Mapping) or hasattr(value, "__dict__") else type(value).__name__


def _field(obj: Any, name: str) -> Any:
    """``obj.name`` for an SDK object, ``obj[name]`` for a plain mapping, else None."""
    if isinstance(obj, Mapping):
        return obj.get(name)
    if isinstance(obj, (str, bytes, int, float, list, tuple)) or obj is None:
        return None
    return getattr(obj, name, None)


def _is_object(value: Any) -> bool:
    return isinstance(value, Mapping) or (value is not None and hasattr(value, "__dict__")
                                          and not isinstance(value, (str, bytes, int, float, list, tuple)))


def not_json(content_type: str, endpoint: str, wanted: str = "an OpenAI JSON reply", *, cut: bool = False) -> NotJSON:
    """``cut``: the body is JSON that stops before its end (the connection closed mid-reply)."""
    if cut:
        return NotJSON(f"answered {endpoint} with JSON that stops mid-way: the reply was cut off (did the server "
                       "stop or crash, or a proxy close the connection?)")
    shown = quote(content_type.split(";")[0].strip(), 40) if content_type.strip() else "no Content-Type"
    if "json" in content_type.lower():
        return NotJSON(f"answered {endpoint} with a body that is not valid JSON (Content-Type {shown})")
    return NotJSON(f"answered {endpoint} with {shown}, not {wanted} (is base_url the API root, e.g. "
                   "http://host:8000/v1?)")


def first_choice(reply: Any, what: str = "reply") -> Any:
    """The reply's first choice (None when ``choices`` is empty)."""
    if not _is_object(reply):
        raise Malformed(f"the {what} is {_kind(reply)}, not a JSON object")
    choices = _field(reply, "choices")
    if not isinstance(choices, list):
        error = _field(reply, "error")
        message = _field(error, "message") if _is_object(error) else error
        if choices is None and isinstance(message, str):
            raise Malformed(f"the {what} is an error: {quote(message, 200)}")
        raise Malformed(f"the {what}'s 'choices' is {_kind(choices)}, not a list")
    if not choices:
        return None
    choice = choices[0]
    if not _is_object(choice):
        raise Malformed(f"the {what}'s choices[0] is {_kind(choice)}, not an object")
    return choice


def _text(value: Any, where: str) -> str:
    """Message content: text, null, or a list of ``{"type": "text", "text": ...}`` parts."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(_field(p, "text"), str) for p in value):
        return "".join(_field(p, "text") for p in value)
    raise Malformed(f"{where} is {_kind(value)}, not text")


def message_of(choice: Any) -> Any:
    message = _field(choice, "message")
    if not _is_object(message):
        raise Malformed(f"choices[0].message is {_kind(message)}, not an object")
    return message


def reply_text(reply: Any, mode: str) -> str:
    """The text of a non-streamed reply ("" when there is no choice)."""
    choice = first_choice(reply)
    if choice is None:
        return ""
    if mode == "chat":
        return _text(_field(message_of(choice), "content"), "choices[0].message.content")
    return _text(_field(choice, "text"), "choices[0].text")


def reply_finish(reply: Any) -> str | None:
    """Why a non-streamed reply ended (``stop``, ``length``, ...), when it says."""
    choice = first_choice(reply)
    reason = None if choice is None else _field(choice, "finish_reason")
    return reason if isinstance(reason, str) else None


def chunk_piece(chunk: Any, mode: str) -> tuple[str, str | None]:
    """(the text a streamed chunk adds, why the answer ended if this chunk ends it)."""
    choice = first_choice(chunk, "streamed chunk")
    if choice is None:
        return "", None
    reason = _field(choice, "finish_reason")
    finished = None if reason is None else str(reason)
    if mode == "chat":
        delta = _field(choice, "delta")
        if delta is None:
            return "", finished
        if not _is_object(delta):
            raise Malformed(f"a streamed chunk's choices[0].delta is {_kind(delta)}, not an object")
        return _text(_field(delta, "content"), "a streamed chunk's delta.content"), finished
    return _text(_field(choice, "text"), "a streamed chunk's text"), finished


def _logprob(value: Any, where: str) -> float:
    """A number (NaN and infinities are the runner's to judge, as for every backend)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Malformed(f"{where} is {_kind(value)}, not a number")
    try:
        return float(value)
    except OverflowError:  # an integer of hundreds of digits
        return math.inf if value > 0 else -math.inf


def logprob_tokens(reply: Any, mode: str) -> list[TokenLogprob] | None:
    """Each generated token with its log-probability; None when the reply has none."""
    choice = first_choice(reply)
    logprobs = None if choice is None else _field(choice, "logprobs")
    if logprobs is None:
        return None
    if not _is_object(logprobs):
        raise Malformed(f"choices[0].logprobs is {_kind(logprobs)}, not an object")
    out: list[TokenLogprob] = []
    if mode == "chat":
        content = _field(logprobs, "content") or []
        if not isinstance(content, list):
            raise Malformed(f"choices[0].logprobs.content is {_kind(content)}, not a list")
        for i, item in enumerate(content):
            token = _field(item, "token")
            if not isinstance(token, str):
                raise Malformed(f"choices[0].logprobs.content[{i}].token is {_kind(token)}, not text")
            out.append(TokenLogprob(token, _logprob(_field(item, "logprob"), f"logprobs.content[{i}].logprob")))
        return out
    tokens = _field(logprobs, "tokens") or []
    values = _field(logprobs, "token_logprobs") or []
    if not isinstance(tokens, list) or not isinstance(values, list):
        raise Malformed("choices[0].logprobs.tokens and .token_logprobs must be lists")
    for i, (token, value) in enumerate(zip(tokens, values, strict=False)):
        if not isinstance(token, str):
            raise Malformed(f"choices[0].logprobs.tokens[{i}] is {_kind(token)}, not text")
        if value is not None:
            out.append(TokenLogprob(token, _logprob(value, f"logprobs.token_logprobs[{i}]")))
    return out


def tool_calls(reply: Any) -> tuple[str, list[tuple[str, Any, str]]] | None:
    """(the message's text, its calls as (name, arguments, id)); None when the reply has no choice.

    A call without a function name cannot be answered or fed back, so it is dropped; a reply
    whose every call lacks one is :class:`Malformed`. Arguments stay as sent (text, an object,
    anything): the tool loop tells the model when they are not a JSON object.
    """
    choice = first_choice(reply)
    if choice is None:
        return None
    message = message_of(choice)
    raw = _field(message, "tool_calls")
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise Malformed(f"choices[0].message.tool_calls is {_kind(raw)}, not a list")
    calls: list[tuple[str, Any, str]] = []
    problem = ""
    for call in raw:
        function = _field(call, "function")
        name = _field(function, "name")
        if not isinstance(name, str) or not name.strip():
            problem = problem or (f"a call is {_kind(call)}" if not _is_object(call)
                                  else f"function is {_kind(function)}" if not _is_object(function)
                                  else f"function.name is {_kind(name)}")
            continue
        call_id = _field(call, "id")
        calls.append((name, _field(function, "arguments"), call_id if isinstance(call_id, str) else ""))
    if raw and not calls:
        raise Malformed(f"no tool call in the reply names a tool ({problem})")
    return _text(_field(message, "content"), "choices[0].message.content"), calls


def model_id(page: Any) -> str | None:
    """The first model a ``/models`` listing names (None when it lists none)."""
    data = _field(page, "data") if _is_object(page) else None
    if not isinstance(data, list):
        raise Malformed(f"the model list's 'data' is {_kind(data)}, not a list")
    if not data:
        return None
    ident = _field(data[0], "id")
    if not isinstance(ident, str) or not ident.strip():
        raise Malformed(f"the model list's data[0].id is {_kind(ident)}, not a model name")
    return ident
