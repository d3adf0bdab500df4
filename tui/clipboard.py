"""Copy text where it can be checked: the desktop's clipboard tool when there is one, else OSC 52.

A terminal may silently drop an OSC 52 request (tmux without ``set-clipboard on``, many
SSH setups), so the app never claims "copied" for it: it says the request was sent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from textual.app import App

#: (environment that must be set, command); the first one present and succeeding wins.
TOOLS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("WAYLAND_DISPLAY", ("wl-copy",)),
    ("DISPLAY", ("xclip", "-selection", "clipboard")),
    ("DISPLAY", ("xsel", "--clipboard", "--input")),
)


def system_copy(text: str) -> str | None:
    """Copy with a clipboard tool; returns its name, or None when no tool did it."""
    candidates = [cmd for env, cmd in TOOLS if os.environ.get(env)]
    if sys.platform == "darwin":
        candidates.append(("pbcopy",))
    for cmd in candidates:
        if shutil.which(cmd[0]) is None:
            continue
        try:
            done = subprocess.run(cmd, input=text.encode("utf-8"), timeout=5, check=False,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError):
            continue
        if done.returncode == 0:
            return cmd[0]
    return None


def osc52_note(n: int) -> str:
    where = " (in tmux: set -g set-clipboard on)" if os.environ.get("TMUX") else ""
    return (f"Asked the terminal to copy {n} characters (OSC 52). Not every terminal does{where}; "
            "if pasting gives nothing, export with Ctrl+F instead.")


def copy_and_tell(app: App[Any], text: str) -> None:
    """Copy ``text`` for the chat and the spec screen alike, and say truthfully what happened."""
    tool = system_copy(text)
    if tool is not None:
        app.notify(f"Copied {len(text)} characters to the clipboard ({tool}).")
        return
    app.copy_to_clipboard(text)
    app.notify(osc52_note(len(text)), timeout=8)
