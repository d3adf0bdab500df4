"""A real OpenAI-compatible server for tests: llama-cpp-python's server on the embedded model.

``llama_server()`` starts ``python -m llama_cpp.server`` on 127.0.0.1 (a free
port), waits until ``/v1/models`` answers (bounded), and always stops it. The
session fixture ``openai_server`` shares one server across tests; tests that
must break a server (kill it mid-stream) start their own with ``llama_server``.
The server requires an API key, so tests also cover authentication and check
that the key never leaks.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

#: Environment variable the session backend reads its key from (see the openai backend's api_key_env).
KEY_ENV = "PROMPTDSL_TEST_SERVER_KEY"
STARTUP_TIMEOUT = 90.0
MODEL_ALIAS = "smollm2"


@dataclass(frozen=True)
class Server:
    """A running server: where it listens, its key, its process and log."""

    base_url: str
    api_key: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1].split("/")[0])

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def kill(self) -> None:
        """Hard-kill the server (SIGKILL), as a crash would."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def _die_with_parent() -> None:
    """Linux: the server gets SIGTERM if the test process dies without cleaning up (e.g. SIGKILL)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ready(base_url: str, api_key: str) -> bool:
    request = urllib.request.Request(f"{base_url}/models", headers={"Authorization": f"Bearer {api_key}"})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass


@contextmanager
def llama_server(*, n_ctx: int = 2048, timeout: float = STARTUP_TIMEOUT, args: Sequence[str] = ()) -> Iterator[Server]:
    """Start a llama-cpp-python server on the embedded model; stop it on exit (also on failure)."""
    from promptdsl_llamacpp import embedded_model_path

    port = free_port()
    key = "sk-test-" + secrets.token_hex(12)
    base_url = f"http://127.0.0.1:{port}/v1"
    log = Path(tempfile.mkstemp(prefix="llama-server-", suffix=".log")[1])
    cmd = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(embedded_model_path()), "--model_alias", MODEL_ALIAS,
        "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", str(n_ctx), "--api_key", key, *args,
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                   preexec_fn=_die_with_parent)
    server = Server(base_url, key, process, log)
    try:
        deadline = time.monotonic() + timeout
        while not _ready(base_url, key):
            if process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {process.returncode}:\n{server.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama_cpp.server not ready after {timeout:g}s:\n{server.log_tail()}")
            time.sleep(0.2)
        yield server
    finally:
        _stop(process)
        log.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def openai_server() -> Iterator[Server]:
    """One llama-cpp-python server for the whole session; its key is in $PROMPTDSL_TEST_SERVER_KEY."""
    with llama_server() as server:
        os.environ[KEY_ENV] = server.api_key
        try:
            yield server
        finally:
            os.environ.pop(KEY_ENV, None)


@pytest.fixture(scope="session")
def openai_backend(openai_server: Server) -> Iterator[object]:
    """The real openai backend talking to the session server."""
    from promptdsl_openai import OpenAIBackend

    backend = OpenAIBackend(None, {"base_url": openai_server.base_url, "api_key_env": KEY_ENV, "timeout": 60})
    yield backend
    backend.close()


@pytest.fixture
def openai_env(openai_server: Server, monkeypatch: pytest.MonkeyPatch) -> Server:
    """OPENAI_API_KEY set to the session server's key, OPENAI_BASE_URL pointing at it."""
    monkeypatch.setenv("OPENAI_API_KEY", openai_server.api_key)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    return openai_server
