"""The spend counters' Redis: the shared :class:`~swiftclaw_runtime.redis_client.WatchedRedis`
(one client, a health flag, and a watcher that brings it back) with the spend's timeouts.

A failed call marks Redis down at once; from then on callers skip it (no per-request
timeout while it is away) and use their in-process fallback, and a background task pings
it every second: the first answer marks it up again, so a Redis that comes back is used
again within about a second.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ..redis_client import RedisUnavailable, WatchedRedis

log = logging.getLogger("swiftclaw.spend")

T = TypeVar("T")
CALL_TIMEOUT = 0.5
MAX_CONNECTIONS = 64


class RedisDown(Exception):
    """Redis is not usable now: use the in-process fallback."""


class SpendRedis:
    """A Redis connection shared by limits, budgets and usage, with its health."""

    def __init__(self, url: str, on_change: Callable[[bool], None] | None = None) -> None:
        # A bounded pool that makes callers wait for a connection (up to CALL_TIMEOUT)
        # instead of failing: a burst of requests must queue, not look like an outage.
        self.redis = WatchedRedis(
            url,
            timeout=CALL_TIMEOUT,
            max_connections=MAX_CONNECTIONS,
            queue=True,
            logger=log,
            down_note="limits and budgets are enforced per replica",
            up_note="limits and budgets are shared again",
            on_change=on_change,
        )
        self.client: Any = self.redis.client

    @property
    def up(self) -> bool:
        return self.redis.up

    def script(self, source: str) -> Any:
        """A Lua script run by its SHA (loaded again by the client after a Redis restart)."""
        return self.client.register_script(source)

    async def call(self, op: str, fn: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``fn(client)``; a Redis failure marks it down and raises :class:`RedisDown`."""
        import redis.exceptions as rexc

        try:
            return await self.redis.call(op, fn)
        except RedisUnavailable:
            raise RedisDown(op) from None
        except rexc.ResponseError as err:
            # e.g. OOM or a read-only replica: the data may be fine, the call is not.
            log.warning("redis %s failed: %s", op, type(err).__name__)
            raise RedisDown(op) from None

    async def start(self) -> None:
        """Check Redis once at startup; down is not fatal (the watcher keeps trying)."""
        await self.redis.start()

    async def close(self) -> None:
        await self.redis.close()
