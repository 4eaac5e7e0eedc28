"""Usage accounting: spend, requests and tokens per day by tenant, model and tier; active
users per day; the responses feedback may refer to.

Counters are fields of one Redis hash per day (``cost:tenant:<t>``, ``cost:model:<m>``,
``cost:tier:<t>``, ``requests:...``, ``tokens_in:...``, ``tokens_out:...``, ``feedback:...``)
written in one pipelined round trip per request and kept 35 days. Active users are a
HyperLogLog per day (PFADD/PFCOUNT: 12 KB whatever the number of users). Without Redis
the same figures are kept in process for this replica.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from .identity import Identity
from .redis import RedisDown, SpendRedis

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
        key = self._day_key(day)
        costs, counts = self.fields(c)
        for f, v in costs.items():
            if v:
                pipe.hincrbyfloat(key, f, v)
        for f, n in counts.items():
            if n:
                pipe.hincrby(key, f, n)
        pipe.expire(key, KEEP_SECONDS)
        users = f"{self.prefix}:users:{day}"
        pipe.pfadd(users, c.who.key)
        pipe.expire(users, KEEP_SECONDS)
        for rid in c.response_ids:
            pipe.set(f"{self.prefix}:resp:{rid}", c.who.tenant_key, ex=RESPONSE_SECONDS)

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
        """Write one charge; False when Redis was not usable (then it is kept locally)."""
        if self.redis is not None:

            async def write(client: Any) -> None:
                pipe = client.pipeline(transaction=False)
                self.pipeline_ops(pipe, day, c)
                await pipe.execute()

            try:
                await self.redis.call("usage record", write)
                return True
            except RedisDown:
                pass
        self.record_local(day, c)
        return False

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
