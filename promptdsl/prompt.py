"""The compiled prompt: what the compiler hands to a backend."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

Mode = Literal["chat", "completion"]


@dataclass(frozen=True)
class Message:
    """One chat message."""

    role: Literal["system", "user", "assistant"]
    content: str

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True)
class Prompt:
    """A compiled prompt: one text (completion mode) or a message list (chat mode).

    ``continuation_prefix`` is what joins the prompt to an answer in this mode
    (the few-shot target delimiter in completion mode, empty in chat mode);
    scoring a choice scores ``continuation_prefix + choice``.
    """

    mode: Mode
    text: str = ""
    messages: tuple[Message, ...] = ()
    continuation_prefix: str = ""

    def to_json(self) -> str:
        """Stable JSON: the messages (chat) or ``{"prompt": text}`` (completion)."""
        payload: Any
        if self.mode == "chat":
            payload = [m.to_dict() for m in self.messages]
        else:
            payload = {"prompt": self.text}
        return json.dumps(payload, ensure_ascii=False, indent=2)

    def render(self) -> str:
        """Human-readable text of the prompt, for display."""
        if self.mode == "completion":
            return self.text
        return "\n\n".join(f"[{m.role}]\n{m.content}" for m in self.messages)

    def cache_key(self) -> str:
        """A compact, exact identity of the prompt (for result caches)."""
        body = (
            [m.to_dict() for m in self.messages] if self.mode == "chat" else self.text
        )
        return json.dumps(
            [self.mode, body, self.continuation_prefix],
            ensure_ascii=False,
            separators=(",", ":"),
        )
