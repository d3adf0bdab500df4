"""Tools the model may call: the plugin interface, the ``@tool`` decorator, discovery.

The loop that runs them lives in :mod:`promptdsl.tools.loop`; built-in tools
in :mod:`promptdsl.tools.builtins`; MCP servers in :mod:`promptdsl.tools.mcp`.
"""

from .base import Approval, Step, StopReason, Tool, ToolCall, ToolError, ToolFailure, ToolUse
from .decorator import MaxLen, tool

__all__ = [
    "Approval", "MaxLen", "Step", "StopReason", "Tool", "ToolCall", "ToolError", "ToolFailure", "ToolUse", "tool",
]
