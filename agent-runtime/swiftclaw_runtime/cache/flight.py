"""Single flight: concurrent identical misses make one upstream call.

In a process, the first request for a key leads and the others await its future. Across
replicas, the leader also takes a short Redis lock (``SET NX PX`` of
:data:`LOCK_TTL_MS`, extended every :data:`REFRESH_SECONDS` while its call runs, so a
replica that dies holding it stalls the others for at most the TTL); a leader elsewhere
finding the lock taken polls for the answer every :data:`POLL_SECONDS` until it appears,
the lock goes (that leader failed: take it and call upstream) or the wait runs out (call
upstream). A follower never waits past its deadline, and a failed leader's followers
make their own calls: the lock saves load, it never costs an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..ids import random_hex
from .entry import CachedAnswer
from .store import Store, StoreUnavailable

POLL_SECONDS = 0.05
LOCK_TTL_MS = 3000
REFRESH_SECONDS = 1.0


@dataclass
class Flight:
    """A request's place in the single flight of its key."""

    key: str
    leader: bool
    future: asyncio.Future[CachedAnswer | None]
    token: str = ""  # set while it holds the cross-replica lock
    # what extends the lock: a timer, then (a call that outlives it) a task
    keeper: asyncio.TimerHandle | asyncio.Task[None] | None = None


class SingleFlight:
    def __init__(self, store: Store, prefix: str) -> None:
        self.store = store
        self.prefix = prefix
        self._flights: dict[str, asyncio.Future[CachedAnswer | None]] = {}

    def join(self, key: str) -> Flight:
        """Lead the flight of ``key``, or follow the one already under way here."""
        future = self._flights.get(key)
        if future is not None and not future.done():
            return Flight(key, False, future)
        future = asyncio.get_running_loop().create_future()
        self._flights[key] = future
        return Flight(key, True, future)

    async def wait(self, flight: Flight, timeout: float) -> CachedAnswer | None:
        """A follower's wait for its leader's answer (None: the leader got none)."""
        try:
            async with asyncio.timeout(max(0.0, timeout)):
                return await asyncio.shield(flight.future)
        except TimeoutError:
            return None

    async def lock_or_wait(
        self, flight: Flight, timeout: float, get: Callable[[], Awaitable[CachedAnswer | None]]
    ) -> CachedAnswer | None:
        """For a leader: take the cross-replica lock, or wait for the replica that holds
        it. Returns the other replica's answer, or None when this one must call upstream."""
        lock = self.prefix + flight.key
        token = random_hex()
        try:
            if await self.store.acquire(lock, token, LOCK_TTL_MS):
                self._hold(flight, lock, token)
                return None
            ends = time.monotonic() + timeout
            while time.monotonic() < ends:
                await asyncio.sleep(POLL_SECONDS)
                answer = await get()
                if answer is not None:
                    return answer
                if await self.store.acquire(lock, token, LOCK_TTL_MS):  # the holder is gone
                    self._hold(flight, lock, token)
                    return None
        except StoreUnavailable:
            pass
        return None

    def _hold(self, flight: Flight, lock: str, token: str) -> None:
        flight.token = token

        async def keep() -> None:
            while True:
                with contextlib.suppress(StoreUnavailable):
                    await self.store.refresh(lock, token, LOCK_TTL_MS)
                await asyncio.sleep(REFRESH_SECONDS)

        def due() -> None:
            if flight.token == token:
                flight.keeper = loop.create_task(keep())

        # A timer, not a task a flight: most calls end before the first refresh is due.
        loop = asyncio.get_running_loop()
        flight.keeper = loop.call_later(REFRESH_SECONDS, due)

    def hand_over(self, flight: Flight | None) -> tuple[str, str] | None:
        """The cross-replica lock a leader holds (its key and token), for the store to free
        right after writing the answer, in the same round trip; the flight holds it no
        longer, so :meth:`land` does not free it again. None when it holds none."""
        if flight is None or not flight.token:
            return None
        token, flight.token = flight.token, ""
        return self.prefix + flight.key, token

    async def land(self, flight: Flight, answer: CachedAnswer | None) -> None:
        """End a leader's flight: wake its followers, then free the lock."""
        if not flight.leader:
            return
        if self._flights.get(flight.key) is flight.future:
            del self._flights[flight.key]
        if not flight.future.done():
            flight.future.set_result(answer)
        if flight.keeper is not None:
            flight.keeper.cancel()
            flight.keeper = None
        if flight.token:
            token, flight.token = flight.token, ""
            with contextlib.suppress(StoreUnavailable):  # else it expires in LOCK_TTL_MS
                await self.store.release(self.prefix + flight.key, token)
