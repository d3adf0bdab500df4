"""MCP servers as tool sources, through the official ``mcp`` SDK (stdio transport).

``mcp:COMMAND ARGS`` (in a spec's ``tools`` or ``-T``) starts the server as a
child process, lists its tools, and exposes each as a :class:`Tool` under the
same validation, approval and timeout rules as any other. The SDK is async; a
private event loop in a daemon thread holds the session so that the (sync)
tool loop can call it. Servers a spec names need the user's approval to start
(a spec file is untrusted); their tools default to approval ``ask``.

A misbehaving server is bad input, reported as one :class:`ToolError` line:

* a server that does not answer within :data:`STARTUP_TIMEOUT` is stopped and refused;
* a tool whose ``inputSchema`` is not a usable JSON Schema object refuses the whole
  server (naming the server and the tool) rather than silently dropping the tool:
  the spec or ``-T`` asked for that server's tools, and a missing one would only
  surface later as a confusing "unknown tool";
* the child process is always ended when startup fails or the tools close (the
  SDK closes its stdin, then terminates and kills its process group, each step
  bounded), and any server still open when the interpreter exits is closed then;
* the ``mcp`` package's loggers never print to the user's terminal (the SDK logs
  garbage on a server's stdout with a traceback); promptdsl reports errors itself.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import copy
import logging
import os
import shlex
import threading
import weakref
from collections.abc import Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from ..errors import clip, escape, quote
from .base import Tool, ToolError, ToolFailure

#: Seconds a server has to answer ``initialize`` and ``tools/list`` (read at each start, so tests may patch it).
STARTUP_TIMEOUT = 30.0
#: Bound on ending a session: the SDK's own shutdown (stdin closed, 2 s grace, SIGTERM, 2 s, SIGKILL) fits in it.
CLOSE_TIMEOUT = 8.0
#: Any of the timeouts a concurrent future may raise (distinct classes before Python 3.11).
_TIMEOUTS = (TimeoutError, concurrent.futures.TimeoutError)
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


class _SdkErrors(logging.Handler):
    """Keeps (never prints) the first error the SDK logs on each server's thread, to explain a failed start."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.first: dict[int, str] = {}
        self.watched: set[int] = set()

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread in self.watched and record.thread not in self.first:
            self.first[record.thread] = _log_text(record)


def _log_text(record: logging.LogRecord) -> str:
    exc = record.exc_info[1] if record.exc_info else None
    errors = getattr(exc, "errors", None)
    with contextlib.suppress(Exception):  # pydantic's ValidationError names the offending line
        if callable(errors) and "JSONRPC" in record.getMessage():
            return f"it wrote {quote(errors()[0]['input'])} on stdout, which is not a JSON-RPC message"
    return quote(record.getMessage(), 200)


_sdk_errors = _SdkErrors()


def quiet_sdk_logs() -> None:
    """Keep the ``mcp`` package's log records off the terminal (unless the embedding app configured that logger).

    The SDK logs, e.g., every unparsable line a server writes to stdout with a full traceback; the
    user should see promptdsl's one error line instead (which quotes the SDK's first error, if any).
    """
    logger = logging.getLogger("mcp")
    if _sdk_errors not in logger.handlers:
        if not logger.handlers:
            logger.propagate = False
        logger.addHandler(_sdk_errors)  # a handler of its own also keeps logging's last resort (stderr) away


_open_servers: weakref.WeakSet[McpServer] = weakref.WeakSet()


@atexit.register
def _close_open_servers() -> None:
    """Leave no server process behind, even when the program ends without closing its tools."""
    for server in list(_open_servers):
        with contextlib.suppress(Exception):
            server.close()


class McpServer:
    """One stdio MCP server process and its client session, run on a private event loop.

    ``startup_timeout`` (default :data:`STARTUP_TIMEOUT`) bounds ``initialize`` plus ``tools/list``;
    a failed start ends the process before the :class:`ToolError` is raised.
    """

    def __init__(
        self, command: str, *, cwd: Path | None = None, startup_timeout: float | None = None, trusted: bool = True
    ) -> None:
        self.command = command
        self._env = child_env(trusted=trusted)
        argv = shlex.split(command)
        if not argv:
            raise ToolError("an MCP server needs a command")
        timeout = STARTUP_TIMEOUT if startup_timeout is None else startup_timeout
        quiet_sdk_logs()
        self._argv = argv
        self._cwd = cwd
        self._lock = threading.Lock()
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._closing = asyncio.Event()  # unbound until awaited, so it may be made outside the loop
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"mcp-{argv[0]}", daemon=True)
        self._thread.start()
        if self._thread.ident is not None:
            _sdk_errors.watched.add(self._thread.ident)
        self._ready: Future[list[Any]] = Future()
        self._finished = threading.Event()  # set once the session task has ended (its cleanup included)
        self._task: asyncio.Task[None] | None = None
        self._session: Any = None
        self.tools: list[Any] = []
        _open_servers.add(self)
        self._loop.call_soon_threadsafe(self._start, timeout)
        try:
            # The session times its own startup out (so the SDK ends the process); this bound is a backstop.
            self.tools = self._ready.result(timeout=timeout + CLOSE_TIMEOUT)
        except (KeyboardInterrupt, SystemExit):
            self.close()
            raise
        except BaseException as exc:
            said = _sdk_errors.first.get(self._thread.ident or 0)
            self.close()
            if isinstance(_innermost(exc), _TIMEOUTS):
                raise ToolError(f"MCP server {quote(command, 200)} did not start within {timeout:g}s") from None
            raise ToolError(f"MCP server {quote(command, 200)} failed to start: {_reason(exc)}"
                            + (f"; {said}" if said else "")) from None

    def _start(self, startup_timeout: float) -> None:
        self._task = self._loop.create_task(self._serve(startup_timeout))
        self._task.add_done_callback(lambda _: self._finished.set())

    def _cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _serve(self, startup_timeout: float) -> None:
        import anyio
        from mcp import ClientSession
        from mcp.client.stdio import StdioServerParameters, stdio_client

        params = StdioServerParameters(command=self._argv[0], args=self._argv[1:],
                                       cwd=str(self._cwd) if self._cwd else None, env=self._env)
        try:
            with open(os.devnull, "w") as errlog:
                async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
                    with anyio.fail_after(startup_timeout):  # inside the transport, so its cleanup runs on timeout
                        await session.initialize()
                        listed = await session.list_tools()
                    self._session = session
                    self._ready.set_result(list(listed.tools))
                    await self._closing.wait()
        except BaseException as exc:  # kept for the starter; after startup, call() sees the session gone
            if not self._ready.done():
                self._ready.set_exception(exc)
        finally:
            self._session = None

    def call(self, name: str, arguments: dict[str, Any], timeout: float) -> str:
        """The tool's text content; raises ToolFailure when the server reports an error."""
        session = self._session
        if session is None or self._closed or self._finished.is_set():
            raise ToolFailure(f"the MCP server {quote(self.command, 200)} is not running")
        future = asyncio.run_coroutine_threadsafe(session.call_tool(name, arguments), self._loop)
        try:
            result = future.result(timeout=timeout)
        except _TIMEOUTS:
            future.cancel()
            raise ToolFailure(f"timed out after {timeout:g}s") from None
        except concurrent.futures.CancelledError:
            raise ToolFailure(f"the MCP server {quote(self.command, 200)} closed") from None
        except Exception as exc:
            raise ToolFailure(f"MCP error: {_reason(exc)}") from None
        text = "\n".join(_content_text(c) for c in (getattr(result, "content", None) or []))
        if getattr(result, "is_error", getattr(result, "isError", False)):
            raise ToolFailure(text or "the MCP tool reported an error")
        return text

    def close(self) -> None:
        """End the session and the server process (bounded by :data:`CLOSE_TIMEOUT`); safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        _open_servers.discard(self)
        if self._thread.ident is not None:
            _sdk_errors.watched.discard(self._thread.ident)
            _sdk_errors.first.pop(self._thread.ident, None)
        if not self._finished.is_set():
            if self._ready.done() and self._ready.exception() is None:
                self._loop.call_soon_threadsafe(self._closing.set)  # the session ends; the SDK stops the process
            else:
                self._loop.call_soon_threadsafe(self._cancel)  # still starting: the SDK's cleanup is shielded
            if not self._finished.wait(CLOSE_TIMEOUT):
                self._loop.call_soon_threadsafe(self._cancel)
                self._finished.wait(CLOSE_TIMEOUT / 2)
        with contextlib.suppress(Exception):  # pending calls whose caller gave up
            asyncio.run_coroutine_threadsafe(_cancel_other_tasks(), self._loop).result(timeout=1)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=2)
        if not self._thread.is_alive():
            self._loop.close()


async def _cancel_other_tasks() -> None:
    """Cancel what is still pending on the loop (calls whose caller timed out) before it stops."""
    me = asyncio.current_task()
    pending = [t for t in asyncio.all_tasks() if t is not me]
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=0.5)


def _innermost(exc: BaseException) -> BaseException:
    inner = getattr(exc, "exceptions", None)  # anyio task groups wrap the real error
    return _innermost(inner[0]) if inner else exc


def _reason(exc: BaseException) -> str:
    exc = _innermost(exc)  # the text may come from the server: escaped, so it cannot forge terminal output
    return clip(escape(f"{type(exc).__name__}: {exc}"), 300)


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
        self.parameters = bounded(_input_schema(info))
        self.timeout = timeout

    def call(self, arguments: dict[str, Any]) -> str:
        return self.server.call(self.name, arguments, self.timeout)

    def close(self) -> None:
        self.server.close()


def _input_schema(info: Any) -> dict[str, Any]:
    schema = getattr(info, "input_schema", None) or getattr(info, "inputSchema", None) or {}
    return {"type": "object", **schema} if isinstance(schema, Mapping) else {"type": "object", "": schema}


def tool_problem(info: Any) -> str | None:
    """Why a listed MCP tool cannot be offered (its ``inputSchema`` is not a usable object schema), or None."""
    from ..registry import object_schema_problem

    schema = getattr(info, "input_schema", None) or getattr(info, "inputSchema", None) or {}
    if not isinstance(schema, Mapping):
        return f"has an input schema that is not a JSON object but {type(schema).__name__}"
    problem = object_schema_problem({"type": "object", **schema})
    return None if problem is None else f"has an input schema that {problem}"


def child_env(*, trusted: bool) -> dict[str, str]:
    """The environment a server starts with. One you name (``-T``) gets yours, since it may need
    its own token; one a spec names gets only what a program needs to run (the SDK's safe set:
    HOME, PATH, SHELL, TERM, plus the locale): your API keys are not the spec's to hand out."""
    if trusted:
        return dict(os.environ)
    from mcp.client.stdio import get_default_environment

    env = get_default_environment()
    env.update({k: v for k, v in os.environ.items() if k == "LANG" or k.startswith("LC_")})
    return env


def open_mcp_tools(command: str, *, timeout: float, cwd: Path | None = None, trusted: bool = True) -> list[Tool]:
    """Start ``command`` as a stdio MCP server and return its tools (closing any one closes the server).

    A tool whose ``inputSchema`` is not a usable JSON Schema object refuses the whole server: the
    server is stopped and a :class:`ToolError` names it and the tool (skipping the tool would hide
    the problem until a model asks for it).
    """
    server = McpServer(command, cwd=cwd, trusted=trusted)
    try:
        for info in server.tools:
            problem = tool_problem(info)
            if problem is not None:
                name = quote(str(info.name))
                raise ToolError(f"MCP server {quote(command, 200)} offers tool {name}, which {problem}")
        return [McpTool(server, info, timeout) for info in server.tools]
    except BaseException:
        server.close()
        raise
