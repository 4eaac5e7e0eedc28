"""Server-sent events: reading an upstream stream and writing the OpenAI chunk stream."""

from __future__ import annotations

from typing import Any, Protocol

import orjson

DONE = b"data: [DONE]\n\n"


def encode_event(obj: Any) -> bytes:
    """One ``data:`` event holding a JSON object."""
    return b"data: " + orjson.dumps(obj) + b"\n\n"


class ChunkSource(Protocol):
    async def next_chunk(self, idle_timeout: float | None = None) -> bytes | None: ...


class EventReader:
    """The ``data`` of each server-sent event of a body, in batches as the body arrives.

    A plain object rather than an async generator, so that a reader that stops early
    (at ``[DONE]``) leaves nothing suspended behind it.
    """

    def __init__(self, source: ChunkSource, idle_timeout: float | None = None) -> None:
        self._source = source
        self._idle_timeout = idle_timeout
        self._pending = b""
        self._data: list[bytes] = []
        self._ended = False

    async def next_batch(self) -> list[bytes] | None:
        """The events completed by the next piece of the body; None after the last one."""
        while not self._ended:
            chunk = await self._source.next_chunk(self._idle_timeout)
            if chunk is None:
                self._ended = True
                out = self._lines(b"\n\n") if self._pending or self._data else []
                return out or None
            out = self._lines(chunk)
            if out:
                return out
        return None

    def _lines(self, chunk: bytes) -> list[bytes]:
        buf = self._pending + chunk
        out: list[bytes] = []
        start = 0
        while (end := buf.find(b"\n", start)) != -1:
            line = buf[start:end].rstrip(b"\r")
            start = end + 1
            if not line:
                if self._data:
                    out.append(b"\n".join(self._data))
                    self._data = []
            elif line.startswith(b"data:"):
                value = line[5:]
                self._data.append(value[1:] if value.startswith(b" ") else value)
            # event:, id:, retry: and comments carry nothing the runtime needs.
        self._pending = buf[start:]
        return out
