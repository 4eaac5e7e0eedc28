"""The spend counters' Redis: the shared :class:`~swiftclaw_runtime.redis_client.WatchedRedis`
(one client, a health flag, and a watcher that brings it back) with the spend's timeouts.

A call that cannot reach Redis marks it down at once; from then on callers skip it (no per-request
timeout while it is away) and use their in-process fallback, and a background task pings
it every second: the first answer marks it up again, so a Redis that comes back is used
again within about a second. A call Redis refuses (OOM, read-only) falls back too, logged
when refusals start and stop (and at most every minute between), not once per call.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ..logs import FailureLog
from ..redis_client import RedisBusy as NoSlot
from ..redis_client import RedisUnavailable, Script, WatchedRedis, exchange

log = logging.getLogger("swiftclaw.spend")

T = TypeVar("T")
CALL_TIMEOUT = 0.5
MAX_CONNECTIONS = 64


class RedisDown(Exception):
    """Redis is not usable now: use the in-process fallback."""


class RedisBusy(RedisDown):
    """No connection came free in time: the call never reached Redis, which is busy
    (every connection in use), not down."""


class SpendRedis:
    """A Redis connection shared by limits, budgets and usage, with its health."""

    def __init__(
        self,
        url: str,
        on_change: Callable[[bool], None] | None = None,
        *,
        down_note: str = "limits and budgets are enforced per replica",
        up_note: str = "limits and budgets are shared again",
    ) -> None:
        # A bounded pool that makes callers wait for a connection (up to CALL_TIMEOUT)
        # instead of failing: a burst of requests must queue, not look like an outage.
        self.redis = WatchedRedis(
            url,
            timeout=CALL_TIMEOUT,
            max_connections=MAX_CONNECTIONS,
            queue=True,
            logger=log,
            down_note=down_note,
            up_note=up_note,
            on_change=on_change,
        )
        self.client: Any = self.redis.client
        # Refused calls (OOM, read-only) are logged when they start and when they stop,
        # not once each: at hundreds of requests a second that would flood the log.
        self._refusals = FailureLog(
            log, "redis refuses calls", "redis accepts calls again", down_note, up_note
        )

    @property
    def up(self) -> bool:
        return self.redis.up

    def script(self, source: str) -> Script:
        """A Lua script run by its SHA (:meth:`run`; loaded again after a Redis restart)."""
        return Script.of(source)

    def queue(
        self, op: str, script: Script, keys: list[str], args: list[Any]
    ) -> asyncio.Future[Any] | None:
        """Queue ``script`` for the next group write (:meth:`WatchedRedis.send`) now, before
        the caller's first wait; None while Redis is down. :meth:`reply` waits for it."""
        try:
            return self.redis.send(op, *script.command(keys, args), script=script)
        except RedisUnavailable:
            return None

    async def reply(self, op: str, pending: Awaitable[T]) -> T:
        """The reply of a queued script; a Redis failure marks it down and raises
        :class:`RedisDown` (:class:`RedisBusy`: no connection came free in time), as
        :meth:`call` does."""
        import redis.exceptions as rexc

        try:
            got = await pending
        except NoSlot:
            raise RedisBusy(op) from None
        except RedisUnavailable:
            raise RedisDown(op) from None
        except rexc.ResponseError as err:
            # e.g. OOM or a read-only replica: the data may be fine, the call is not.
            self._refusals.failed(f"{type(err).__name__} on {op}")
            raise RedisDown(op) from None
        self._refusals.worked()
        return got

    async def send_all(self, op: str, commands: list[tuple[Any, ...]]) -> None:
        """Write ``commands`` in one round trip below redis-py's pipeline
        (:func:`~swiftclaw_runtime.redis_client.exchange`); raises :class:`RedisDown`
        unless Redis took every one (as :meth:`call` does)."""
        await self.call(op, functools.partial(_all_taken, commands=commands))

    async def run(self, op: str, script: Script, keys: list[str], args: list[Any]) -> Any:
        """Run ``script`` in the next group write: :meth:`queue`, then :meth:`reply`."""
        pending = self.queue(op, script, keys, args)
        if pending is None:
            raise RedisDown(op)
        return await self.reply(op, pending)

    async def call(self, op: str, fn: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``fn(client)``; a Redis failure marks it down and raises :class:`RedisDown`."""
        return await self.reply(op, self.redis.call(op, fn))

    async def start(self) -> None:
        """Check Redis once at startup; down is not fatal (the watcher keeps trying)."""
        await self.redis.start()

    async def close(self) -> None:
        await self.redis.close()


async def _all_taken(client: Any, commands: list[tuple[Any, ...]]) -> None:
    """Send ``commands``; raise the first error Redis answered one with (all are read)."""
    for reply in await exchange(client, commands):
        if isinstance(reply, Exception):
            raise reply
