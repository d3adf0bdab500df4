"""``promptdsl chat``: check everything that can fail before the screen switches, then run the app.

A bad spec or an unknown backend is an ordinary one-line CLI error (exit 2), not a
crash inside the terminal UI.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from promptdsl.errors import InputError, PromptDSLError
from promptdsl.loader import load_spec

from .history import HistoryStore
from .session import BackendChoice, Session, check_options
from .tools import check_tools


def check_specs(paths: Sequence[Path]) -> None:
    """Load every spec file given (directories are scanned later; their broken specs are listed)."""
    for path in paths:
        if path.is_dir():
            continue
        if not path.exists():
            raise PromptDSLError(f"{path}: spec file not found (nor a folder of specs)")
        load_spec(path)


def check_choice(choice: BackendChoice) -> None:
    """The backend is installed, takes the options and knows the model name, found without
    loading anything (the load itself comes after the terminal check)."""
    from promptdsl.backend import check_options as check_backend_options
    from promptdsl.registry import backend_class
    from promptdsl.runner import check_model_name

    cls = backend_class(choice.name)
    check_backend_options(choice.name, cls.options_schema, dict(choice.options))
    if choice.model is not None:
        check_model_name(cls, choice.model)


def check_terminal() -> None:
    """The app reads keys from standard input and draws on standard error (as Textual does).
    Without a terminal there it would spin forever on a closed pipe, or fill a file with
    escape codes, after loading the model for nothing."""
    for name, stream in (("input", sys.__stdin__), ("error", sys.__stderr__)):
        if stream is None or not stream.isatty():
            raise InputError(
                f"chat needs a terminal, and standard {name} is not one; "
                "in scripts use `promptdsl run` (one input, --data, or -i - for JSON on stdin)"
            )


def run_chat(
    specs: Sequence[Path] = (),
    *,
    backend: str | None = None,
    model: str | None = None,
    options: Mapping[str, Any] | None = None,
    system: str | None = None,
    resume_latest: bool = False,
    tools: Sequence[str] = (),
    tool_choice: str = "auto",
) -> int:
    """Validate the arguments, load the backend, open the history, run the app. Returns the exit code."""
    check_specs(specs)
    check_options(options or {})  # `-o temperature=abc` fails here, as in `promptdsl run`
    check_tools(tools)  # `-T calculater` or a bad tool option fails here too
    store = HistoryStore.default()
    resume = store.latest_id() if resume_latest else None
    if resume_latest and resume is None:
        raise PromptDSLError("--continue: there is no saved conversation yet")
    session = Session.from_cli(backend, model, options or {})
    check_choice(session.choice)  # `-b nosuch`, `-m nosuch`, `-o n_ctxx=1`: said before "needs a terminal"
    check_terminal()
    session.backend()  # unknown backend / missing model: fail here, before the screen switches

    from .app import PromptDSLApp  # Textual is imported only when the UI really starts

    app = PromptDSLApp(
        specs=list(specs), backend=backend, model=model, options=options, system=system,
        history=store, resume=resume, tools=tools, tool_choice=tool_choice,
    )
    try:
        app.run()
    finally:
        store.close()
    return app.return_code or 0
