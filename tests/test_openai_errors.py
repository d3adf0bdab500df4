"""The openai backend's failures without a real server: closed ports, canned HTTP errors, timeouts, bad options.

These need no model and start no model server (a canned in-process HTTP handler at most),
so they run in the fast tier.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from openai_server import free_port

from promptdsl.backend import GenerationOptions
from promptdsl.cli import main
from promptdsl.errors import BackendError
from promptdsl.prompt import Message, Prompt
from promptdsl.registry import get_backend

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.yaml"))

GREEDY = GenerationOptions(temperature=0.0, max_tokens=8)


def chat(text: str) -> Prompt:
    return Prompt(mode="chat", messages=(Message("user", text),))


def test_specs_found() -> None:
    assert {p.stem for p in SPECS} >= {"sentiment"}


def test_closed_port_is_one_clear_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-never-printed-0123456789")
    url = f"http://127.0.0.1:{free_port()}/v1"
    code = main(["run", str(ROOT / "specs" / "qa.yaml"), "--backend", "openai", "-o", f"base_url={url}",
                 "-o", "max_retries=0", "-o", "timeout=5", "--input", "question=Hi?"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"cannot connect to {url}" in err and "Connection refused" in err
    assert "sk-never-printed" not in err


def test_results_from_two_servers_never_share_a_cache_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The URL from $OPENAI_BASE_URL is not among the options, yet it picks the server."""
    from promptdsl import Runner, loads_spec
    from promptdsl.cache import runner_key

    spec = loads_spec("version: 1\nname: t\ninputs: {text: {type: string}}\n")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    keys = set()
    for port in (8001, 8002):
        monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{port}/v1")
        backend = get_backend("openai", "same-name", {"grammar": False})  # no request: model and grammar given
        keys.add(runner_key(Runner(spec, backend)))
        backend.close()
    assert len(keys) == 2


class _Canned(BaseHTTPRequestHandler):
    """Answers every POST with one fixed status (exact control over 429 / 5xx)."""

    status = 500
    hits = 0

    def do_POST(self) -> None:
        type(self).hits += 1
        key = self.headers.get("Authorization", "").removeprefix("Bearer ")
        # Like OpenAI's "Incorrect API key provided: sk-...", the message repeats the key: it must be masked.
        message = f"canned {self.status} (key {key})"
        body = json.dumps({"error": {"message": message, "type": "x"}}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def canned() -> Iterator[tuple[str, type[_Canned]]]:
    handler = type("Handler", (_Canned,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)  # quick shutdown()
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("status", "code", "text"), [
    (429, 1, "rate limited by"),
    (500, 1, "server error 500"),
    (503, 1, "server error 503"),
    (400, 2, "refused the request (400): canned 400 (key ***)"),
    (403, 2, "permission denied by"),
])
def test_http_errors_are_mapped(canned: tuple[str, type[_Canned]], monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str], status: int, code: int, text: str) -> None:
    url, handler = canned
    handler.status = status
    monkeypatch.setenv("OPENAI_API_KEY", "sk-canned-secret-value")
    rc = main(["run", str(ROOT / "specs" / "qa.yaml"), "--backend", "openai", "--model", "m",
               "-o", f"base_url={url}", "-o", "max_retries=1", "-o", "grammar=false", "--input", "question=Hi?"])
    err = capsys.readouterr().err
    assert rc == code
    assert text in err and err.count("\n") == 1 and "Traceback" not in err
    assert "sk-canned-secret-value" not in err
    # retries apply to 429 and 5xx, not to 400 or 403
    assert handler.hits == (1 if status < 429 else 2)


@pytest.mark.server
def test_timeout_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that accepts but never answers: the request times out after `timeout` seconds."""
    import socket
    import time

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    try:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
        backend = get_backend("openai", "m", {"base_url": f"http://127.0.0.1:{listener.getsockname()[1]}/v1",
                                              "timeout": 0.3, "max_retries": 0, "grammar": False})
        start = time.monotonic()
        with pytest.raises(BackendError, match=r"timed out after 0\.3s") as err:
            backend.complete(chat("Hi"), GREEDY)
        assert time.monotonic() - start < 10
        assert err.value.exit_code == 1
    finally:
        listener.close()


def test_bad_options_are_exit_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    spec = str(ROOT / "specs" / "qa.yaml")
    cases = [
        (["-o", "timeout=soon"], "option timeout must be a number"),
        (["-o", "bogus=1"], "openai: unknown option 'bogus'"),
        (["-o", "base_ur=http://x"], "unknown option 'base_ur' (did you mean 'base_url'?)"),
        (["-o", "base_url=ftp://x"], "base_url must start with http"),
        ([], "no API key: set OPENAI_API_KEY"),
    ]
    for extra, message in cases:
        code = main(["run", spec, "--backend", "openai", "--input", "question=Hi?", *extra])
        err = capsys.readouterr().err
        assert code == 2 and message in err and err.count("\n") == 1, (extra, err)


def _http() -> Any:
    """The HTTP library this openai SDK is built on (httpx, or httpx2 in openai 3)."""
    import importlib

    import openai._exceptions as sdk

    return importlib.import_module("httpx2" if hasattr(sdk, "httpx2") else "httpx")


def _status_error(cls: type[Exception], status: int, message: str = "nope") -> Exception:
    import openai

    httpx = _http()

    request = httpx.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
    response = httpx.Response(status, request=request, json={"error": {"message": message}})
    assert issubclass(cls, openai.APIStatusError)
    return cls(message, response=response, body={"error": {"message": message}})


def test_sdk_errors_map_to_kinds_and_the_kind_decides_the_exit_code() -> None:
    import openai
    from promptdsl_openai.config import resolve
    from promptdsl_openai.errors import map_error

    from promptdsl.errors import BACKEND_EXIT_CODES, BackendErrorKind

    settings = resolve({"base_url": "http://127.0.0.1:9/v1"}, environ={})
    request = _http().Request("POST", "http://127.0.0.1:9/v1/chat/completions")
    cases: list[tuple[BaseException, str, BackendErrorKind]] = [
        (openai.APITimeoutError(request=request), "request", BackendErrorKind.TIMEOUT),
        (openai.APIConnectionError(request=request), "request", BackendErrorKind.CONNECT),
        (openai.APIConnectionError(request=request), "stream", BackendErrorKind.STREAM),
        (_status_error(openai.AuthenticationError, 401), "request", BackendErrorKind.AUTH),
        (_status_error(openai.PermissionDeniedError, 403), "request", BackendErrorKind.AUTH),
        (_status_error(openai.NotFoundError, 404), "request", BackendErrorKind.NOT_FOUND),
        (_status_error(openai.RateLimitError, 429), "request", BackendErrorKind.RATE_LIMIT),
        (_status_error(openai.InternalServerError, 503), "request", BackendErrorKind.SERVER),
        (_status_error(openai.BadRequestError, 400), "request", BackendErrorKind.BAD_REQUEST),
        (_status_error(openai.BadRequestError, 400, "maximum context length is 2048 tokens"), "request",
         BackendErrorKind.CONTEXT_LENGTH),
        (ValueError("odd"), "request", BackendErrorKind.FAILED),
    ]
    for exc, during, kind in cases:
        err = map_error(exc, settings, "m", during=during)
        assert (err.kind, err.exit_code) == (kind, BACKEND_EXIT_CODES[kind]), exc
        assert err.backend == "openai" and "\n" not in str(err)


def test_plugins_passing_only_an_exit_code_keep_it() -> None:
    from promptdsl.errors import BackendErrorKind

    assert (BackendError("x").exit_code, BackendError("x").kind) == (2, BackendErrorKind.CONFIG)
    assert (BackendError("x", exit_code=1).kind, BackendError("x", exit_code=1).exit_code) == (
        BackendErrorKind.FAILED, 1)
    assert BackendError("x", kind=BackendErrorKind.TIMEOUT).exit_code == 1
