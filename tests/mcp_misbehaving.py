"""A stdio MCP server that misbehaves on purpose, for tests/test_mcp_hardening.py.

``python tests/mcp_misbehaving.py MODE PIDFILE``: writes its pid to PIDFILE, then by MODE:

* ``mute``: never answers (and ignores stdin's end);
* ``stubborn``: never answers and ignores SIGTERM too (only SIGKILL ends it);
* ``badschema``: answers properly, but one tool's inputSchema is not a valid JSON Schema;
* ``good``: answers properly, with one good tool (and writes its pid, unlike tests/mcp_server.py);
* ``garbage``: writes a line that is not JSON-RPC, then exits.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

MODE, PIDFILE = sys.argv[1], sys.argv[2]
Path(PIDFILE).write_text(str(os.getpid()))


def send(message: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


if MODE in ("mute", "stubborn"):
    if MODE == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(1)
elif MODE == "garbage":
    sys.stdout.write("garbage\n")
    sys.stdout.flush()
elif MODE in ("badschema", "good"):
    tools = [
        {"name": "good", "description": "fine", "inputSchema": {"type": "object", "properties": {"a": {"type": "string"}}}},
        {"name": "badtype", "description": "broken", "inputSchema": {"type": "object", "properties": {"a": {"type": "nonsense"}}}},
    ][: 2 if MODE == "badschema" else 1]
    for line in sys.stdin:
        msg = json.loads(line)
        method, ident = msg.get("method"), msg.get("id")
        if method == "initialize":
            send({"jsonrpc": "2.0", "id": ident, "result": {
                "protocolVersion": msg["params"]["protocolVersion"], "capabilities": {"tools": {}},
                "serverInfo": {"name": "bad", "version": "1"}}})
        elif method == "tools/list":
            send({"jsonrpc": "2.0", "id": ident, "result": {"tools": tools}})
        elif method == "tools/call":
            send({"jsonrpc": "2.0", "id": ident, "result": {"content": [{"type": "text", "text": "ok"}], "isError": False}})
        elif ident is not None:
            send({"jsonrpc": "2.0", "id": ident, "result": {}})
