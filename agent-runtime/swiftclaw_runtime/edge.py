"""The HTTP edge's limits: a header deadline, a header size cap, a connection cap and a
write deadline, on uvicorn's httptools protocol.

uvicorn bounds none of these with httptools: a connection that sends nothing (or its
headers a byte at a time) is held forever, httptools buffers a header of any size, and a
response whose client stops reading waits in ``drain`` forever, holding its request's
in-flight slot and its upstream connection. Here each connection:

- is refused (503, closed) when ``max_connections`` are already open and none of them is
  an idle keep-alive connection (one between two requests is closed to make room);
- must deliver each request's headers within ``header_timeout`` of its first byte (the
  first request: of the connection's opening), else 408 and closed;
- may send at most ``max_header_bytes`` of request line and headers, else 431 and closed;
- is aborted when a response's writes stay blocked for ``write_timeout`` (the client
  stopped reading): the request sees its client gone, so the disconnect watch cancels it,
  its upstream stream is closed and its slot freed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, ClassVar

from prometheus_client import Counter
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol


@dataclass(frozen=True)
class EdgeLimits:
    header_timeout: float = 10.0
    max_header_bytes: int = 32 * 1024
    max_connections: int = 4096
    write_timeout: float = 30.0


def protocol_class(limits: EdgeLimits, rejected: Counter) -> type[EdgeProtocol]:
    """An :class:`EdgeProtocol` bound to ``limits``; ``rejected`` (labelled by reason)
    counts each refusal."""
    attrs = {"limits": limits, "rejected": rejected}
    return type("BoundEdgeProtocol", (EdgeProtocol,), attrs)


class EdgeProtocol(HttpToolsProtocol):
    """httptools with the edge's limits (see the module)."""

    limits: ClassVar[EdgeLimits] = EdgeLimits()
    rejected: ClassVar[Counter | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._awaiting_headers = True
        self._header_bytes = 0  # raw bytes since the request began, while its head is read
        self._head_size = 0  # request target and headers as parsed
        self._header_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections and not self._evict_idle():
            self._refuse(503, "connections", b"Too many connections; retry shortly.")
            return
        self._header_timer = self.loop.call_later(self.limits.header_timeout, self._head_late)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._awaiting_headers:
            self._header_bytes += len(data)
        super().data_received(data)
        if (
            self._awaiting_headers
            and not self._refused
            and self._header_bytes > self.limits.max_header_bytes
        ):
            self._too_large()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._awaiting_headers = True
        self._head_size = 0
        if self._header_timer is None:  # a keep-alive connection's next request
            self._header_timer = self.loop.call_later(self.limits.header_timeout, self._head_late)

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        self._header_bytes = 0
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        if self._head_size > self.limits.max_header_bytes:
            self._too_large()
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._refused:
            super().on_message_complete()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self.limits.write_timeout, self._write_late)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _evict_idle(self) -> bool:
        """At the cap, an idle keep-alive connection (between two requests) gives way to the
        new one: idle sockets cost a client nothing to keep open, so they must not be able
        to hold the cap against everyone else. True when one was closed."""
        for conn in self.connections:
            if conn is self or not isinstance(conn, HttpToolsProtocol):
                continue
            idle = conn.timeout_keep_alive_task
            if idle is not None and not conn.transport.is_closing():
                idle.cancel()
                conn.timeout_keep_alive_task = None
                conn.transport.close()
                if self.rejected is not None:
                    self.rejected.labels("idle_evicted").inc()
                return True
        return False

    # --- refusals ---------------------------------------------------------------------

    def _head_late(self) -> None:
        self._header_timer = None
        if self._awaiting_headers and not self._refused and not self.transport.is_closing():
            if self.cycle is not None and not self.cycle.response_complete:
                # a pipelined request behind a response under way: its turn comes later
                self._header_timer = self.loop.call_later(
                    self.limits.header_timeout, self._head_late
                )
                return
            self._refuse(408, "header_timeout", b"The request headers did not arrive in time.")

    def _too_large(self) -> None:
        self._refuse(
            431,
            "header_too_large",
            b"The request line and headers are larger than %d bytes."
            % self.limits.max_header_bytes,
        )

    def _write_late(self) -> None:
        """The client has not read for ``write_timeout``: drop it (abort, since closing
        would wait for the buffer it does not read)."""
        self._write_timer = None
        if self.flow.write_paused:
            self._count("write_timeout")
            self.transport.abort()

    def _refuse(self, status: int, reason: str, message: bytes) -> None:
        self._refused = True
        self._cancel_timers()
        if self.transport.is_closing():  # already answered (uvicorn's 400) or gone
            return
        self._count(reason)
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.abort()  # a pipelined request past a limit, mid-response: no answer
            return
        self.transport.write(
            STATUS_LINE[status]
            + b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (len(message), message)
        )
        self.transport.close()

    def _count(self, reason: str) -> None:
        if self.rejected is not None:
            self.rejected.labels(reason).inc()

    def _cancel_timers(self) -> None:
        for timer in (self._header_timer, self._write_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._write_timer = None
