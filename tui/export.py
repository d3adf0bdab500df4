"""Export a conversation to a Markdown file (written atomically: never a half-written file)."""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from pathlib import Path
from typing import Any

from promptdsl.errors import PromptDSLError
from promptdsl.paths import data_dir

from .conversation import Conversation

ROLE_HEADINGS = {"user": "You", "assistant": "Assistant", "system": "System"}
STATUS_NOTES = {
    "cancelled": "stopped by the user",
    "interrupted": "interrupted: the app was closed while it streamed",
    "error": "the backend failed during this reply",
    "streaming": "still streaming when exported",
    "length": "cut at max_tokens",
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
        heading = ROLE_HEADINGS[turn.role] + (f" · {turn.author}" if turn.role == "assistant" and turn.author else "")
        lines += [f"## {heading}", ""]
        lines += [f"- {_step_line(step)}" for step in turn.steps] + ([""] if turn.steps else [])
        lines += [hard_breaks(turn.content) or "*(no text)*", ""]
        note = STATUS_NOTES.get(turn.status)
        if note:
            detail = f": {turn.note}" if turn.note and turn.status == "error" else ""
            lines += [f"*({note}{detail})*", ""]
    return "\n".join(lines).rstrip() + "\n"


def _step_line(step: dict[str, Any]) -> str:
    """One tool call of a reply: `tool {arguments}` and its result (or error, or denied)."""
    call = f"`{step.get('tool')} {json.dumps(step.get('arguments'), ensure_ascii=False)}`"
    if step.get("approved") is False:
        return f"{call} denied"
    if step.get("error") is not None:
        return f"{call} failed: {step.get('error')}"
    return f"{call} → {step.get('result')}"


def slug(text: str, limit: int = 40) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s[:limit].rstrip("-") or "conversation"


def default_export_path(conv: Conversation) -> Path:
    """``<data dir>/exports/<date>-<title slug>[-<id>].md``."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime())
    suffix = f"-{conv.id}" if conv.id is not None else ""
    return data_dir() / "exports" / f"{stamp}-{slug(conv.title)}{suffix}.md"


class ExportExists(PromptDSLError):
    """The chosen file exists; export again with ``overwrite=True`` once the user agreed."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} already exists")
        self.path = path


def export_markdown(conv: Conversation, path: Path | None = None, *, overwrite: bool = False) -> Path:
    """Write ``conv`` as Markdown to ``path`` (default: under the data dir); return the path.

    A chosen path must be in an existing folder (a typo must not create folders), an
    existing file is replaced only with ``overwrite`` and keeps its permissions; new files
    get the usual ones (0666 less the umask). The write is atomic: never a half-written file.
    """
    if not conv.turns:
        raise PromptDSLError("nothing to export: the conversation is empty")
    target = (path or default_export_path(conv)).expanduser()
    if target.is_dir():
        target = target / default_export_path(conv).name
    if path is not None and not target.parent.is_dir():
        raise PromptDSLError(f"cannot write {target}: the folder {target.parent} does not exist")
    exists = target.exists()
    if exists and not overwrite:
        raise ExportExists(target)
    text = to_markdown(conv)
    try:
        mode = target.stat().st_mode & 0o7777 if exists else None
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".export-{secrets.token_hex(4)}.md"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            if mode is not None:
                os.chmod(tmp, mode)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise PromptDSLError(f"cannot write {target}: {exc.strerror or exc}") from None
    return target.resolve()
