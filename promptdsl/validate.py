"""Whole-spec validation: what ``promptdsl validate`` and the TUI's spec picker both check."""

from __future__ import annotations

from pathlib import Path

from .compiler import Compiler
from .inputs import validate_inputs
from .loader import load_spec
from .spec import Spec


def validate_spec(source: str | Path | Spec) -> Spec:
    """Load a spec (unless given one) and compile it with every example's and test's inputs.

    Loading checks the schema and the templates statically; compiling with real inputs catches
    what only rendering shows. Raises the first :class:`~promptdsl.errors.PromptDSLError`.
    """
    spec = source if isinstance(source, Spec) else load_spec(source)
    compiler = Compiler(spec)
    for item in [*(ex.input for ex in spec.examples), *(t.input for t in spec.tests)]:
        compiler.compile(validate_inputs(spec, item))
    return spec
