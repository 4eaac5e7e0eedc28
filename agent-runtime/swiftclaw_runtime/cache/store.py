"""Where cache entries live: Redis (shared by the replicas) or an in-process LRU.

Both offer the same small surface: ``get``, ``set`` with a TTL, and a short lock (``SET
NX PX``) for single flight across replicas. A cache must never fail a request, so
:class:`RedisStore` keeps a health flag: any connection error or timeout (socket timeouts
are short) marks Redis down, calls then raise :class:`StoreUnavailable` at once (the
caller bypasses the cache and counts it), and a monitor pings every second until Redis
answers again, so a restarted Redis is used again within about a second, no restart of
the runtime needed. Load is not an outage: at most :data:`MAX_CONNECTIONS` calls use
Redis at once and the others queue, each until its request's deadline; one that gets no
connection by then raises :class:`StoreBusy` (that request bypasses the cache; Redis
stays up).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from ..redis_client import RedisBusy, RedisUnavailable, Script, WatchedRedis

log = logging.getLogger("swiftclaw.cache")

T = TypeVar("T")

# A reply this late reads as Redis down. Not shorter: under a burst the event loop itself
# lags (measured: 1,024 requests at once on two cores busy with other work made replies
# more than 1 s late), and 0.25 s read a busy replica as an outage (issue 20, item 11). A
# Redis that stops answering costs the calls in flight this once; then it is down and
# calls bypass it at once.
SOCKET_TIMEOUT = 3.0
MAX_CONNECTIONS = 256
# How long a call made outside a request (no deadline in its context) queues for one.
QUEUE_SECONDS = 5.0


# Compare-and-delete and compare-and-extend: a lock is only touched by its holder.
_RELEASE = Script.of(
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)
_REFRESH = Script.of(
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
)


class StoreUnavailable(Exception):
    """The backend is down (or just failed): bypass the cache for this request."""


class StoreBusy(StoreUnavailable):
    """No connection came free before the request's deadline: bypass the cache for this
    request, the backend is not down."""


class Store(Protocol):
    kind: str

    @property
    def available(self) -> bool: ...

    async def get(self, key: str) -> bytes | None: ...

    async def set(
        self, key: str, value: bytes, ttl_seconds: float, unlock: tuple[str, str] | None = None
    ) -> None:
        """Store ``value``; with ``unlock`` (a lock's key and token), then free that lock
        if it is still the token's."""

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

    async def set(
        self, key: str, value: bytes, ttl_seconds: float, unlock: tuple[str, str] | None = None
    ) -> None:
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
    """A Redis (with RediSearch for the semantic index) behind the shared health flag
    (:class:`~swiftclaw_runtime.redis_client.WatchedRedis`)."""

    kind = "redis"

    def __init__(
        self,
        url: str,
        on_error: Callable[[str], None] = lambda op: None,
        on_recover: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        async def prepare(client: Any) -> None:
            if on_recover is not None:
                await on_recover()

        self._on_error = on_error
        self.redis = WatchedRedis(
            url,
            timeout=SOCKET_TIMEOUT,
            max_connections=MAX_CONNECTIONS,
            queue=True,
            wait=QUEUE_SECONDS,
            logger=log,
            down_note="bypassing the cache",
            up_note="cache in use",
            on_error=on_error,
            prepare=prepare if on_recover is not None else None,
        )
        self.client: Any = self.redis.client

    @property
    def available(self) -> bool:
        return self.redis.up

    async def call(self, op: str, fn: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``fn(client)``; a connection failure marks Redis down and raises
        :class:`StoreUnavailable` (as does any call while it is down)."""

        if not self.redis.up:
            raise StoreUnavailable("redis is down")
        return await self._reply(op, self.redis.call(op, fn))

    def _queue(self, op: str, *command: Any, script: Script | None = None) -> asyncio.Future[Any]:
        """Queue one command for the next group write (:meth:`WatchedRedis.send`)."""
        try:
            return self.redis.send(op, *command, script=script)
        except RedisUnavailable:
            raise StoreUnavailable(f"redis {op} failed") from None

    async def _reply(self, op: str, pending: Awaitable[T]) -> T:
        """The reply of a queued command or a call, its failures mapped for the cache: a
        connection failure marks Redis down (:class:`StoreUnavailable`), no free connection in
        time is :class:`StoreBusy`, a refused command is raised as Redis said it."""
        import redis.exceptions as rexc

        try:
            return await pending
        except RedisBusy:
            raise StoreBusy(f"redis {op}: no connection in time") from None
        except RedisUnavailable:
            raise StoreUnavailable(f"redis {op} failed") from None
        except rexc.ResponseError:
            raise
        except rexc.RedisError as err:
            self._on_error(op)
            log.warning("redis %s failed: %s", op, type(err).__name__)
            raise StoreUnavailable(f"redis {op} failed") from None

    async def send(self, op: str, *command: Any, script: Script | None = None) -> Any:
        """One command in the next group write, its failures as :meth:`call`'s."""
        return await self._reply(op, self._queue(op, *command, script=script))

    async def get(self, key: str) -> bytes | None:
        value: bytes | None = await self.send("get", "GET", key)
        return value

    async def set(
        self, key: str, value: bytes, ttl_seconds: float, unlock: tuple[str, str] | None = None
    ) -> None:
        """Store ``value``; with ``unlock``, free that lock if still ours, queued after the
        write in the same round trip (the answer is in Redis before the lock goes)."""
        written = self._queue("set", "SET", key, value, "PX", max(1, int(ttl_seconds * 1000)))
        released = None
        if unlock is not None:
            with contextlib.suppress(StoreUnavailable):  # else it expires in its TTL
                released = self._queue(
                    "unlock", *_RELEASE.command([unlock[0]], [unlock[1]]), script=_RELEASE
                )
        try:
            await self._reply("set", written)
        finally:
            if released is not None:
                with contextlib.suppress(StoreUnavailable):
                    await self._reply("unlock", released)

    async def acquire(self, key: str, token: str, ttl_ms: int) -> bool:
        got = await self.send("lock", "SET", key, token, "NX", "PX", ttl_ms)
        return bool(got)

    async def refresh(self, key: str, token: str, ttl_ms: int) -> None:
        await self.send("lock", *_REFRESH.command([key], [token, ttl_ms]), script=_REFRESH)

    async def release(self, key: str, token: str) -> None:
        """Delete the lock if it is still ours (it may have expired and been taken)."""
        await self.send("unlock", *_RELEASE.command([key], [token]), script=_RELEASE)

    async def start(self) -> None:
        """Check Redis once; if it is down, start bypassed and let the monitor find it."""
        await self.redis.start()

    async def close(self) -> None:
        await self.redis.close()
