"""One Redis connection with its health: a client with short timeouts, an up/down flag,
and a background ping that brings it back.

Used by the spend counters, the response cache and the response store; each keeps its
own keys, scripts and fallbacks. A connection failure (or timeout) marks Redis down at
once; from then on :meth:`WatchedRedis.call` raises :class:`RedisUnavailable` without
touching the network (no per-request timeout while Redis is away), and a background
task pings it every ``PROBE_SECONDS``: the first answer (after the owner's optional
``prepare``) marks it up again, so a Redis that comes back is used again within about a
second, no restart of the runtime needed.

A queued client (``queue=True``) lets at most ``max_connections`` calls use Redis at
once; the others queue for a slot, each until its request's deadline (:func:`queue_until`)
or ``wait``. A call that finds no slot in time raises :class:`RedisBusy`: its caller falls
back for that one call, and nothing is marked down. Load is not an outage: only a
connection that fails or a reply that times out is.

Hot commands (the cache's reads and writes, the spend scripts) go through :meth:`WatchedRedis.send`
instead: each is queued and written with every other command queued meanwhile, in one
pipeline (a group write: one round trip, one connection and one slot for all of them), its
reply handed back to its caller alone. One request's commands each paid redis-py's whole
per-command path (a pooled connection, a slot, a timeout, a read); under load dozens now
share one. Scripts go by their SHA (:class:`Script`), loaded again when Redis forgot them.

``redis`` is imported only when a client is made: only pods with Redis need it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import hashlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

from .logs import FailureLog

T = TypeVar("T")
PROBE_SECONDS = 1.0
# Connections beyond the call slots, for the watcher's ping and the owner's ``prepare``
# (which run outside the slots): they never take one a call is waiting for.
SPARE_CONNECTIONS = 2

# Commands a group write carries at most: their replies are read under one socket timeout,
# so a burst's are split rather than read as one long reply (some 30 ms of Redis's time).
MAX_BATCH = 1000

# The monotonic time until which calls made in this context may queue for a connection.
_queue_until: ContextVar[float | None] = ContextVar("redis_queue_until", default=None)


class RedisUnavailable(Exception):
    """Redis is down (or a call just failed to reach it): use the fallback."""


class RedisBusy(RedisUnavailable):
    """Every connection stayed in use until the call's wait ran out: Redis is busy, not
    down. The caller falls back for this call; Redis is not marked down."""


@dataclass(frozen=True)
class Script:
    """A Lua script sent by its SHA1 (EVALSHA), its source loaded when Redis lacks it."""

    source: str
    sha: str

    @classmethod
    def of(cls, source: str) -> Script:
        return cls(source, hashlib.sha1(source.encode()).hexdigest())

    def command(self, keys: list[str], args: list[Any]) -> tuple[Any, ...]:
        return ("EVALSHA", self.sha, len(keys), *keys, *args)


@dataclass
class _Queued:
    """A command waiting for the next group write, and the future of its reply."""

    op: str
    command: tuple[Any, ...]
    script: Script | None
    reply: asyncio.Future[Any]


@contextlib.contextmanager
def queue_until(at: float) -> Iterator[None]:
    """Calls to a queued client made inside wait for a connection until ``at``
    (``time.monotonic()``): the request's deadline, not a fixed pool timeout."""
    token = _queue_until.set(at)
    try:
        yield
    finally:
        _queue_until.reset(token)


def make_client(url: str, timeout: float, max_connections: int | None, queue: bool) -> Any:
    """A ``redis.asyncio`` client whose sockets give up after ``timeout`` seconds.

    ``queue``: a bounded pool (``max_connections`` plus :data:`SPARE_CONNECTIONS`; the
    queueing itself is :class:`WatchedRedis`'s slots). Otherwise a plain pool
    (``max_connections`` None: unbounded) that does not retry: the caller's fallback is
    the retry.
    """
    import redis.asyncio as aioredis

    if queue:
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=(max_connections or 64) + SPARE_CONNECTIONS,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry_on_timeout=False,
            health_check_interval=0,
        )
        return aioredis.Redis(connection_pool=pool)
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    return aioredis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        max_connections=max_connections,
    )


class WatchedRedis:
    """A client, its up/down flag, and the watcher that flips it back."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        max_connections: int | None = None,
        queue: bool = False,
        wait: float | None = None,
        logger: logging.Logger,
        down_note: str,
        up_note: str,
        on_change: Callable[[bool], None] | None = None,
        on_error: Callable[[str], None] | None = None,
        prepare: Callable[[Any], Awaitable[None]] | None = None,
    ) -> None:
        """``down_note``/``up_note``: what an outage means to the owner (logged).
        ``on_change(up)``: the flag flipped. ``on_error(op)``: a call failed to reach
        Redis. ``prepare(client)``: run when Redis answers (at start and after an outage),
        before it is marked up; a failure keeps it down and the watcher tries again.
        ``queue``: at most ``max_connections`` calls at once, the others wait for a slot
        until the deadline of :func:`queue_until`, else ``wait`` seconds (default:
        ``timeout``)."""
        self.client: Any = make_client(url, timeout, max_connections, queue)
        self._slots = asyncio.Semaphore(max_connections or 64) if queue else None
        self._wait = timeout if wait is None else wait
        self._log = logger
        self._state = FailureLog(
            logger, "redis is unreachable", "redis is reachable again", down_note, up_note
        )
        self._on_change = on_change
        self._on_error = on_error
        self._prepare = prepare
        self._watcher: asyncio.Task[None] | None = None
        self._queued: list[_Queued] = []
        self._sender: asyncio.Task[None] | None = None

    @property
    def up(self) -> bool:
        return not self._state.failing

    async def call(self, op: str, fn: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``fn(client)``. While Redis is down, or when this call cannot reach it
        (which marks it down), raise :class:`RedisUnavailable`; when no connection comes
        free in time, :class:`RedisBusy` (nothing marked down); other Redis errors (a bad
        reply, OOM, ...) are the caller's to handle."""
        if not self.up:
            raise RedisUnavailable(op)
        if self._slots is None:
            return await self._run(op, fn)
        until = _queue_until.get()
        wait = self._wait if until is None else until - time.monotonic()
        try:
            async with asyncio.timeout(max(0.0, wait)):
                await self._slots.acquire()
        except TimeoutError:
            raise RedisBusy(op) from None
        try:
            return await self._run(op, fn)
        finally:
            self._slots.release()

    def send(self, op: str, *command: Any, script: Script | None = None) -> asyncio.Future[Any]:
        """Queue ``command`` for the next group write; the future holds its reply, or the
        error it got (:class:`RedisUnavailable`, :class:`RedisBusy`, or Redis's own, e.g.
        a ``ResponseError``). Raises :class:`RedisUnavailable` at once while Redis is down.
        Once queued it is written even if its caller stops waiting (a hang-up): what a
        request settles reaches Redis whatever happens to the request."""
        if not self.up:
            raise RedisUnavailable(op)
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        self._queued.append(_Queued(op, command, script, reply))
        if self._sender is None or self._sender.done():
            # its own context: not the first caller's deadline (queue_until)
            self._sender = loop.create_task(self._send_queued(), context=contextvars.Context())
        return reply

    async def _send_queued(self) -> None:
        """Write what is queued, one pipeline at a time, until nothing is; every caller is
        answered whatever happens (none waits forever)."""
        while self._queued:
            batch, self._queued = self._queued[:MAX_BATCH], self._queued[MAX_BATCH:]
            try:
                replies = await self.call(batch[0].op, functools.partial(_pipeline, batch=batch))
            except BaseException as err:
                if isinstance(err, RedisUnavailable) and not isinstance(err, RedisBusy):
                    for q in batch[1:]:  # each call that failed is counted, as alone
                        if self._on_error is not None:
                            self._on_error(q.op)
                failed = err if isinstance(err, Exception) else RedisUnavailable(batch[0].op)
                for q in batch:
                    if not q.reply.done():
                        q.reply.set_exception(failed)
                if not isinstance(err, Exception):
                    raise
                continue
            for q, got in zip(batch, replies, strict=True):
                if q.reply.done():  # its caller stopped waiting
                    continue
                if isinstance(got, Exception):
                    q.reply.set_exception(got)
                else:
                    q.reply.set_result(got)

    async def _run(self, op: str, fn: Callable[[Any], Awaitable[T]]) -> T:
        import redis.exceptions as rexc

        try:
            return await fn(self.client)
        except (rexc.ConnectionError, rexc.TimeoutError, OSError, TimeoutError) as err:
            self._mark_down(op, err)
            raise RedisUnavailable(op) from None

    def _mark_down(self, op: str, err: BaseException) -> None:
        if self._on_error is not None:
            self._on_error(op)
        if not self.up:
            return
        self._state.failed(f"{type(err).__name__} on {op}")
        if self._on_change is not None:
            self._on_change(False)
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        """Ping every ``PROBE_SECONDS`` until Redis answers, then use it again."""
        while not self.up:
            await asyncio.sleep(PROBE_SECONDS)
            try:
                # connections from before the outage are dead: drop them, then ping anew
                await self.client.connection_pool.disconnect()
                await self.client.ping()
            except Exception:  # still away: any failure of the ping is the same news
                continue
            if self._prepare is not None:
                try:
                    await self._prepare(self.client)
                except Exception:
                    self._log.warning(
                        "redis answered but preparing it failed; retrying", exc_info=True
                    )
                    continue
            self._state.worked()
            if self._on_change is not None:
                self._on_change(True)

    async def start(self) -> None:
        """Check Redis once at startup; down is not fatal (the watcher keeps trying)."""
        with contextlib.suppress(RedisUnavailable):
            await self.call("ping", lambda c: c.ping())
            if self._prepare is not None:
                await self._prepare(self.client)

    async def close(self) -> None:
        if self._sender is not None:
            with contextlib.suppress(Exception):
                await self._sender
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        await self.client.aclose()


async def _pipeline(client: Any, batch: list[_Queued]) -> list[Any]:
    """Send ``batch`` in one write and read its replies, errors as values. Scripts Redis did
    not know (a restarted Redis) are loaded and sent again (they did not run)."""
    from redis.exceptions import NoScriptError

    replies = await exchange(client, [q.command for q in batch])
    missing = [i for i, got in enumerate(replies) if isinstance(got, NoScriptError)]
    if missing:
        scripts = {s.sha: s for i in missing if (s := batch[i].script) is not None}
        loads = [("SCRIPT", "LOAD", script.source) for script in scripts.values()]
        again = await exchange(client, loads + [batch[i].command for i in missing])
        for i, got in zip(missing, again[len(loads) :], strict=True):
            replies[i] = got
    return replies


async def exchange(client: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
    """The commands on one pooled connection, written at once; their raw replies in order
    (a ``ResponseError`` as a value). Below redis-py's pipeline (no command objects, reply
    callbacks or retries: a script sent twice would count twice) and one timeout for all
    the replies, not one each. A connection that fails or times out is dropped."""
    from redis.exceptions import ResponseError
    from redis.exceptions import TimeoutError as RedisTimeout

    pool = client.connection_pool
    conn = await pool.get_connection()
    try:
        await conn.send_packed_command(_pack(conn, commands), check_health=False)
        replies: list[Any] = []
        try:
            async with asyncio.timeout(conn.socket_timeout):
                for _ in commands:
                    try:
                        replies.append(await conn.read_response(timeout=math.inf))
                    except ResponseError as err:
                        replies.append(err)
        except TimeoutError:
            await conn.disconnect(nowait=True)
            raise RedisTimeout("Timeout reading from redis") from None
        except BaseException:
            await conn.disconnect(nowait=True)  # replies may still be on their way
            raise
    finally:
        await pool.release(conn)
    return replies


def _pack(conn: Any, commands: list[tuple[Any, ...]]) -> Any:
    """The commands in Redis's protocol: by hiredis's packer directly (str, bytes, int and
    float arguments, floats as ``repr`` as redis-py writes them), else redis-py's."""
    try:
        from hiredis import pack_command
    except ImportError:  # pragma: no cover - hiredis is a dependency
        return conn.pack_commands(commands)
    return [b"".join([pack_command(c) for c in commands])]
