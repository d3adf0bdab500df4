"""Standard output belongs to the command's results."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TextIO

from ..plugin_code import in_plugin_code


class ResultsOnly:
    """``sys.stdout`` while a command runs: the command's own writes go to standard output, what a
    plugin's code prints (a debug ``print`` in a backend's ``stream()`` or a tool's ``call()``) goes
    to standard error, so ``run --json | jq`` is not broken by a plugin. The library marks plugin
    code per thread (:func:`promptdsl.plugin_code.plugin_code`); everything else is the real stream's."""

    #: Read by :func:`promptdsl.registry.plugin_output`: mark the thread, do not swap ``sys.stdout``.
    routes_plugin_code = True

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def _target(self) -> TextIO | None:
        return sys.stderr if in_plugin_code() else self.out

    def write(self, text: str) -> int:
        target = self._target()
        return len(text) if target is None else target.write(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:  # flush, fileno, isatty, encoding, buffer...: the real stream's
        return getattr(self.out, name)
