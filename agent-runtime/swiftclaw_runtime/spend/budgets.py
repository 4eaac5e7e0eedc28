"""Budgets: daily and monthly caps for the agent, a daily cap per user, in USD.

Before a call its largest possible cost is *reserved* against every cap that applies, in
one Lua script that checks and reserves atomically (:data:`SCRIPT`); after the call the
reservation is *settled*: released, and the real cost (from the provider's usage) added
to the spend. A request is admitted only while spent + reserved + its own maximum fits,
so however many requests run at once on however many replicas, the spend cannot pass a
cap by more than the amount by which one request's real cost exceeds its reserved
maximum (the input estimate's error; the output is capped).

When a cap is reached, ``onExceeded`` decides: ``reject`` (429 ``insufficient_quota``,
naming the budget and when it resets), ``downgrade`` (the request is served by the
cheapest tier, reserved without the check: the cap bounds what the dearer tiers spend),
or ``alert`` (served as asked; the log and metrics say so).

Days and months begin at midnight in ``budget.timeZone``. Counters live in Redis hashes
keyed by the period, kept 2 days past its end, so they survive restarts. Without Redis a
replica keeps its own ledger against its share of each cap (cap / expected replicas).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from time import time as unix_now
from typing import Any
from zoneinfo import ZoneInfo

from ..config import BudgetSpec
from .identity import Identity
from .redis import RedisDown, SpendRedis

log = logging.getLogger("swiftclaw.budget")

KEEP_SECONDS = 2 * 86_400  # how long a period's counters outlive it

# KEYS: one hash per cap (fields spent, reserved, alerted, exceeded).
# ARGV: mode (reserve | settle | peek), amount (the reservation), fallback (what a
#   downgraded request reserves), on_exceeded, actual (settle: the real cost), alert
#   ratio, then per key: its cap and TTL in seconds.
# reserve returns: action (0 ok, 1 downgraded, 2 alert only, 3 rejected), the first
#   cap that did not fit (1-based, 0 none), the amount reserved, then per key spent and
#   reserved. settle returns per key: spent, reserved, 1 when this call crossed the
#   alert ratio first, 1 when it reached the cap first.
SCRIPT = """
local mode = ARGV[1]
local amount = tonumber(ARGV[2])
local fallback = tonumber(ARGV[3])
local policy = ARGV[4]
local actual = tonumber(ARGV[5])
local alert = tonumber(ARGV[6])
local function cap(i) return tonumber(ARGV[5 + 2 * i]) end
local function ttl(i) return tonumber(ARGV[6 + 2 * i]) end
local function state(i)
  local v = redis.call('HMGET', KEYS[i], 'spent', 'reserved')
  return tonumber(v[1]) or 0, tonumber(v[2]) or 0
end
if mode == 'settle' then
  local out = {}
  for i = 1, #KEYS do
    local spent = tonumber(redis.call('HINCRBYFLOAT', KEYS[i], 'spent', actual))
    local reserved = tonumber(redis.call('HINCRBYFLOAT', KEYS[i], 'reserved', -amount))
    redis.call('EXPIRE', KEYS[i], ttl(i))
    local alerted, exceeded = 0, 0
    if spent >= alert * cap(i) then alerted = redis.call('HSETNX', KEYS[i], 'alerted', 1) end
    if spent >= cap(i) then exceeded = redis.call('HSETNX', KEYS[i], 'exceeded', 1) end
    out[#out + 1] = tostring(spent)
    out[#out + 1] = tostring(reserved)
    out[#out + 1] = alerted
    out[#out + 1] = exceeded
  end
  return out
end
local action, first, charge = 0, 0, amount
if mode == 'reserve' then
  for i = 1, #KEYS do
    local spent, reserved = state(i)
    if spent + reserved + amount > cap(i) then first = i break end
  end
  if first > 0 then
    if policy == 'reject' then action, charge = 3, 0
    elseif policy == 'downgrade' then action, charge = 1, fallback
    else action = 2 end
  end
  if charge > 0 then
    for i = 1, #KEYS do
      redis.call('HINCRBYFLOAT', KEYS[i], 'reserved', charge)
      redis.call('EXPIRE', KEYS[i], ttl(i))
    end
  end
else
  charge = 0
end
local out = {action, first, tostring(charge)}
for i = 1, #KEYS do
  local spent, reserved = state(i)
  out[#out + 1] = tostring(spent)
  out[#out + 1] = tostring(reserved)
end
return out
"""

ACTIONS = {0: "ok", 1: "downgrade", 2: "alert", 3: "reject"}


@dataclass(frozen=True)
class Period:
    """A budget period in the budget's time zone: its id and when the next one starts."""

    kind: str  # day | month
    id: str
    resets_at: datetime

    def ttl_seconds(self, now: datetime) -> int:
        return int((self.resets_at - now).total_seconds()) + KEEP_SECONDS


def current_periods(now: datetime, tz: ZoneInfo) -> tuple[Period, Period]:
    """Today and this month in ``tz``, each with the instant it ends."""
    local = now.astimezone(tz)
    today = local.date()
    tomorrow = datetime.combine(today + timedelta(days=1), time(), tz)
    first = date(today.year + today.month // 12, today.month % 12 + 1, 1)
    next_month = datetime.combine(first, time(), tz)
    return (
        Period("day", today.isoformat(), tomorrow),
        Period("month", f"{today.year:04d}-{today.month:02d}", next_month),
    )


@dataclass(frozen=True)
class Cap:
    """One cap a request is checked against: ``daily``, ``monthly`` or ``user_daily``."""

    scope: str
    key: str
    limit_usd: float
    period: Period

    @property
    def label(self) -> str:
        names = {
            "daily": "daily budget",
            "monthly": "monthly budget",
            "user_daily": "per-user daily budget",
        }
        return f"the {names[self.scope]} of {self.limit_usd:g} USD"


@dataclass(frozen=True)
class CapState:
    cap: Cap
    spent: float
    reserved: float

    @property
    def remaining(self) -> float:
        return max(0.0, self.cap.limit_usd - self.spent - self.reserved)


@dataclass(frozen=True)
class Reservation:
    """What a request reserved, against which caps, and what the budget decided."""

    amount: float
    caps: list[Cap]
    action: str  # ok | downgrade | alert | reject
    exceeded: Cap | None
    states: list[CapState]
    shared: bool = True


# Books held in process at most: the agent's two and one per end user who spent today
# (``auth.userFromRequest`` lets requests name any number): about 260 bytes each, 13 MB.
MAX_BOOKS = 50_000


class MemoryLedger:
    """The script's rules in process: this replica's own ledger (no I/O).

    Books are kept in the order they were last used, at most ``max_books``: past that the
    least recently used goes (a user's: the agent's books are used by every request), and
    that user's spend today starts again from zero on this replica. That is the price of
    a bound on a fallback that is per replica already; on Redis nothing is forgotten."""

    def __init__(self, max_books: int = MAX_BOOKS) -> None:
        self.max_books = max_books
        self._books: OrderedDict[str, list[float]] = OrderedDict()  # key -> [spent, reserved]
        self._flags: set[str] = set()

    def __len__(self) -> int:
        return len(self._books)

    def _book(self, key: str) -> list[float]:
        book = self._books.get(key)
        if book is None:
            book = self._books[key] = [0.0, 0.0]
            while len(self._books) > self.max_books:
                old, _ = self._books.popitem(last=False)
                self._flags.discard(f"{old}:alerted")
                self._flags.discard(f"{old}:exceeded")
        else:
            self._books.move_to_end(key)
        return book

    def reserve(
        self, caps: list[Cap], amount: float, fallback: float, policy: str
    ) -> tuple[str, Cap | None, float]:
        first = next(
            (c for c in caps if sum(self._book(c.key)) + amount > c.limit_usd),
            None,
        )
        action, charge = "ok", amount
        if first is not None:
            action = {"reject": "reject", "downgrade": "downgrade"}.get(policy, "alert")
            charge = {"reject": 0.0, "downgrade": fallback}.get(policy, amount)
        for c in caps:
            self._book(c.key)[1] += charge
        return action, first, charge

    def settle(self, caps: list[Cap], amount: float, actual: float) -> None:
        for c in caps:
            book = self._book(c.key)
            book[0] += actual
            book[1] = max(0.0, book[1] - amount)  # the book may have been dropped meanwhile

    def state(self, cap: Cap) -> CapState:
        """A cap's state (a book never used reads as zero, and is not made by reading)."""
        spent, reserved = self._books.get(cap.key) or (0.0, 0.0)
        return CapState(cap, spent, reserved)

    def first_time(self, flag: str) -> bool:
        if flag in self._flags:
            return False
        self._flags.add(flag)
        return True

    def forget_before(self, period_ids: set[str]) -> None:
        """Drop the books of periods that have ended (bounded memory)."""
        for key in [k for k in self._books if k.rsplit(":", 1)[-1] not in period_ids]:
            del self._books[key]
        self._flags = {f for f in self._flags if f.rsplit(":", 2)[-2] in period_ids}


class Budget:
    """The budgets of one agent, counted in Redis when there is one, else in process."""

    def __init__(
        self, spec: BudgetSpec, prefix: str, redis: SpendRedis | None, replicas: int = 1
    ) -> None:
        self.spec = spec
        self.prefix = prefix
        self.redis = redis
        self.replicas = max(1, replicas)
        self.tz = ZoneInfo(spec.time_zone)
        self.local = MemoryLedger()
        self.script = redis.script(SCRIPT) if redis is not None else None
        self.active = any((spec.daily_usd, spec.monthly_usd, spec.per_user_daily_usd))
        self._periods: tuple[Period, Period] | None = None
        self._periods_until = 0.0

    def periods(self) -> tuple[Period, Period]:
        """Today and this month in the budget's time zone (worked out again when the day
        ends, not on every request)."""
        if self._periods is None or unix_now() >= self._periods_until:
            self._periods = current_periods(datetime.now(self.tz), self.tz)
            self._periods_until = self._periods[0].resets_at.timestamp()
        return self._periods

    def caps(self, who: Identity, periods: tuple[Period, Period] | None = None) -> list[Cap]:
        day, month = periods or self.periods()
        out = []
        if self.spec.daily_usd:
            out.append(
                Cap("daily", f"{self.prefix}:budget:agent:{day.id}", self.spec.daily_usd, day)
            )
        if self.spec.monthly_usd:
            out.append(
                Cap(
                    "monthly",
                    f"{self.prefix}:budget:agent:{month.id}",
                    self.spec.monthly_usd,
                    month,
                )
            )
        if self.spec.per_user_daily_usd:
            out.append(
                Cap(
                    "user_daily",
                    f"{self.prefix}:budget:u:{who.key}:{day.id}",
                    self.spec.per_user_daily_usd,
                    day,
                )
            )
        return out

    def _args(
        self, mode: str, caps: list[Cap], amount: float, fallback: float, actual: float
    ) -> list[Any]:
        now = datetime.now(self.tz)
        args: list[Any] = [
            mode,
            repr(amount),
            repr(fallback),
            self.spec.on_exceeded,
            repr(actual),
            self.spec.alert_at_percent / 100,
        ]
        for c in caps:
            args += [repr(c.limit_usd), c.period.ttl_seconds(now)]
        return args

    async def _script(self, op: str, keys: list[str], args: list[Any]) -> list[Any] | None:
        if self.redis is None or self.script is None:
            return None
        script = self.script
        try:
            raw = await self.redis.call(op, lambda c: script(keys=keys, args=args, client=c))
        except RedisDown:
            return None
        return [v.decode() if isinstance(v, bytes) else v for v in raw]

    def _local_caps(self, caps: list[Cap]) -> list[Cap]:
        return [Cap(c.scope, c.key, c.limit_usd / self.replicas, c.period) for c in caps]

    async def reserve(
        self,
        who: Identity,
        amount: float,
        fallback: float,
        periods: tuple[Period, Period] | None = None,
    ) -> Reservation:
        """Reserve ``amount`` (the request's largest cost) against every cap; ``fallback``
        is what it costs at most on the cheapest tier, reserved if it is downgraded.
        ``periods``: today and this month, when the caller has them already."""
        caps = self.caps(who, periods)
        if not caps:
            return Reservation(0.0, [], "ok", None, [])
        raw = await self._script(
            "budget reserve",
            [c.key for c in caps],
            self._args("reserve", caps, amount, fallback, 0),
        )
        if raw is not None:
            action, first, charge = ACTIONS[int(raw[0])], int(raw[1]), float(raw[2])
            states = [
                CapState(c, float(raw[3 + 2 * i]), float(raw[4 + 2 * i]))
                for i, c in enumerate(caps)
            ]
            exceeded = caps[first - 1] if first else None
            return Reservation(charge, caps, action, exceeded, states)
        local = self._local_caps(caps)
        action, refused, charge = self.local.reserve(local, amount, fallback, self.spec.on_exceeded)
        exceeded = caps[local.index(refused)] if refused is not None else None
        states = [self.local.state(c) for c in local]
        return Reservation(charge, caps, action, exceeded, states, shared=False)

    async def settle(self, r: Reservation, actual: float) -> list[tuple[CapState, bool, bool]]:
        """Release the reservation and add the real cost; per cap its state, whether this
        call crossed the alert threshold first today, and whether it reached the cap first."""
        if not r.caps:
            return []
        raw = await self._script(
            "budget settle",
            [c.key for c in r.caps],
            self._args("settle", r.caps, r.amount, 0, actual),
        )
        if raw is not None:
            return [
                (
                    CapState(c, float(raw[4 * i]), float(raw[4 * i + 1])),
                    bool(int(raw[4 * i + 2])),
                    bool(int(raw[4 * i + 3])),
                )
                for i, c in enumerate(r.caps)
            ]
        local = self._local_caps(r.caps)
        self.local.settle(local, r.amount, actual)
        self.local.forget_before({c.period.id for c in r.caps})
        out = []
        for c in local:
            s = self.local.state(c)
            alert = s.spent >= c.limit_usd * self.spec.alert_at_percent / 100
            full = s.spent >= c.limit_usd
            out.append(
                (
                    s,
                    alert and self.local.first_time(f"{c.key}:alerted"),
                    full and self.local.first_time(f"{c.key}:exceeded"),
                )
            )
        return out

    async def peek(self, who: Identity) -> tuple[list[CapState], bool]:
        """Each cap's state now (for ``GET /v1/usage``), and whether it is shared."""
        caps = self.caps(who)
        if not caps:
            return [], True
        raw = await self._script(
            "budget peek", [c.key for c in caps], self._args("peek", caps, 0, 0, 0)
        )
        if raw is not None:
            return [
                CapState(c, float(raw[3 + 2 * i]), float(raw[4 + 2 * i]))
                for i, c in enumerate(caps)
            ], True
        return [self.local.state(c) for c in self._local_caps(caps)], False
