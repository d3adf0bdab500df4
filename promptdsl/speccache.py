"""Specs already known to fit the spec JSON Schema, so an unchanged spec skips that check.

Checking a spec against its JSON Schema needs jsonschema, whose import costs about as much as
the rest of promptdsl (a one-input ``promptdsl run`` pays it on every start). After a spec passes,
a marker file named by a digest is left in the user's cache directory (next to the result
cache; ``$PROMPTDSL_HOME/cache`` when that is set). The digest covers everything the check
depends on: the spec's content after ``extends`` (as canonical JSON), promptdsl's version and
the spec schema itself; the one-byte change of a spec is a new digest, checked again. Nothing
from the spec decides a path. This is only an optimization: a marker that cannot be written,
read, or holds anything but its own digest just means the spec is checked again. Everything
after the schema check (templates, input schemas, examples, tools) runs every time.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from contextlib import suppress
from functools import lru_cache
from pathlib import Path
from typing import Any

#: Folder of markers inside the cache directory.
FOLDER = "valid-specs"
_PLAIN = (str, int, float, bool, type(None))


def _plain(data: Any) -> bool:
    """True when ``data`` is JSON exactly (no dates, no non-string keys) so its encoding is unambiguous."""
    if type(data) in _PLAIN:
        return True
    if type(data) is list:
        return all(_plain(item) for item in data)
    if type(data) is dict:
        return all(type(k) is str and _plain(v) for k, v in data.items())
    return False


@lru_cache(maxsize=1)
def _schema_digest() -> str:
    from . import __version__
    from .schema import spec_schema

    text = json.dumps([__version__, spec_schema()], sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def digest(data: Any) -> str | None:
    """The marker name for a spec mapping, or None when it cannot be told apart exactly (never cached)."""
    try:
        if not _plain(data):
            return None
        text = json.dumps(data, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    except (RecursionError, ValueError, TypeError):
        return None
    return hashlib.sha256(f"{_schema_digest()}\n{text}".encode("ascii")).hexdigest()


def _marker(key: str, create: bool) -> Path:
    from .paths import cache_dir

    return cache_dir(create=create) / FOLDER / key


def known_valid(key: str) -> bool:
    """True when a marker for ``key`` exists and holds exactly ``key``."""
    try:
        with _marker(key, create=False).open("rb") as f:
            return f.read(len(key) + 1) == key.encode("ascii")
    except (OSError, ValueError):
        return False


def remember(key: str) -> None:
    """Leave the marker for ``key`` (written whole or not at all; any failure is ignored)."""
    with suppress(OSError, ValueError):
        path = _marker(key, create=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{key}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            tmp.write_text(key, encoding="ascii")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
