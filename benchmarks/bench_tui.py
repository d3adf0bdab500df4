"""Streaming in the terminal UI vs the backend's own rate, measured in one run.

    python benchmarks/bench_tui.py [--rounds 3] [--tokens 200] [--threads N]

Same llamacpp backend object, same chat prompt (system + one user message), greedy
decoding, same token budget. One side iterates ``Backend.stream`` directly; the other
sends the message in the real app (headless ``App.run_test``: the widgets, Markdown
streaming, status bar and history writes all run; only the terminal write is absent),
Both sides are timed from the first token to the last (prompt processing excluded),
alternating direct / TUI / TUI / direct so load from other programs hits both alike.
The direct side runs in a fresh thread, as the TUI's replies do (a Textual worker thread
each): llama.cpp's OpenMP keeps an idle thread team for every live thread that has
computed, and once more teams than cores exist its threads stop spin-waiting between
steps, which cost 25% here. Computing on the main thread (which never exits) would slow
every later reply in another thread, so neither side does.
Also printed: CPU time of the whole process per token on each side; the difference is
what the UI costs per token. Target: the TUI streams at >= 0.95x the backend's rate.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promptdsl.backend import CutOff

ROOT = Path(__file__).resolve().parent.parent
SYSTEM = "You are a helpful assistant."
MESSAGE = "Write a long, detailed story about a lighthouse keeper who finds a lost whale."
TARGET = 0.95


@dataclass
class Run:
    text: str
    tokens: int
    rate: float  # tokens/s after the first token
    cpu_per_token_ms: float


def _rate(first: float | None, last: float | None, tokens: int) -> float:
    if first is None or last is None or tokens < 2 or last <= first:
        return 0.0
    return (tokens - 1) / (last - first)


def direct(backend: Any, options: Any) -> Run:
    from promptdsl.prompt import Message, Prompt

    prompt = Prompt(mode="chat", messages=(Message("system", SYSTEM), Message("user", MESSAGE)))
    cpu = time.process_time()
    parts: list[str] = []
    first = last = None
    for chunk in backend.stream(prompt, options):
        if isinstance(chunk, CutOff):  # the empty end marker (max_tokens): not a token
            continue
        last = time.perf_counter()
        first = first or last
        parts.append(chunk)
    cpu = time.process_time() - cpu
    return Run("".join(parts), len(parts), _rate(first, last, len(parts)), 1000 * cpu / max(len(parts), 1))


def in_thread(fn: Any, *args: Any) -> Any:
    """``fn(*args)`` in a fresh thread that ends with it (see the module docstring)."""
    box: list[Any] = []
    worker = threading.Thread(target=lambda: box.append(fn(*args)))
    worker.start()
    worker.join()
    return box[0]


def in_tui(backend: Any, options: Any, home: Path) -> Run:
    from promptdsl_tui.app import PromptDSLApp
    from promptdsl_tui.history import HistoryStore
    from textual import events

    async def main() -> Run:
        store = HistoryStore(home / f"bench-{time.monotonic_ns()}.sqlite3")
        app = PromptDSLApp(backend_instance=backend, history=store, system=SYSTEM, cwd=home)
        app.session.set_generation({"temperature": options.temperature, "max_tokens": options.max_tokens,
                                    "seed": options.seed})
        async with app.run_test(size=(120, 40)) as pilot:
            while app.session.peek() is None or app.status.state != "ready":
                await pilot.pause(0.02)
            app.post_message(events.Paste(MESSAGE))
            while app.chat.input.text != MESSAGE:
                await pilot.pause(0.01)
            cpu = time.process_time()
            await pilot.press("enter")
            # plain sleeps: Pilot.pause would force a screen refresh on every call and bill it to the UI
            while not app.chat.conversation.turns or app.chat.generating or \
                    app.chat.conversation.turns[-1].status == "streaming":
                await asyncio.sleep(0.25)
            cpu = time.process_time() - cpu
            await pilot.pause(0.1)  # let the final figures reach the status bar (a message away)
            reply = app.chat.conversation.turns[-1]
            gen_rate = app.status.tokens_per_second or 0.0
            tokens = app.status.tokens or 0
        store.close()
        return Run(reply.content, tokens, gen_rate, 1000 * cpu / max(tokens, 1))

    return asyncio.run(main())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (each runs both sides twice)")
    p.add_argument("--tokens", type=int, default=200, help="max_tokens of each reply (default 200)")
    p.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: the plugin's)")
    args = p.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="promptdsl-bench-tui-"))
    os.environ["PROMPTDSL_HOME"] = str(home)
    from promptdsl.backend import GenerationOptions
    from promptdsl.registry import get_backend

    backend = get_backend("llamacpp", None, {"n_threads": args.threads} if args.threads else {})
    options = GenerationOptions(temperature=0.0, max_tokens=args.tokens, seed=0)
    in_thread(direct, backend, options)  # warm-up: model pages in, the prompt is in the KV cache for both sides
    in_tui(backend, options, home)
    runs: dict[str, list[Run]] = {"direct": [], "tui": []}
    for i in range(args.rounds):
        order = ("direct", "tui", "tui", "direct") if i % 2 == 0 else ("tui", "direct", "direct", "tui")
        for side in order:
            run = in_thread(direct, backend, options) if side == "direct" else in_tui(backend, options, home)
            runs[side].append(run)
            print(f"  {side:6s} {run.tokens:4d} tok  {run.rate:6.1f} tok/s  {run.cpu_per_token_ms:5.1f} ms CPU/tok",
                  file=sys.stderr, flush=True)
    d = statistics.median(r.rate for r in runs["direct"])
    t = statistics.median(r.rate for r in runs["tui"])
    d_cpu = statistics.median(r.cpu_per_token_ms for r in runs["direct"])
    t_cpu = statistics.median(r.cpu_per_token_ms for r in runs["tui"])
    same = len({r.text.strip() for r in runs["direct"] + runs["tui"]}) == 1
    ratio = t / d if d else 0.0
    print(f"TUI streaming vs backend directly: {t:.1f} vs {d:.1f} tok/s = {ratio:.3f}x "
          f"(target >= {TARGET}x: {'PASS' if ratio >= TARGET else 'FAIL'})")
    print(f"process CPU per token: TUI {t_cpu:.2f} ms, direct {d_cpu:.2f} ms, UI cost {t_cpu - d_cpu:.2f} ms/token")
    print(f"{args.rounds * 2} runs a side of up to {args.tokens} tokens, medians; identical text: {same}; "
          f"threads: {args.threads or 'plugin default'}")
    return 0 if ratio >= TARGET and same else 1


if __name__ == "__main__":
    raise SystemExit(main())
