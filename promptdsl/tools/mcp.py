"""MCP servers as tool sources, through the official ``mcp`` SDK (stdio transport).

``mcp:COMMAND ARGS`` (in a spec's ``tools`` or ``-T``) starts the server as a
child process, lists its tools, and exposes each as a :class:`Tool` under the
same validation, approval and timeout rules as any other. The SDK is async; a
private event loop in a daemon thread holds the session so that the (sync)
tool loop can call it. Servers a spec names need the user's approval to start
(a spec file is untrusted); their tools default to approval ``ask``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import shlex
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from .base import Tool, ToolError, ToolFailure

STARTUP_TIMEOUT = 30.0
#: Bounds given to MCP argument schemas that have none, so grammar decoding ends.
STRING_BOUND = 1000
ARRAY_BOUND = 64


def bounded(schema: Any) -> Any:
    """A copy of ``schema`` where every string has ``maxLength`` and every array ``maxItems``."""
    if isinstance(schema, list):
        return [bounded(s) for s in schema]
    if not isinstance(schema, Mapping):
        return schema
    out = {k: bounded(v) if k not in ("enum", "const", "default", "examples") else copy.deepcopy(v)
           for k, v in schema.items()}
    types = out.get("type")
    types = [types] if isinstance(types, str) else list(types or [])
    if "string" in types and "enum" not in out and "const" not in out:
        out.setdefault("maxLength", STRING_BOUND)
    if "array" in types:
        out.setdefault("maxItems", ARRAY_BOUND)
    if out.get("type") == "object":
        out.setdefault("properties", {})
    return out


class McpServer:
    """One stdio MCP server process and its client session, run on a private event loop."""

    def __init__(self, command: str, *, cwd: Path | None = None, startup_timeout: float = STARTUP_TIMEOUT) -> None:
        self.command = command
        argv = shlex.split(command)
        if not argv:
            raise ToolError("an MCP server needs a command")
        self._argv = argv
        self._cwd = cwd
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"mcp-{argv[0]}", daemon=True)
        self._thread.start()
        self._closing: asyncio.Event | None = None
        self._ready: Future[list[Any]] = Future()
        self._session: Any = None
        self._main = asyncio.run_coroutine_threadsafe(self._serve(), self._loop)
        try:
            self.tools = self._ready.result(timeout=startup_timeout)
        except TimeoutError:
            self.close()
            raise ToolError(f"MCP server '{command}' did not start within {startup_timeout:g}s") from None
        except Exception as exc:
            self.close()
            raise ToolError(f"MCP server '{command}' failed to start: {_reason(exc)}") from None

    async def _serve(self) -> None:
        from mcp import ClientSession
        from mcp.client.stdio import StdioServerParameters, stdio_client

        self._closing = asyncio.Event()
        params = StdioServerParameters(command=self._argv[0], args=self._argv[1:],
                                       cwd=str(self._cwd) if self._cwd else None, env=dict(os.environ))
        try:
            with open(os.devnull, "w") as errlog:
                async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
                    await session.initialize()
                    listed = await session.list_tools()
                    self._session = session
                    self._ready.set_result(list(listed.tools))
                    await self._closing.wait()
        except BaseException as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)
            raise

    def call(self, name: str, arguments: dict[str, Any], timeout: float) -> str:
        """The tool's text content; raises ToolFailure when the server reports an error."""
        if self._session is None or self._main.done():
            raise ToolFailure(f"the MCP server '{self.command}' is not running")
        future = asyncio.run_coroutine_threadsafe(self._session.call_tool(name, arguments), self._loop)
        try:
            result = future.result(timeout=timeout)
        except TimeoutError:
            future.cancel()
            raise ToolFailure(f"timed out after {timeout:g}s") from None
        except Exception as exc:
            raise ToolFailure(f"MCP error: {_reason(exc)}") from None
        text = "\n".join(_content_text(c) for c in (getattr(result, "content", None) or []))
        if getattr(result, "is_error", getattr(result, "isError", False)):
            raise ToolFailure(text or "the MCP tool reported an error")
        return text

    def close(self) -> None:
        """End the session and the server process; safe to call twice."""
        if self._loop.is_closed():
            return
        if self._closing is not None:
            self._loop.call_soon_threadsafe(self._closing.set)
            with contextlib.suppress(Exception):  # the server may already be gone; nothing to report on close
                self._main.result(timeout=10)
        else:
            self._main.cancel()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()


def _reason(exc: BaseException) -> str:
    inner = getattr(exc, "exceptions", None)  # anyio task groups wrap the real error
    if inner:
        return _reason(inner[0])
    return f"{type(exc).__name__}: {exc}"


def _content_text(item: Any) -> str:
    text = getattr(item, "text", None)
    if isinstance(text, str):
        return text
    return f"[{getattr(item, 'type', 'content')} content]"


class McpTool(Tool):
    """One tool of an MCP server."""

    read_only = False

    def __init__(self, server: McpServer, info: Any, timeout: float) -> None:
        super().__init__()
        self.server = server
        self.name = str(info.name)
        self.description = str(getattr(info, "description", "") or self.name)
        schema = getattr(info, "input_schema", None) or getattr(info, "inputSchema", None) or {}
        self.parameters = bounded({"type": "object", **dict(schema)})
        self.timeout = timeout

    def call(self, arguments: dict[str, Any]) -> str:
        return self.server.call(self.name, arguments, self.timeout)

    def close(self) -> None:
        self.server.close()


def open_mcp_tools(command: str, *, timeout: float, cwd: Path | None = None) -> list[Tool]:
    """Start ``command`` as a stdio MCP server and return its tools (closing any one closes the server)."""
    server = McpServer(command, cwd=cwd)
    return [McpTool(server, info, timeout) for info in server.tools]
