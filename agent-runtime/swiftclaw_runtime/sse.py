"""Server-sent events: reading an upstream stream and writing the OpenAI chunk stream."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import orjson

DONE = b"data: [DONE]\n\n"


def encode_event(obj: Any) -> bytes:
    """One ``data:`` event holding a JSON object."""
    return b"data: " + orjson.dumps(obj) + b"\n\n"


async def iter_data(lines: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """Yield each event's data (multi-line data joined by newlines) from an SSE byte stream."""
    data: list[bytes] = []
    async for raw in lines:
        line = raw.rstrip(b"\r\n")
        if not line:
            if data:
                yield b"\n".join(data)
                data = []
            continue
        if line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
        # event:, id:, retry: and comments carry nothing the runtime needs.
    if data:
        yield b"\n".join(data)
