"""Where cache entries live: Redis (shared by the replicas) or an in-process LRU.

Both offer the same small surface: ``get``, ``set`` with a TTL, and a short lock (``SET
NX PX``) for single flight across replicas. A cache must never fail a request, so
:class:`RedisStore` keeps a health flag: any connection error or timeout (socket timeouts
are short) marks Redis down, calls then raise :class:`StoreUnavailable` at once (the
caller bypasses the cache and counts it), and a monitor pings every second until Redis
answers again, so a restarted Redis is used again within about a second, no restart of
the runtime needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

log = logging.getLogger("swiftclaw.cache")

T = TypeVar("T")

SOCKET_TIMEOUT = 0.25
PROBE_SECONDS = 1.0


# Compare-and-delete and compare-and-extend: a lock is only touched by its holder.
_RELEASE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)
_REFRESH = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
)


class StoreUnavailable(Exception):
    """The backend is down (or just failed): bypass the cache for this request."""


class Store(Protocol):
    kind: str

    @property
    def available(self) -> bool: ...

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None: ...

    async def acquire(self, key: str, token: str, ttl_ms: int) -> bool: ...

    async def refresh(self, key: str, token: str, ttl_ms: int) -> None: ...

    async def release(self, key: str, token: str) -> None: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class MemoryStore:
    """An LRU bounded by entry count and total bytes, with a TTL per entry (one replica's).

    Bytes count keys and values; the overhead of the Python objects is not counted, so
    leave headroom in the pod's memory limit (about 200 bytes an entry).
    """

    kind = "memory"

    def __init__(
        self, max_entries: int, max_bytes: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self.evictions = 0
        self._clock = clock
        self._data: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    @property
    def available(self) -> bool:
        return True

    def __len__(self) -> int:
        return len(self._data)

    async def get(self, key: str) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        expires, value = item
        if expires <= self._clock():
            self._drop(key)
            return None
        self._data.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        size = len(key) + len(value)
        if size > self.max_bytes:
            return
        if key in self._data:
            self._drop(key)
        self._data[key] = (self._clock() + ttl_seconds, value)
        self.bytes += size
        while len(self._data) > self.max_entries or self.bytes > self.max_bytes:
            oldest = next(iter(self._data))
            self._drop(oldest)
            self.evictions += 1

    def _drop(self, key: str) -> None:
        _, value = self._data.pop(key)
        self.bytes -= len(key) + len(value)

    async def acquire(self, key: str, token: str, ttl_ms: int) -> bool:
        return True  # one process: the in-process single flight is all there is

    async def refresh(self, key: str, token: str, ttl_ms: int) -> None:
        return None

    async def release(self, key: str, token: str) -> None:
        return None

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._data.clear()


class RedisStore:
    """A Redis (with RediSearch for the semantic index) behind a health flag."""

    kind = "redis"

    def __init__(
        self,
        url: str,
        on_error: Callable[[str], None] = lambda op: None,
        on_recover: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self.client: Any = aioredis.Redis.from_url(
            url,
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=SOCKET_TIMEOUT,
            retry=Retry(NoBackoff(), 0),  # a cache does not retry: it bypasses
            max_connections=256,
        )
        self._up = True
        self._on_error = on_error
        self._on_recover = on_recover
        self._monitor: asyncio.Task[None] | None = None

    @property
    def available(self) -> bool:
        return self._up

    async def call(self, op: str, fn: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``fn(client)``; a connection failure marks Redis down and raises
        :class:`StoreUnavailable` (as does any call while it is down)."""
        import redis.exceptions as rexc

        if not self._up:
            raise StoreUnavailable("redis is down")
        try:
            return await fn(self.client)
        except (rexc.ConnectionError, rexc.TimeoutError, TimeoutError, OSError) as err:
            self._mark_down(op, err)
            raise StoreUnavailable(f"redis {op} failed") from None
        except rexc.ResponseError:
            raise
        except rexc.RedisError as err:
            self._on_error(op)
            log.warning("redis %s failed: %s", op, type(err).__name__)
            raise StoreUnavailable(f"redis {op} failed") from None

    def _mark_down(self, op: str, err: BaseException) -> None:
        self._on_error(op)
        if self._up:
            self._up = False
            log.warning(
                "redis is unreachable (%s on %s): bypassing the cache", type(err).__name__, op
            )
            if self._monitor is None or self._monitor.done():
                self._monitor = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        """Ping every second until Redis answers, then use it again."""
        while not self._up:
            await asyncio.sleep(PROBE_SECONDS)
            try:
                # connections from before the outage are dead: drop them, then ping anew
                await self.client.connection_pool.disconnect()
                await self.client.ping()
            except Exception:  # still down: any failure of the ping is the same news
                continue
            if self._on_recover is not None:
                try:
                    await self._on_recover()
                except Exception:
                    log.warning("redis answered but preparing it failed; retrying", exc_info=True)
                    continue
            self._up = True
            log.info("redis is reachable again: cache in use")

    async def get(self, key: str) -> bytes | None:
        value: bytes | None = await self.call("get", lambda c: c.get(key))
        return value

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        await self.call("set", lambda c: c.set(key, value, px=max(1, int(ttl_seconds * 1000))))

    async def acquire(self, key: str, token: str, ttl_ms: int) -> bool:
        got = await self.call("lock", lambda c: c.set(key, token, nx=True, px=ttl_ms))
        return bool(got)

    async def refresh(self, key: str, token: str, ttl_ms: int) -> None:
        await self.call("lock", lambda c: c.eval(_REFRESH, 1, key, token, ttl_ms))

    async def release(self, key: str, token: str) -> None:
        """Delete the lock if it is still ours (it may have expired and been taken)."""
        await self.call("unlock", lambda c: c.eval(_RELEASE, 1, key, token))

    async def start(self) -> None:
        """Check Redis once; if it is down, start bypassed and let the monitor find it."""
        try:
            await self.call("ping", lambda c: c.ping())
            if self._on_recover is not None:
                await self._on_recover()
        except StoreUnavailable:
            pass

    async def close(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        await self.client.aclose()
