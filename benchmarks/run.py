"""Run the promptdsl benchmarks: `python benchmarks/run.py` (add --quick for a short pass).

Every benchmark prints a ratio against a baseline measured in the same run on the same
prompts, so load from other programs shifts both sides alike (slices alternate).

  1  3-shot sentiment, TweetEval items: promptdsl vs a plain llama-cpp-python loop (>= 3x)
  2  the same run vs the hardware limit: item tokens / llama.cpp's prompt-eval speed (<= 1.15x)
  3  streaming generation tokens/s: promptdsl vs llama-cpp-python directly (>= 0.97x)
  4  peak memory of a 2,000-row run vs a 200-row run, in child processes (<= 1.10x)
  5  re-run of the same rows with the result cache (cost ~ nothing)
  6  the AMX-safe default (extra_bufts=auto) vs llama.cpp's default: prompt and generation tok/s (>= 0.97x)
  7  end to end: `promptdsl run --data --out --no-cache` as a child process vs the hardware limit (<= 1.10x)
  8  the same CLI run vs a plain llama-cpp-python loop in its own process (>= 3.5x, identical predictions)
  9  one input on the command line vs import + load + score in plain llama-cpp-python (<= +0.2 s)
  D  tokens per decode: the decode-size curve, and batch=true vs one item at a time (identical scores)
  T  llama.cpp thread settings (all cores, 1, generation cores-1) as the machine is and with cores spinners
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import common
from common import Row

BENCHES = ("fewshot", "stream", "memory", "cache", "bufts", "cli", "decode", "threads")


def _run(name: str, args: argparse.Namespace) -> list[Row]:
    """One benchmark by name (each module has a ``bench`` function; imported only when chosen)."""
    calls: dict[str, Callable[[Any], list[Row]]] = {
        "fewshot": lambda b: b(args.items),
        "stream": lambda b: b(),
        "memory": lambda b: b(*args.memory_rows),
        "cache": lambda b: b(args.items),
        "bufts": lambda b: b(),
        "cli": lambda b: b(args.items, args.cli_rounds, args.cli_singles, not args.no_cli_batch),
        "decode": lambda b: b(args.items),
        "threads": lambda b: b(),
    }
    module = importlib.import_module(f"bench_{name}")
    return calls[name](module.bench)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--only", default=",".join(BENCHES), help=f"comma-separated subset of {', '.join(BENCHES)}")
    p.add_argument("--items", type=int, default=200, help="items for benchmarks 1, 2 and 5 (default 200)")
    p.add_argument("--memory-rows", type=int, nargs=2, default=(200, 2000), metavar=("SMALL", "LARGE"))
    p.add_argument("--quick", action="store_true", help="40 items, memory 50 vs 500 rows (a smoke run)")
    p.add_argument("--threads", type=int, help="llama.cpp threads on every side (default: all cores; 1 is "
                   "steadier on a machine shared with other work)")
    p.add_argument("--data", type=Path, default=common.TWEETS,
                   help="labelled tweets, JSONL with text and label (default: the 500-row sample in tests/data; "
                        "the memory benchmark cycles a shorter file)")
    p.add_argument("--cli-rounds", type=int, default=2, metavar="N",
                   help="rounds of the CLI dataset runs (benchmarks 7, 7b, 8; 0 runs only 9, one input)")
    p.add_argument("--cli-singles", type=int, default=5, metavar="N", help="one-input pairs of benchmark 9")
    p.add_argument("--no-cli-batch", action="store_true", help="leave out 7b (the opt-in -o batch=true run)")
    p.add_argument("--json", type=Path, help="also write the results here as JSON")
    args = p.parse_args(argv)
    if args.quick:
        args.items, args.memory_rows = 40, (50, 500)
    chosen = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = set(chosen) - set(BENCHES)
    if unknown:
        p.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")

    common.THREADS = args.threads
    common.TWEETS = args.data
    with tempfile.TemporaryDirectory(prefix="promptdsl-bench-") as home:  # a fresh cache and history, removed after
        os.environ.setdefault("PROMPTDSL_HOME", home)
        return _run_all(chosen, args)


def _run_all(chosen: list[str], args: argparse.Namespace) -> int:
    rows: list[Row] = []
    started = time.perf_counter()
    for name in chosen:
        t = time.perf_counter()
        print(f"running {name} ...", file=sys.stderr, flush=True)
        rows += _run(name, args)
        print(f"  {name} took {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)

    print_table(rows)
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, llama.cpp threads {common.threads()}, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; total {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in rows], indent=2, default=str), encoding="utf-8")
    return 0 if all(r.passed for r in rows) else 1


def print_table(rows: list[Row]) -> None:
    print()
    print(f"{'benchmark':<72} {'promptdsl':>14} {'baseline':>14} {'ratio':>8}  {'target':<22} result")
    for r in rows:
        print(f"{r.name:<72} {r.ours:>14} {r.baseline:>14} {r.ratio:>7.2f}x  {r.target:<22} "
              f"{'PASS' if r.passed else 'FAIL'}")
        for note in r.notes:
            print(f"    {note}")


if __name__ == "__main__":
    sys.exit(main())
