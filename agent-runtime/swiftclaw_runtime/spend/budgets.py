"""Budgets: daily and monthly caps for the agent, a daily cap per user, in USD.

Before a call its largest possible cost is *reserved* against every cap that applies, in
one Lua script that checks and reserves atomically (:data:`SCRIPT`); after the call the
reservation is *settled*: released, and the real cost (from the provider's usage) added
to the spend. A request is admitted only while spent + reserved + its own maximum fits.
The reservation covers one attempt's maximum, but a request is charged for every attempt
the provider was asked to do (:mod:`~swiftclaw_runtime.dispatch`: one that timed out, or
was in flight when the client hung up, counts at its estimate), so its real cost may pass
its reservation by up to (attempts - 1) x that maximum, plus the input estimate's error
(the output is capped). The spend passes a cap by at most the sum of those excesses over
the requests admitted while it still fitted and in flight when it was reached (every
replica's): one request's excess each, not one request's excess in all.

The output cap a request is reserved for is the one sent to the provider, and it is cut
to what the budget has left: a request whose full cap does not fit, but whose input and
at least :data:`MIN_OUTPUT_TOKENS` do, is reserved (and sent) with the output it can pay
for. Only below that does ``onExceeded`` apply.

A reservation settles where it was made (:attr:`Reservation.shared`): one made on Redis
is released on Redis, and if Redis is away when the request ends the settlement waits in
process (:attr:`Budget.pending`) and is written when Redis answers again (once: the
reservation has its own key, which holds what Redis reserved and which the settlement
deletes, so one sent again after a lost reply changes nothing); one made in process is
released in process, and its real cost is added to Redis's spend too (now, or when Redis
is back; under a key of its own, so that too counts once), so an outage leaves neither a
leaked reservation nor headroom that was spent. A reserve whose reply is lost (it may have
run) is served in process, and what Redis holds under its key is released when Redis
answers again. Each settlement is written at once; what waited for Redis is written in
the background, :data:`DRAIN_BATCH` a round trip, so none waits for the backlog.

When a cap is reached, ``onExceeded`` decides: ``reject`` (429 ``insufficient_quota``,
naming the budget and when it resets), ``downgrade`` (the request is served by the
cheapest tier, reserved without the check: the cap bounds what the dearer tiers spend),
or ``alert`` (served as asked; the log and metrics say so).

Days and months begin at midnight in ``budget.timeZone``. Counters live in Redis hashes
keyed by the period, kept 2 days past its end, so they survive restarts. Without Redis a
replica keeps its own ledger against its share of each cap (cap / expected replicas).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from collections import OrderedDict
from collections.abc import Awaitable
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from time import time as unix_now
from typing import Any
from zoneinfo import ZoneInfo

from ..config import BudgetSpec
from ..ids import random_hex
from .identity import Identity
from .redis import RedisBusy, RedisDown, SpendRedis

log = logging.getLogger("swiftclaw.budget")

KEEP_SECONDS = 2 * 86_400  # how long a period's counters outlive it
# How long a reservation's mark outlives a settlement that found none (see SCRIPT): far
# longer than a packet can wait in a socket.
TOMBSTONE_SECONDS = 3_600

# KEYS: one hash per cap (fields spent, reserved, alerted, exceeded), then, when ARGV[10]
#   is not 0, a mark: 1, the reservation's own key (written by reserve with the amount it
#   reserved; settle releases that amount and deletes it, so a settlement written twice,
#   sent again after a reply was lost, counts once); 2, a settlement's own key (of the cost
#   of a request reserved in process: set NX by settle, which applies nothing when it
#   exists already).
# ARGV: mode (reserve | settle | peek), amount (the reservation), fallback (what a
#   downgraded request reserves), on_exceeded, actual (settle: the real cost), alert
#   ratio, output tokens in amount, price of one of them, the fewest output tokens worth
#   reserving, the mark's kind (0 none), then per cap: its cap and TTL.
# A settle whose reservation's mark does not exist (never reserved, or settled already)
#   leaves a tombstone (:data:`TOMBSTONE_SECONDS`): a reserve that reaches Redis after
#   its request gave up on it and settled (a late packet) then reserves nothing.
# reserve returns: action (0 ok, 1 downgraded, 2 alert only, 3 rejected, 4 capped), the
#   cap that did not fit (1-based, 0 none), the amount reserved, the output tokens it
#   pays for, then per cap spent and reserved. settle returns per cap: spent, reserved,
#   1 when this call crossed the alert ratio first, 1 when it reached the cap first
#   (nothing when the settlement was applied already).
SCRIPT = """
local TOMBSTONE = $TOMBSTONE_SECONDS
local mode = ARGV[1]
local marked = tonumber(ARGV[10])
local mark = KEYS[#KEYS]
local n = #KEYS
if marked > 0 then n = n - 1 end
local amount = tonumber(ARGV[2])
local fallback = tonumber(ARGV[3])
local policy = ARGV[4]
local actual = tonumber(ARGV[5])
local alert = tonumber(ARGV[6])
local output = tonumber(ARGV[7])
local per_out = tonumber(ARGV[8])
local min_out = tonumber(ARGV[9])
local function cap(i) return tonumber(ARGV[9 + 2 * i]) end
local function ttl(i) return tonumber(ARGV[10 + 2 * i]) end
if mode == 'settle' then
  local out = {}
  if marked == 1 then
    local held = redis.call('GET', mark)
    if not held then
      redis.call('SET', mark, 'settled', 'EX', TOMBSTONE)
      return out
    end
    if held == 'settled' then return out end
    redis.call('DEL', mark)
    amount = tonumber(held)
  elseif marked == 2 then
    if not redis.call('SET', mark, '1', 'NX', 'EX', ttl(1)) then return out end
  end
  for i = 1, n do
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
local action, first, charge, granted = 0, 0, amount, output
-- per cap, spent and reserved as Redis holds them: read once, and what reserving returns
local held = {}
local function read(i)
  local v = redis.call('HMGET', KEYS[i], 'spent', 'reserved')
  held[i] = {v[1] or '0', v[2] or '0'}
  return tonumber(held[i][1]), tonumber(held[i][2])
end
if mode == 'reserve' and marked == 1 and redis.call('EXISTS', mark) == 1 then
  mode, action = 'late', 3
end
if mode == 'reserve' then
  local room = nil
  for i = 1, n do
    local spent, reserved = read(i)
    local left = cap(i) - spent - reserved
    if amount > left and (room == nil or left < room) then first, room = i, left end
  end
  if first > 0 and policy ~= 'alert' and per_out > 0 then
    local fits = math.floor((room - (amount - output * per_out)) / per_out)
    if fits >= min_out then
      granted = math.min(output, fits)
      charge = amount - (output - granted) * per_out
      action = 4
    end
  end
  if first > 0 and action == 0 then
    if policy == 'reject' then action, charge = 3, 0
    elseif policy == 'downgrade' then action, charge = 1, fallback
    else action = 2 end
  end
  if charge > 0 then
    for i = 1, n do
      held[i][2] = redis.call('HINCRBYFLOAT', KEYS[i], 'reserved', charge)
      redis.call('EXPIRE', KEYS[i], ttl(i))
    end
  end
  if marked == 1 and action ~= 3 then
    redis.call('SET', mark, tostring(charge), 'EX', ttl(1))
  end
else
  charge = 0
  for i = 1, n do read(i) end
end
local out = {action, first, tostring(charge), granted}
for i = 1, n do
  out[#out + 1] = held[i][1]
  out[#out + 1] = held[i][2]
end
return out
""".replace("$TOMBSTONE_SECONDS", str(TOMBSTONE_SECONDS))

ACTIONS = {0: "ok", 1: "downgrade", 2: "alert", 3: "reject", 4: "capped"}
# The fewest output tokens a request is cut down to for its budget: below that it is
# refused (or downgraded) as one that does not fit at all.
MIN_OUTPUT_TOKENS = 16
# Settlements waiting in process for Redis to come back (one per request that was in
# flight when it left): past this many the oldest is dropped and logged.
MAX_PENDING = 100_000
# Settlements the backlog drain writes in one round trip (one pipeline).
DRAIN_BATCH = 100


class BudgetBusy(Exception):
    """Redis is up but busy (no connection free in time): the request is refused for now
    (503 with Retry-After), not reserved in process against a ledger that does not know
    today's spend."""


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
    """What a request reserved, against which caps, and what the budget decided;
    ``shared``: made on Redis (True) or in this process, where it must settle."""

    amount: float
    caps: list[Cap]
    action: str  # ok | capped | downgrade | alert | reject
    exceeded: Cap | None
    states: list[CapState]
    shared: bool
    output: int | None = None  # the output tokens it pays for (capped: fewer than asked)
    mark: str | None = None  # on Redis: its own key, which its settlement deletes (once)


@dataclass(frozen=True)
class Settlement:
    """What Redis is to be told when a request ends: the reservation under ``mark`` to
    release (what Redis holds under it; ``amount`` is only what this process thinks it
    was), and ``actual`` to add to the spend. ``once``: ``mark`` is the settlement's own
    key instead (the cost of requests reserved in process, applied once however often it
    is sent); None with ``once``: not sent yet, so more costs may join it."""

    caps: list[Cap]
    amount: float
    actual: float
    mark: str | None = None
    once: bool = False


@dataclass(frozen=True)
class Ask:
    """What a request may cost: ``amount`` at most, of which ``output`` tokens of output
    at ``per_output`` USD each; ``fallback`` on the cheapest tier (when downgraded)."""

    amount: float
    fallback: float = 0.0
    output: int = 0
    per_output: float = 0.0

    def fit(self, room: float, policy: str) -> tuple[int, float] | None:
        """The output tokens and amount that fit in ``room`` USD, when at least
        :data:`MIN_OUTPUT_TOKENS` do and the policy cuts rather than only alerts."""
        if policy == "alert" or self.per_output <= 0:
            return None
        fits = math.floor((room - (self.amount - self.output * self.per_output)) / self.per_output)
        if fits < MIN_OUTPUT_TOKENS:
            return None
        granted = min(self.output, fits)
        return granted, self.amount - (self.output - granted) * self.per_output


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
        """Reserve a fixed ``amount`` (an output that cannot be cut)."""
        action, first, charge, _ = self.reserve_ask(caps, Ask(amount, fallback), policy)
        return action, first, charge

    def reserve_ask(
        self, caps: list[Cap], ask: Ask, policy: str
    ) -> tuple[str, Cap | None, float, int]:
        """The script's reserve: action, the tightest cap that did not fit, the amount
        reserved and the output tokens it pays for."""
        first: Cap | None = None
        room = 0.0
        for c in caps:
            left = c.limit_usd - sum(self._book(c.key))
            if ask.amount > left and (first is None or left < room):
                first, room = c, left
        action, charge, granted = "ok", ask.amount, ask.output
        if first is not None:
            fit = ask.fit(room, policy)
            if fit is not None:
                action, (granted, charge) = "capped", fit
            else:
                action = {"reject": "reject", "downgrade": "downgrade"}.get(policy, "alert")
                charge = {"reject": 0.0, "downgrade": ask.fallback}.get(policy, ask.amount)
        for c in caps:
            self._book(c.key)[1] += charge
        return action, first, charge, granted

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
        # Settlements of Redis's that wait for it: each reservation's under its mark, one
        # that may have reached Redis under its own mark, and the costs of requests
        # reserved in process that never left summed per set of caps (see _wait_for_redis).
        self.pending: dict[str, Settlement] = {}
        self._flushing: asyncio.Task[None] | None = None
        self._forgot_for: tuple[str, ...] = ()  # the periods the in-process books were cut to
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
        self, mode: str, caps: list[Cap], ask: Ask, actual: float, marked: int = 0
    ) -> list[Any]:
        now = datetime.now(self.tz)
        args: list[Any] = [
            mode,
            repr(ask.amount),
            repr(ask.fallback),
            self.spec.on_exceeded,
            repr(actual),
            self.spec.alert_at_percent / 100,
            ask.output,
            repr(ask.per_output),
            MIN_OUTPUT_TOKENS,
            marked,
        ]
        for c in caps:
            args += [repr(c.limit_usd), c.period.ttl_seconds(now)]
        return args

    async def _script(self, op: str, keys: list[str], args: list[Any]) -> list[Any] | None:
        raw, _ = await self._send(op, keys, args)
        return raw

    async def _send(
        self, op: str, keys: list[str], args: list[Any], busy_fails: bool = False
    ) -> tuple[list[Any] | None, bool]:
        """The script's reply (None when there is none) and, without one, whether the
        call may have run on Redis all the same (sent, and its reply lost or late).
        ``busy_fails``: raise :class:`BudgetBusy` when no connection came free in time."""
        return await self._sent(op, *self._queue(op, keys, args), busy_fails)

    def _queue(
        self, op: str, keys: list[str], args: list[Any]
    ) -> tuple[asyncio.Future[Any] | None, bool]:
        """The script queued on Redis now (None: no Redis, or it is down), and whether
        Redis was up when it was."""
        if self.redis is None or self.script is None:
            return None, False
        was_up = self.redis.up
        return self.redis.queue(op, self.script, keys, args), was_up

    async def _sent(
        self, op: str, pending: asyncio.Future[Any] | None, was_up: bool, busy_fails: bool = False
    ) -> tuple[list[Any] | None, bool]:
        """:meth:`_send`'s answer for a script :meth:`_queue` queued."""
        if self.redis is None or pending is None:
            return None, False
        try:
            raw = await self.redis.reply(op, pending)
        except RedisBusy:
            if busy_fails:
                raise BudgetBusy(op) from None
            return None, False  # it waited for a connection and never had one
        except RedisDown:
            return None, was_up
        return [v.decode() if isinstance(v, bytes) else v for v in raw], True

    def _local_caps(self, caps: list[Cap]) -> list[Cap]:
        return [Cap(c.scope, c.key, c.limit_usd / self.replicas, c.period) for c in caps]

    async def reserve(
        self,
        who: Identity,
        ask: Ask | float,
        fallback: float = 0.0,
        periods: tuple[Period, Period] | None = None,
    ) -> Reservation:
        """Reserve what ``ask`` may cost against every cap (a bare amount: a request whose
        output cannot be cut, ``fallback`` its cost on the cheapest tier). When the whole
        of it does not fit, the output it can pay for is reserved instead (``capped``),
        else ``onExceeded`` decides. ``periods``: today and this month, when the caller
        has them already. Raises :class:`BudgetBusy` when Redis is up but no connection
        came free in time: the ledger in process knows nothing of today's spend on Redis,
        so it must not admit what Redis would refuse (only an outage falls back to it)."""
        if not isinstance(ask, Ask):
            ask = Ask(ask, fallback)
        caps = self.caps(who, periods)
        if not caps:
            return Reservation(0.0, [], "ok", None, [], True, ask.output)
        mark = f"{self.prefix}:budget:res:{random_hex(12)}"
        raw, reached = await self._send(
            "budget reserve",
            [*(c.key for c in caps), mark],
            self._args("reserve", caps, ask, 0, 1),
            busy_fails=True,
        )
        if raw is None and reached:
            # The script may have run and its reply been lost: release whatever Redis
            # holds under the mark (nothing if it never ran) once it answers again.
            self._wait_for_redis(Settlement(caps, 0.0, 0.0, mark))
        if raw is not None:
            action, first, charge = ACTIONS[int(raw[0])], int(raw[1]), float(raw[2])
            states = [
                CapState(c, float(raw[4 + 2 * i]), float(raw[5 + 2 * i]))
                for i, c in enumerate(caps)
            ]
            exceeded = caps[first - 1] if first else None
            output = int(raw[3])
            return Reservation(charge, caps, action, exceeded, states, True, output, mark)
        local = self._local_caps(caps)
        action, refused, charge, granted = self.local.reserve_ask(local, ask, self.spec.on_exceeded)
        exceeded = caps[local.index(refused)] if refused is not None else None
        states = [self.local.state(c) for c in local]
        return Reservation(charge, caps, action, exceeded, states, False, granted)

    async def _settle_shared(self, due: Settlement) -> list[tuple[CapState, bool, bool]] | None:
        """Release the reservation and add ``due.actual`` on Redis (once: see :data:`SCRIPT`);
        None when Redis is away (then the settlement waits in :attr:`pending` for it).
        Written at once whatever waits already (sums commute and marks make each write
        count once); the backlog drains in the background."""
        if due.once and due.mark is None:
            due = replace(due, mark=self._once_mark())
        return await self._written(due, *self._queue("budget settle", *self._write_args(due)))

    async def _written(
        self, due: Settlement, pending: asyncio.Future[Any] | None, was_up: bool
    ) -> list[tuple[CapState, bool, bool]] | None:
        """:meth:`_settle_shared`'s end, once its script is queued (``pending``)."""
        raw, reached = await self._sent("budget settle", pending, was_up)
        if raw is None:
            if due.once and not reached:  # its mark is on no Redis: it may join others
                due = replace(due, mark=None)
            self._wait_for_redis(due)
            return None
        if self.pending:
            self._drain_soon()
        return [
            (
                CapState(c, float(raw[4 * i]), float(raw[4 * i + 1])),
                bool(int(raw[4 * i + 2])),
                bool(int(raw[4 * i + 3])),
            )
            for i, c in enumerate(due.caps)
            if raw  # settled already: nothing to report
        ]

    def _once_mark(self) -> str:
        return f"{self.prefix}:budget:once:{random_hex(12)}"

    def _write_args(self, due: Settlement) -> tuple[list[str], list[Any]]:
        keys = [c.key for c in due.caps] + ([due.mark] if due.mark else [])
        kind = 0 if due.mark is None else 2 if due.once else 1
        return keys, self._args("settle", due.caps, Ask(due.amount), due.actual, kind)

    def _wait_for_redis(self, due: Settlement) -> None:
        """Keep a settlement for Redis. One with a mark on its own (never merged: its mark
        is what makes it count once); the costs of requests reserved in process that were
        never sent summed per set of caps (they get a mark when they are)."""
        key = due.mark or "|".join(c.key for c in due.caps)
        held = self.pending.get(key)
        if held is not None and due.mark is None:
            due = replace(held, actual=held.actual + due.actual)
        elif held is None and len(self.pending) >= MAX_PENDING:
            lost = self.pending.pop(next(iter(self.pending)))
            log.error(
                "budget: %d settlements wait for redis; dropped the oldest (%.6f USD "
                "reserved, %.6f USD spent)",
                MAX_PENDING,
                lost.amount,
                lost.actual,
            )
        self.pending[key] = due

    def _drain_soon(self) -> None:
        """Write the backlog in the background (one drain at a time)."""
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(self._flush())

    async def flush(self) -> None:
        """Write the settlements that waited for Redis, while it answers (one flush at a
        time: the others wait for it)."""
        self._drain_soon()
        assert self._flushing is not None
        await asyncio.shield(self._flushing)

    async def _flush(self) -> None:
        """Drain :attr:`pending` oldest first, :data:`DRAIN_BATCH` scripts a round trip;
        a batch without a reply goes back (its marks make sending it again safe)."""
        while self.pending:
            batch = []
            for key in list(itertools.islice(self.pending, DRAIN_BATCH)):
                due = self.pending.pop(key)
                if due.once and due.mark is None:
                    due = replace(due, mark=self._once_mark())
                batch.append(due)
            if not await self._write_batch(batch):
                for due in batch:
                    self._wait_for_redis(due)
                return
        log.info("budget: the settlements that waited for redis are written")

    async def _write_batch(self, batch: list[Settlement]) -> bool:
        """Write ``batch`` in one pipeline; False when Redis did not answer it all."""
        if self.redis is None or self.script is None:
            return False
        redis, script = self.redis, self.script
        # queued together: one group write (one round trip) for the batch
        writes = [redis.run("budget settle backlog", script, *self._write_args(d)) for d in batch]
        done = await asyncio.gather(*writes, return_exceptions=True)
        return not any(isinstance(d, BaseException) for d in done)

    def settle(self, r: Reservation, actual: float) -> Awaitable[list[tuple[CapState, bool, bool]]]:
        """Release the reservation where it was made and add the real cost; per cap its
        state, whether this call crossed the alert threshold first today, and whether it
        reached the cap first. One made in process also adds its cost to Redis's spend
        (the budget is the agent's, whichever ledger admitted the request). One made on
        Redis is queued there at once (before the caller waits: a settlement started with
        others goes in the same round trip); the returned awaitable ends when it is done."""
        if r.caps and r.shared:
            due = Settlement(r.caps, r.amount, actual, r.mark)
            return self._settled(due, *self._queue("budget settle", *self._write_args(due)))
        return self._settle_in_process(r, actual)

    async def _settled(
        self, due: Settlement, pending: asyncio.Future[Any] | None, was_up: bool
    ) -> list[tuple[CapState, bool, bool]]:
        return await self._written(due, pending, was_up) or []

    async def _settle_in_process(
        self, r: Reservation, actual: float
    ) -> list[tuple[CapState, bool, bool]]:
        if not r.caps:
            return []
        if self.redis is not None and actual:
            await self._settle_shared(Settlement(r.caps, 0.0, actual, once=True))
        local = self._local_caps(r.caps)
        self.local.settle(local, r.amount, actual)
        now = tuple(p.id for p in self.periods())
        if now != self._forgot_for:  # a new day: drop the books of the periods that ended
            self._forgot_for = now
            self.local.forget_before(set(now))
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
            "budget peek", [c.key for c in caps], self._args("peek", caps, Ask(0.0), 0)
        )
        if raw is not None:
            return [
                CapState(c, float(raw[4 + 2 * i]), float(raw[5 + 2 * i]))
                for i, c in enumerate(caps)
            ], True
        return [self.local.state(c) for c in self._local_caps(caps)], False
