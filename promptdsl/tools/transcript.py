"""Tool turns written as plain messages: how a model without native tool calls sees tools, calls and results.

Both paths use it for the final answer (native servers differ in how, or
whether, they show tool results to the model; plain text reaches every model).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ..prompt import Message, Prompt
from .base import Step, Tool

FINAL_HINT = "Now answer the question."


def call_text(tool: str, arguments: Any) -> str:
    """A call as the model writes it in the prompted path."""
    return json.dumps({"tool": tool, "arguments": arguments}, ensure_ascii=False)


def tools_block(tools: Sequence[Tool]) -> str:
    """The tool list for the system message: each tool, what it does, and its arguments."""
    lines = ["You can call these tools:"]
    for t in tools:
        args = json.dumps(t.parameters.get("properties", {}), ensure_ascii=False)
        lines.append(f"- {t.name}: {t.description} Arguments: {args}")
    lines.append('To call a tool, reply with one JSON object: {"tool": <name>, "arguments": {...}}.')
    return "\n".join(lines)


def _with_system(prompt: Prompt, block: str) -> list[Message]:
    messages = list(prompt.messages)
    if messages and messages[0].role == "system":
        messages[0] = Message("system", f"{messages[0].content}\n\n{block}")
    else:
        messages.insert(0, Message("system", block))
    return messages


def _append_user(messages: list[Message], text: str) -> list[Message]:
    if messages and messages[-1].role == "user":
        messages[-1] = Message("user", f"{messages[-1].content}\n\n{text}")
    else:
        messages.append(Message("user", text))
    return messages


def render(prompt: Prompt, tools: Sequence[Tool], steps: Sequence[Step], tail: str | None = None) -> Prompt:
    """The prompt with the tool list, each step as a call and its result, and an optional closing request."""
    if prompt.mode == "completion":
        text = f"{tools_block(tools)}\n\n{prompt.text}" if tools else prompt.text
        for s in steps:
            text += f"\nTool call: {call_text(s.tool, s.arguments)}\nResult: {s.feedback()}"
        if tail:
            text += f"\n{tail}"
        return replace(prompt, text=text)
    messages = _with_system(prompt, tools_block(tools)) if tools else list(prompt.messages)
    for s in steps:
        messages.append(Message("assistant", call_text(s.tool, s.arguments)))
        messages.append(Message("user", f"{s.tool} returned: {s.feedback()}"))
    if tail:
        _append_user(messages, tail)
    return replace(prompt, messages=tuple(messages))


def final_prompt(prompt: Prompt, steps: Sequence[Step]) -> Prompt:
    """The last call: the results so far, no tool list, and a request to answer."""
    if not steps:
        return prompt
    return render(prompt, (), steps, FINAL_HINT if prompt.mode == "chat" else None)
