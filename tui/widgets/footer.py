"""The key footer, rebuilt only when the keys it shows change.

Textual's Footer recomposes (about ten widgets, each restyled) on every bindings
refresh: each focus change, each screen resume, many key presses. The keys shown
rarely change, so most of those rebuilds redraw the same row; they were a large share
of the UI's CPU per key on the spec screen.
"""

from __future__ import annotations

from typing import Any

from textual.screen import Screen
from textual.widgets import Footer


class KeyFooter(Footer):
    """:class:`textual.widgets.Footer` that skips a rebuild when the shown keys are unchanged."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._shown: tuple[object, ...] | None = None

    def _signature(self, screen: Screen[Any]) -> tuple[object, ...]:
        """What compose() draws from: the bindings shown (and the palette's), enabled or not, their tooltips."""
        palette = self.app.COMMAND_PALETTE_BINDING
        return (
            self.show_command_palette,
            self.compact,
            tuple(
                (key, b.key, b.action, b.description, b.group, b.tooltip, enabled, tooltip)
                for key, (_node, b, enabled, tooltip) in screen.active_bindings.items()
                if b.show or key == palette
            ),
        )

    def bindings_changed(self, screen: Screen[Any]) -> None:
        if screen.app.app_focus and self.is_attached and screen is self.screen:
            signature = self._signature(screen)
            if self._bindings_ready and signature == self._shown:
                return
            self._shown = signature
        super().bindings_changed(screen)
