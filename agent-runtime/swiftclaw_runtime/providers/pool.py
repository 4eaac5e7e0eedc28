"""A lean HTTP/1.1 client: keep-alive connection pool over asyncio protocols and httptools.

Why not aiohttp or httpx: on the request path the client is most of what the runtime
spends per request, and a general client pays for redirects, cookies, proxies, tracing
and header merging on every call. This one does only what calling a model API needs:
POST or GET a prepared request on a pooled connection (plain or TLS), hand back the status,
headers and a body that can be read whole or as it arrives (chunked or not).

Idle connections are dropped after ``IDLE_SECONDS`` (less than uvicorn's default 5 s
keep-alive, so the server rarely closes one under us); a request whose reused connection
turns out closed before any byte of the answer arrived is sent once more on a new one.

Connection lifecycle: a request takes one of ``max_connections`` slots before it sends;
the :class:`Response` holds the slot and gives it back exactly once, whichever way the
response ends: :meth:`Response.release` (read to the end: the connection goes back to
the pool), :meth:`Response.close` (anything else: the connection is closed), an error or
a cancellation while reading (closed). ``in_use`` and ``open`` are exported as metrics.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from typing import cast
from urllib.parse import urlsplit

import httptools

IDLE_SECONDS = 4.0
# A non-streamed answer larger than this is refused: a model's JSON answer is kilobytes,
# and a runaway or hostile upstream must not grow the process without bound.
MAX_RESPONSE_BYTES = 32 * 1024 * 1024


class ResponseTooLarge(ValueError):
    """The body of a response passed the cap set for it."""


class ConnectionLost(ConnectionError):
    """The connection closed; ``got_response`` says whether any of the answer had arrived."""

    def __init__(self, message: str, got_response: bool) -> None:
        super().__init__(message)
        self.got_response = got_response


class _Conn(asyncio.Protocol):
    """One TCP (or TLS) connection and the response currently being read on it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self._reset()

    def _reset(self) -> None:
        loop = asyncio.get_running_loop()
        self.headers_done: asyncio.Future[None] = loop.create_future()
        self.status = 0
        self.keep_alive = False
        self.headers: dict[bytes, bytes] = {}
        self._header_name = b""
        self.chunks: deque[bytes] = deque()
        self.complete = False
        self.got_bytes = False
        self.error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    # --- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport but offer its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            if self._parser is not None:
                self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ConnectionLost("unexpected protocol upgrade", True))
        except httptools.HttpParserError as err:
            self._fail(ConnectionLost(f"malformed HTTP response: {err}", True))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete:
            reason = f"connection lost: {exc}" if exc else "connection closed by the server"
            self._fail(ConnectionLost(reason, self.got_bytes))
        # The parser calls back into this object and the transport holds it: cut both
        # links, so that a closed connection (and its transport's buffers) is freed by
        # reference counting at once rather than waiting for a garbage-collector pass.
        self.transport = None
        self._parser = None

    def pause_writing(self) -> None:  # requests are small; nothing to throttle
        pass

    def resume_writing(self) -> None:
        pass

    # --- httptools callbacks -------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        parser = self._parser
        assert parser is not None  # it is the parser calling
        self.status = parser.get_status_code()
        # Only valid here: the parser forgets it once the message is complete.
        self.keep_alive = parser.should_keep_alive()
        if not self.headers_done.done():
            self.headers_done.set_result(None)

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake()

    # --- helpers ---------------------------------------------------------------------

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _fail(self, err: BaseException) -> None:
        self.error = err
        if not self.headers_done.done():
            self.headers_done.set_exception(err)
            self.headers_done.exception()  # mark retrieved: the reader may be gone
        self._wake()
        if self.transport is not None:
            self.transport.close()

    async def next_chunk(self, idle_timeout: float | None = None) -> bytes | None:
        """The next piece of the body, or None at its end; TimeoutError after ``idle_timeout``."""
        while True:
            if self.chunks:
                return self.chunks.popleft()
            if self.complete:
                return None
            if self.error is not None:
                raise self.error
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(idle_timeout):
                    await self._waiter
            finally:
                self._waiter = None

    @property
    def reusable(self) -> bool:
        return self.complete and not self.closed and self.keep_alive

    def start(self, request: bytes) -> None:
        self._reset()
        assert self.transport is not None
        self.transport.write(request)


class Response:
    """Status, lower-cased headers, and the body (read once, whole or piece by piece).

    Holds one of the pool's slots until :meth:`release` or :meth:`close`, whichever comes
    first; both are idempotent, so every path may call one of them.
    """

    def __init__(self, pool: Pool, conn: _Conn) -> None:
        self._pool = pool
        self._conn: _Conn | None = conn
        self.status = conn.status
        self.headers = conn.headers

    def header(self, name: str) -> str | None:
        value = self.headers.get(name.lower().encode())  # names are stored lower-cased
        return value.decode("latin-1") if value is not None else None

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body; :class:`ResponseTooLarge` (and the connection closed) past ``limit``
        (by default ``MAX_RESPONSE_BYTES``, looked up at each call, not when defined)."""
        if limit is None:
            limit = MAX_RESPONSE_BYTES
        parts: list[bytes] = []
        size = 0
        while (chunk := await self.next_chunk()) is not None:
            size += len(chunk)
            if size > limit:
                self.close()
                raise ResponseTooLarge(f"response body larger than {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)

    async def next_chunk(self, idle_timeout: float | None = None) -> bytes | None:
        """The next piece of the body, or None at its end (the connection then goes back to
        the pool). Any failure, a timeout after ``idle_timeout`` or a cancellation closes
        the connection. A plain method, not a generator: nothing is left suspended when a
        caller stops reading early."""
        conn = self._conn
        if conn is None:
            return None
        try:
            chunk = await conn.next_chunk(idle_timeout)
        except BaseException:
            self.close()
            raise
        if chunk is None:
            self.release()
        return chunk

    async def drain(self, timeout: float = 0.25) -> None:
        """After the last event a caller needs (``[DONE]``, ``message_stop``): read what is
        left of the body, briefly, so that the connection can be reused."""
        conn = self._conn
        if conn is None:
            return
        try:
            async with asyncio.timeout(timeout):
                while await conn.next_chunk() is not None:
                    pass
        except (TimeoutError, ConnectionLost):
            self.close()
            return
        except BaseException:  # cancelled: close, like next_chunk, and let it propagate
            self.close()
            raise
        self.release()

    @property
    def done(self) -> bool:
        """Released or closed: the slot is back."""
        return self._conn is None

    def release(self) -> None:
        """Hand the connection back if its answer was read to the end; close it otherwise."""
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool.put_back(conn)

    def close(self) -> None:
        """Close the connection (the answer was not read to its end) and free the slot."""
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool.discard(conn)
            self._pool.free_slot()

    def finish(self) -> None:
        """Release when the answer has fully arrived, close otherwise."""
        conn = self._conn
        if conn is not None and conn.complete:
            self.release()
        else:
            self.close()


class Pool:
    """Keep-alive connections to one origin (scheme, host, port)."""

    def __init__(
        self,
        base_url: str,
        max_connections: int = 512,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.host = url.hostname
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.base_path = url.path.rstrip("/")
        default_port = self.port == (443 if url.scheme == "https" else 80)
        self.host_header = (self.host if default_port else f"{self.host}:{self.port}").encode()
        self._ssl: ssl.SSLContext | None = None
        if url.scheme == "https":
            # The default context honours SSL_CERT_FILE / SSL_CERT_DIR for a private CA.
            self._ssl = ssl_context or ssl.create_default_context()
        self._idle: deque[_Conn] = deque()
        self.max_connections = max_connections
        self._slots = asyncio.Semaphore(max_connections)
        self._open: set[_Conn] = set()
        self.in_use = 0

    @property
    def open(self) -> int:
        """Connections open now, in use or idle."""
        return len(self._open)

    async def _take_slot(self) -> None:
        await self._slots.acquire()
        self.in_use += 1

    def free_slot(self) -> None:
        self.in_use -= 1
        self._slots.release()

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        made: list[_Conn] = []

        def protocol() -> _Conn:
            made.append(_Conn())
            return made[-1]

        try:
            _, conn = await loop.create_connection(
                protocol,
                self.host,
                self.port,
                ssl=self._ssl,
                server_hostname=self.host if self._ssl else None,
            )
        except BaseException:
            for failed in made:  # never connected, so never told connection_lost
                failed.connection_lost(None)
            raise
        self._open.add(conn)
        return conn

    def _take_idle(self) -> _Conn | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()  # most recently used first: warmest
            if not conn.closed and now - conn.idle_since < IDLE_SECONDS:
                return conn
            self.discard(conn)
        return None

    def put_back(self, conn: _Conn) -> None:
        if conn.reusable:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            self.discard(conn)
        self.free_slot()

    def discard(self, conn: _Conn) -> None:
        self._open.discard(conn)
        if conn.transport is not None and not conn.closed:
            conn.transport.close()
        if conn in self._idle:
            self._idle.remove(conn)

    def _request_bytes(
        self, method: bytes, path: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> bytes:
        lines = [
            method + b" " + (self.base_path + path).encode() + b" HTTP/1.1",
            b"host: " + self.host_header,
            b"content-length: " + str(len(body)).encode(),
        ]
        lines += [k + b": " + v for k, v in headers]
        return b"\r\n".join(lines) + b"\r\n\r\n" + body

    async def request(
        self, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes = b""
    ) -> Response:
        """Send a request; returns once the response headers are in."""
        data = self._request_bytes(method.encode(), path, headers, body)
        await self._take_slot()
        conn: _Conn | None = None
        try:
            conn = self._take_idle()
            reused = conn is not None
            if conn is None:
                conn = await self._connect()
            try:
                conn.start(data)
                await conn.headers_done
            except ConnectionLost as err:
                self.discard(conn)
                if not (reused and not err.got_response):
                    raise
                conn = await self._connect()  # the idle connection had died: once more
                conn.start(data)
                await conn.headers_done
        except BaseException:
            if conn is not None:
                self.discard(conn)
            self.free_slot()
            raise
        return Response(self, conn)

    async def close(self) -> None:
        for conn in list(self._open):
            self.discard(conn)
        self._idle.clear()
