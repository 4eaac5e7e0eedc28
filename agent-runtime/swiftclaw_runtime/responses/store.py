"""Where stored responses live, for ``previous_response_id``: Redis, or this process.

What is kept for a response is the conversation it ended (the chat messages without the
instructions, which OpenAI does not carry over either), serialised once. Keys are scoped by
tenant, so one tenant cannot continue another's conversation even with its id. With
``--redis-url`` every pod of the agent shares them (a key per response, with a TTL);
without it a bounded in-process LRU holds them, with the same TTL, within a byte budget.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any, Protocol

import orjson

DEFAULT_TTL_SECONDS = 24 * 3600
KEY_PREFIX = "swiftclaw:responses"


def key(tenant: str, response_id: str) -> str:
    return f"{KEY_PREFIX}:{tenant}:{response_id}"


class ResponseStore(Protocol):
    async def put(self, tenant: str, response_id: str, value: dict[str, Any]) -> None: ...

    async def get(self, tenant: str, response_id: str) -> dict[str, Any] | None: ...

    async def close(self) -> None: ...


class MemoryStore:
    """An LRU with a TTL, bounded by entries and by bytes (a conversation may hold images)."""

    def __init__(
        self,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        max_entries: int = 10_000,
        max_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    async def put(self, tenant: str, response_id: str, value: dict[str, Any]) -> None:
        data = orjson.dumps(value)
        k = key(tenant, response_id)
        self._drop(k)
        self._items[k] = (time.monotonic() + self.ttl, data)
        self.bytes += len(data)
        while self._items and (len(self._items) > self.max_entries or self.bytes > self.max_bytes):
            self._drop(next(iter(self._items)))

    async def get(self, tenant: str, response_id: str) -> dict[str, Any] | None:
        k = key(tenant, response_id)
        found = self._items.get(k)
        if found is None:
            return None
        expires, data = found
        if expires <= time.monotonic():
            self._drop(k)
            return None
        self._items.move_to_end(k)
        value: dict[str, Any] = orjson.loads(data)
        return value

    def _drop(self, k: str) -> None:
        old = self._items.pop(k, None)
        if old is not None:
            self.bytes -= len(old[1])

    def __len__(self) -> int:
        return len(self._items)

    async def close(self) -> None:
        self._items.clear()
        self.bytes = 0


class RedisStore:
    """One key per response (``swiftclaw:responses:<tenant>:<id>``) with a TTL."""

    def __init__(self, url: str, ttl_seconds: float = DEFAULT_TTL_SECONDS) -> None:
        import redis.asyncio as aioredis  # imported here: only pods with Redis need it

        self.ttl = max(1, int(ttl_seconds))
        self.client = aioredis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)

    async def put(self, tenant: str, response_id: str, value: dict[str, Any]) -> None:
        await self.client.set(key(tenant, response_id), orjson.dumps(value), ex=self.ttl)

    async def get(self, tenant: str, response_id: str) -> dict[str, Any] | None:
        data = await self.client.get(key(tenant, response_id))
        if data is None:
            return None
        value: dict[str, Any] = orjson.loads(data)
        return value

    async def close(self) -> None:
        await self.client.aclose()
