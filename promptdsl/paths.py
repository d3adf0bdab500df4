"""Where promptdsl keeps its files: one place, so the cache, history and TUI agree.

`PROMPTDSL_HOME` overrides everything (tests and sandboxes point it at a temp dir); otherwise
the platform's user data / cache directories are used (via platformdirs).
"""

from __future__ import annotations

import os
from pathlib import Path

APP_NAME = "promptdsl"
HOME_ENV = "PROMPTDSL_HOME"


def _home_override() -> Path | None:
    value = os.environ.get(HOME_ENV, "").strip()
    if not value:
        return None
    try:
        return Path(value).expanduser()
    except RuntimeError:  # `~nouser/x`: Python cannot find that user's home
        from .errors import InputError

        raise InputError(f"cannot expand '{value}': no such user's home directory", source=f"${HOME_ENV}") from None


def data_dir(create: bool = True) -> Path:
    """Persistent user data (history, saved sessions): `$PROMPTDSL_HOME` or the platform data dir."""
    home = _home_override()
    if home is not None:
        path = home
    else:
        import platformdirs  # only without $PROMPTDSL_HOME (a few ms of a one-input run's start)

        path = Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir(create: bool = True) -> Path:
    """Disposable data (the result cache): `$PROMPTDSL_HOME/cache` or the platform cache dir."""
    home = _home_override()
    if home is not None:
        path = home / "cache"
    else:
        import platformdirs

        path = Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path
