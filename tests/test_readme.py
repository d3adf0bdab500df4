"""The README's Python examples run as written (docs that run)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


@pytest.mark.model
def test_readme_python_examples_run() -> None:
    blocks = python_blocks()
    assert blocks, "the README has no python example"
    for code in blocks:
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip()


@pytest.mark.model
def test_readme_main_job_prints_a_label() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert 'promptdsl run specs/sentiment.yaml --input text="I love this city!"' in text
    proc = subprocess.run(
        [sys.executable, "-m", "promptdsl.cli", "run", "specs/sentiment.yaml", "--input", "text=I love this city!"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "Positive"
