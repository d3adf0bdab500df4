"""Reopening a conversation with a long reply in the terminal UI vs Textual's Markdown alone.

    python benchmarks/bench_tui_reopen.py [--rounds 3] [--kb 26] [--text FILE]

One side resumes a saved conversation (a question and one long Markdown reply) in the real
app (headless ``App.run_test``; the embedded model loaded before timing, as after start-up);
the baseline is a minimal Textual app showing the same text in one ``Markdown`` widget (with the
app's Markdown parser) in a scrolling container. Each is timed from start to the moment the reply's blocks are all
mounted and the app is idle, alternating sides. Also timed on each side: moving the focus
onto the scrolling container and back, which Textual answers by restyling every widget
inside it (seconds for a long reply) unless the container is told otherwise.
The reply is generated Markdown (headings, paragraphs, lists, code) of about ``--kb`` KB,
or ``--text``. Target: reopening costs at most 1.3x the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET = 1.3
SIZE = (120, 40)


def long_reply(kb: int) -> str:
    parts: list[str] = []
    i = 0
    while sum(map(len, parts)) < kb * 1000:
        i += 1
        parts.append(
            f"## Step {i}\n\nThis paragraph explains step {i} with `inline code`, **bold** and *emphasis*, and is "
            "long enough to wrap on a normal terminal.\n\n"
            f"- first point of step {i}\n- second point, with [a link](https://example.com)\n- third point\n\n"
            f"```python\ndef step_{i}(x):\n    return x * {i}\n```\n"
        )
    return "\n".join(parts)


async def _idle_after(pilot: Any, count: Any, blocks: int | None) -> int:
    """Wait until ``count()`` reaches ``blocks`` and the app is idle; with no ``blocks`` (a warm-up),
    until the count stops changing. Returns the count."""
    if blocks is None:
        seen, waited = -1, 0.0
        while count() != seen or (seen == 0 and waited < 60):  # 0 blocks for a minute: nothing will come
            seen = count()
            await pilot.pause(0.5)
            waited += 0.5
        if seen == 0:
            raise SystemExit("the reply never showed: no Markdown blocks after 60 s")
        return seen
    while count() < blocks:
        await asyncio.sleep(0.02)
    await pilot.pause()
    return count()


async def _focus_round_trip(pilot: Any, container: Any, back_to: Any) -> float:
    start = time.perf_counter()
    container.focus()
    await pilot.pause()
    if back_to is not None:
        back_to.focus()
    else:
        container.screen.set_focus(None)
    await pilot.pause()
    return time.perf_counter() - start


def in_app(text: str, backend: Any, home: Path, blocks: int | None) -> tuple[float, float, int]:
    from promptdsl_tui.app import PromptDSLApp
    from promptdsl_tui.conversation import Conversation, Turn
    from promptdsl_tui.history import HistoryStore

    async def main() -> tuple[float, float, int]:
        store = HistoryStore(home / f"bench-{time.monotonic_ns()}.sqlite3")
        conv = Conversation(title="long", turns=[Turn("user", "Explain it step by step."), Turn("assistant", text)])
        store.create(conv)
        start = time.perf_counter()
        app = PromptDSLApp(backend_instance=backend, history=store, cwd=home, resume=conv.id)
        async with app.run_test(size=SIZE) as pilot:

            def count() -> int:
                views = app.chat.views()
                md = views[-1].markdown if len(views) == 2 else None
                return len(md.children) if md is not None else 0

            shown = await _idle_after(pilot, count, blocks)
            took = time.perf_counter() - start
            focus = await _focus_round_trip(pilot, app.chat.log_view, app.chat.input)
        store.close()
        return took, focus, shown

    return asyncio.run(main())


def in_textual(text: str, blocks: int | None) -> tuple[float, float, int]:
    from promptdsl_tui.widgets.message import chat_parser  # the same parser: the same blocks
    from textual.app import App, ComposeResult
    from textual.containers import VerticalScroll
    from textual.widgets import Markdown

    class Plain(App[None]):
        def compose(self) -> ComposeResult:
            with VerticalScroll():
                yield Markdown(text, parser_factory=chat_parser)

    async def main() -> tuple[float, float, int]:
        start = time.perf_counter()
        app = Plain()
        async with app.run_test(size=SIZE) as pilot:
            md = app.query_one(Markdown)
            shown = await _idle_after(pilot, lambda: len(md.children), blocks)
            took = time.perf_counter() - start
            focus = await _focus_round_trip(pilot, app.query_one(VerticalScroll), None)
        return took, focus, shown

    return asyncio.run(main())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (each runs both sides once)")
    p.add_argument("--kb", type=int, default=26, help="size of the generated reply in KB (default 26)")
    p.add_argument("--text", type=Path, help="a Markdown file to use as the reply instead")
    args = p.parse_args(argv)

    text = args.text.read_text(encoding="utf-8") if args.text else long_reply(args.kb)
    with tempfile.TemporaryDirectory(prefix="promptdsl-bench-reopen-") as home:  # removed after
        os.environ["PROMPTDSL_HOME"] = home
        return _measure(text, Path(home), args.rounds)


def _measure(text: str, home: Path, rounds: int) -> int:
    from promptdsl.prompt import Message, Prompt
    from promptdsl.registry import get_backend

    backend = get_backend("llamacpp", None, {})
    backend.count_tokens(Prompt(mode="chat", messages=(Message("user", "hi"),)))  # the model loads before timing
    # warm-ups (imports, first-use caches) that also count each side's blocks
    blocks = {"app": in_app(text, backend, home, None)[2], "textual": in_textual(text, None)[2]}
    times: dict[str, list[tuple[float, float, int]]] = {"app": [], "textual": []}
    for i in range(rounds):
        for side in (("app", "textual") if i % 2 == 0 else ("textual", "app")):
            run = in_app(text, backend, home, blocks[side]) if side == "app" else in_textual(text, blocks[side])
            times[side].append(run)
            print(f"  {side:8s} reopen {run[0]:6.2f} s   focus round trip {run[1]:5.2f} s", file=sys.stderr, flush=True)
    ours, base = (statistics.median(t[0] for t in times[s]) for s in ("app", "textual"))
    ours_f, base_f = (statistics.median(t[1] for t in times[s]) for s in ("app", "textual"))
    ratio = ours / base if base else 0.0
    print(f"reopening a {len(text) / 1000:.1f} KB reply ({blocks['app']} blocks): app {ours:.2f} s vs Textual's Markdown "
          f"alone {base:.2f} s = {ratio:.2f}x (target <= {TARGET}x: {'PASS' if ratio <= TARGET else 'FAIL'})")
    print(f"focus onto the scrolling container and back: app {ours_f:.2f} s, Textual's default {base_f:.2f} s")
    print(f"{rounds} runs a side, medians")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
