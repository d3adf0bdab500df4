"""A conversation as plain data: what the chat view shows, history stores and export writes.

Kept free of Textual so history, export and prompt building are testable on their own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from promptdsl.errors import clip
from promptdsl.prompt import Message, Prompt

Role = Literal["system", "user", "assistant"]
#: ``length``: the reply stopped at max_tokens (it can be continued); ``error`` on a user turn: not sent.
Status = Literal["done", "streaming", "cancelled", "error", "interrupted", "length"]

DEFAULT_SYSTEM = "You are a helpful assistant."
TITLE_CHARS = 60


@dataclass(eq=False)
class Turn:
    """One message of the conversation; ``id`` is its history row once saved. Compared by identity."""

    role: Role
    content: str
    status: Status = "done"
    id: int | None = None
    backend: str = ""  # who wrote a reply (set when it starts)
    model: str = ""
    note: str = ""  # why it ended badly (the backend's error), kept in history
    steps: list[dict[str, Any]] = field(default_factory=list)  # tool calls made for this reply (Step.to_dict)

    @property
    def in_prompt(self) -> bool:
        """Whether the model should see this turn next time (failed empty replies and unsent messages are not)."""
        if self.role == "user" and self.status == "error":
            return False
        return bool(self.content.strip())

    @property
    def author(self) -> str:
        """``model (backend)`` of a reply, or '' when unknown."""
        if not self.model:
            return self.backend
        return f"{self.model} ({self.backend})" if self.backend else self.model


@dataclass
class Conversation:
    """A chat: system prompt plus turns, and where it came from."""

    id: int | None = None
    title: str = ""
    system: str = DEFAULT_SYSTEM
    backend: str = ""  # the settings it continues with (restored on resume)
    model: str = ""
    options: dict[str, Any] = field(default_factory=dict)  # generation and backend options (-o)
    tools: list[str] = field(default_factory=list)  # the tools it may call, as -T gives them
    tool_choice: str = "auto"  # "required": every reply calls a tool first
    turns: list[Turn] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)

    def messages(self, upto: int | None = None) -> tuple[Message, ...]:
        """The chat messages the model sees: system prompt, then turns before index ``upto``."""
        out: list[Message] = []
        if self.system.strip():
            out.append(Message("system", self.system))
        out += [Message(t.role, t.content) for t in self.prompt_turns(upto)]
        return tuple(out)

    def prompt_turns(self, upto: int | None = None) -> list[Turn]:
        """The turns (before ``upto``) that go into the prompt, in order."""
        return [t for t in self.turns[:upto] if t.role != "system" and t.in_prompt]

    def prompt(self, upto: int | None = None) -> Prompt:
        return Prompt(mode="chat", messages=self.messages(upto))

    def last(self, role: Role) -> Turn | None:
        for turn in reversed(self.turns):
            if turn.role == role:
                return turn
        return None


def make_title(text: str) -> str:
    """A one-line title from the first user message."""
    return clip(next((ln.strip() for ln in text.splitlines() if ln.strip()), ""), TITLE_CHARS)
