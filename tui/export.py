"""Export a conversation to a Markdown file (written atomically: never a half-written file)."""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path

from promptdsl.errors import PromptDSLError
from promptdsl.paths import data_dir

from .conversation import Conversation

ROLE_HEADINGS = {"user": "You", "assistant": "Assistant", "system": "System"}
STATUS_NOTES = {
    "cancelled": "stopped by the user",
    "interrupted": "interrupted: the app was closed while it streamed",
    "error": "the backend failed during this reply",
    "streaming": "still streaming when exported",
}


def hard_breaks(text: str) -> str:
    """Keep single line breaks as typed (Markdown would join them), except inside code fences."""
    out: list[str] = []
    fenced = False
    lines = text.rstrip().split("\n")
    for i, line in enumerate(lines):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            out.append(line)
            continue
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if not fenced and line.strip() and nxt.strip() and not nxt.lstrip().startswith(("```", "~~~")):
            line = line.rstrip() + "  "
        out.append(line)
    return "\n".join(out)


def to_markdown(conv: Conversation) -> str:
    """The conversation as a Markdown document (title, metadata, system prompt, turns)."""
    title = conv.title or "Conversation"
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(conv.created))
    lines = [f"# {title}", ""]
    meta = [f"started {when}"]
    if conv.backend:
        meta.append(f"backend `{conv.backend}`")
    if conv.model:
        meta.append(f"model `{conv.model}`")
    lines += ["*" + " · ".join(meta) + "*", ""]
    if conv.system.strip():
        lines += ["## System", "", hard_breaks(conv.system.strip()), ""]
    for turn in conv.turns:
        lines += [f"## {ROLE_HEADINGS[turn.role]}", "", hard_breaks(turn.content) or "*(no text)*", ""]
        note = STATUS_NOTES.get(turn.status)
        if note:
            lines += [f"*({note})*", ""]
    return "\n".join(lines).rstrip() + "\n"


def slug(text: str, limit: int = 40) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s[:limit].rstrip("-") or "conversation"


def default_export_path(conv: Conversation) -> Path:
    """``<data dir>/exports/<date>-<title slug>[-<id>].md``."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime())
    suffix = f"-{conv.id}" if conv.id is not None else ""
    return data_dir() / "exports" / f"{stamp}-{slug(conv.title)}{suffix}.md"


def export_markdown(conv: Conversation, path: Path | None = None) -> Path:
    """Write ``conv`` as Markdown to ``path`` (default: under the data dir); return the path."""
    if not conv.turns:
        raise PromptDSLError("nothing to export: the conversation is empty")
    target = (path or default_export_path(conv)).expanduser()
    if target.is_dir():
        target = target / default_export_path(conv).name
    text = to_markdown(conv)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".export-", suffix=".md")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise PromptDSLError(f"cannot write {target}: {exc.strerror or exc}") from None
    return target.resolve()
