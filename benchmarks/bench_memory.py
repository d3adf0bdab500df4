"""Peak memory of a dataset run as the file grows: 2,000 rows vs 200 rows.

Each run is a fresh child process running the real CLI path (`promptdsl run --data --out`,
no cache, the embedded model); the child reports its own peak RSS (getrusage ru_maxrss),
so the two numbers do not mix.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from common import SPECS, Row, backend_options, fmt_mb, tweets, write_jsonl

CHILD = """\
import resource, sys
from promptdsl.cli import main
code = main(sys.argv[2:])
with open(sys.argv[1], "w") as f:
    f.write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
sys.exit(code)
"""


def peak_kib(rows: int, tmp: Path) -> tuple[int, int]:
    """(peak RSS in KiB, lines written) of one child process over the first ``rows`` tweets."""
    data = write_jsonl(tmp / f"data{rows}.jsonl", tweets(rows, repeat=True))
    out = tmp / f"out{rows}.jsonl"
    report = tmp / f"rss{rows}.txt"
    cmd = [sys.executable, "-c", CHILD, str(report), "run", str(SPECS / "sentiment.yaml"), "--data", str(data),
           "--out", str(out), "--no-cache", "--no-progress"]
    cmd += [f"-o{k}={v}" for k, v in backend_options().items()]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**_env(tmp)})
    if proc.returncode != 0:
        raise SystemExit(f"memory child failed ({proc.returncode}): {proc.stderr.strip()}")
    return int(report.read_text()), sum(1 for _ in out.open(encoding="utf-8"))


def _env(tmp: Path) -> dict[str, str]:
    import os

    return {**os.environ, "PROMPTDSL_HOME": str(tmp / "home")}


def bench(small: int = 200, large: int = 2000) -> list[Row]:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        small_kib, small_lines = peak_kib(small, tmp)
        large_kib, large_lines = peak_kib(large, tmp)
    ratio = large_kib / small_kib
    return [
        Row(f"4 peak memory, {large} rows vs {small} rows", fmt_mb(large_kib), fmt_mb(small_kib), ratio,
            "<= 1.10x", ratio <= 1.10 and small_lines == small and large_lines == large,
            [f"child processes running `promptdsl run --data --out --no-cache`; {small_lines} and {large_lines} "
             "result lines written"],
            {"small_kib": small_kib, "large_kib": large_kib, "ratio": ratio, "small": small, "large": large}),
    ]
