"""The little of ASGI that the runtime and the simulator share: types and a whole response."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import Context, ContextVar
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON = b"application/json"


async def send_body(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = JSON,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> int:
    """A complete response with a known length; returns the status for logging."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
    return status


async def start_event_stream(send: Send, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """Open a server-sent-events response; the body follows in ``more_body`` messages."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/event-stream; charset=utf-8"),
                (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no"),
                *(headers or []),
            ],
        }
    )


class DisconnectWatch:
    """Cancels the task serving a request when its client goes away.

    uvicorn does not cancel an app whose client hung up: without this, a request whose
    client is gone would keep its upstream call (and its connection slot) to the end.
    Make it once the body is read (it takes over ``receive``); call :meth:`finish` before
    the last send, since the server reports the end of a response as a disconnect too.
    Its watcher (a task) starts when the request first waits on something outside the
    process (:func:`watch_for_hangup`: a provider, a call under way on another replica, a
    context source): an answer from the cache needs none, and a task per request cost a
    cache hit about a tenth of its time.
    """

    def __init__(self, receive: Receive) -> None:
        self.gone = False
        self._finished = False
        self._task = asyncio.current_task()
        self._receive = receive
        self._watcher: asyncio.Task[None] | None = None
        _current_watch.set(self)

    def arm(self) -> None:
        if self._watcher is None and not self._finished:
            # an empty context: the request's own holds this watch, and a copy of it in the
            # watcher would make a reference cycle (freed only by the collector) per request
            self._watcher = asyncio.get_running_loop().create_task(self._watch(), context=Context())

    async def _watch(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        if not self._finished and self._task is not None:
            self.gone = True
            self._task.cancel()

    def finish(self) -> None:
        """The response is complete (or about to be): a disconnect now is not a hang-up.

        A watcher already started is not cancelled: the server wakes it when the response
        completes (it reports that as a disconnect), and it returns quietly. Cancelling it
        instead would leave a CancelledError with its traceback, a reference cycle, on
        every request.
        """
        self._finished = True
        _current_watch.set(None)  # the request's context no longer holds this watch

    def absorb(self) -> bool:
        """In an ``except CancelledError``: True (and the cancellation withdrawn) when the
        cancellation was this watch's, False when it came from elsewhere."""
        if self.gone and self._task is not None:
            self._task.uncancel()
            return True
        return False


_current_watch: ContextVar[DisconnectWatch | None] = ContextVar("disconnect_watch", default=None)


def watch_for_hangup() -> None:
    """The request is about to wait on something outside the process: from now on, its
    client hanging up cancels it (a no-op outside a watched request)."""
    watch = _current_watch.get()
    if watch is not None:
        watch.arm()
