"""Where stored responses live, for ``previous_response_id``: Redis, or this process.

What is kept for a response is the conversation it ended (the chat messages without the
instructions, which OpenAI does not carry over either), serialised once. Keys are scoped by
agent and by the caller (tenant and user, as limits and budgets count them: see
:func:`scope`), so that neither another agent nor another user, of this tenant or another,
can read or continue a conversation even with its id. Each turn stores the whole
conversation, so a conversation is bounded (:func:`over_bound`): past
:data:`MAX_CONVERSATION_MESSAGES` messages or :data:`MAX_CONVERSATION_BYTES` it is served
but not stored, and continuing one that the new input takes past the bound is a 400. With
``--redis-url`` every pod of the agent shares them (a key per response, with a TTL);
without it a bounded in-process LRU holds them, with the same TTL, within a byte budget.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any, Protocol

import orjson

from ..redis_client import WatchedRedis
from ..spend.identity import Identity

log = logging.getLogger("swiftclaw.responses")

DEFAULT_TTL_SECONDS = 24 * 3600
KEY_PREFIX = "swiftclaw:responses"
# One stored conversation at most (the request body's default bound: a stored conversation
# is at most one request's worth to replay), and at most this many messages.
MAX_CONVERSATION_BYTES = 4 * 1024 * 1024
MAX_CONVERSATION_MESSAGES = 1_000


def scope(agent: str, who: Identity) -> str:
    """Whose stored responses: the agent's (``namespace/name``), the caller's tenant and
    user (escaped, so that no pair collides with another)."""
    return f"{agent}:{who.key}"


def key(scope: str, response_id: str) -> str:
    return f"{KEY_PREFIX}:{scope}:{response_id}"


def over_bound(messages: list[dict[str, Any]]) -> str | None:
    """What a conversation is past the bound by, or None within it."""
    if len(messages) > MAX_CONVERSATION_MESSAGES:
        return f"{len(messages):,} messages (the bound is {MAX_CONVERSATION_MESSAGES:,})"
    size = len(orjson.dumps(messages))
    if size > MAX_CONVERSATION_BYTES:
        return f"{size:,} bytes (the bound is {MAX_CONVERSATION_BYTES:,})"
    return None


class ResponseStore(Protocol):
    async def put(self, scope: str, response_id: str, value: dict[str, Any]) -> None: ...

    async def get(self, scope: str, response_id: str) -> dict[str, Any] | None: ...

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

    async def put(self, scope: str, response_id: str, value: dict[str, Any]) -> None:
        data = orjson.dumps(value)
        k = key(scope, response_id)
        self._drop(k)
        self._items[k] = (time.monotonic() + self.ttl, data)
        self.bytes += len(data)
        while self._items and (len(self._items) > self.max_entries or self.bytes > self.max_bytes):
            self._drop(next(iter(self._items)))

    async def get(self, scope: str, response_id: str) -> dict[str, Any] | None:
        k = key(scope, response_id)
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
    """One key per response (``swiftclaw:responses:<agent>:<tenant>/<user>:<id>``) with a
    TTL, on the
    shared :class:`~swiftclaw_runtime.redis_client.WatchedRedis`: while Redis is away a
    call fails at once (``RedisUnavailable``; the caller says the store is down)
    instead of waiting for a timeout, and it is used again within about a second."""

    def __init__(self, url: str, ttl_seconds: float = DEFAULT_TTL_SECONDS) -> None:
        self.ttl = max(1, int(ttl_seconds))
        self.redis = WatchedRedis(
            url,
            timeout=2.0,
            logger=log,
            down_note="previous_response_id cannot be used meanwhile",
            up_note="stored responses in use",
        )
        self.client: Any = self.redis.client

    async def put(self, scope: str, response_id: str, value: dict[str, Any]) -> None:
        data = orjson.dumps(value)
        await self.redis.call("put", lambda c: c.set(key(scope, response_id), data, ex=self.ttl))

    async def get(self, scope: str, response_id: str) -> dict[str, Any] | None:
        data = await self.redis.call("get", lambda c: c.get(key(scope, response_id)))
        if data is None:
            return None
        value: dict[str, Any] = orjson.loads(data)
        return value

    async def close(self) -> None:
        await self.redis.close()
