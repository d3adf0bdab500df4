"""Text from users, files, models and tools, shown as it is: never read as Textual markup.

A ``str`` given to ``Static``, ``Label``, ``update``, ``border_title``, a ``Collapsible``
title or an option list is parsed as content markup: ``[/]`` or ``[/INST]`` in a file
raises ``MarkupError`` (the app ends), ``[b]x[/b]`` loses its brackets and
``[@click=app.quit]`` becomes a clickable action. Wrap such text in :func:`plain`.
"""

from __future__ import annotations

from typing import cast

from textual.content import Content


def plain(text: str) -> Content:
    """``text`` exactly as it is (no markup, no styles)."""
    return Content(text)


def plain_title(text: str) -> str:
    """For ``Collapsible(title=…)``, typed ``str``: it shows a :class:`Content` as given (never parsed).

    ``str(title)`` of the result is ``text``, as for a str.
    """
    return cast(str, plain(text))
