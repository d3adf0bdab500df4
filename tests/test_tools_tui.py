"""Tools in the TUI: step cards in the spec screen and the approval dialog (scripted backend, no model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from promptdsl_tui.app import PromptDSLApp
from promptdsl_tui.history import HistoryStore
from promptdsl_tui.screens.spec_run import SpecScreen
from promptdsl_tui.screens.tool_approval import ToolApproval
from promptdsl_tui.widgets.result_view import ResultView
from promptdsl_tui.widgets.tool_card import ToolCard
from test_tui_support import wait_for
from tools_support import ScriptedTools

pytestmark = pytest.mark.anyio
SIZE = (100, 40)

SPEC = """\
version: 1
name: asks
inputs: {question: {type: string, minLength: 1}}
tools: [{name: calculator, approval: ask}]
tool_choice: calculator
max_steps: 1
output: {type: text}
"""


async def run_once(pilot: Any, screen: SpecScreen, answer: str | None) -> Any:
    view = screen.query_one(ResultView)
    view.result = None
    await pilot.press("ctrl+r")
    if answer is not None:
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, ToolApproval), 10, "approval dialog")
        await pilot.press(answer)
    await wait_for(pilot, lambda: view.result is not None, 10, "result")
    return view.result


async def test_approval_dialog_and_cards(tmp_path: Path, tui_home: Path) -> None:
    spec = tmp_path / "asks.yaml"
    spec.write_text(SPEC)
    backend = ScriptedTools([("calculator", {"expression": "2 + 3"})] * 3, answer="5")
    app = PromptDSLApp(specs=[spec], backend_instance=backend, history=HistoryStore(tui_home / "h.sqlite3"),
                       cwd=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, SpecScreen), 10, "spec screen")
        screen = app.screen
        assert isinstance(screen, SpecScreen)
        await pilot.press(*"what is 2 + 3?")

        denied = await run_once(pilot, screen, "n")
        assert denied.stop_reason == "denied"
        cards = list(screen.query(ToolCard))
        assert len(cards) == 1 and "⊘ denied" in str(cards[0].title)

        approved = await run_once(pilot, screen, "a")  # Always for this chat
        assert approved.stop_reason == "max_steps" and approved.steps[0]["result"] == "5"
        card = screen.query_one(ToolCard)
        assert str(card.title).startswith('🔧 calculator {"expression": "2 + 3"}') and "✓ 5" in str(card.title)
        assert card.collapsed
        card.collapsed = False
        await pilot.pause()

        again = await run_once(pilot, screen, None)  # no dialog: approved always
        assert again.steps[0]["approved"] is True
