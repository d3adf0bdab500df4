"""The openai backend against hostile servers and hostile settings (no model, in-process HTTP servers).

Each test starts a small ``http.server`` in a thread on 127.0.0.1 that misbehaves in one
way: it leaks nothing, hangs nothing, and crashes nothing. Like tests/test_openai_errors.py,
these need no model server, so they run in the fast tier.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from promptdsl_openai import OpenAIBackend
from promptdsl_openai.config import resolve
from tools_support import NativeScripted

from promptdsl import Runner, loads_spec
from promptdsl.backend import GenerationOptions, check_options
from promptdsl.cli import main
from promptdsl.errors import BackendError, BackendErrorKind
from promptdsl.prompt import Message, Prompt
from promptdsl.spec import FromSpec

ROOT = Path(__file__).resolve().parent.parent
GREEDY = GenerationOptions(temperature=0.0, max_tokens=8)
KEY = "sk-hardening-Secret0123456789"


def chat(text: str = "Hi") -> Prompt:
    return Prompt(mode="chat", messages=(Message("user", text),))


def completion(content: Any = "Paris", **message: Any) -> dict[str, Any]:
    return {"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content, **message}}]}


def chunk(content: str | None, finish: str | None = None) -> bytes:
    data = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m",
            "choices": [{"index": 0, "delta": {} if content is None else {"content": content},
                         "finish_reason": finish}]}
    return b"data: " + json.dumps(data).encode() + b"\n\n"


# ---------------------------------------------------------------------------- the servers


class Handler(BaseHTTPRequestHandler):
    """Records each request, then lets the test's ``respond`` answer it (or misbehave)."""

    protocol_version = "HTTP/1.1"
    respond: Callable[[Handler, dict[str, Any]], None]
    seen: list[dict[str, Any]]
    stop: threading.Event

    def _handle(self) -> None:
        size = int(self.headers.get("Content-Length", 0) or 0)
        raw = self.rfile.read(size) if size else b""
        body = json.loads(raw) if raw else {}
        type(self).seen.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                "body": body})
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up, as it should
            type(self).respond(self, body)

    do_GET = do_POST = _handle

    def send(self, obj: Any, status: int = 200, ctype: str = "application/json",
             headers: dict[str, str] | None = None) -> None:
        data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def start_stream(self, ctype: str | None = "text/event-stream", length: int | None = None) -> None:
        self.send_response(200)
        if ctype is not None:
            self.send_header("Content-Type", ctype)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def drip(self, piece: bytes, every: float, most: float = 8.0) -> None:
        """Write ``piece`` every ``every`` seconds for at most ``most`` seconds (or until stopped)."""
        end = time.monotonic() + most
        while time.monotonic() < end and not type(self).stop.is_set():
            self.wfile.write(piece)
            self.wfile.flush()
            time.sleep(every)

    def log_message(self, *args: object) -> None:
        pass


Serve = Callable[[Callable[[Handler, dict[str, Any]], None]], tuple[str, type[Handler]]]


class QuietServer(ThreadingHTTPServer):
    """A client that hangs up on a kept-alive connection is no error of the test's (socketserver
    would print its traceback on stderr, into the output the test reads); anything else still is."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)


@pytest.fixture
def serve() -> Iterator[Serve]:
    """``serve(respond)`` -> (base_url, handler class with ``seen``); every server stops after the test."""
    servers: list[tuple[ThreadingHTTPServer, threading.Event]] = []

    def start(respond: Callable[[Handler, dict[str, Any]], None]) -> tuple[str, type[Handler]]:
        stop = threading.Event()
        handler = type("H", (Handler,), {"respond": staticmethod(respond), "seen": [], "stop": stop})
        server = QuietServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        servers.append((server, stop))
        return f"http://127.0.0.1:{server.server_address[1]}/v1", handler

    yield start
    for server, stop in servers:
        stop.set()
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("OPENAI_") or key == "PROMPTDSL_TRUSTED_BASE_URLS":
            monkeypatch.delenv(key)
    monkeypatch.setenv("PROMPTDSL_HOME", str(tmp_path / "home"))


def backend(url: str, **options: Any) -> OpenAIBackend:
    return OpenAIBackend("m", {"base_url": url, "grammar": False, "max_retries": 0, "timeout": 2, **options})


def fails(call: Callable[[], Any]) -> tuple[BackendError, float]:
    start = time.monotonic()
    with pytest.raises(BackendError) as info:
        call()
    return info.value, time.monotonic() - start


def drain(b: OpenAIBackend, prompt: Prompt | None = None) -> str:
    return "".join(b.stream(prompt or chat(), GREEDY))


# ---------------------------------------------------------------------------- 1. ambient credentials


AMBIENT = {
    "OPENAI_CUSTOM_HEADERS": "X-Gateway-Key: gw-SECRET-abc123\nAuthorization: Bearer sk-custom-SECRETxyz",
    "OPENAI_ORG_ID": "org-myorg", "OPENAI_PROJECT_ID": "proj_mine",
    "OPENAI_ADMIN_KEY": "sk-admin-SECRET-42", "OPENAI_WEBHOOK_SECRET": "whsec-SECRET-42",
}


def test_a_spec_chosen_url_gets_none_of_the_users_ambient_credentials(
        serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    url, handler = serve(lambda h, body: h.send(completion()))
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    for name, value in AMBIENT.items():
        monkeypatch.setenv(name, value)
    b = backend(FromSpec(url))
    assert b.complete(chat(), GREEDY) == "Paris"
    b._no_retry().models.list()  # a with_options copy, as the json_schema fallback makes, reads nothing either
    b.close()
    assert len(handler.seen) == 2
    for request in handler.seen:
        headers = request["headers"]
        assert headers["authorization"] == "Bearer no-key"
        assert not {"x-gateway-key", "openai-organization", "openai-project"} & set(headers)
        assert "SECRET" not in json.dumps(headers) and KEY not in json.dumps(headers)


def test_a_url_the_user_chose_gets_their_headers_organization_and_project(
        serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    url, handler = serve(lambda h, body: h.send(completion()))
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_CUSTOM_HEADERS", "X-Gateway-Key: gw-SECRET-abc123")
    monkeypatch.setenv("OPENAI_ORG_ID", "org-myorg")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj_mine")
    b = backend(url)
    b.complete(chat(), GREEDY)
    b._no_retry().models.list()
    b.close()
    for request in handler.seen:
        headers = request["headers"]
        assert headers["authorization"] == f"Bearer {KEY}"
        assert headers["x-gateway-key"] == "gw-SECRET-abc123"
        assert (headers["openai-organization"], headers["openai-project"]) == ("org-myorg", "proj_mine")


def test_the_401_line_says_which_credentials_were_withheld() -> None:
    env = {"OPENAI_API_KEY": KEY, "OPENAI_CUSTOM_HEADERS": "X-Key: abcdefgh123", "PROMPTDSL_HOME": "/nonexistent"}
    settings = resolve({"base_url": FromSpec("http://10.0.0.5:8000/v1")}, environ=env)
    assert settings.headers == {} and settings.api_key == "no-key"
    assert "the API key in OPENAI_API_KEY and the headers in OPENAI_CUSTOM_HEADERS were not sent" in \
        settings.key_withheld
    assert "abcdefgh123" not in settings.key_withheld


def test_a_broken_custom_headers_variable_is_refused_without_its_value() -> None:
    env = {"OPENAI_CUSTOM_HEADERS": "X-Key gw-SECRET-value", "PROMPTDSL_HOME": "/nonexistent"}
    with pytest.raises(BackendError) as info:
        resolve({"base_url": "http://127.0.0.1:9/v1"}, environ=env)
    assert info.value.exit_code == 2 and "OPENAI_CUSTOM_HEADERS line 1" in str(info.value)
    assert "SECRET" not in str(info.value)


# ---------------------------------------------------------------------------- 2. deadlines and size caps


def test_a_trickled_reply_ends_at_the_deadline(serve: Serve) -> None:
    def trickle(h: Handler, body: dict[str, Any]) -> None:
        h.start_stream("application/json", length=1 << 20)
        h.drip(b" ", every=0.1)

    url, _ = serve(trickle)
    err, took = fails(lambda: backend(url, timeout=0.4, deadline=0.6).complete(chat(), GREEDY))
    assert err.kind is BackendErrorKind.TIMEOUT and err.exit_code == 1
    assert "took longer than 0.6s in all" in str(err) and "-o deadline=" in str(err)
    assert took < 4


def test_sse_keepalive_comments_end_at_the_deadline(serve: Serve) -> None:
    def keepalive(h: Handler, body: dict[str, Any]) -> None:
        h.start_stream()
        h.drip(b": ping\n\n", every=0.1)

    url, _ = serve(keepalive)
    err, took = fails(lambda: drain(backend(url, timeout=0.4, deadline=0.6)))
    assert err.kind is BackendErrorKind.TIMEOUT and "the answer from" in str(err) and "0.6s in all" in str(err)
    assert took < 4


def test_trickled_headers_end_at_the_deadline(serve: Serve) -> None:
    def slow_headers(h: Handler, body: dict[str, Any]) -> None:
        h.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        h.drip(b"a", every=0.1)

    url, _ = serve(slow_headers)
    err, took = fails(lambda: backend(url, timeout=0.4, deadline=0.6).complete(chat(), GREEDY))
    assert err.kind is BackendErrorKind.TIMEOUT and "deadline" in str(err)
    assert took < 4


def test_an_endless_stream_is_cut_at_the_size_cap(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    import promptdsl_openai.backend as module

    monkeypatch.setattr(module, "MAX_REPLY_BYTES", 1 << 20)

    def endless(h: Handler, body: dict[str, Any]) -> None:
        h.start_stream()
        h.drip(chunk("a" * 65536), every=0.001)

    url, _ = serve(endless)
    err, took = fails(lambda: drain(backend(url, deadline=30)))
    assert err.kind is BackendErrorKind.FAILED and "sent more than 1 MiB in one reply" in str(err)
    assert took < 5


def test_a_huge_reply_is_cut_at_the_size_cap(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    import promptdsl_openai.backend as module

    monkeypatch.setattr(module, "MAX_REPLY_BYTES", 1 << 20)
    url, _ = serve(lambda h, body: h.send(completion("a" * (4 << 20))))
    err, _ = fails(lambda: backend(url).complete(chat(), GREEDY))
    assert "sent more than 1 MiB in one reply" in str(err) and err.exit_code == 1


def test_a_compressed_reply_is_refused(serve: Serve) -> None:
    url, handler = serve(lambda h, body: h.send(gzip.compress(json.dumps(completion()).encode()),
                                                 headers={"Content-Encoding": "gzip"}))
    err, _ = fails(lambda: backend(url).complete(chat(), GREEDY))
    assert "compressed reply" in str(err) and err.exit_code == 1
    assert handler.seen[0]["headers"]["accept-encoding"] == "identity"


def test_a_stalled_stream_says_it_stalled_and_claims_no_retries(serve: Serve) -> None:
    def stall(h: Handler, body: dict[str, Any]) -> None:
        h.start_stream()
        h.wfile.write(chunk("Par"))
        h.wfile.flush()
        h.stop.wait(5)

    url, _ = serve(stall)
    err, took = fails(lambda: drain(backend(url, timeout=0.5, max_retries=2)))
    assert err.kind is BackendErrorKind.TIMEOUT and "stalled" in str(err) and "retr" not in str(err)
    assert took < 3


def test_a_normal_stream_still_works(serve: Serve) -> None:
    def ok(h: Handler, body: dict[str, Any]) -> None:
        h.start_stream()
        h.wfile.write(chunk("Pa") + chunk("ris") + chunk(None, "stop") + b"data: [DONE]\n\n")
        h.close_connection = True

    url, _ = serve(ok)
    assert drain(backend(url)) == "Paris"


# ---------------------------------------------------------------------------- 3/5. reply shapes


BAD_REPLIES = [
    pytest.param(b"<html><body>Login</body></html>", "text/html",
                 "answered /chat/completions with 'text/html', not", id="html"),
    pytest.param(b"{nope", "application/json", "body that is not valid JSON", id="invalid-json"),
    pytest.param({"choices": "oops"}, "application/json", "'choices' is text ('oops'), not a list", id="choices-text"),
    pytest.param([1, 2, 3], "application/json", "list, not", id="json-list"),
    pytest.param(completion() | {"choices": [{"message": "hello"}]}, "application/json",
                 "choices[0].message is text ('hello'), not an object", id="message-text"),
    pytest.param(completion(42), "application/json", "message.content is a number, not text", id="content-number"),
    pytest.param({"error": {"message": "boom"}}, "application/json", "is an error: 'boom'", id="error-object"),
]


@pytest.mark.parametrize(("body", "ctype", "text"), BAD_REPLIES)
@pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])
def test_a_reply_that_is_not_openai_shaped_is_one_clear_error(
        serve: Serve, body: Any, ctype: str, text: str, streamed: bool) -> None:
    url, _ = serve(lambda h, _body: h.send(body, ctype=ctype))
    b = backend(url)
    err, _ = fails(lambda: drain(b) if streamed else b.complete(chat(), GREEDY))
    assert text in str(err) and str(err).startswith(f"openai: {url}")
    assert err.exit_code == 1 and "\n" not in str(err)
    assert "AttributeError" not in str(err) and "JSONDecodeError" not in str(err)


def test_every_cut_of_a_json_reply_is_told_from_malformed_json() -> None:
    """Wherever the connection closes (inside the text, a literal, a number, an escape), the body reads as cut;
    JSON that is wrong before its end does not."""
    from promptdsl_openai.backend import _cut

    reply = completion('Paris is "the" capital \u00e9') | {"usage": {"prompt_tokens": 12, "total": -1.5e+3},
                                                            "flag": True, "none": None, "list": [False, 2]}
    body = json.dumps(reply).encode()
    for n in range(1, len(body)):
        try:
            json.loads(body[:n])
        except ValueError as exc:
            assert _cut(body[:n], exc), body[:n]
    for bad in (b'{"a": nope}', b'{"a": 1,,}', b'{"a": -}', b'[1 2]', b'{"a": "\\x"}', b'{"a": 1} extra'):
        try:
            json.loads(bad)
        except ValueError as exc:
            assert not _cut(bad, exc), bad


@pytest.mark.parametrize("at", ["after a comma", "inside the text"])
@pytest.mark.parametrize("ctype", ["application/json", None])
@pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])
def test_a_json_reply_whose_connection_closes_mid_way_says_so(
        serve: Serve, ctype: str | None, streamed: bool, at: str) -> None:
    """No Content-Length and no chunks: HTTP sees a complete body, only the JSON shows it was cut. The error
    says the connection closed, not "not JSON" or "is base_url the API root?"."""
    whole = json.dumps(completion("Paris is the capital")).encode()
    end = whole.index(b",") + 1 if at == "after a comma" else whole.index(b"Paris is") + 5

    def cut(h: Handler, body: dict[str, Any]) -> None:
        h.start_stream(ctype)
        h.wfile.write(whole[:end])
        h.close_connection = True

    url, _ = serve(cut)
    b = backend(url)
    err, _ = fails(lambda: drain(b) if streamed else b.complete(chat(), GREEDY))
    assert "JSON that stops mid-way: the reply was cut off" in str(err), str(err)
    assert "base_url" not in str(err) and err.exit_code == 1 and "\n" not in str(err)


def test_a_server_that_answers_a_stream_with_one_json_reply_is_read(serve: Serve) -> None:
    url, _ = serve(lambda h, body: h.send(completion("Paris")))
    assert drain(backend(url)) == "Paris"


SSE_CHUNKS = chunk("Pa") + chunk("ris") + chunk(None, "stop") + b"data: [DONE]\n\n"
MISLABELLED = ["text/plain", "text/plain; charset=utf-8", None, "application/json", "application/x-ndjson",
               "application/octet-stream"]


@pytest.mark.parametrize(("ctype", "start"), [
    *((ctype, b"") for ctype in MISLABELLED),
    ("application/json", b"\n: keep-alive\n\n"), (None, b": keep-alive\n\n"),
])
def test_an_event_stream_under_another_content_type_is_read(serve: Serve, ctype: str | None, start: bytes) -> None:
    """Proxies and small servers label SSE as they like; the SDK read it whatever the header said."""
    def stream(h: Handler, body: dict[str, Any]) -> None:
        h.start_stream(ctype)
        h.wfile.write(start + SSE_CHUNKS)
        h.close_connection = True

    url, _ = serve(stream)
    assert drain(backend(url)) == "Paris"


@pytest.mark.parametrize("ctype", ["text/plain", None, "application/json"])
def test_a_mislabelled_stream_comes_piece_by_piece(serve: Serve, ctype: str | None) -> None:
    """The first piece reaches the caller while the server still holds the rest: nothing waits for the whole body."""
    first_read, rest_sent = threading.Event(), threading.Event()

    def slow(h: Handler, body: dict[str, Any]) -> None:
        h.start_stream(ctype)
        h.wfile.write(chunk("Pa"))
        h.wfile.flush()
        first_read.wait(0.3)
        rest_sent.set()
        h.wfile.write(chunk("ris") + chunk(None, "stop") + b"data: [DONE]\n\n")
        h.close_connection = True

    url, _ = serve(slow)
    pieces = backend(url).stream(chat(), GREEDY)
    assert next(pieces) == "Pa" and not rest_sent.is_set()
    first_read.set()
    assert "".join(pieces) == "ris"


@pytest.mark.parametrize("ctype", ["text/plain", None, "application/x-ndjson"])
def test_a_whole_json_reply_under_another_content_type_is_read(serve: Serve, ctype: str | None) -> None:
    def whole(h: Handler, body: dict[str, Any]) -> None:
        h.start_stream(ctype)
        h.wfile.write(b"  " + json.dumps(completion("Paris")).encode())
        h.close_connection = True

    url, _ = serve(whole)
    assert drain(backend(url)) == "Paris"


@pytest.mark.parametrize("ctype", ["text/plain", None, "application/json", "text/html; charset=utf-8"])
def test_a_web_page_is_refused_as_a_stream_whatever_its_type(serve: Serve, ctype: str | None) -> None:
    def page(h: Handler, body: dict[str, Any]) -> None:
        h.start_stream(ctype)
        h.wfile.write(b"\n<!doctype html><html><body>Login</body></html>")
        h.close_connection = True

    url, handler = serve(page)
    err, _ = fails(lambda: drain(backend(url)))
    said = "body that is not valid JSON" if ctype == "application/json" else "not an event stream (is base_url the API"
    assert said in str(err) and err.exit_code == 1 and "\n" not in str(err)
    assert len(handler.seen) == 1  # refused at once: not asked again to diagnose an unfinished stream


@pytest.mark.parametrize("piece", [b": ping\n\n", b" "], ids=["comments", "blanks"])
def test_a_mislabelled_stream_ends_at_the_deadline(serve: Serve, piece: bytes) -> None:
    def keepalive(h: Handler, body: dict[str, Any]) -> None:
        h.start_stream("application/json")
        h.drip(piece, every=0.03, most=2)

    url, _ = serve(keepalive)
    err, took = fails(lambda: drain(backend(url, timeout=0.2, deadline=0.3)))
    assert err.kind is BackendErrorKind.TIMEOUT and "0.3s in all" in str(err)
    assert took < 2


def test_a_stream_that_stops_before_its_first_byte_is_a_timeout(serve: Serve) -> None:
    def silent(h: Handler, body: dict[str, Any]) -> None:
        h.start_stream("text/plain")
        h.wfile.flush()
        h.stop.wait(2)

    url, handler = serve(silent)
    err, took = fails(lambda: drain(backend(url, timeout=0.2, deadline=30, max_retries=2)))
    assert err.kind is BackendErrorKind.TIMEOUT and "stalled: nothing came for 0.2s" in str(err)
    assert "retr" not in str(err) and len(handler.seen) == 1 and took < 2


def test_a_mislabelled_stream_cut_off_is_a_lost_connection(serve: Serve) -> None:
    def cut(h: Handler, body: dict[str, Any]) -> None:
        h.start_stream("text/plain", length=1000)
        h.wfile.write(b"\n")
        h.close_connection = True

    url, _ = serve(cut)
    err, _ = fails(lambda: drain(backend(url)))
    assert err.kind is BackendErrorKind.STREAM and "was lost mid-answer" in str(err), str(err)


def test_a_mislabelled_endless_stream_is_cut_at_the_size_cap(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    import promptdsl_openai.backend as module

    monkeypatch.setattr(module, "MAX_REPLY_BYTES", 1 << 20)

    def endless(h: Handler, body: dict[str, Any]) -> None:
        h.start_stream("text/plain")
        h.drip(chunk("a" * 65536), every=0.001)

    url, _ = serve(endless)
    err, took = fails(lambda: drain(backend(url, deadline=30)))
    assert err.kind is BackendErrorKind.FAILED and "sent more than 1 MiB in one reply" in str(err)
    assert took < 5


def test_a_model_list_that_is_a_web_page_is_one_clear_error(serve: Serve) -> None:
    url, _ = serve(lambda h, body: h.send(b"<html>login</html>", ctype="text/html"))
    err, _ = fails(lambda: OpenAIBackend(None, {"base_url": url, "grammar": False, "max_retries": 0}))
    assert "answered /models with 'text/html'" in str(err) and "is base_url the API root" in str(err)


def test_a_probe_answered_with_broken_json_is_one_clear_error(serve: Serve) -> None:
    url, _ = serve(lambda h, body: h.send(b"{nope"))
    err, _ = fails(lambda: OpenAIBackend("m", {"base_url": url, "max_retries": 0}))
    assert "not valid JSON" in str(err) and "probing" not in type(err).__name__


def test_the_cli_reports_a_web_page_in_one_line(serve: Serve, capsys: pytest.CaptureFixture[str]) -> None:
    url, _ = serve(lambda h, body: h.send(b"<html>login</html>", ctype="text/html"))
    code = main(["run", str(ROOT / "specs" / "qa.yaml"), "-b", "openai", "-m", "m", "-o", f"base_url={url}",
                 "-o", "grammar=false", "-o", "max_retries=0", "--no-cache", "-i", "question=Hi?"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err and "'text/html'" in err, err


def _tool_reply(*calls: Any, content: Any = None) -> dict[str, Any]:
    return completion(content, tool_calls=list(calls))


def _call(name: Any, arguments: Any, ident: Any = "c1") -> dict[str, Any]:
    return {"id": ident, "type": "function", "function": {"name": name, "arguments": arguments}}


def _turn(serve: Serve, reply: Any) -> Any:
    url, _ = serve(lambda h, body: h.send(reply))
    return backend(url, tools=True).tool_turn(chat(), [], [], "auto", GREEDY)


@pytest.mark.parametrize(("reply", "text"), [
    pytest.param(_tool_reply(_call(None, "{}")), "function.name is null", id="name-null"),
    pytest.param(_tool_reply(_call(5, "{}")), "function.name is a number", id="name-number"),
    pytest.param(_tool_reply({"id": "c1"}), "function is null", id="no-function"),
    pytest.param(_tool_reply("call"), "a call is text", id="call-text"),
    pytest.param(completion(42), "content is a number", id="content-number"),
    pytest.param(completion() | {"choices": [{"message": "hello"}]}, "message is text", id="message-text"),
    pytest.param(completion(None, tool_calls="x"), "tool_calls is text", id="calls-text"),
])
def test_a_malformed_tool_reply_is_one_clear_error(serve: Serve, reply: Any, text: str) -> None:
    err, _ = fails(lambda: _turn(serve, reply))
    assert text in str(err) and err.exit_code == 1 and "tool call" in str(err)


def test_tool_arguments_of_any_type_reach_the_loop(serve: Serve) -> None:
    turn = _turn(serve, _tool_reply(_call(None, "{}"), _call("calc", {"x": 1}, ident=7), _call("calc", 5),
                                    content=[{"type": "text", "text": "thinking"}]))
    assert turn.text == "thinking"
    assert [(c.tool, c.arguments, c.id) for c in turn.calls] == [("calc", {"x": 1}, ""), ("calc", 5, "c1")]


def test_bad_tool_arguments_are_fed_back_to_the_model(serve: Serve) -> None:
    replies = iter([_tool_reply(_call("calculator", 5)), completion("4")])
    url, _ = serve(lambda h, body: h.send(next(replies, completion("4"))))
    spec = loads_spec("version: 1\nname: t\nmode: chat\ninputs: {q: {type: string}}\ntemplate: '{{ q }}'\n"
                      "tools: [{name: calculator}]\nmax_steps: 2\n")
    result = Runner(spec, backend(url, tools=True)).run({"q": "2+2?"})
    assert "arguments must be a JSON object, not int" in result.steps[0]["error"]


def test_a_tool_turn_answer_cut_by_max_tokens_is_marked_truncated(serve: Serve) -> None:
    cut = completion("The answer is 1") | {}
    cut["choices"][0]["finish_reason"] = "length"
    replies = iter([_tool_reply(_call("calculator", {"expression": "2+2"})), cut])
    url, _ = serve(lambda h, body: h.send(next(replies, completion("4"))))
    spec = loads_spec("version: 1\nname: t\nmode: chat\ninputs: {q: {type: string}}\ntemplate: '{{ q }}'\n"
                      "tools: [{name: calculator}]\nmax_steps: 2\n")
    result = Runner(spec, backend(url, tools=True)).run({"q": "2+2?"})
    assert result.value == "The answer is 1" and result.truncated == "max_tokens"
    assert result.to_dict()["truncated"] == "max_tokens"
    whole = _turn(serve, completion("4"))
    assert whole.text == "4" and whole.cut_off is None


class _Raising(NativeScripted):
    def tool_turn(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("plugin bug")


class _Garbage(NativeScripted):
    def tool_turn(self, *args: Any, **kwargs: Any) -> Any:
        return {"calls": []}


@pytest.mark.parametrize(("plugin", "text"), [(_Raising, "RuntimeError: plugin bug"),
                                               (_Garbage, "tool_turn returned dict, not a ToolTurn")])
def test_a_plugins_tool_turn_failure_is_the_plugins_error(plugin: type[NativeScripted], text: str) -> None:
    from promptdsl.tools import tool

    @tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    spec = loads_spec("version: 1\nname: t\nmode: chat\ninputs: {q: {type: string}}\ntemplate: '{{ q }}'\n")
    with pytest.raises(BackendError) as info:
        Runner(spec, plugin([]), tools=[add]).run({"q": "1+1?"})
    assert info.value.backend == "native-scripted" and text in str(info.value) and info.value.exit_code == 1


# ---------------------------------------------------------------------------- 4. option types and ranges


@pytest.mark.parametrize("options", [
    {"max_retries": 100000000}, {"max_retries": 11}, {"max_retries": -1}, {"max_retries": 1.5},
    {"max_retries": True}, {"timeout": True}, {"timeout": 1e12}, {"timeout": 0}, {"deadline": 86401},
    {"n_ctx": 0}, {"base_url": 5},
])
def test_out_of_range_or_mistyped_options_are_refused_at_load_time(options: dict[str, Any]) -> None:
    with pytest.raises(BackendError) as info:
        check_options("openai", OpenAIBackend.options_schema, options)
    assert info.value.exit_code == 2 and next(iter(options)) in str(info.value)


@pytest.mark.parametrize("options", [
    {"max_retries": True}, {"max_retries": "1.5"}, {"timeout": "1e12"}, {"timeout": "soon"}, {"deadline": "0"},
    {"max_retries": 10 ** 400},
])
def test_resolve_refuses_them_too(options: dict[str, Any]) -> None:
    with pytest.raises(BackendError) as info:
        resolve({"base_url": "http://127.0.0.1:9/v1", **options}, environ={"PROMPTDSL_HOME": "/nonexistent"})
    assert info.value.exit_code == 2 and f"option {next(iter(options))} must be" in str(info.value)


def test_sane_values_pass() -> None:
    check_options("openai", OpenAIBackend.options_schema, {"timeout": 30, "max_retries": 10, "deadline": 900})
    settings = resolve({"base_url": "http://127.0.0.1:9/v1", "timeout": "30", "max_retries": 2.0},
                       environ={"PROMPTDSL_HOME": "/nonexistent"})
    assert (settings.timeout, settings.max_retries, settings.deadline) == (30.0, 2, 600.0)


def test_validate_refuses_a_spec_asking_for_endless_retries(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "retry.yaml"
    spec.write_text("version: 1\nname: r\ninputs: {q: {type: string}}\n"
                    "model: {backend: openai, model: m, options: {max_retries: 100000000, timeout: 5}}\n")
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "max_retries" in err and "maximum of 10" in err and err.count("\n") == 1


# ---------------------------------------------------------------------------- 6. a server that stopped answering


def test_requests_after_failures_in_a_row_still_reach_the_server(serve: Serve) -> None:
    """A server restarting drops a few requests; the next one is sent and answered (no fail-fast)."""
    answered = iter([False, False, False, False])

    def restarting(h: Handler, body: dict[str, Any]) -> None:
        if next(answered, True):
            h.send(completion())
        else:
            h.close_connection = True  # no reply at all: the client cannot reach the server

    url, handler = serve(restarting)
    b = backend(url, max_retries=0)
    for _ in range(4):
        err, _ = fails(lambda: b.complete(chat(), GREEDY))
        assert err.kind is BackendErrorKind.CONNECT and "not sent" not in str(err)
    assert b.complete(chat(), GREEDY) == "Paris"
    assert len(handler.seen) == 5
    b.close()


# ---------------------------------------------------------------------------- 6b. what a spec may ask for


SLOW_SPEC = ("version: 1\nname: slow\nmode: chat\ninputs: {q: {type: string}}\ntemplate: '{{ q }}'\n"
             "model: {backend: openai, model: m, options: {base_url: 'URL', grammar: false, %s}}\n")


@pytest.mark.parametrize(("options", "expected"), [
    ("timeout: 3600, deadline: 86400, max_retries: 10", (300.0, 1800.0, 5)),
    ("timeout: '3600', deadline: '7200.5', max_retries: 10.0", (300.0, 1800.0, 5)),
    ("timeout: 300, deadline: 1800, max_retries: 5", (300.0, 1800.0, 5)),
    ("timeout: 7, deadline: 20, max_retries: 0", (7.0, 20.0, 0)),
    ("n_ctx: 9000", (60.0, 600.0, 2)),
])
def test_a_spec_cannot_make_requests_wait_for_hours(serve: Serve, options: str, expected: tuple[Any, ...]) -> None:
    url, _ = serve(lambda h, body: h.send(completion()))
    runner = Runner(loads_spec(SLOW_SPEC.replace("URL", url) % options))
    settings = runner.backend.settings
    assert (settings.timeout, settings.deadline, settings.max_retries) == expected
    runner.backend.close()


def test_the_users_own_values_are_not_lowered(serve: Serve) -> None:
    url, _ = serve(lambda h, body: h.send(completion()))
    spec = loads_spec(SLOW_SPEC.replace("URL", url) % "timeout: 3600, deadline: 86400, max_retries: 10")
    runner = Runner(spec, options={"timeout": 3000, "max_retries": "8"})  # as -o gives them
    settings = runner.backend.settings
    assert (settings.timeout, settings.deadline, settings.max_retries) == (3000.0, 1800.0, 8)
    runner.backend.close()


def test_the_user_config_file_is_not_lowered(serve: Serve, tmp_path: Path) -> None:
    url, _ = serve(lambda h, body: h.send(completion()))
    home = tmp_path / "home"
    home.mkdir()
    (home / "openai.yaml").write_text("timeout: 3000\ndeadline: 7200\nmax_retries: 9\n", encoding="utf-8")
    runner = Runner(loads_spec(SLOW_SPEC.replace("URL", url) % "max_retries: 10"))
    settings = runner.backend.settings
    assert (settings.timeout, settings.deadline, settings.max_retries) == (3000.0, 7200.0, 5)
    runner.backend.close()


def test_spec_options_leaves_what_it_cannot_read_for_resolve() -> None:
    options = {"timeout": FromSpec("soon"), "max_retries": 100000000, "deadline": True, "base_url": FromSpec("x")}
    assert OpenAIBackend.spec_options("m", options) == options
    with pytest.raises(BackendError, match="option timeout must be a number"):
        resolve(OpenAIBackend.spec_options("m", {"timeout": FromSpec("soon"), "base_url": "http://127.0.0.1:9/v1"}),
                environ={"PROMPTDSL_HOME": "/nonexistent"})


def test_validate_takes_a_spec_whose_waits_are_lowered(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "slow.yaml"
    spec.write_text(SLOW_SPEC.replace("URL", "http://127.0.0.1:9/v1") % "timeout: 3600, max_retries: 10")
    assert main(["validate", str(spec)]) == 0, capsys.readouterr().err


# ---------------------------------------------------------------------------- 7. the user config file


@pytest.mark.parametrize(("content", "key"), [
    ("api_key_env: [MYKEY]\n", "api_key_env must be text"),
    ("api_key_env: 'A B'\n", "api_key_env must name an environment variable"),
    ("organization: {a: 1}\n", "organization must be text"),
    ("project: 5\n", "project must be text"),
    ("base_url: 5\n", "base_url must be text"),
    ("base_url: ftp://x\n", "base_url must start with http"),
    ("timeout: abc\n", "timeout must be a number of seconds"),
    ("timeout: true\n", "timeout must be a number of seconds"),
    ("max_retries: 99\n", "max_retries must be a whole number from 0 to 10"),
    ("deadline: 0\n", "deadline must be a number of seconds"),
])
def test_a_mistyped_config_file_names_the_file_and_the_key(tmp_path: Path, content: str, key: str) -> None:
    home = tmp_path / "cfg"
    home.mkdir()
    (home / "openai.yaml").write_text(content, encoding="utf-8")
    with pytest.raises(BackendError) as info:
        resolve({"base_url": "http://127.0.0.1:9/v1"}, environ={"PROMPTDSL_HOME": str(home), "MYKEY": "x"})
    assert info.value.exit_code == 2 and f"config file {home / 'openai.yaml'}: {key}" in str(info.value)


def test_doctor_diagnostics_report_a_broken_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "cfg"
    home.mkdir()
    monkeypatch.setenv("PROMPTDSL_HOME", str(home))
    monkeypatch.setenv("MY_KEY", KEY)
    (home / "openai.yaml").write_text("api_key_env: MY_KEY\n", encoding="utf-8")
    lines = dict(OpenAIBackend.diagnostics())
    assert lines["api key"] == "MY_KEY is set" and KEY not in json.dumps(lines)
    (home / "openai.yaml").write_text("base_url: [1\n", encoding="utf-8")
    with pytest.raises(BackendError) as info:  # where the slip is, as for a spec; not PyYAML's text with \n in it
        OpenAIBackend.diagnostics()
    assert info.value.exit_code == 2 and "\n" not in str(info.value)
    assert str(info.value).startswith(f"openai: {home / 'openai.yaml'}:2:1: invalid YAML: "), str(info.value)
    (home / "openai.yaml").write_bytes(b"\xd0\x01")
    with pytest.raises(BackendError, match=r"openai.yaml: config file is not UTF-8 text \(bad byte at offset 0\)"):
        OpenAIBackend.diagnostics()


# ---------------------------------------------------------------------------- 8. server text is clipped


def test_a_huge_forced_token_is_quoted_short(serve: Serve) -> None:
    token = "X" * 200_000
    reply = completion(token) | {"choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": token}, "logprobs": {"content": [{"token": token, "logprob": -1.0}]}}]}
    url, _ = serve(lambda h, body: h.send(reply))
    err, _ = fails(lambda: backend(url, grammar=True).score(chat(), [" Positive"]))
    assert "forcing ' Positive' returned 'XXXX" in str(err) and len(str(err)) < 300


# ---------------------------------------------------------------------------- 9. secrets


@pytest.mark.parametrize(("key", "what"), [
    ("Zq8xPlainServerPw\n", "starts or ends with whitespace or a line break"),
    ("Zq8xPlainServerPw\r", "starts or ends with whitespace or a line break"),
    ("Zq8x PlainServerPw", "holds whitespace or a control character"),
])
def test_a_key_with_a_line_break_is_refused_without_showing_it(key: str, what: str) -> None:
    with pytest.raises(BackendError) as info:
        resolve({"base_url": "http://127.0.0.1:9/v1"}, environ={"OPENAI_API_KEY": key, "PROMPTDSL_HOME": "/x"})
    assert what in str(info.value) and "OPENAI_API_KEY" in str(info.value) and info.value.exit_code == 2
    assert "PlainServerPw" not in str(info.value) and "Zq8x" not in info.value.message


def test_a_token_in_the_url_is_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    closed = port.getsockname()[1]
    port.close()
    b = backend(f"http://Tok3nSecretValue42@127.0.0.1:{closed}/v1")
    err, _ = fails(lambda: b.complete(chat(), GREEDY))
    assert "cannot connect to http://***@127.0.0.1" in str(err) and "Tok3nSecret" not in err.message
    assert "Tok3nSecret" not in str(err)


def test_a_key_echoed_in_pieces_or_upper_case_is_masked(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    def echo(h: Handler, body: dict[str, Any]) -> None:
        k = h.headers.get("Authorization", "")[7:]
        h.send({"error": {"message": f"invalid key {k[:-3]} (or {k.upper()}, or ...{k[4:14]}...)"}}, status=400)

    url, _ = serve(echo)
    monkeypatch.setenv("MYSRV", "plainpassword12345")
    err, _ = fails(lambda: backend(url, api_key_env="MYSRV").complete(chat(), GREEDY))
    for piece in ("plainpassword12", "PLAINPASSWORD12345", "npassword1"):
        assert piece.lower() not in str(err).lower(), str(err)
    assert "invalid key ***" in str(err)
