"""Usage accounting: spend, requests and tokens per day by tenant, model and tier; active
users per day; the responses feedback may refer to.

Counters are fields of one Redis hash per day (``cost:tenant:<t>``, ``cost:model:<m>``,
``cost:tier:<t>``, ``requests:...``, ``tokens_in:...``, ``tokens_out:...``, ``feedback:...``)
written in pipelined round trips and kept 35 days: charges that finish while a write is
under way wait for it and go together in the next one, their increments summed (a group
commit: one round trip per request when they come one by one, one for dozens under load,
where a round trip each cost a third of a cache hit's time). Every caller waits for the
write that holds its charge, so what a request spent is counted before it is answered.
Active users are a HyperLogLog per day (PFADD/PFCOUNT: 12 KB whatever the number of
users). Without Redis the same figures are kept in process for this replica.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from .identity import Identity
from .redis import RedisDown, SpendRedis

log = logging.getLogger("swiftclaw.spend")

KEEP_SECONDS = 35 * 86_400
RESPONSE_SECONDS = 86_400  # feedback is accepted for a day after the answer
LOCAL_RESPONSES = 100_000  # responses remembered in process without Redis
_RATED = "\x00rated:"


@dataclass(frozen=True)
class Charge:
    """One finished request, as accounting sees it."""

    who: Identity
    tier: str
    model: str
    cost_usd: float
    tokens_in: int
    tokens_out: int
    response_ids: tuple[str, ...]


class UsageBook:
    """Daily counters of one agent, in Redis when there is one, else in process."""

    def __init__(self, prefix: str, redis: SpendRedis | None) -> None:
        self.prefix = prefix
        self.redis = redis
        self._local: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self._local_users: dict[str, set[str]] = defaultdict(set)
        self._local_responses: dict[str, str] = {}
        self._pending: list[tuple[str, Charge]] = []  # waiting for the next write
        self._next: asyncio.Future[bool] | None = None  # the next write's outcome
        self._writer: asyncio.Task[None] | None = None

    def _day_key(self, day: str) -> str:
        return f"{self.prefix}:usage:{day}"

    @staticmethod
    def fields(c: Charge) -> tuple[dict[str, float], dict[str, int]]:
        """The hash fields a charge adds to: float (cost) and integer (counts) increments."""
        t = c.who.tenant_key
        costs = {
            "cost:total": c.cost_usd,
            f"cost:tenant:{t}": c.cost_usd,
            f"cost:model:{c.model}": c.cost_usd,
            f"cost:tier:{c.tier}": c.cost_usd,
            f"cost:user:{c.who.key}": c.cost_usd,
        }
        counts = {
            "requests:total": 1,
            f"requests:tenant:{t}": 1,
            f"requests:tier:{c.tier}": 1,
            f"tokens_in:tenant:{t}": c.tokens_in,
            f"tokens_out:tenant:{t}": c.tokens_out,
        }
        return costs, counts

    def pipeline_ops(self, pipe: Any, day: str, c: Charge) -> None:
        """Queue a charge's writes on a Redis pipeline (sent with the budget's settlement)."""
        self._queue(pipe, [(day, c)])

    def _queue(self, pipe: Any, charges: list[tuple[str, Charge]]) -> None:
        """Queue the writes of ``charges`` on a pipeline, the increments of each field summed."""
        costs: dict[str, defaultdict[str, float]] = defaultdict(lambda: defaultdict(float))
        counts: dict[str, defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))
        users: dict[str, set[str]] = defaultdict(set)
        for day, c in charges:
            key = self._day_key(day)
            cost_fields, count_fields = self.fields(c)
            for f, v in cost_fields.items():
                costs[key][f] += v
            for f, n in count_fields.items():
                counts[key][f] += n
            users[f"{self.prefix}:users:{day}"].add(c.who.key)
            for rid in c.response_ids:
                pipe.set(f"{self.prefix}:resp:{rid}", c.who.tenant_key, ex=RESPONSE_SECONDS)
        for key in costs.keys() | counts.keys():
            for f, v in costs[key].items():
                if v:
                    pipe.hincrbyfloat(key, f, v)
            for f, n in counts[key].items():
                if n:
                    pipe.hincrby(key, f, n)
            pipe.expire(key, KEEP_SECONDS)
        for key, who in users.items():
            pipe.pfadd(key, *sorted(who))
            pipe.expire(key, KEEP_SECONDS)

    def record_local(self, day: str, c: Charge) -> None:
        book = self._local[day]
        costs, counts = self.fields(c)
        for f, v in {**costs, **counts}.items():
            book[f] += v
        self._local_users[day].add(c.who.key)
        for rid in c.response_ids:
            if len(self._local_responses) >= LOCAL_RESPONSES:
                self._local_responses.pop(next(iter(self._local_responses)))
            self._local_responses[rid] = c.who.tenant_key
        for old in [d for d in self._local if d < day]:
            del self._local[old]
            self._local_users.pop(old, None)

    async def record(self, day: str, c: Charge) -> bool:
        """Count one charge; False when Redis was not usable (then it is kept locally).
        Returns once the write holding it is done (see the module's docstring)."""
        if self.redis is None:
            self.record_local(day, c)
            return False
        self._pending.append((day, c))
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        written = self._next
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_pending())
        return await asyncio.shield(written)

    async def _write_pending(self) -> None:
        """Write what waits, one batch at a time, until nothing does. A batch that cannot
        be written (Redis down, or anything unexpected) is kept locally; its callers are
        answered whatever happens, so none waits forever."""
        assert self.redis is not None
        while self._pending:
            batch, self._pending = self._pending, []
            written, self._next = self._next, None

            async def write(client: Any, batch: list[tuple[str, Charge]] = batch) -> None:
                pipe = client.pipeline(transaction=False)
                self._queue(pipe, batch)
                await pipe.execute()

            ok = False
            try:
                await self.redis.call("usage record", write)
                ok = True
            except RedisDown:
                pass
            except Exception:
                log.exception("writing usage to Redis failed; kept in this process")
            finally:
                if not ok:
                    for day, c in batch:
                        self.record_local(day, c)
                if written is not None and not written.done():
                    written.set_result(ok)

    async def flush(self) -> None:
        """Wait for the charges recorded so far to be written (at shutdown)."""
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)

    async def day(self, day: str) -> tuple[dict[str, float], int, bool]:
        """A day's counters, its active users, and whether they are the shared figures."""
        if self.redis is not None:

            async def read(client: Any) -> tuple[Any, Any]:
                pipe = client.pipeline(transaction=False)
                pipe.hgetall(self._day_key(day))
                pipe.pfcount(f"{self.prefix}:users:{day}")
                got = await pipe.execute()
                return got[0], got[1]

            try:
                raw, users = await self.redis.call("usage read", read)
            except RedisDown:
                pass
            else:
                return {k.decode(): float(v) for k, v in raw.items()}, int(users), True
        return dict(self._local.get(day, {})), len(self._local_users.get(day, ())), False

    async def feedback(self, day: str, rid: str, who: Identity, fields: list[str]) -> str:
        """Count feedback for response ``rid``: ``ok``, ``unknown`` (no such response of
        this tenant) or ``duplicate`` (already rated)."""
        if self.redis is not None:
            resp = f"{self.prefix}:resp:{rid}"
            seen = f"{self.prefix}:feedback:{rid}"

            async def write(client: Any) -> str:
                owner = await client.get(resp)
                if owner is None or owner.decode() != who.tenant_key:
                    return "unknown"
                if not await client.set(seen, 1, nx=True, ex=RESPONSE_SECONDS):
                    return "duplicate"
                pipe = client.pipeline(transaction=False)
                for f in fields:
                    pipe.hincrby(self._day_key(day), f, 1)
                await pipe.execute()
                return "ok"

            try:
                return await self.redis.call("feedback", write)
            except RedisDown:
                pass
        owner = self._local_responses.get(rid)
        if owner == _RATED + who.tenant_key:
            return "duplicate"
        if owner != who.tenant_key:
            return "unknown"
        self._local_responses[rid] = _RATED + who.tenant_key
        for f in fields:
            self._local[day][f] += 1
        return "ok"
