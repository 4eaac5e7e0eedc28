"""Usage accounting: spend, requests and tokens per day by tenant, model and tier; active
users per day; the responses feedback may refer to.

Counters are fields of one Redis hash per day (``cost:tenant:<t>``, ``cost:model:<m>``,
``cost:tier:<t>``, ``requests:...``, ``tokens_in:...``, ``tokens_out:...``,
``tokens_cached:...``, ``tokens_cache_write:...`` (prompt-cache parts of ``tokens_in``),
``feedback:...``) written in pipelined round trips and kept 35 days (a user's spend of the
day is a key of its own, ``usage:u:<tenant/user>:<day>``, kept two days: see
:data:`USER_SECONDS`): charges that finish while a write is under way wait for it and go
together in the next one, their increments summed (a group commit: one round trip per
request when they come one by one, one for dozens under load, where a round trip each cost a
third of a cache hit's time). Every caller waits for the write that holds its charge, so
what a request spent is counted before it is answered.
Active users are a HyperLogLog per day (PFADD/PFCOUNT: 12 KB whatever the number of
users). Without Redis the same figures are kept in process for this replica.

Which tenant a served response belongs to (``resp:<id>``, what feedback is matched
against, a key per response kept a day, by the ids the server issued: its own request id
and the provider's completion id, never one the client chose) goes to the cache Redis,
not the state one: those keys grow with traffic, and the state instance never evicts, so
they would fill it and push the counters back to per-replica counting. The key is also the
feedback's dedup mark (its value becomes ``rated`` with the tenant, atomically). An
evicted key only makes feedback on that old response ``unknown``; it can never count a
rating twice. With one Redis both live in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
from collections import OrderedDict, defaultdict
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from .identity import Identity
from .owners import ResponseOwners
from .redis import RedisDown, SpendRedis

log = logging.getLogger("swiftclaw.spend")

KEEP_SECONDS = 35 * 86_400
# A user's spend today is a key of its own (``usage:u:<tenant/user>:<day>``), kept two days
# (today in any time zone): per-user fields in the day's hash would be kept 35 days, and
# requests that name their end users (``auth.userFromRequest``) can name any number.
USER_SECONDS = 2 * 86_400
LOCAL_USER_COSTS = 50_000  # users' spend today kept in process without Redis (LRU, ~17 MB)
RESPONSE_SECONDS = 86_400  # feedback is accepted for a day after the answer
LOCAL_RESPONSES = 100_000  # responses remembered in process without Redis (1.6 MB, fixed)
_RATED = "\x00rated:"
# KEYS[1] the response's owner key; ARGV[1] the tenant, ARGV[2] the tenant marked rated.
# 1: rated now, 2: already rated, 0: no such response of this tenant.
_RATE_LUA = """
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
  return 1
end
if v == ARGV[2] then return 2 end
return 0
"""
_VERDICTS = {0: "unknown", 1: "ok", 2: "duplicate"}


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
    # parts of tokens_in: read from and written to the provider's prompt cache
    tokens_cached: int = 0
    tokens_cache_write: int = 0


class UsageBook:
    """Daily counters of one agent, in Redis when there is one, else in process."""

    def __init__(
        self, prefix: str, redis: SpendRedis | None, owners: SpendRedis | None = None
    ) -> None:
        """``redis``: the state Redis (counters). ``owners``: the cache Redis, where the
        responses' owners go (None: the state one)."""
        self.prefix = prefix
        self.redis = redis
        self.owners = owners or redis
        self._rate = self.owners.script(_RATE_LUA) if self.owners is not None else None
        self._local: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self._local_users: dict[str, DistinctCount] = defaultdict(DistinctCount)
        self._local_user_costs: OrderedDict[str, float] = OrderedDict()  # user key and day
        self._local_responses = ResponseOwners(LOCAL_RESPONSES)
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
        }
        counts = {
            "requests:total": 1,
            f"requests:tenant:{t}": 1,
            f"requests:tier:{c.tier}": 1,
            f"tokens_in:tenant:{t}": c.tokens_in,
            f"tokens_out:tenant:{t}": c.tokens_out,
            f"tokens_cached:tenant:{t}": c.tokens_cached,
            f"tokens_cache_write:tenant:{t}": c.tokens_cache_write,
        }
        return costs, counts

    def _user_key(self, day: str, who: Identity) -> str:
        return f"{self.prefix}:usage:u:{who.key}:{day}"

    def _resp_key(self, rid: str) -> str:
        return f"{self.prefix}:resp:{rid}"

    @property
    def _split(self) -> bool:
        """Whether the responses' owners go to another Redis than the counters."""
        return self.owners is not self.redis

    def _queue_owners(self, pipe: Any, charges: list[tuple[str, Charge]]) -> None:
        for _, c in charges:
            for rid in c.response_ids:
                # NX: the first answer with an id owns it; a later one with the same id
                # (a provider repeating its ids) cannot clear the mark of a rated one.
                pipe.set(self._resp_key(rid), c.who.tenant_key, ex=RESPONSE_SECONDS, nx=True)

    def _queue(self, pipe: Any, charges: list[tuple[str, Charge]]) -> None:
        """Queue the counters' writes of ``charges`` on a pipeline, the increments of each
        field summed (and the responses' owners when they share the Redis)."""
        costs: dict[str, defaultdict[str, float]] = defaultdict(lambda: defaultdict(float))
        counts: dict[str, defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))
        users: dict[str, set[str]] = defaultdict(set)
        user_costs: defaultdict[str, float] = defaultdict(float)
        for day, c in charges:
            key = self._day_key(day)
            cost_fields, count_fields = self.fields(c)
            for f, v in cost_fields.items():
                costs[key][f] += v
            for f, n in count_fields.items():
                counts[key][f] += n
            users[f"{self.prefix}:users:{day}"].add(c.who.key)
            user_costs[self._user_key(day, c.who)] += c.cost_usd
        for key, v in user_costs.items():
            if v:
                pipe.incrbyfloat(key, v)
                pipe.expire(key, USER_SECONDS)
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
        if not self._split:
            self._queue_owners(pipe, charges)

    def _own_locally(self, c: Charge) -> None:
        for rid in c.response_ids:
            self._local_responses.add(rid, c.who.tenant_key)

    def record_local(self, day: str, c: Charge, owners: bool = True) -> None:
        """Count a charge in process (``owners``: and remember its responses' tenant)."""
        book = self._local[day]
        costs, counts = self.fields(c)
        for f, v in {**costs, **counts}.items():
            book[f] += v
        self._local_users[day].add(c.who.key)
        if c.cost_usd:
            key = self._user_key(day, c.who)
            costs_by_user = self._local_user_costs
            costs_by_user[key] = costs_by_user.pop(key, 0.0) + c.cost_usd
            if len(costs_by_user) > LOCAL_USER_COSTS:
                costs_by_user.popitem(last=False)
        if owners:
            self._own_locally(c)
        for old in [d for d in self._local if d < day]:
            del self._local[old]
            self._local_users.pop(old, None)

    def record(self, day: str, c: Charge) -> Awaitable[bool]:
        """Count one charge; False when Redis was not usable (then it is kept locally).
        Joins the next write at once (before the caller waits); what it returns ends once
        the write holding it is done (see the module's docstring)."""
        if self.redis is None:
            self.record_local(day, c)
            return _false()
        self._pending.append((day, c))
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        written = self._next
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_pending())
        return asyncio.shield(written)

    async def _write_pending(self) -> None:
        """Write what waits, one batch at a time, until nothing does. A batch that cannot
        be written (Redis down, or anything unexpected) is kept locally; its callers are
        answered whatever happens, so none waits forever."""
        assert self.redis is not None and self.owners is not None
        while self._pending:
            batch, self._pending = self._pending, []
            written, self._next = self._next, None

            counters = Commands()
            self._queue(counters, batch)
            ok = owned = False
            try:
                steps = [_written(self.redis, "usage record", counters.commands)]
                if self._split and any(c.response_ids for _, c in batch):
                    owners = Commands()
                    self._queue_owners(owners, batch)
                    steps.append(_written(self.owners, "response owners", owners.commands))
                ok, *rest = await asyncio.gather(*steps)
                owned = all(rest) if self._split else ok
            finally:
                for day, c in batch:
                    if not ok:
                        self.record_local(day, c, owners=not owned)
                    elif not owned:
                        self._own_locally(c)
                if written is not None and not written.done():
                    written.set_result(ok)

    async def flush(self) -> None:
        """Wait for the charges recorded so far to be written (at shutdown)."""
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)

    async def day(
        self, day: str, who: Identity | None = None
    ) -> tuple[dict[str, float], int, bool]:
        """A day's counters, its active users, and whether they are the shared figures;
        with ``who``, its spend that day too (as ``cost:user:<tenant/user>``)."""
        user_key = self._user_key(day, who) if who is not None else None
        if self.redis is not None:

            async def read(client: Any) -> tuple[Any, Any, Any]:
                pipe = client.pipeline(transaction=False)
                pipe.hgetall(self._day_key(day))
                pipe.pfcount(f"{self.prefix}:users:{day}")
                if user_key is not None:
                    pipe.get(user_key)
                got = await pipe.execute()
                return got[0], got[1], got[2] if user_key is not None else None

            try:
                raw, users, spent = await self.redis.call("usage read", read)
            except RedisDown:
                pass
            else:
                counters = {k.decode(): float(v) for k, v in raw.items()}
                if who is not None:
                    counters[f"cost:user:{who.key}"] = float(spent or 0.0)
                return counters, int(users), True
        counters = dict(self._local.get(day, {}))
        if who is not None and user_key is not None:
            counters[f"cost:user:{who.key}"] = self._local_user_costs.get(user_key, 0.0)
        users_today = self._local_users.get(day)
        return counters, users_today.count() if users_today is not None else 0, False

    async def feedback(self, day: str, rid: str, who: Identity, fields: list[str]) -> str:
        """Count feedback for response ``rid``: ``ok``, ``unknown`` (no such response of
        this tenant, or its key expired or was evicted) or ``duplicate`` (already rated)."""
        verdict: str | None = None
        if self.owners is not None and self._rate is not None:
            rate = self._rate
            args = [who.tenant_key, _RATED + who.tenant_key]

            with contextlib.suppress(RedisDown):
                got = await self.owners.run("feedback", rate, [self._resp_key(rid)], args)
                verdict = _VERDICTS[int(got)]
        # a response whose owner was kept here (that Redis was away when it was served)
        if verdict is None or (verdict == "unknown" and rid in self._local_responses):
            verdict = self._rate_locally(rid, who)
        if verdict == "ok":
            await self._count_feedback(day, fields)
        return verdict

    def _rate_locally(self, rid: str, who: Identity) -> str:
        return self._local_responses.rate(rid, who.tenant_key)

    async def _count_feedback(self, day: str, fields: list[str]) -> None:
        if self.redis is not None:

            async def write(client: Any) -> None:
                pipe = client.pipeline(transaction=False)
                for f in fields:
                    pipe.hincrby(self._day_key(day), f, 1)
                await pipe.execute()

            try:
                await self.redis.call("feedback count", write)
                return
            except RedisDown:
                pass
        for f in fields:
            self._local[day][f] += 1


class DistinctCount:
    """How many distinct names were added, in a fixed 128 KiB whatever their number: a
    bitmap of 2**20 bits, one set per name's hash (linear counting: exact while names are
    few, within about 1 % up to a few million). The in-process stand-in for the PFADD /
    PFCOUNT of Redis, where a set of names would grow with every end user."""

    BITS = 1 << 20

    def __init__(self) -> None:
        self._bits = bytearray(self.BITS // 8)
        self._set = 0

    def add(self, name: str) -> None:
        h = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big")
        i = h % self.BITS
        byte, bit = i >> 3, 1 << (i & 7)
        if not self._bits[byte] & bit:
            self._bits[byte] |= bit
            self._set += 1

    def count(self) -> int:
        empty = self.BITS - self._set
        if empty == 0:
            return self.BITS  # saturated (tens of millions of names): a floor
        return round(-self.BITS * math.log(empty / self.BITS))


async def _false() -> bool:
    return False


class Commands:
    """The writes :meth:`UsageBook._queue` makes, as raw commands for
    :meth:`SpendRedis.send_all`: the few of redis-py's pipeline methods it uses."""

    def __init__(self) -> None:
        self.commands: list[tuple[Any, ...]] = []

    def incrbyfloat(self, key: str, amount: float) -> None:
        self.commands.append(("INCRBYFLOAT", key, amount))

    def hincrbyfloat(self, key: str, field: str, amount: float) -> None:
        self.commands.append(("HINCRBYFLOAT", key, field, amount))

    def hincrby(self, key: str, field: str, amount: int) -> None:
        self.commands.append(("HINCRBY", key, field, amount))

    def expire(self, key: str, seconds: int) -> None:
        self.commands.append(("EXPIRE", key, seconds))

    def pfadd(self, key: str, *values: str) -> None:
        self.commands.append(("PFADD", key, *values))

    def set(self, key: str, value: str, ex: int, nx: bool) -> None:
        self.commands.append(("SET", key, value, "EX", ex, *(("NX",) if nx else ())))


async def _written(redis: SpendRedis, op: str, commands: list[tuple[Any, ...]]) -> bool:
    """Run a write; False when it could not be done (Redis down, or anything unexpected)."""
    try:
        await redis.send_all(op, commands)
    except RedisDown:
        return False
    except Exception:
        log.exception("%s: writing to Redis failed; kept in this process", op)
        return False
    return True
