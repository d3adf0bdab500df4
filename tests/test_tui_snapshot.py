"""SVG snapshot of the main screen (pytest-textual-snapshot). Update with --snapshot-update.

Deterministic: a fixed terminal size, a conversation loaded from history (no sampling),
no clock, no paths or timings in view; the status bar's context count comes from the
real model's tokenizer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from promptdsl_tui.app import PromptDSLApp
from promptdsl_tui.conversation import Conversation, Turn
from promptdsl_tui.history import HistoryStore
from promptdsl_tui.widgets.chat_input import ChatInput
from test_tui_support import MODEL_OPTIONS, wait_for

pytestmark = pytest.mark.model

REPLY = """\
Here is the smallest Python program that prints a greeting:

```python
print("Hello, world!")
```

- **Run it** with `python hello.py`
- It works on every Python 3 version"""


def test_main_screen(snap_compare: Any, tui_model: Any, tui_home: Path) -> None:
    store = HistoryStore(tui_home / "history.sqlite3")
    conv = Conversation(
        title="Python hello world",
        system="You are a concise programming assistant.",
        backend="llamacpp",
        model="smollm2",
        turns=[Turn("user", "How do I print hello world in Python?"),
               Turn("assistant", REPLY, backend="llamacpp", model="smollm2")],
        created=0.0,
    )
    store.create(conv)
    app = PromptDSLApp(history=store, resume=conv.id, cwd=tui_home, options=MODEL_OPTIONS)

    async def settle(pilot: Any) -> None:
        await wait_for(pilot, lambda: app.status.state == "ready" and app.status.context_used is not None)
        app.query_one(ChatInput).cursor_blink = False
        await pilot.pause()

    assert snap_compare(app, terminal_size=(100, 32), run_before=settle)
