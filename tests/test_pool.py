"""The upstream connection pool (``Pool``, ``Response``) and ``HttpClient`` against real
loopback servers started here, which write raw HTTP/1.1 bytes so that each test controls
the framing exactly: content-length and chunked bodies, keep-alive, stale connections,
oversized answers, every way a response can end, and TLS with a private CA (in process
and through a real ``swiftclaw run`` process that trusts it through ``SSL_CERT_FILE``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import shutil
import ssl
import subprocess
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import openai
import pytest

from swiftclaw_runtime.providers import pool as pool_module
from swiftclaw_runtime.providers.base import UpstreamError
from swiftclaw_runtime.providers.http import HttpClient
from swiftclaw_runtime.providers.pool import ConnectionLost, Pool, Response, ResponseTooLarge
from swiftclaw_runtime.sse import EventReader

from .conftest import API_KEY, Launcher, manifest

# --- raw HTTP/1.1 server ------------------------------------------------------------------


def answer(body: bytes, *headers: str, status: int = 200) -> bytes:
    """A whole response with a content-length body (keep-alive: no ``connection`` header)."""
    lines = [f"HTTP/1.1 {status} X", f"content-length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


CHUNKED_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)
LAST_CHUNK = b"0\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    conn_id: int


@dataclass
class Exchange:
    """One request as a route sees it, with the connection to answer on."""

    req: Request
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    hung_up: bool = False

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def wait_eof(self) -> None:
        """Until the client closes the connection (a stalled answer sees the hang-up)."""
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            while await self.reader.read(65536):
                pass
        self.hung_up = True


# A route answers one request; False: the server closes the connection afterwards.
Route = Callable[[Exchange], Awaitable[bool]]


async def ok(ex: Exchange) -> bool:
    await ex.send(answer(b"ok"))
    return True


def send_and_close(data: bytes = b"") -> Route:
    """A route that sends ``data`` (nothing by default) and closes the connection."""

    async def route(ex: Exchange) -> bool:
        if data:
            await ex.send(data)
        return False

    return route


async def stall_headers(ex: Exchange) -> bool:
    """Never answers: waits for the client to hang up."""
    await ex.wait_eof()
    return False


async def stall_body(ex: Exchange) -> bool:
    """Headers and a first chunk, then nothing until the client hangs up."""
    await ex.send(CHUNKED_HEAD + chunk(b"first"))
    await ex.wait_eof()
    return False


class RawServer:
    """An asyncio server on 127.0.0.1 (port from 0) that dispatches requests by path.

    It counts accepted connections and client hang-ups, and records every request with
    the id of the connection it came on.
    """

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.routes: dict[str, Route] = {
            "/ok": ok,
            "/stall-headers": stall_headers,
            "/stall-body": stall_body,
        }
        self.ssl_context = ssl_context
        self.accepted = 0
        self.hangups = 0  # connections the client closed (EOF or reset seen)
        self.ended = 0  # connection handlers finished, whoever closed
        self.requests: list[Request] = []
        self._arrivals: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self._pulse = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def arrival(self, request_id: str) -> asyncio.Event:
        """Set once a request with header ``x-id: request_id`` has been read."""
        return self._arrivals[request_id]

    def _changed(self) -> None:
        self._pulse.set()
        self._pulse = asyncio.Event()

    async def wait_until(self, pred: Callable[[], bool], timeout: float = 1.0) -> None:
        async with asyncio.timeout(timeout):
            while not pred():
                await self._pulse.wait()

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=2)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._server.wait_closed()

    def stop_listening(self) -> None:
        """Refuse new connections; open ones go on (``wait_closed`` would wait for them)."""
        assert self._server is not None
        self._server.close()

    async def _read_request(self, reader: asyncio.StreamReader, conn_id: int) -> Request | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None  # the client closed between requests
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        return Request(method, path, headers, body, conn_id)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        conn_id = self.accepted
        self.accepted += 1
        self._changed()
        hung_up = False
        try:
            while True:
                req = await self._read_request(reader, conn_id)
                if req is None:
                    hung_up = True
                    break
                self.requests.append(req)
                if "x-id" in req.headers:
                    self._arrivals[req.headers["x-id"]].set()
                self._changed()
                ex = Exchange(req, reader, writer)
                keep = await self.routes[req.path.split("?")[0]](ex)
                if ex.hung_up:
                    hung_up = True
                if not keep:
                    break
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            hung_up = True
        except asyncio.CancelledError:
            pass  # only __aexit__ cancels, for a route a failed test left waiting
        finally:
            writer.close()
            self._writers.discard(writer)
            self.hangups += hung_up
            self.ended += 1
            self._changed()


class Pools:
    """Pools made by a test, all closed at its end."""

    def __init__(self) -> None:
        self.made: list[Pool] = []

    def new(
        self, url: str, max_connections: int = 8, ssl_context: ssl.SSLContext | None = None
    ) -> Pool:
        p = Pool(url, max_connections, ssl_context)
        self.made.append(p)
        return p


@pytest.fixture
async def server() -> AsyncIterator[RawServer]:
    async with RawServer() as s:
        yield s


@pytest.fixture
async def pools() -> AsyncIterator[Pools]:
    made = Pools()
    yield made
    for p in made.made:
        await p.close()


async def get(pool: Pool, path: str, request_id: int | None = None) -> Response:
    headers = [] if request_id is None else [(b"x-id", str(request_id).encode())]
    return await pool.request("GET", path, headers)


async def read_whole(pool: Pool, path: str, request_id: int | None = None) -> bytes:
    resp = await get(pool, path, request_id)
    return await resp.read()


async def settle() -> None:
    """Let every ready task run a few steps (no timer: only what is already runnable)."""
    for _ in range(20):
        await asyncio.sleep(0)


@contextlib.asynccontextmanager
async def cancelled_at_exit(tasks: list[asyncio.Task[Any]]) -> AsyncIterator[None]:
    """Tasks a failed assertion left running are cancelled and awaited, not leaked."""
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def assert_cancel_frees_the_slot(
    task: asyncio.Task[Any], pool: Pool, server: RawServer
) -> None:
    """Cancelling ``task``, which holds the one slot in use, frees it and closes its
    connection (the server sees the hang-up)."""
    assert pool.in_use == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pool.in_use == 0 and pool.open == 0
    await server.wait_until(lambda: server.hangups == 1)


async def assert_limit_holds(pool: Pool, server: RawServer, limit: int) -> None:
    """``limit + 1`` requests held by the server: exactly ``limit`` get a slot and reach it,
    the last waits; all are answered once released. Fails if slots were over-released."""
    release = asyncio.Event()

    async def held(ex: Exchange) -> bool:
        await release.wait()
        await ex.send(answer(b"held"))
        return True

    server.routes["/held"] = held
    before = len(server.requests)
    tasks = [asyncio.create_task(read_whole(pool, "/held")) for _ in range(limit + 1)]
    async with cancelled_at_exit(tasks):
        await server.wait_until(lambda: len(server.requests) - before >= limit)
        await settle()
        assert pool.in_use == limit
        assert len(server.requests) - before == limit
        assert sum(t.done() for t in tasks) == 0
        release.set()
        async with asyncio.timeout(2):
            assert await asyncio.gather(*tasks) == [b"held"] * (limit + 1)
    assert pool.in_use == 0


# --- 1. content-length -----------------------------------------------------------------------


async def test_content_length_body_read_whole_then_connection_reused(
    server: RawServer, pools: Pools
) -> None:
    body = bytes(range(256)) * 40  # 10 kB, binary

    async def blob(ex: Exchange) -> bool:
        # Headers and the body in separate writes, the body itself in two.
        data = answer(body, "content-type: application/octet-stream")
        head_len = len(data) - len(body)
        for part in (data[:head_len], data[head_len : head_len + 3000], data[head_len + 3000 :]):
            await ex.send(part)
        return True

    server.routes["/blob"] = blob
    pool = pools.new(server.url)

    resp = await pool.request("POST", "/blob", [(b"content-type", b"text/plain")], b"hello")
    assert resp.status == 200
    assert resp.header("content-type") == "application/octet-stream"
    assert resp.header("Content-Length") == str(len(body))
    assert await resp.read() == body
    assert resp.done and pool.in_use == 0 and pool.open == 1

    assert await read_whole(pool, "/ok") == b"ok"
    assert server.accepted == 1
    assert [(r.method, r.path, r.body, r.conn_id) for r in server.requests] == [
        ("POST", "/blob", b"hello", 0),
        ("GET", "/ok", b"", 0),
    ]
    assert server.requests[0].headers["host"] == f"127.0.0.1:{server.port}"
    assert server.requests[0].headers["content-length"] == "5"
    assert pool.in_use == 0 and pool.open == 1


async def test_base_path_is_prefixed(server: RawServer, pools: Pools) -> None:
    server.routes["/v1/ok"] = ok
    pool = pools.new(server.url + "/v1/")
    assert await read_whole(pool, "/ok") == b"ok"
    assert server.requests[0].path == "/v1/ok"


async def test_connection_close_answer_is_not_reused(server: RawServer, pools: Pools) -> None:
    server.routes["/closing"] = send_and_close(answer(b"once", "connection: close"))
    pool = pools.new(server.url)
    assert await read_whole(pool, "/closing") == b"once"
    assert pool.in_use == 0 and pool.open == 0
    assert await read_whole(pool, "/ok") == b"ok"
    assert server.accepted == 2 and pool.open == 1


async def test_idle_connection_past_idle_seconds_is_dropped(
    server: RawServer, pools: Pools, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = pools.new(server.url)
    assert await read_whole(pool, "/ok") == b"ok"
    monkeypatch.setattr(pool_module, "IDLE_SECONDS", 0.0)  # every idle connection is too old
    assert await read_whole(pool, "/ok") == b"ok"
    assert server.accepted == 2
    await server.wait_until(lambda: server.hangups == 1)  # the old one was closed by us
    assert pool.in_use == 0 and pool.open == 1


# --- 2. chunked ---------------------------------------------------------------------------------


async def test_chunked_body_piece_by_piece_and_whole_then_reused(
    server: RawServer, pools: Pools
) -> None:
    pieces = [b"alpha-", b"bravo-" * 50, b"charlie"]
    gate: asyncio.Queue[None] = asyncio.Queue()

    async def chunked(ex: Exchange) -> bool:
        gated = "x-gated" in ex.req.headers
        await ex.send(CHUNKED_HEAD)
        for i, piece in enumerate(pieces):
            if gated and i:
                await gate.get()  # the client has read the previous piece
            frame = chunk(piece)
            # Each frame split across writes: inside the size line and inside the data.
            for part in (frame[:1], frame[1:7], frame[7:]):
                await ex.send(part)
        await ex.send(LAST_CHUNK)
        return True

    server.routes["/chunked"] = chunked
    pool = pools.new(server.url)

    resp = await pool.request("GET", "/chunked", [(b"x-gated", b"1")])
    assert resp.status == 200 and resp.header("transfer-encoding") == "chunked"
    async with asyncio.timeout(2):
        for i, piece in enumerate(pieces):
            if i:
                gate.put_nowait(None)
            got = b""
            while len(got) < len(piece):
                part = await resp.next_chunk()
                assert part is not None
                got += part
            # Exactly this piece: the next one is not sent before we ask for it.
            assert got == piece
        assert await resp.next_chunk() is None
    assert resp.done and pool.in_use == 0
    assert await resp.next_chunk() is None  # after the end: still None, nothing freed twice
    assert pool.in_use == 0

    # The same answer read whole, on the same connection; then a plain one.
    resp = await pool.request("GET", "/chunked", [])
    assert await resp.read() == b"".join(pieces)
    assert await read_whole(pool, "/ok") == b"ok"
    assert server.accepted == 1
    assert {r.conn_id for r in server.requests} == {0}
    assert pool.in_use == 0 and pool.open == 1


# --- 3. keep-alive under concurrency ------------------------------------------------------


async def test_fifty_sequential_requests_use_one_connection(
    server: RawServer, pools: Pools
) -> None:
    pool = pools.new(server.url, max_connections=4)
    for _ in range(50):
        assert await read_whole(pool, "/ok") == b"ok"
    assert server.accepted == 1
    assert len(server.requests) == 50
    assert pool.in_use == 0 and pool.open == 1


async def test_concurrent_requests_share_at_most_max_connections(
    server: RawServer, pools: Pools
) -> None:
    release = asyncio.Event()

    async def held(ex: Exchange) -> bool:
        await release.wait()
        await ex.send(answer(ex.req.headers["x-id"].encode()))
        return True

    server.routes["/held"] = held
    pool = pools.new(server.url, max_connections=4)
    tasks = [asyncio.create_task(read_whole(pool, "/held", i)) for i in range(20)]
    async with cancelled_at_exit(tasks):
        # Four requests reach the server; the other sixteen wait for a slot.
        await server.wait_until(lambda: len(server.requests) >= 4)
        await settle()
        assert len(server.requests) == 4 and server.accepted == 4
        assert pool.in_use == 4 and pool.open == 4
        release.set()
        async with asyncio.timeout(5):
            bodies = await asyncio.gather(*tasks)
    assert bodies == [str(i).encode() for i in range(20)]
    assert server.accepted == 4  # the later sixteen reused the four connections
    assert len(server.requests) == 20
    assert pool.in_use == 0 and pool.open <= 4


# --- 4. stale connections -----------------------------------------------------------------


async def test_server_closing_an_idle_connection_does_not_fail_the_next_request(
    server: RawServer, pools: Pools
) -> None:
    # keep-alive by its headers, closed all the same
    server.routes["/ok-then-close"] = send_and_close(answer(b"bye"))
    pool = pools.new(server.url)
    assert await read_whole(pool, "/ok-then-close") == b"bye"
    await server.wait_until(lambda: server.ended == 1)
    await settle()  # the client reads the server's FIN: the idle connection is known closed
    async with asyncio.timeout(2):
        assert await read_whole(pool, "/ok") == b"ok"
    assert server.accepted == 2
    assert pool.in_use == 0 and pool.open == 1


async def test_reused_connection_closed_before_any_answer_is_retried_once(
    server: RawServer, pools: Pools
) -> None:
    drops: list[int] = []

    async def drop_first(ex: Exchange) -> bool:
        # The server read the request on the idle connection and closed it without a byte:
        # what a keep-alive timeout racing the request looks like to the client.
        if not drops:
            drops.append(ex.req.conn_id)
            return False
        await ex.send(answer(b"second try"))
        return True

    server.routes["/drop-first"] = drop_first
    pool = pools.new(server.url)
    assert await read_whole(pool, "/ok") == b"ok"
    resp = await pool.request("POST", "/drop-first", [], b"payload")
    assert resp.status == 200 and await resp.read() == b"second try"
    assert [(r.path, r.body, r.conn_id) for r in server.requests] == [
        ("/ok", b"", 0),
        ("/drop-first", b"payload", 0),
        ("/drop-first", b"payload", 1),
    ]
    assert server.accepted == 2
    assert pool.in_use == 0 and pool.open == 1


async def test_retry_that_cannot_connect_frees_the_slot(pools: Pools) -> None:
    async with RawServer() as gone:
        gone.routes["/drop"] = send_and_close()
        pool = pools.new(gone.url, max_connections=1)
        assert await read_whole(pool, "/ok") == b"ok"
        gone.stop_listening()  # no new connections; the idle one still works
        # The reused connection is dropped without an answer; the retry cannot connect.
        with pytest.raises(ConnectionRefusedError):
            await get(pool, "/drop")
        assert [r.path for r in gone.requests] == ["/ok", "/drop"]
        assert pool.in_use == 0 and pool.open == 0


async def test_no_retry_on_a_new_connection_nor_a_second_time(
    server: RawServer, pools: Pools
) -> None:
    server.routes["/drop"] = send_and_close()
    pool = pools.new(server.url)
    # A fresh connection: the failure is the server's answer, not a stale connection.
    with pytest.raises(ConnectionLost) as lost:
        await get(pool, "/drop")
    assert lost.value.got_response is False
    assert len(server.requests) == 1
    assert pool.in_use == 0 and pool.open == 0

    # A reused connection is retried once, and only once.
    assert await read_whole(pool, "/ok") == b"ok"
    with pytest.raises(ConnectionLost):
        await get(pool, "/drop")
    assert [r.path for r in server.requests] == ["/drop", "/ok", "/drop", "/drop"]
    assert pool.in_use == 0 and pool.open == 0


async def test_no_retry_once_part_of_the_answer_arrived(server: RawServer, pools: Pools) -> None:
    server.routes["/half-head"] = send_and_close(b"HTTP/1.1 200 OK\r\ncontent-le")
    pool = pools.new(server.url)
    assert await read_whole(pool, "/ok") == b"ok"
    with pytest.raises(ConnectionLost) as lost:
        await get(pool, "/half-head")
    assert lost.value.got_response is True
    assert [r.path for r in server.requests] == ["/ok", "/half-head"]  # not sent twice
    assert pool.in_use == 0 and pool.open == 0


async def test_body_cut_short_raises_and_frees_the_slot(server: RawServer, pools: Pools) -> None:
    server.routes["/cut"] = send_and_close(
        b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this"
    )
    pool = pools.new(server.url)
    resp = await get(pool, "/cut")
    with pytest.raises(ConnectionLost) as lost:
        await resp.read()
    assert lost.value.got_response is True
    assert resp.done and pool.in_use == 0 and pool.open == 0


# --- 5. too large -------------------------------------------------------------------------------


async def test_response_past_the_limit_closes_the_connection(
    server: RawServer, pools: Pools
) -> None:
    body = b"x" * 100_000

    async def big(ex: Exchange) -> bool:
        await ex.send(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body))
        for i in range(0, len(body), 20_000):
            await ex.send(body[i : i + 20_000])
        return True

    server.routes["/big"] = big
    pool = pools.new(server.url)
    resp = await get(pool, "/big")
    assert resp.header("content-length") == "100000"
    with pytest.raises(ResponseTooLarge):
        await resp.read(limit=10_000)
    assert resp.done and pool.in_use == 0 and pool.open == 0
    await server.wait_until(lambda: server.hangups == 1)

    # At the limit exactly, the same answer is read whole (on a new connection), and reused.
    resp = await get(pool, "/big")
    assert await resp.read(limit=len(body)) == body
    assert await read_whole(pool, "/big") == body  # the default limit is far above
    assert server.accepted == 2 and pool.in_use == 0 and pool.open == 1


async def test_http_client_refuses_a_body_past_max_response_bytes(
    server: RawServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pool_module, "MAX_RESPONSE_BYTES", 1000)

    async def completions(ex: Exchange) -> bool:
        size = int(json.loads(ex.req.body)["size"])
        await ex.send(answer(json.dumps({"pad": "p" * size}).encode()))
        return True

    server.routes["/v1/chat/completions"] = completions
    client = HttpClient(f"{server.url}/v1", {"authorization": "Bearer k"}, 2)
    try:
        assert await client.post_json("/chat/completions", {"size": 500}) == {"pad": "p" * 500}
        with pytest.raises(UpstreamError) as err:
            await client.post_json("/chat/completions", {"size": 5000})
        assert err.value.kind == "protocol"
        assert "larger than 1000 bytes" in err.value.message
        assert client.pool.in_use == 0 and client.pool.open == 0
        assert server.requests[0].headers["authorization"] == "Bearer k"
        assert server.requests[0].headers["content-type"] == "application/json"
    finally:
        await client.close()


# --- 6. every ending gives the slot back exactly once ----------------------------------------


async def test_close_mid_body_closes_the_connection(server: RawServer, pools: Pools) -> None:
    pool = pools.new(server.url)
    resp = await get(pool, "/stall-body")
    assert await resp.next_chunk() == b"first"
    assert pool.in_use == 1
    resp.close()
    assert resp.done and pool.in_use == 0 and pool.open == 0
    await server.wait_until(lambda: server.hangups == 1)
    assert await resp.next_chunk() is None  # a closed response has no more body
    assert await read_whole(pool, "/ok") == b"ok"
    assert server.accepted == 2 and pool.in_use == 0


async def test_finish_before_the_end_closes(server: RawServer, pools: Pools) -> None:
    pool = pools.new(server.url)
    resp = await get(pool, "/stall-body")
    assert await resp.next_chunk() == b"first"
    resp.finish()
    assert resp.done and pool.in_use == 0 and pool.open == 0
    await server.wait_until(lambda: server.hangups == 1)


async def test_finish_after_the_end_reuses(server: RawServer, pools: Pools) -> None:
    pool = pools.new(server.url, max_connections=1)
    # The whole small answer arrives with its headers: finish() may keep the connection.
    resp = await get(pool, "/ok")
    resp.finish()
    assert resp.done and pool.in_use == 0 and pool.open == 1
    # Read to the end (released), then finish() and close() do nothing more.
    resp = await get(pool, "/ok")
    assert await resp.read() == b"ok"
    resp.finish()
    resp.close()
    assert pool.in_use == 0 and pool.open == 1
    assert await read_whole(pool, "/ok") == b"ok"
    assert server.accepted == 1
    await assert_limit_holds(pool, server, 1)


async def test_idle_timeout_while_the_server_stalls(server: RawServer, pools: Pools) -> None:
    pool = pools.new(server.url)
    resp = await get(pool, "/stall-body")
    assert await resp.next_chunk(idle_timeout=0.1) == b"first"
    with pytest.raises(TimeoutError):
        await resp.next_chunk(idle_timeout=0.1)
    assert resp.done and pool.in_use == 0 and pool.open == 0
    await server.wait_until(lambda: server.hangups == 1)


async def test_cancelled_while_waiting_for_headers(server: RawServer, pools: Pools) -> None:
    pool = pools.new(server.url)
    task = asyncio.create_task(get(pool, "/stall-headers", 1))
    await server.arrival("1").wait()
    await assert_cancel_frees_the_slot(task, pool, server)
    assert await read_whole(pool, "/ok") == b"ok"


async def test_cancelled_while_reading_the_body(server: RawServer, pools: Pools) -> None:
    pool = pools.new(server.url)
    got_first = asyncio.Event()

    async def reader() -> None:
        resp = await get(pool, "/stall-body")
        assert await resp.next_chunk() == b"first"
        got_first.set()
        await resp.read()

    task = asyncio.create_task(reader())
    await got_first.wait()
    await assert_cancel_frees_the_slot(task, pool, server)


async def test_cancelled_while_waiting_for_a_slot(server: RawServer, pools: Pools) -> None:
    pool = pools.new(server.url, max_connections=1)
    first = await get(pool, "/stall-body")
    waiting = asyncio.create_task(get(pool, "/ok"))
    await settle()
    assert not waiting.done() and pool.in_use == 1
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert pool.in_use == 1  # the cancelled waiter never held a slot
    first.close()
    assert pool.in_use == 0
    await assert_limit_holds(pool, server, 1)


async def test_release_and_close_twice_do_not_over_release(server: RawServer, pools: Pools) -> None:
    pool = pools.new(server.url, max_connections=1)
    resp = await get(pool, "/ok")
    assert await resp.read() == b"ok"  # released at the end
    resp.release()
    resp.release()
    resp.close()
    resp.close()
    assert pool.in_use == 0 and pool.open == 1

    resp = await get(pool, "/stall-body")
    resp.close()
    resp.close()
    resp.release()
    assert pool.in_use == 0 and pool.open == 0

    # With one slot, two concurrent requests still take turns.
    await assert_limit_holds(pool, server, 1)


async def test_drain_after_done_reuses_the_connection(server: RawServer, pools: Pools) -> None:
    done_seen = asyncio.Event()
    finishes = {"/sse": True, "/sse-never-ends": False}

    async def sse(ex: Exchange) -> bool:
        events = [b'data: {"n": 1}\n\n', b'data: {"n": 2}\n\n', b"data: [DONE]\n\n"]
        await ex.send(CHUNKED_HEAD + b"".join(chunk(e) for e in events))
        await done_seen.wait()  # the terminating chunk comes only after the client saw [DONE]
        if not finishes[ex.req.path]:
            await ex.wait_eof()
            return False
        await ex.send(LAST_CHUNK)
        return True

    server.routes["/sse"] = server.routes["/sse-never-ends"] = sse
    pool = pools.new(server.url)

    async def read_to_done(path: str) -> Response:
        resp = await get(pool, path)
        events = EventReader(resp, idle_timeout=2)
        seen: list[bytes] = []
        while (batch := await events.next_batch()) is not None:
            seen += batch
            if seen[-1] == b"[DONE]":
                break
        assert seen == [b'{"n": 1}', b'{"n": 2}', b"[DONE]"]
        assert not resp.done
        return resp

    resp = await read_to_done("/sse")
    done_seen.set()
    await resp.drain()
    assert resp.done and pool.in_use == 0 and pool.open == 1
    assert await read_whole(pool, "/ok") == b"ok"
    assert server.accepted == 1

    # A body that does not end within the drain timeout: the connection is closed.
    resp = await read_to_done("/sse-never-ends")
    await resp.drain(timeout=0.1)
    assert resp.done and pool.in_use == 0 and pool.open == 0
    await server.wait_until(lambda: server.hangups == 1)


async def test_cancelled_during_drain_closes(server: RawServer, pools: Pools) -> None:
    async def sse_stalls_after_done(ex: Exchange) -> bool:
        await ex.send(CHUNKED_HEAD + chunk(b"data: [DONE]\n\n"))
        await ex.wait_eof()
        return False

    server.routes["/sse-stalls"] = sse_stalls_after_done
    pool = pools.new(server.url)
    resp = await get(pool, "/sse-stalls")
    assert await resp.next_chunk() == b"data: [DONE]\n\n"
    draining = asyncio.create_task(resp.drain(timeout=30))
    await settle()
    assert not draining.done()
    draining.cancel()
    with pytest.raises(asyncio.CancelledError):
        await draining
    assert resp.done and pool.in_use == 0 and pool.open == 0
    await server.wait_until(lambda: server.hangups == 1)


async def test_http_client_error_status_is_classified_and_the_connection_kept(
    server: RawServer,
) -> None:
    async def limited(ex: Exchange) -> bool:
        body = b'{"error": {"message": "slow down"}}'
        await ex.send(answer(body, "Retry-After: 2", status=429))
        return True

    server.routes["/v1/chat/completions"] = limited
    client = HttpClient(f"{server.url}/v1", {}, 1)
    try:
        for _ in range(2):
            with pytest.raises(UpstreamError) as err:
                await client.post_json("/chat/completions", {"model": "m"})
            assert (err.value.kind, err.value.status) == ("rate_limited", 429)
            assert err.value.retry_after == 2.0 and err.value.message == "slow down"
        assert server.accepted == 1  # the error body was read to its end: kept
        assert client.pool.in_use == 0 and client.pool.open == 1
    finally:
        await client.close()


async def test_http_client_stream_cancelled_mid_body_frees_the_slot(server: RawServer) -> None:
    client = HttpClient(server.url, {}, 1)
    got_first = asyncio.Event()

    async def stream() -> None:
        async with client.post("/stall-body", {}) as resp:
            assert await resp.next_chunk() == b"first"
            got_first.set()
            await resp.next_chunk()

    try:
        task = asyncio.create_task(stream())
        await got_first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert client.pool.in_use == 0 and client.pool.open == 0
        await server.wait_until(lambda: server.hangups == 1)
        assert await client.get("/ok") == 200
    finally:
        await client.close()


# --- 7. no leak under mixed endings ------------------------------------------------------


async def test_two_hundred_mixed_endings_leave_no_slot_held(
    server: RawServer, pools: Pools
) -> None:
    pool = pools.new(server.url, max_connections=2)

    async def one(i: int) -> str:
        task: asyncio.Task[Any]
        match i % 6:
            case 0 | 3:
                assert await read_whole(pool, "/ok", i) == b"ok"
                return "read"
            case 1 | 4:
                resp = await get(pool, "/stall-body", i)
                assert await resp.next_chunk() == b"first"
                resp.close()
                return "closed"
            case 2:  # cancelled while waiting for the headers
                task = asyncio.create_task(get(pool, "/stall-headers", i))
            case _:  # cancelled while (or just before) reading the body
                task = asyncio.create_task(read_whole(pool, "/stall-body", i))
        await server.arrival(str(i)).wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return "cancelled"

    async with asyncio.timeout(20):
        endings = await asyncio.gather(*(one(i) for i in range(200)))
    assert Counter(endings) == {"read": 67, "closed": 67, "cancelled": 66}
    assert pool.in_use == 0 and pool.open <= 2
    assert len(server.requests) == 200

    async with asyncio.timeout(5):
        assert await asyncio.gather(*(read_whole(pool, "/ok") for _ in range(10))) == [b"ok"] * 10
    assert pool.in_use == 0 and pool.open <= 2
    await assert_limit_holds(pool, server, 2)


# --- 8. TLS with a private CA ---------------------------------------------------------------


@dataclass
class Certs:
    ca: Path  # the CA that the tests trust
    cert: Path  # 127.0.0.1 and localhost, signed by ``ca``
    key: Path
    rogue_cert: Path  # the same names, signed by a CA nobody trusts
    rogue_key: Path

    def server_context(self, rogue: bool = False) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if rogue:
            ctx.load_cert_chain(self.rogue_cert, self.rogue_key)
        else:
            ctx.load_cert_chain(self.cert, self.key)
        return ctx


def _openssl(folder: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True, timeout=30)


def _make_ca(folder: Path, name: str) -> None:
    _openssl(
        folder,
        "req", "-x509", "-new", "-nodes", "-days", "2",
        "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-keyout", f"{name}.key", "-out", f"{name}.pem",
        "-subj", f"/CN=SwiftClaw test {name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip


def _make_server_cert(folder: Path, ca: str, name: str) -> None:
    (folder / f"{name}.ext").write_text(
        "subjectAltName = IP:127.0.0.1, DNS:localhost\n"
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature\n"
        "extendedKeyUsage = serverAuth\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid:always\n"
    )
    _openssl(
        folder,
        "req", "-new", "-nodes",
        "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", "/CN=localhost",
    )  # fmt: skip
    _openssl(
        folder,
        "x509", "-req", "-in", f"{name}.csr", "-days", "2",
        "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
        "-out", f"{name}.pem", "-extfile", f"{name}.ext",
    )  # fmt: skip


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Certs]:
    # The TLS tests need the openssl CLI (Debian's openssl package); a missing tool fails
    # them rather than skipping the only tests of the HTTPS path.
    assert shutil.which("openssl") is not None, "install the openssl CLI: the TLS tests use it"
    version = subprocess.run(["openssl", "version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith(("OpenSSL", "LibreSSL")), version.stdout
    folder = tmp_path_factory.mktemp("certs")
    _make_ca(folder, "ca")
    _make_server_cert(folder, "ca", "server")
    _make_ca(folder, "rogue-ca")
    _make_server_cert(folder, "rogue-ca", "rogue")
    yield Certs(
        folder / "ca.pem",
        folder / "server.pem",
        folder / "server.key",
        folder / "rogue.pem",
        folder / "rogue.key",
    )


@pytest.fixture
async def tls_server(certs: Certs) -> AsyncIterator[RawServer]:
    async with RawServer(certs.server_context()) as s:
        yield s


@pytest.fixture
def no_cert_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default trust store only: nothing from the environment (here or in children)."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)


async def test_tls_with_a_trusted_ca_reuses_the_connection(
    tls_server: RawServer, certs: Certs, pools: Pools
) -> None:
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    pool = pools.new(tls_server.url, ssl_context=ctx)
    resp = await pool.request("POST", "/ok", [], b"{}")
    assert resp.status == 200 and await resp.read() == b"ok"
    assert tls_server.accepted == 1
    for _ in range(3):
        assert await read_whole(pool, "/ok") == b"ok"
    assert tls_server.accepted == 1
    assert pool.in_use == 0 and pool.open == 1

    # The DNS name in the certificate works too (localhost may try ::1 first).
    by_name = pools.new(f"https://localhost:{tls_server.port}", ssl_context=ctx)
    assert await read_whole(by_name, "/ok") == b"ok"
    assert tls_server.requests[-1].headers["host"] == f"localhost:{tls_server.port}"


async def test_tls_default_context_rejects_the_private_ca(
    tls_server: RawServer, pools: Pools, no_cert_env: None
) -> None:
    pool = pools.new(tls_server.url)  # no context given: ssl.create_default_context()
    with pytest.raises(ssl.SSLCertVerificationError) as err:
        await get(pool, "/ok")
    assert isinstance(err.value, OSError)
    assert "certificate verify failed" in str(err.value)
    assert pool.in_use == 0 and pool.open == 0
    assert tls_server.requests == []

    client = HttpClient(f"{tls_server.url}/v1", {}, 4)
    try:
        with pytest.raises(UpstreamError) as upstream:
            await client.post_json("/chat/completions", {"model": "m"})
        assert upstream.value.kind == "connect"
        assert upstream.value.status is None
        assert client.pool.in_use == 0
    finally:
        await client.close()
    assert tls_server.requests == []


COMPLETION = {
    "id": "chatcmpl-tls",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-x",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "answered over TLS"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
}


async def completions(ex: Exchange) -> bool:
    await ex.send(answer(json.dumps(COMPLETION).encode(), "content-type: application/json"))
    return True


async def test_runtime_trusts_a_private_ca_through_ssl_cert_file(
    tls_server: RawServer, certs: Certs, launch: Launcher, no_cert_env: None
) -> None:
    """``swiftclaw run`` with SSL_CERT_FILE=<ca.pem>: its providers' default TLS context
    trusts the CA; a provider whose certificate comes from another CA is still refused."""
    async with RawServer(certs.server_context(rogue=True)) as rogue:
        tls_server.routes["/v1/chat/completions"] = completions
        rogue.routes["/v1/chat/completions"] = completions
        doc = manifest(
            [
                {"name": "tls", "type": "openai-compatible", "baseURL": f"{tls_server.url}/v1"},
                {"name": "rogue", "type": "openai-compatible", "baseURL": f"{rogue.url}/v1"},
            ],
            [{"name": "trusted", "model": "tls/gpt-x"}, {"name": "untrusted", "model": "rogue/m"}],
        )
        # Blocking calls in threads: this loop serves both HTTPS fronts meanwhile.
        rt = await asyncio.to_thread(launch.runtime, doc, env={"SSL_CERT_FILE": str(certs.ca)})
        client = openai.OpenAI(base_url=f"{rt.url}/v1", api_key=API_KEY, max_retries=0)
        messages: list[Any] = [{"role": "user", "content": "hello over TLS"}]

        completion = await asyncio.to_thread(
            client.chat.completions.create, model="trusted", messages=messages
        )
        assert completion.choices[0].message.content == "answered over TLS"
        assert [(r.method, r.path) for r in tls_server.requests] == [
            ("POST", "/v1/chat/completions")
        ]
        sent = json.loads(tls_server.requests[0].body)
        assert sent["model"] == "gpt-x"
        assert sent["messages"][-1] == {"role": "user", "content": "hello over TLS"}

        with pytest.raises(openai.APIStatusError) as refused:
            await asyncio.to_thread(
                client.chat.completions.create, model="untrusted", messages=messages
            )
        assert refused.value.status_code >= 500
        assert rogue.requests == []  # the handshake failed: no request was ever sent
        assert "answered over TLS" not in str(refused.value.body)
        client.close()

        # The same manifest without SSL_CERT_FILE: the private CA is not trusted.
        bare = await asyncio.to_thread(launch.runtime, doc)
        client = openai.OpenAI(base_url=f"{bare.url}/v1", api_key=API_KEY, max_retries=0)
        with pytest.raises(openai.APIStatusError) as untrusted:
            await asyncio.to_thread(
                client.chat.completions.create, model="trusted", messages=messages
            )
        assert untrusted.value.status_code >= 500
        assert len(tls_server.requests) == 1  # still only the one from the first runtime
        client.close()
        assert "CERTIFICATE_VERIFY_FAILED" in bare.log()


async def test_closed_and_failed_connections_leave_no_cyclic_garbage(
    server: RawServer, pools: Pools
) -> None:
    """A connection closed mid-body, or one that never connected, must be freed by reference
    counting. Each left as a protocol <-> parser cycle kept its transport's buffers until a
    collector pass (with the runtime's tuned collector, thousands of them): the soak's RSS
    grew 24 % over 100,000 requests until the cycles were cut."""
    pool = pools.new(server.url, max_connections=4)
    async with RawServer() as gone:
        dead = pools.new(gone.url, max_connections=4)
        gone.stop_listening()
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for _ in range(20):
                resp = await get(pool, "/stall-body")
                assert await resp.next_chunk() == b"first"
                resp.close()  # a client hung up mid-stream
                with pytest.raises(OSError):
                    await get(dead, "/ok")  # a provider that is down
            await server.wait_until(lambda: server.hangups == 20)
            await settle()
            gc.collect()
            kinds = {type(o).__name__ for o in gc.garbage}
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
    # (the test's own asyncio server leaves transports of its side; only ours are judged)
    assert not kinds & {"_Conn", "HttpResponseParser"}
    assert pool.in_use == 0 and dead.in_use == 0
