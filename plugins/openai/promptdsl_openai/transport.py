"""The HTTP client under the SDK: every request ends by a deadline, and no reply is larger than a cap.

The SDK's ``timeout`` is per wait (connecting, each read): a server that sends a byte a
second, SSE keep-alive comments, or an answer that never ends would otherwise hold a run
(and its memory) for ever, and a spec may choose the server. Here each request, redirects
and the streamed answer included, gets

- a deadline: every connect, read and write waits at most until it; past it the request
  ends with :class:`DeadlinePassed` (not retried: the server answers, only too slowly);
- a size cap on the reply body: past it, :class:`ReplyTooLarge`. Replies are asked for
  uncompressed (``Accept-Encoding: identity``) and a compressed one is refused
  (:class:`CompressedReply`), so the cap counts what ends up in memory.

Both exceptions derive from :class:`openai.OpenAIError`, which the SDK passes on as they
are, without retrying; :mod:`.errors` turns them into one line.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import openai

try:  # openai >= 3 is built on httpx2, older versions on httpx (same API)
    import httpcore2 as httpcore
    import httpx2 as httpx
except ImportError:  # pragma: no cover - depends on the installed SDK
    import httpcore  # type: ignore[no-redef]
    import httpx  # type: ignore[no-redef]

#: What the SDK's own client uses.
CONNECTION_LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=100)


class DeadlinePassed(openai.OpenAIError):
    """A request took longer than its deadline in all."""


class ReplyTooLarge(openai.OpenAIError):
    """A reply body grew past the cap (``limit`` bytes)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit} bytes")
        self.limit = limit


class CompressedReply(openai.OpenAIError):
    """A reply came compressed although none was asked for (its size could not be capped)."""

    def __init__(self, encoding: str) -> None:
        super().__init__(encoding)
        self.encoding = encoding


class _Clock(threading.local):
    """The deadline of the request this thread is sending or reading, if any."""

    deadline: float | None = None


_clock = _Clock()


@contextmanager
def _until(deadline: float) -> Iterator[None]:
    saved = _clock.deadline
    _clock.deadline = deadline if saved is None else min(saved, deadline)
    try:
        yield
    finally:
        _clock.deadline = saved


def _wait(timeout: float | None) -> float | None:
    """``timeout`` cut to what is left before this thread's deadline; past it, :class:`DeadlinePassed`."""
    deadline = _clock.deadline
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeadlinePassed("deadline passed")
    return left if timeout is None else min(timeout, left)


def _past_deadline() -> bool:
    return _clock.deadline is not None and time.monotonic() >= _clock.deadline


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every wait ends by the deadline of the request using it."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        wait = _wait(timeout)
        try:
            return self._inner.read(max_bytes, wait)
        except httpcore.ReadTimeout:
            if wait != timeout:  # cut short by the deadline
                raise DeadlinePassed("deadline passed") from None
            raise

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        wait = _wait(timeout)
        try:
            self._inner.write(buffer, wait)
        except httpcore.WriteTimeout:
            if wait != timeout:
                raise DeadlinePassed("deadline passed") from None
            raise

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, _wait(timeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """Connections (and their waits) that end by the deadline of the request that opens or uses them."""

    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.connect_tcp(host, port, _wait(timeout), local_address, socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.connect_unix_socket(path, _wait(timeout), socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _watch_connections(transport: Any) -> None:
    """Give an httpx transport's connection pool (direct or through a proxy) deadline-aware connections.

    The pool is not public API; without one (another transport, a changed httpx) the deadline is
    still checked between the pieces of a reply, only not inside a single wait.
    """
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if backend is not None and not isinstance(backend, _DeadlineBackend):
        pool._network_backend = _DeadlineBackend(backend)  # type: ignore[union-attr]


class _CappedStream(httpx.SyncByteStream):
    """A reply body read by the deadline, and only up to ``limit`` bytes."""

    def __init__(self, inner: Any, deadline: float, limit: int) -> None:
        self._inner = inner
        self._deadline = deadline
        self._limit = limit

    def __iter__(self) -> Iterator[bytes]:
        pieces = iter(self._inner)
        total = 0
        while True:
            with _until(self._deadline):
                piece = next(pieces, None)
                if piece is None:
                    return
                if _past_deadline():
                    raise DeadlinePassed("deadline passed")
            total += len(piece)
            if total > self._limit:
                raise ReplyTooLarge(self._limit)
            yield piece

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()


class Stalled(openai.APITimeoutError):
    """Nothing more of a reply's body came within ``timeout`` (not retried: the reply had begun)."""


class LostMidReply(openai.APIConnectionError):
    """The connection ended while a reply's body was being read."""


class _Replayed(httpx.SyncByteStream):
    """A reply body whose start was read already (to see what it holds): that start, then the rest."""

    def __init__(self, head: list[bytes], rest: Iterator[bytes], inner: Any) -> None:
        self._head = head
        self._rest = rest
        self._inner = inner

    def __iter__(self) -> Iterator[bytes]:
        head, self._head = self._head, []
        yield from head
        yield from self._rest

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()


@contextmanager
def _reading(response: httpx.Response) -> Iterator[None]:
    """Read a reply body outside the SDK with its error kinds: a wait that timed out, a connection lost."""
    try:
        yield
    except httpx.TimeoutException as exc:
        response.close()
        raise Stalled(request=response.request) from exc
    except httpx.RequestError as exc:
        response.close()
        raise LostMidReply(request=response.request) from exc
    except BaseException:
        response.close()
        raise


def peek(response: httpx.Response) -> bytes:
    """The start of a streamed reply's body, up to its first piece that is not all whitespace (all of a
    blank body), read by the deadline and within the size cap; the body still reads whole afterwards."""
    inner = response.stream
    pieces = iter(cast(Iterable[bytes], inner))  # a sync client's
    head: list[bytes] = []
    with _reading(response):
        for piece in pieces:
            head.append(piece)
            if piece.strip():
                break
    response.stream = _Replayed(head, pieces, inner)
    return b"".join(head)


def read_body(response: httpx.Response) -> bytes:
    """A reply's whole body (by the deadline, within the size cap), failing like the SDK's own reads."""
    with _reading(response):
        return response.read()


class _GuardedTransport(httpx.BaseTransport):
    def __init__(self, inner: httpx.BaseTransport, seconds: float, limit: int) -> None:
        self._inner = inner
        self._seconds = seconds
        self._limit = limit
        _watch_connections(inner)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        deadline = time.monotonic() + self._seconds
        request.headers["Accept-Encoding"] = "identity"
        with _until(deadline):
            response = self._inner.handle_request(request)
        encoding = response.headers.get("Content-Encoding", "").strip().lower()
        if encoding not in ("", "identity"):
            response.close()
            raise CompressedReply(encoding)
        response.stream = _CappedStream(response.stream, deadline, self._limit)
        return response


class GuardedClient(httpx.Client):
    """An httpx client whose requests each end within ``deadline`` seconds, with at most ``max_bytes`` of reply.

    Proxies from the environment (``HTTPS_PROXY``...) keep working: every transport the
    client picks is guarded, not only the default one.
    """

    def __init__(self, *, deadline: float, max_bytes: int, **kwargs: Any) -> None:
        kwargs.setdefault("limits", CONNECTION_LIMITS)
        kwargs.setdefault("follow_redirects", True)
        super().__init__(**kwargs)
        self.deadline = deadline
        self.max_bytes = max_bytes

    def _transport_for_url(self, url: httpx.URL) -> httpx.BaseTransport:
        return _GuardedTransport(super()._transport_for_url(url), self.deadline, self.max_bytes)
