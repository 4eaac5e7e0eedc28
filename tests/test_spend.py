"""Spend control's decisions without I/O (the in-process windows and ledger, identity,
periods) and its Lua scripts against a real Redis: the same rules, exact under
concurrency."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis.asyncio as aioredis

from swiftclaw_devtools.processes import Proc, start_redis
from swiftclaw_runtime.auth import Principal
from swiftclaw_runtime.config import AgentPolicy, BudgetSpec, RateLimitsSpec
from swiftclaw_runtime.errors import ApiError
from swiftclaw_runtime.logs import FailureLog
from swiftclaw_runtime.metrics import Metrics
from swiftclaw_runtime.redis_client import queue_until
from swiftclaw_runtime.routing import Route
from swiftclaw_runtime.spend import SpendControl
from swiftclaw_runtime.spend.budgets import (
    SCRIPT,
    Budget,
    BudgetBusy,
    Cap,
    MemoryLedger,
    current_periods,
)
from swiftclaw_runtime.spend.identity import Identity, TenantLabels, identify
from swiftclaw_runtime.spend.limits import (
    WINDOW_MS,
    MemoryWindows,
    Outcome,
    RateLimiter,
    Scope,
    ScopeState,
    duration,
)
from swiftclaw_runtime.spend.redis import MAX_CONNECTIONS, SpendRedis
from swiftclaw_runtime.spend.usage import RESPONSE_SECONDS, Charge, UsageBook

ALICE = Identity("acme", "alice")

# --- identity ---------------------------------------------------------------------------


def test_identity_comes_from_the_key_unless_the_agent_trusts_the_request() -> None:
    key = Principal("acme", "backend")
    assert identify(key, "bob", user_from_request=False) == Identity("acme", "backend")
    assert identify(key, "bob", user_from_request=True) == Identity("acme", "bob")
    assert identify(key, "  ", user_from_request=True) == Identity("acme", "backend")
    # keys cannot collide through separators in names
    assert Identity("a/b", "c").key != Identity("a", "b/c").key


def test_tenant_labels_are_capped() -> None:
    labels = TenantLabels(limit=2)
    seen = [labels(t) for t in ("a", "b", "c", "a", "d", "b")]
    assert seen == ["a", "b", "other", "a", "other", "b"]


# --- the sliding window, in process ------------------------------------------------------


def test_window_admits_exactly_the_limit_per_minute() -> None:
    w = MemoryWindows()
    scope = [Scope("user", "k", 100, None)]
    allowed = [w.run("acquire", scope, 1000 + i * 50, f"r{i}", 1).allowed for i in range(1000)]
    # 1,000 requests over 50 s: exactly the first 100 pass
    assert sum(allowed) == 100 and all(allowed[:100])
    refused = w.run("acquire", scope, 1000 + 1000 * 50, "late", 1)
    assert not refused.allowed and refused.unit == "requests"
    # the oldest entry (at 1000 ms) leaves the window at 61,000 ms
    assert refused.retry_after == pytest.approx((1000 + WINDOW_MS - 51_000) / 1000)
    assert w.run("acquire", scope, 1000 + WINDOW_MS + 1, "next", 1).allowed


def test_window_refuses_on_tokens_and_settles_the_estimate() -> None:
    w = MemoryWindows()
    scope = [Scope("user", "k", None, 1000)]
    assert w.run("acquire", scope, 0, "a", 600).allowed
    refused = w.run("acquire", scope, 10, "b", 600)
    assert not refused.allowed and refused.unit == "tokens"
    assert refused.retry_after == pytest.approx((WINDOW_MS - 10) / 1000)
    w.run("settle", scope, 20, "a", -500)  # used 100 of the 600 estimated
    assert w.run("acquire", scope, 30, "b", 600).allowed
    too_big = w.run("acquire", scope, 40, "c", 5000)
    assert not too_big.allowed and too_big.retry_after is None  # can never fit


def test_a_refused_request_is_not_counted_in_any_scope() -> None:
    w = MemoryWindows()
    scopes = [Scope("user", "u", 10, None), Scope("global", "g", 2, None)]
    assert w.run("acquire", scopes, 0, "a", 1).allowed
    assert w.run("acquire", scopes, 1, "b", 1).allowed
    out = w.run("acquire", scopes, 2, "c", 1)
    assert not out.allowed and out.refused is scopes[1]
    assert [s.requests for s in out.states] == [2, 2]


def test_headers_report_the_tightest_limit_in_openai_form() -> None:
    user = Scope("user", "u", 60, 1000)
    glob = Scope("global", "g", 10, None)
    out = Outcome(
        True,
        [ScopeState(user, 5, 900, 30_000), ScopeState(glob, 9, 0, 45_000)],
        now_ms=60_000,
    )
    h = dict(out.headers())
    assert h[b"x-ratelimit-limit-requests"] == b"10"
    assert h[b"x-ratelimit-remaining-requests"] == b"1"
    assert h[b"x-ratelimit-reset-requests"] == b"45s"
    assert h[b"x-ratelimit-limit-tokens"] == b"1000"
    assert h[b"x-ratelimit-remaining-tokens"] == b"100"
    assert [duration(x) for x in (0.02, 1.5, 360)] == ["20ms", "1.5s", "6m0s"]


# --- budgets, in process -----------------------------------------------------------------


def _cap(limit: float) -> Cap:
    day, _ = current_periods(datetime.now(UTC), ZoneInfo("UTC"))
    return Cap("daily", "b", limit, day)


def test_ledger_reserves_the_maximum_and_settles_the_real_cost() -> None:
    ledger = MemoryLedger()
    cap = [_cap(1.0)]
    assert ledger.reserve(cap, 0.4, 0.0, "reject")[0] == "ok"
    assert ledger.reserve(cap, 0.4, 0.0, "reject")[0] == "ok"
    assert ledger.reserve(cap, 0.4, 0.0, "reject")[0] == "reject"  # 0.8 reserved + 0.4 > 1
    ledger.settle(cap, 0.4, 0.1)
    assert ledger.state(cap[0]).spent == pytest.approx(0.1)
    assert ledger.reserve(cap, 0.4, 0.0, "reject")[0] == "ok"
    assert ledger.reserve(cap, 0.4, 0.01, "downgrade") == ("downgrade", cap[0], 0.01)
    assert ledger.reserve(cap, 0.4, 0.01, "alert")[0] == "alert"


def test_periods_follow_the_budgets_time_zone() -> None:
    # 23:30 UTC on 31 Jan is already 1 Feb in Paris (UTC+1)
    now = datetime(2025, 1, 31, 23, 30, tzinfo=UTC)
    day, month = current_periods(now, ZoneInfo("Europe/Paris"))
    assert (day.id, month.id) == ("2025-02-01", "2025-02")
    assert day.resets_at == datetime(2025, 2, 2, tzinfo=ZoneInfo("Europe/Paris"))
    assert month.resets_at == datetime(2025, 3, 1, tzinfo=ZoneInfo("Europe/Paris"))
    day, month = current_periods(datetime(2025, 12, 31, 12, tzinfo=UTC), ZoneInfo("UTC"))
    assert month.resets_at == datetime(2026, 1, 1, tzinfo=ZoneInfo("UTC"))


# --- the Lua scripts against a real Redis ---------------------------------------------------


def _redis_server(factory: pytest.TempPathFactory, folder: str) -> Iterator[Proc]:
    proc = start_redis(log_path=factory.mktemp(folder) / "redis.log")
    yield proc
    proc.stop()


async def _emptied(proc: Proc) -> AsyncIterator[SpendRedis]:
    r = SpendRedis(f"redis://127.0.0.1:{proc.port}/0")
    await r.client.flushdb()
    yield r
    await r.close()


@pytest.fixture(scope="module")
def redis_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    yield from _redis_server(tmp_path_factory, "redis")


@pytest.fixture
async def redis(redis_proc: Proc) -> AsyncIterator[SpendRedis]:
    async for r in _emptied(redis_proc):
        yield r


async def test_redis_limits_are_exact_under_concurrency(redis: SpendRedis) -> None:
    spec = RateLimitsSpec.model_validate(
        {"perUser": {"requestsPerMinute": 100}, "global": {"tokensPerMinute": 1_000_000}}
    )
    # three limiters on one Redis: three replicas
    limiters = [RateLimiter(spec, "sc:{t}", redis) for _ in range(3)]
    outs = await asyncio.gather(*(limiters[i % 3].acquire(ALICE, f"r{i}", 10) for i in range(400)))
    assert sum(o.allowed for o in outs) == 100
    refused = [o for o in outs if not o.allowed]
    assert all(o.unit == "requests" and o.refused is not None for o in refused)
    assert all(o.retry_after is not None and 0 < o.retry_after <= 60 for o in refused)
    # another user is unaffected; the global token scope counted only admitted requests
    bob = await limiters[0].acquire(Identity("acme", "bob"), "b1", 10)
    assert bob.allowed
    glob = next(s for s in bob.states if s.scope.name == "global")
    assert glob.tokens == 101 * 10


async def test_usage_written_together_sums_every_charge(redis: SpendRedis) -> None:
    """Charges that finish together share a round trip (group commit): 300 at once make
    far fewer writes, and the day's counters hold every one of them, each caller having
    waited for the write that carries its charge."""
    book = UsageBook("sc:usage-test", redis)
    calls = 0
    real = redis.call

    async def counting(op: str, fn: Any) -> Any:
        nonlocal calls
        calls += op == "usage record"
        return await real(op, fn)

    redis.call = counting  # type: ignore[method-assign]
    users = [Identity("acme", f"u{i % 7}") for i in range(300)]
    charges = [Charge(u, "simple", "p/m", 0.001, 10, 5, (f"r{i}",)) for i, u in enumerate(users)]
    assert all(await asyncio.gather(*(book.record("2026-11-27", c) for c in charges)))
    assert 1 <= calls < 30
    counters, active, shared = await book.day("2026-11-27")
    assert shared and active == 7
    assert counters["requests:total"] == 300
    assert counters["tokens_in:tenant:acme"] == 3000
    assert counters["cost:total"] == pytest.approx(0.3)
    assert await redis.client.get("sc:usage-test:resp:r299") == b"acme"
    # one charge alone is written at once, on its own
    assert await book.record("2026-11-27", charges[0])
    assert (await book.day("2026-11-27"))[0]["requests:total"] == 301


@pytest.fixture(scope="module")
def cache_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """A second Redis: the evictable cache instance, beside the state one."""
    yield from _redis_server(tmp_path_factory, "redis-cache")


@pytest.fixture
async def cache_redis(cache_proc: Proc) -> AsyncIterator[SpendRedis]:
    async for r in _emptied(cache_proc):
        yield r


async def keys(r: SpendRedis) -> list[str]:
    return sorted(k.decode() for k in await r.client.keys("*"))


async def test_response_owners_go_to_the_cache_redis_and_feedback_counts_once(
    redis: SpendRedis, cache_redis: SpendRedis
) -> None:
    """The key per served response (which tenant it is, for feedback; a day's TTL) is
    written to the evictable cache Redis, never to the state one, which keeps only the
    day's counters (and the user's spend of the day); feedback is counted once, on the
    state one."""
    day, prefix = "2026-11-27", "sc:{owners}"
    book = UsageBook(prefix, redis, cache_redis)
    charges = [Charge(ALICE, "simple", "p/m", 0.001, 10, 5, (f"r{i}",)) for i in range(20)]
    assert all(await asyncio.gather(*(book.record(day, c) for c in charges)))
    assert await keys(cache_redis) == sorted(f"{prefix}:resp:r{i}" for i in range(20))
    assert await keys(redis) == [
        f"{prefix}:usage:{day}",
        f"{prefix}:usage:u:acme/alice:{day}",
        f"{prefix}:users:{day}",
    ]
    assert 0 < await cache_redis.client.ttl(f"{prefix}:resp:r0") <= RESPONSE_SECONDS

    bob = Identity("other", "bob")
    assert await book.feedback(day, "r0", ALICE, ["feedback:rating:5"]) == "ok"
    assert await book.feedback(day, "r0", ALICE, ["feedback:rating:1"]) == "duplicate"
    assert await book.feedback(day, "r1", bob, ["feedback:rating:1"]) == "unknown"
    assert await book.feedback(day, "nope", ALICE, ["feedback:rating:1"]) == "unknown"
    # an evicted (or expired) response key: feedback on it is unknown, never counted twice
    await cache_redis.client.delete(f"{prefix}:resp:r1")
    assert await book.feedback(day, "r1", ALICE, ["feedback:rating:1"]) == "unknown"
    assert await book.feedback(day, "r2", ALICE, ["feedback:completed:true"]) == "ok"
    counters, _, shared = await book.day(day)
    assert shared and counters["feedback:rating:5"] == 1
    assert counters["feedback:completed:true"] == 1 and "feedback:rating:1" not in counters
    # still only the owner keys in the cache one (the rated mark keeps the key and its TTL)
    assert len(await keys(cache_redis)) == 19
    assert await keys(redis) == [
        f"{prefix}:usage:{day}",
        f"{prefix}:usage:u:acme/alice:{day}",
        f"{prefix}:users:{day}",
    ]
    assert 0 < await cache_redis.client.ttl(f"{prefix}:resp:r0") <= RESPONSE_SECONDS


async def test_feedback_works_on_this_replica_while_the_cache_redis_is_away(
    redis: SpendRedis, tmp_path: Path
) -> None:
    """The cache Redis down: the counters are still shared (state), the owners of the
    responses served meanwhile are kept in process, and their feedback still counts once."""
    day, prefix = "2026-11-27", "sc:{away}"
    proc = start_redis(log_path=tmp_path / "redis.log")
    away = SpendRedis(f"redis://127.0.0.1:{proc.port}/0")
    try:
        proc.stop()
        book = UsageBook(prefix, redis, away)
        assert await book.record(day, Charge(ALICE, "simple", "p/m", 0.001, 10, 5, ("r1",)))
        assert await book.feedback(day, "r1", ALICE, ["feedback:rating:4"]) == "ok"
        assert await book.feedback(day, "r1", ALICE, ["feedback:rating:4"]) == "duplicate"
        assert await book.feedback(day, "r2", ALICE, ["feedback:rating:4"]) == "unknown"
        counters, _, shared = await book.day(day)
        assert shared and counters["requests:total"] == 1 and counters["feedback:rating:4"] == 1
    finally:
        await away.close()


async def test_one_redis_holds_counters_and_owners(redis: SpendRedis) -> None:
    """A single Redis (one URL): everything in it, feedback as with two."""
    day, prefix = "2026-11-27", "sc:{one}"
    book = UsageBook(prefix, redis)
    assert await book.record(day, Charge(ALICE, "simple", "p/m", 0.001, 10, 5, ("r1",)))
    assert await redis.client.get(f"{prefix}:resp:r1") == b"acme"
    assert await book.feedback(day, "r1", ALICE, ["feedback:rating:2"]) == "ok"
    assert await book.feedback(day, "r1", ALICE, ["feedback:rating:2"]) == "duplicate"
    assert (await book.day(day))[0]["feedback:rating:2"] == 1


async def test_refused_calls_are_logged_when_they_start_and_stop(
    redis: SpendRedis, caplog: pytest.LogCaptureFixture
) -> None:
    """A full state Redis (noeviction, OOM on every write) refuses every call: one warning
    when it starts, one line when it stops, not one per call (the usage is kept in process
    meanwhile)."""
    book = UsageBook("sc:{oom}", redis)
    charge = Charge(ALICE, "simple", "p/m", 0.001, 10, 5, ())
    caplog.set_level(logging.INFO, logger="swiftclaw.spend")
    await redis.client.config_set("maxmemory", "1")
    try:
        for _ in range(50):
            assert not await book.record("2026-11-27", charge)
    finally:
        await redis.client.config_set("maxmemory", "0")
    assert await book.record("2026-11-27", charge)
    assert await book.record("2026-11-27", charge)
    lines = [r.getMessage() for r in caplog.records if "redis" in r.getMessage()]
    assert len(lines) == 2, lines
    assert lines[0].startswith("redis refuses calls (OutOfMemoryError on usage record)")
    assert lines[1].startswith("redis accepts calls again")
    assert (await book.day("2026-11-27"))[0]["requests:total"] == 2  # the shared figures


async def test_a_stopped_redis_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    proc = start_redis(log_path=tmp_path / "redis.log")
    r = SpendRedis(f"redis://127.0.0.1:{proc.port}/0")
    try:
        proc.stop()
        book = UsageBook("sc:{down}", r)
        caplog.set_level(logging.INFO, logger="swiftclaw.spend")
        for _ in range(50):
            assert not await book.record("2026-11-27", Charge(ALICE, "s", "p/m", 0.0, 1, 1, ()))
        assert len([x for x in caplog.records if x.levelno >= logging.WARNING]) == 1
    finally:
        await r.close()


def test_a_repeating_failure_is_logged_again_at_most_every_period() -> None:
    now = [0.0]
    logger = logging.getLogger("swiftclaw.test.failurelog")
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    logger.addHandler(handler := Keep())
    logger.setLevel(logging.INFO)
    try:
        failures = FailureLog(logger, "it fails", "it works", "down", "up", 60.0, lambda: now[0])
        for t in range(0, 150, 5):  # every 5 s for 150 s
            now[0] = float(t)
            failures.failed("E")
        failures.worked()
        failures.worked()
    finally:
        logger.removeHandler(handler)
    assert seen == [
        "it fails (E): down",
        "it fails still (E; 11 more since the last report): down",
        "it fails still (E; 11 more since the last report): down",
        "it works: up",
    ]


async def test_redis_token_charges_are_settled(redis: SpendRedis) -> None:
    spec = RateLimitsSpec.model_validate({"perTenant": {"tokensPerMinute": 1000}})
    limiter = RateLimiter(spec, "sc:{t}", redis)
    assert (await limiter.acquire(ALICE, "a", 900)).allowed
    refused = await limiter.acquire(ALICE, "b", 200)
    assert not refused.allowed and refused.unit == "tokens"
    await limiter.settle(ALICE, "a", -800)  # the real usage was 100
    peek = await limiter.peek(ALICE)
    assert peek.states[0].tokens == 100
    assert (await limiter.acquire(ALICE, "b", 200)).allowed


async def test_redis_budget_overshoot_is_bounded_by_one_request(redis: SpendRedis) -> None:
    spec = BudgetSpec.model_validate({"dailyUSD": 1.0, "onExceeded": "reject"})
    budgets = [Budget(spec, "sc:{t}", redis) for _ in range(3)]
    rng = random.Random(3)
    max_cost = 0.05

    async def one(i: int) -> str:
        r = await budgets[i % 3].reserve(ALICE, max_cost, 0.0)
        if r.action == "reject":
            return "reject"
        await asyncio.sleep(rng.random() / 100)
        await budgets[i % 3].settle(r, max_cost * rng.uniform(0.5, 1.2))  # may overrun a bit
        return r.action

    actions = await asyncio.gather(*(one(i) for i in range(3 * 64)))
    assert "reject" in actions
    states, shared = await budgets[0].peek(ALICE)
    assert shared and states[0].reserved == pytest.approx(0, abs=1e-9)
    # each admitted request could overrun its reservation by 20 %; without the check
    # 192 requests would have spent about 8 USD
    assert states[0].spent <= 1.0 + max_cost


async def test_redis_budget_downgrade_and_alert_flags(redis: SpendRedis) -> None:
    spec = BudgetSpec.model_validate(
        {"dailyUSD": 1.0, "onExceeded": "downgrade", "alertAtPercent": 50}
    )
    budget = Budget(spec, "sc:{t}", redis)
    r = await budget.reserve(ALICE, 0.6, 0.001)
    assert r.action == "ok"
    [(state, alerted, full)] = await budget.settle(r, 0.6)
    assert alerted and not full  # crossed 50 % first, here
    r = await budget.reserve(ALICE, 0.6, 0.001)
    assert r.action == "downgrade" and r.amount == pytest.approx(0.001)
    assert r.exceeded is not None and r.exceeded.scope == "daily"
    [(state, alerted, full)] = await budget.settle(r, 0.0005)
    assert not alerted  # once a day
    assert state.spent == pytest.approx(0.6005)


async def test_redis_down_falls_back_to_a_share_and_comes_back(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    proc = start_redis(log_path=tmp_path_factory.mktemp("redis2") / "redis.log")
    port = proc.port
    r = SpendRedis(f"redis://127.0.0.1:{port}/0")
    try:
        spec = RateLimitsSpec.model_validate({"perUser": {"requestsPerMinute": 30}})
        limiter = RateLimiter(spec, "sc:{t}", r, replicas=3)
        assert (await limiter.acquire(ALICE, "a", 1)).shared
        proc.kill()
        outs = [await limiter.acquire(ALICE, f"l{i}", 1) for i in range(20)]
        assert not r.up
        # this replica's share: 30 / 3 = 10
        assert sum(o.allowed for o in outs) == 10 and not any(o.shared for o in outs)
        proc = start_redis(port, log_path=tmp_path_factory.mktemp("redis3") / "redis.log")
        for _ in range(50):
            if r.up:
                break
            await asyncio.sleep(0.1)
        assert r.up  # back within seconds
        assert (await limiter.acquire(ALICE, "b", 1)).shared
    finally:
        await r.close()
        proc.stop()


# --- budget settlements across lost replies and outages (real Redis, paused) ---------------

BUDGET = BudgetSpec.model_validate({"dailyUSD": 100.0, "onExceeded": "reject"})


@contextlib.asynccontextmanager
async def _writes_paused(proc: Proc) -> AsyncIterator[Any]:
    """Redis holds every write (and every script) until unpaused: a call sent meanwhile
    times out, and its client, closing the connection, drops it. Reads (the watcher's
    PING) still answer, so the spend client comes back up while writes hang."""
    raw = aioredis.Redis(port=proc.port)
    await raw.client_pause(120_000, all=False)
    try:
        yield raw
    finally:
        await raw.client_unpause()
        await raw.aclose()


async def _until(check: Any, what: str, budget: Budget | None = None) -> None:
    """Wait for ``check()`` (flushing ``budget``'s backlog meanwhile), 60 s at most."""
    for _ in range(600):
        if budget is not None and budget.redis is not None and budget.redis.up:
            await budget.flush()
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"never: {what}")


async def _day_book(redis: SpendRedis, budget: Budget) -> tuple[float, float]:
    [cap] = budget.caps(ALICE)
    spent, reserved = await redis.client.hmget(cap.key, "spent", "reserved")
    return float(spent or 0), float(reserved or 0)


@contextlib.asynccontextmanager
async def _busy(proc: Proc, seconds: float = 2.0) -> AsyncIterator[None]:
    """Redis runs a script for ``seconds`` of CPU (a server slower than the spend client's
    timeout): the calls sent meanwhile run after it, when their clients gave up on the
    reply. Entered once Redis is busy; left once it is not."""
    raw = aioredis.Redis(port=proc.port, socket_timeout=30)
    await raw.script_load(SCRIPT)  # loaded already, as on a running replica
    # Past busy-reply-threshold (5 s) Redis answers BUSY instead of queueing: on a loaded
    # machine the spin takes that long in wall time, so the calls would be refused, not late.
    threshold = (await raw.config_get("busy-reply-threshold"))["busy-reply-threshold"]
    await raw.config_set("busy-reply-threshold", 600_000)
    spin = (
        # os.clock: the time TIME gives a script stands still while it runs
        "local stop = os.clock() + tonumber(ARGV[1]) repeat until os.clock() >= stop"
    )
    busy = asyncio.ensure_future(raw.eval(spin, 0, seconds))

    async def answers() -> bool:
        probe = aioredis.Redis(port=proc.port)
        try:
            return bool(await asyncio.wait_for(probe.ping(), 0.1))
        except (aioredis.RedisError, TimeoutError):
            return False
        finally:
            await probe.aclose()

    try:
        await _until(lambda: _not(answers()), "redis is busy")
        yield
    finally:
        await busy
        await raw.config_set("busy-reply-threshold", threshold)
        await raw.aclose()


async def _not(value: Awaitable[bool]) -> bool:
    return not await value


async def test_a_reserve_whose_reply_is_late_is_released_on_redis(
    redis: SpendRedis, redis_proc: Proc
) -> None:
    budget = Budget(BUDGET, "sc:{t}", redis)
    async with _busy(redis_proc):
        r = await budget.reserve(ALICE, 0.5)  # the script runs later: its reply is lost
        assert not r.shared and r.action == "ok"  # so it is reserved in process too

    async def held() -> bool:
        return await _day_book(redis, budget) == pytest.approx((0.0, 0.5))

    await _until(held, "Redis holds the reservation whose reply was lost")
    await _until(lambda: _is(redis.up), "redis answers again")
    await budget.settle(r, 0.2)

    async def released() -> bool:
        return await _day_book(redis, budget) == pytest.approx((0.2, 0.0))

    await _until(released, "the lost reservation is released on Redis", budget)
    assert not budget.pending


async def test_a_cost_sent_again_after_a_lost_reply_counts_once(
    redis: SpendRedis, redis_proc: Proc
) -> None:
    r = await Budget(BUDGET, "sc:{t}", None).reserve(ALICE, 0.5)  # made in process
    assert not r.shared
    budget = Budget(BUDGET, "sc:{t}", redis)
    async with _busy(redis_proc):
        await budget.settle(r, 0.2)  # its cost is added on Redis later: the reply is lost
        assert not redis.up and budget.pending

    async def written() -> bool:  # the backlog sends it again
        return redis.up and not budget.pending

    await _until(written, "the backlog is written", budget)
    assert await _day_book(redis, budget) == pytest.approx((0.2, 0.0))


async def test_a_settlement_does_not_wait_for_the_backlog(
    redis: SpendRedis, redis_proc: Proc
) -> None:
    budget = Budget(BUDGET, "sc:{t}", redis)
    held = await asyncio.gather(*(budget.reserve(ALICE, 0.01) for _ in range(1_000)))
    assert all(r.shared for r in held)
    async with _writes_paused(redis_proc):
        for r in held:  # the first times out (Redis is marked down), the others wait
            await budget.settle(r, 0.005)
    assert len(budget.pending) == 1_000
    await _until(lambda: _is(redis.up), "redis is up again")
    fresh = await budget.reserve(ALICE, 0.01)
    assert fresh.shared
    states = await budget.settle(fresh, 0.005)
    assert states  # written at once ...
    assert len(budget.pending) == 1_000  # ... not after the backlog

    async def drained() -> bool:
        return not budget.pending and await _day_book(redis, budget) == pytest.approx(
            (1_001 * 0.005, 0.0)
        )

    await _until(drained, "the backlog is written, each settlement once", budget)


async def _is(value: bool) -> bool:
    return value


def test_in_process_settles_cut_the_books_only_when_the_period_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = BudgetSpec.model_validate({"dailyUSD": 100.0, "perUserDailyUSD": 10.0})
    budget = Budget(spec, "sc:{t}", None)
    cuts: list[set[str]] = []
    forget = budget.local.forget_before
    monkeypatch.setattr(
        budget.local, "forget_before", lambda ids: (cuts.append(ids), forget(ids))[1]
    )

    async def one(user: str) -> None:
        who = Identity("acme", user)
        await budget.settle(await budget.reserve(who, 0.01), 0.01)

    async def run() -> None:
        for i in range(200):
            await one(f"u{i}")
        today = budget.periods()[0]
        tomorrow = current_periods(today.resets_at + timedelta(hours=1), budget.tz)
        budget._periods, budget._periods_until = tomorrow, tomorrow[0].resets_at.timestamp()
        await one("late")

    asyncio.run(run())
    assert len(cuts) == 2  # the first settle, and the first of the next day
    assert len(budget.local) == 2  # yesterday's 201 books are gone: today's agent and user


async def test_a_busy_redis_refuses_a_reserve_rather_than_admit_it_in_process(
    redis: SpendRedis,
) -> None:
    budget = Budget(BudgetSpec.model_validate({"dailyUSD": 1.0}), "sc:{t}", redis)
    await budget.settle(await budget.reserve(ALICE, 1.0), 1.0)  # today's budget is spent
    release = asyncio.Event()
    started = 0

    async def hold(_: Any) -> None:  # a call that keeps its connection until released
        nonlocal started
        started += 1
        await release.wait()

    holders = [asyncio.ensure_future(redis.call("hold", hold)) for _ in range(MAX_CONNECTIONS)]
    try:
        await _until(lambda: _is(started == MAX_CONNECTIONS), "every connection is in use")
        with queue_until(time.monotonic() + 0.05), pytest.raises(BudgetBusy):
            await budget.reserve(ALICE, 0.01)  # the ledger in process would admit it
        assert redis.up  # busy is not down
    finally:
        release.set()
        await asyncio.gather(*holders)
    assert (await budget.reserve(ALICE, 0.01)).exceeded is not None  # Redis's answer again


async def test_a_busy_redis_answers_503_with_retry_after(redis_proc: Proc) -> None:
    policy = AgentPolicy.model_validate(
        {
            "providers": [{"name": "p", "type": "openai", "baseURL": "http://127.0.0.1:9/v1"}],
            "models": {"tiers": [{"name": "small", "model": "p/small", "inputPer1M": 1.0}]},
            "budget": {"dailyUSD": 1.0},
        }
    )
    spend = SpendControl(policy, "a", Metrics(), f"redis://127.0.0.1:{redis_proc.port}/0")
    assert spend.redis is not None
    route = Route(policy.models.tiers[0], "default", "default")
    release = asyncio.Event()
    started = 0

    async def hold(_: Any) -> None:
        nonlocal started
        started += 1
        await release.wait()

    holders = [
        asyncio.ensure_future(spend.redis.call("hold", hold)) for _ in range(MAX_CONNECTIONS)
    ]
    try:
        await _until(lambda: _is(started == MAX_CONNECTIONS), "every connection is in use")
        with queue_until(time.monotonic() + 0.05), pytest.raises(ApiError) as refused:
            await spend.admit(ALICE, "r1", route, 100, 100)
        assert refused.value.status == 503 and refused.value.headers["retry-after"] == "1"
    finally:
        release.set()
        await asyncio.gather(*holders)
        await spend.close()


# --- group writes: a request's scripts share a round trip with every other one queued -------


async def test_scripts_sent_at_once_share_one_connection_and_count_exactly(
    redis: SpendRedis, redis_proc: Proc
) -> None:
    """Hundreds of admissions at once are written together (one connection, not one each),
    and every one of them is counted: the limit admits exactly its number."""
    spec = RateLimitsSpec.model_validate({"perUser": {"requestsPerMinute": 300}})
    limiter = RateLimiter(spec, "sc:{t}", redis)
    raw = aioredis.Redis(port=redis_proc.port)
    try:
        before = (await raw.info("stats"))["total_connections_received"]
        outcomes = await asyncio.gather(*(limiter.acquire(ALICE, f"r{i}", 1) for i in range(400)))
        after = (await raw.info("stats"))["total_connections_received"]
    finally:
        await raw.aclose()
    assert all(o.shared for o in outcomes)
    assert sum(o.allowed for o in outcomes) == 300
    assert after - before <= 2, f"{after - before} connections for one burst of scripts"


async def test_a_group_write_that_fails_answers_every_caller(tmp_path: Path) -> None:
    """Redis gone under a burst: every queued call falls back (in process), none waits."""
    proc = start_redis(log_path=tmp_path / "redis.log")
    r = SpendRedis(f"redis://127.0.0.1:{proc.port}/0")
    try:
        await r.start()
        spec = RateLimitsSpec.model_validate({"perUser": {"requestsPerMinute": 1000}})
        limiter = RateLimiter(spec, "sc:{t}", r)
        assert (await limiter.acquire(ALICE, "first", 1)).shared
        proc.stop()
        outcomes = await asyncio.wait_for(
            asyncio.gather(*(limiter.acquire(ALICE, f"r{i}", 1) for i in range(50))), 30
        )
        assert all(o.allowed and not o.shared for o in outcomes)
        assert not r.up
    finally:
        await r.close()
        proc.stop()


async def test_scripts_redis_forgot_are_loaded_again(redis: SpendRedis, redis_proc: Proc) -> None:
    spec = RateLimitsSpec.model_validate({"perUser": {"requestsPerMinute": 10}})
    limiter = RateLimiter(spec, "sc:{t}", redis)
    assert (await limiter.acquire(ALICE, "a", 1)).shared
    raw = aioredis.Redis(port=redis_proc.port)
    try:
        await raw.script_flush()  # as after a restart of Redis
    finally:
        await raw.aclose()
    second = await limiter.acquire(ALICE, "b", 1)
    assert second.shared and second.states[0].requests == 2


async def test_a_burst_past_the_group_write_bound_is_split_and_answered(
    redis: SpendRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    from swiftclaw_runtime import redis_client

    sizes: list[int] = []
    real = redis_client.exchange

    async def counting(client: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
        sizes.append(len(commands))
        return await real(client, commands)

    monkeypatch.setattr(redis_client, "exchange", counting)
    await redis.client.set("k", "v")
    n = 2 * redis_client.MAX_BATCH + 500
    replies = await asyncio.gather(*(redis.redis.send("get", "GET", "k") for _ in range(n)))
    assert replies == [b"v"] * n
    assert len(sizes) >= 3 and max(sizes) <= redis_client.MAX_BATCH
