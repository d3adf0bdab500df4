"""Tuning's errors, importable without torch (the CLI catches them)."""

from __future__ import annotations

from pathlib import Path

from ..errors import PromptDSLError


class TuneError(PromptDSLError):
    """Tuning cannot start or go on (bad model file, mismatching checkpoint, tokenizer mismatch)."""


class TuneStopped(TuneError):
    """Stopped by the user (Ctrl+C) before anything worth saving was done; nothing was written."""

    exit_code = 130


class TuneInterrupted(TuneStopped):
    """Stopped by the user during training; a checkpoint holds the progress (``--resume`` continues)."""

    def __init__(self, step: int, checkpoint: Path) -> None:
        super().__init__(f"stopped at step {step}; checkpoint saved to {checkpoint} (run again with --resume)")
        self.step = step
        self.checkpoint = checkpoint


__all__ = ["TuneError", "TuneInterrupted", "TuneStopped"]
