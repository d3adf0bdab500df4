"""The status line: backend, model, the chat's tools, state, decode speed and context use."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget


def _fmt_count(n: int) -> str:
    return f"{n / 1000:.1f}k" if n >= 10_000 else str(n)


class StatusBar(Widget):
    """Read-only; the app sets its reactives from the chat view's messages."""

    backend: reactive[str] = reactive("")
    model: reactive[str] = reactive("")
    state: reactive[str] = reactive("starting")
    tokens: reactive[int | None] = reactive(None)
    tokens_per_second: reactive[float | None] = reactive(None)
    context_used: reactive[int | None] = reactive(None)
    context_total: reactive[int | None] = reactive(None)
    tools: reactive[tuple[str, ...]] = reactive(())  # the chat's tools (shown only when there are some)

    def render(self) -> Text:
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(f" {self.backend or '…'}", style="bold")
        text.append(f" · {self.model or '…'}")
        if self.tools:
            names = ("mcp" if t.startswith("mcp:") else t.partition(":")[0] for t in self.tools)
            text.append(f"  │  tools: {', '.join(names)}")
        text.append("  │  ")
        text.append(self.state, style={"generating": "bold", "error": "bold red"}.get(self.state, ""))
        text.append("  │  ")
        if self.tokens_per_second is not None:
            text.append(f"{self.tokens_per_second:.1f} tok/s")
            if self.tokens is not None:
                text.append(f" ({self.tokens} tok)")
        else:
            text.append("– tok/s")
        text.append("  │  ctx ")
        if self.context_used is not None and self.context_total:
            pct = 100 * self.context_used / self.context_total
            text.append(f"{_fmt_count(self.context_used)}/{_fmt_count(self.context_total)} ({pct:.0f}%)")
        elif self.context_used is not None:
            text.append(_fmt_count(self.context_used))
        else:
            text.append("–")
        return text
