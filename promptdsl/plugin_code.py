"""Which thread is running a plugin's code, for the front end that owns standard output.

Kept apart from :mod:`promptdsl.registry` so the CLI can install its output guard without
importing the entry-point machinery first.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

_in_plugin = threading.local()


@contextlib.contextmanager
def plugin_code() -> Iterator[None]:
    """Mark this thread as running a plugin's code (a backend's stream(), a tool's call()) while
    inside. Per thread, not a swap of ``sys.stdout``: rows run on several threads at once, and a
    tool past its timeout is abandoned still running. A front end that owns standard output sends
    what such code prints elsewhere (the CLI: :class:`promptdsl.cli.output.ResultsOnly`)."""
    depth = getattr(_in_plugin, "depth", 0)
    _in_plugin.depth = depth + 1
    try:
        yield
    finally:
        _in_plugin.depth = depth


def in_plugin_code() -> bool:
    """True while this thread runs inside :func:`plugin_code`."""
    return getattr(_in_plugin, "depth", 0) > 0
