"""The spend counters' Redis: one client, a health flag, and a watcher that brings it back.

A failed call marks Redis down at once; from then on callers skip it (no per-request
timeout while it is away) and use their in-process fallback, and a background task pings
it every ``WATCH_SECONDS``: the first answer marks it up again, so a Redis that comes back
is used again within about a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

log = logging.getLogger("swiftclaw.spend")

T = TypeVar("T")
WATCH_SECONDS = 1.0
CALL_TIMEOUT = 0.5
MAX_CONNECTIONS = 64


class RedisDown(Exception):
    """Redis is not usable now: use the in-process fallback."""


class SpendRedis:
    """A Redis connection shared by limits, budgets and usage, with its health."""

    def __init__(self, url: str, on_change: Callable[[bool], None] | None = None) -> None:
        import redis.asyncio as aioredis  # only pods with Redis need it

        # A bounded pool that makes callers wait for a connection (up to CALL_TIMEOUT)
        # instead of failing: a burst of requests must queue, not look like an outage.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=MAX_CONNECTIONS,
            timeout=CALL_TIMEOUT,
            socket_timeout=CALL_TIMEOUT,
            socket_connect_timeout=CALL_TIMEOUT,
            retry_on_timeout=False,
            health_check_interval=0,
        )
        self.client: Any = aioredis.Redis(connection_pool=pool)
        self.up = True
        self._on_change = on_change
        self._watcher: asyncio.Task[None] | None = None

    def script(self, source: str) -> Any:
        """A Lua script run by its SHA (loaded again by the client after a Redis restart)."""
        return self.client.register_script(source)

    async def call(self, op: str, fn: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``fn(client)``; a Redis failure marks it down and raises :class:`RedisDown`."""
        import redis.exceptions as rexc

        if not self.up:
            raise RedisDown(op)
        try:
            return await fn(self.client)
        except (rexc.ConnectionError, rexc.TimeoutError, OSError, TimeoutError) as err:
            self._mark_down(op, err)
            raise RedisDown(op) from None
        except rexc.ResponseError as err:
            # e.g. OOM or a read-only replica: the data may be fine, the call is not.
            log.warning("redis %s failed: %s", op, type(err).__name__)
            raise RedisDown(op) from None

    def _mark_down(self, op: str, err: BaseException) -> None:
        if not self.up:
            return
        self.up = False
        log.warning(
            "redis is unreachable (%s on %s): limits and budgets are enforced per replica",
            type(err).__name__,
            op,
        )
        if self._on_change:
            self._on_change(False)
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while not self.up:
            await asyncio.sleep(WATCH_SECONDS)
            try:
                await self.client.ping()
            except Exception:  # still away; try again shortly
                continue
            self.up = True
            log.info("redis is reachable again: limits and budgets are shared again")
            if self._on_change:
                self._on_change(True)

    async def start(self) -> None:
        """Check Redis once at startup; down is not fatal (the watcher keeps trying)."""
        with contextlib.suppress(RedisDown):
            await self.call("ping", lambda c: c.ping())

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        await self.client.aclose()
