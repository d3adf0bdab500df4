"""A tiny stdio MCP server for tests, written with the official SDK's own server API.

Run as ``python tests/mcp_server.py``; its tools: ``add``, ``shout``, ``fail``, ``nap``.
"""

from __future__ import annotations

import time

try:  # mcp 2.x
    from mcp.server.mcpserver import MCPServer as Server
except ImportError:  # mcp 1.x
    from mcp.server.fastmcp import FastMCP as Server

server = Server("promptdsl-test")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def shout(text: str) -> str:
    """Upper-case a text."""
    return text.upper()


@server.tool()
def fail(reason: str) -> str:
    """Always fails with the reason."""
    raise ValueError(reason)


@server.tool()
def nap(seconds: float) -> str:
    """Sleep, then say so."""
    time.sleep(seconds)
    return "rested"


if __name__ == "__main__":
    server.run("stdio")
