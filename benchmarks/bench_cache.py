"""What a re-run of the same data costs with the result cache: cold run vs warm re-run.

Both are the real dataset path in this process on the same rows, with a fresh cache file.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from common import SPECS, Row, local_backend, tweets, write_jsonl

from promptdsl import Runner, load_spec
from promptdsl.cache import ResultCache
from promptdsl.datafile import DataFile
from promptdsl.dataset import run_dataset


def bench(items: int = 200) -> list[Row]:
    spec = load_spec(SPECS / "sentiment.yaml")
    backend: Any = local_backend()
    runner = Runner(spec, backend)
    with tempfile.TemporaryDirectory() as d:
        data = DataFile(write_jsonl(Path(d) / "d.jsonl", tweets(items, start=200)))
        with ResultCache(Path(d) / "cache.sqlite3") as cache:
            times = []
            outputs: list[list[str]] = []
            for _ in range(2):
                lines: list[str] = []
                start = time.perf_counter()
                summary = run_dataset(runner, data, lines.append, cache=cache)
                times.append(time.perf_counter() - start)
                outputs.append(lines)
            hits = summary.cached
    cold, warm = times
    same = [x.split('"timing"')[0] for x in outputs[0]] == [x.split('"timing"')[0] for x in outputs[1]]
    ratio = cold / warm
    return [
        Row(f"5 re-run of the same {items} rows (result cache)", f"{warm * 1000:.0f} ms", f"{cold:.2f} s", ratio,
            "re-run costs ~nothing", hits == items and same,
            [f"{hits}/{items} rows from the cache on the re-run, {warm / items * 1e6:.0f} µs a row; "
             f"same results: {same}"],
            {"cold_s": cold, "warm_s": warm, "hits": hits, "speedup": ratio}),
    ]
