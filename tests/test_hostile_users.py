"""State per end user is bounded or expires (issue 20, item 9).

With ``auth.userFromRequest`` every request may name a new end user. A million of them
go through the in-process structures directly (the limiter's windows, the budget's books,
the usage book, the embedding memo, the context cache: each driven with its own clock, no
I/O, so the million takes seconds); a few thousand go over real HTTP into a real Redis,
whose every key must carry a TTL (the state Redis is ``noeviction``: a key without one
stays until it fills) and whose day hash must not grow a field per user.
"""

from __future__ import annotations

import asyncio
import sys
import tracemalloc
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import redis

from swiftclaw_runtime.cache.embeddings import _Memo
from swiftclaw_runtime.config import ContextSource
from swiftclaw_runtime.prompt.context import _Source
from swiftclaw_runtime.spend.budgets import Cap, MemoryLedger, Period
from swiftclaw_runtime.spend.identity import Identity
from swiftclaw_runtime.spend.limits import WINDOW_MS, MemoryWindows, Scope
from swiftclaw_runtime.spend.usage import Charge, UsageBook

from .conftest import Launcher, manifest, openai_provider
from .test_spend_live import AGENT, call, chat, fire, with_redis

MILLION = 1_000_000
START = 1_800_000_000_000  # ms
# The bounds (the defaults of docs/concepts/threat-model.md), written out so that this
# module runs unchanged against code that has none of them (and fails there on what it holds).
MAX_WINDOWS = 20_000  # limits.MAX_WINDOWS
MAX_BOOKS = 50_000  # budgets.MAX_BOOKS
LOCAL_USER_COSTS = 50_000  # usage.LOCAL_USER_COSTS
MEMO_BYTES = 8 * 1024 * 1024  # cache.embeddings.MEMO_BYTES
CACHE_BYTES = 16 * 1024 * 1024  # prompt.context.CACHE_BYTES


def _scopes(user: int) -> list[Scope]:
    return [
        Scope("user", f"u:acme/user-{user}", 5, 100_000),
        Scope("global", "g", None, 10**15),
    ]


def test_a_million_users_leave_only_the_last_minutes_windows() -> None:
    """10,000 new users a minute for 100 minutes: the windows held are those of the last
    minute's users (and the agent's), never the million."""
    windows = MemoryWindows()
    step = 6  # ms between requests: 10,000 a minute
    per_minute = WINDOW_MS // step
    for i in range(MILLION):
        out = windows.run("acquire", _scopes(i), START + i * step, f"r{i}", 10)
        assert out.allowed
        if i % 10_000 == 0:
            assert len(windows._windows) <= per_minute + 1, i
    assert out.states[1].requests == per_minute  # the agent's window counts every request
    # a minute of quiet, one request: everything else is gone
    windows.run("acquire", _scopes(-1), START + MILLION * step + WINDOW_MS, "last", 10)
    assert len(windows._windows) == 2


def test_users_past_the_bound_within_a_minute_evict_the_coldest() -> None:
    """Twice MAX_WINDOWS users within one minute: the held windows stay at the bound
    and so does their memory; the agent's window (admitted to by every request) is never
    the one to go, so the global limits still count every request."""
    users = 2 * MAX_WINDOWS
    windows = MemoryWindows()
    tracemalloc.start()
    try:
        at_bound = 0
        for i in range(users):
            now = START + i * WINDOW_MS // (2 * users)  # all within half a window
            out = windows.run("acquire", _scopes(i), now, f"r{i}", 10)
            assert len(windows._windows) <= MAX_WINDOWS
            if i == MAX_WINDOWS - 1:
                at_bound = tracemalloc.get_traced_memory()[0]
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(windows._windows) == MAX_WINDOWS
    assert out.states[1].requests == users  # the global window holds every request
    # past the bound only the agent's window grows (an entry per request, as it must)
    per_request = (held - at_bound) / (users - MAX_WINDOWS)
    assert per_request < 400, per_request


def test_a_million_users_budget_books_usage_and_memo_are_bounded() -> None:
    day = Period("day", "2026-12-07", datetime(2026, 12, 8, tzinfo=UTC))
    agent_cap = Cap("daily", "b:agent:2026-12-07", 10**9, day)
    ledger = MemoryLedger()
    book = UsageBook("p", None)
    for i in range(MILLION):
        user_cap = Cap("user_daily", f"b:u:acme/user-{i}:2026-12-07", 1.0, day)
        caps = [agent_cap, user_cap]
        action, _, charge = ledger.reserve(caps, 0.01, 0.001, "reject")
        assert action == "ok"
        ledger.settle(caps, charge, 0.002)
        who = Identity("acme", f"user-{i}")
        book.record_local(day.id, Charge(who, "t", "up/m", 0.002, 10, 10, ()), owners=False)
        if i % 100_000 == 0:
            assert len(ledger._books) <= MAX_BOOKS, i
            assert len(book._local[day.id]) < 20, i
    assert len(ledger._books) <= MAX_BOOKS
    agent = ledger.state(agent_cap)
    assert agent.spent == pytest.approx(MILLION * 0.002) and agent.reserved < 1e-6
    # the most recent user's spend is still known; the day's counters are per agent and
    # tenant, not per user; the active users are counted in a fixed space
    last = Cap("user_daily", f"b:u:acme/user-{MILLION - 1}:2026-12-07", 1.0, day)
    assert ledger.state(last).spent == pytest.approx(0.002)
    counters, active, _ = asyncio.run(book.day(day.id))
    assert len(counters) < 20, len(counters)
    assert active == pytest.approx(MILLION, rel=0.02)
    assert len(book._local_user_costs) <= LOCAL_USER_COSTS
    assert sys.getsizeof(book._local_users[day.id]._bits) < 200_000  # 2**20 bits


def test_the_embedding_memo_is_bounded_by_bytes_whatever_the_questions() -> None:
    """Long distinct questions (64 KiB each, past the memo's old 4,096 entries): what the
    memo holds, keys and vectors, stays within MEMO_BYTES."""
    memo = _Memo()
    question = "q" * 64 * 1024
    for i in range(5_000):
        memo.put(f"{i}:{question}", np.zeros(384, dtype=np.float32))
    held = sum(sys.getsizeof(k) + v.nbytes for k, v in memo._data.items())
    assert held <= MEMO_BYTES
    assert memo.get(f"4999:{question}") is not None  # the recent ones are remembered


def test_the_context_cache_is_bounded_by_bytes_per_source() -> None:
    """A source whose URL names ``{user}``: a full-size answer per user for 5,000 users."""
    source = _Source(
        ContextSource.model_validate(
            {"name": "profile", "url": "http://127.0.0.1:9/u/{user}", "cacheTTLSeconds": 600}
        )
    )
    answer = "a" * 16_000
    for i in range(5_000):
        source.store(f"/u/user-{i}", answer + str(i))
    held = sum(sys.getsizeof(k) + sys.getsizeof(v[1]) for k, v in source.cache.items())
    assert held <= CACHE_BYTES
    assert source.cached("/u/user-4999") == answer + "4999"


def test_thousands_of_users_over_http_leave_only_expiring_keys(launch: Launcher) -> None:
    """Every key in the state Redis carries a TTL, the per-user ones short; the day's
    counters hash does not grow a field per user."""
    r = with_redis(launch)
    up = launch.sim("--latency", "fixed:1")
    doc = manifest(
        [openai_provider("up", up)],
        [{"name": "t", "model": "up/m", "inputPer1M": 1, "outputPer1M": 2}],
        rateLimits={
            "perUser": {"requestsPerMinute": 10, "tokensPerMinute": 100_000},
            "perTenant": {"requestsPerMinute": 100_000},
        },
        budget={"dailyUSD": 1000, "perUserDailyUSD": 1},
        auth={"userFromRequest": True},
    )
    rt = launch.runtime(doc, "--redis-url", f"redis://127.0.0.1:{r.port}/0")
    users = 3_000
    out = fire([rt.url], [chat("t", user=f"end-user-{i}") for i in range(users)], 32)
    assert all(x.status_code == 200 for x in out)
    client = redis.Redis(port=r.port)
    keys = [k.decode() for k in client.scan_iter(count=10_000)]
    assert len(keys) >= users  # a per-user key or more each (limits, budget, spend)
    ttls = dict(zip(keys, [client.ttl(k) for k in keys], strict=True))
    assert not [k for k, t in ttls.items() if t < 0], "keys without a TTL"
    per_user = [k for k in keys if "end-user-" in k]
    for k in per_user:
        if ":rl:" in k:
            assert ttls[k] <= 61, (k, ttls[k])
        else:
            assert ttls[k] <= 3 * 86_400, (k, ttls[k])
    # what a user costs the state Redis (its own accounting): limits for a minute, the
    # budget and the day's spend for up to three days
    held = sum(client.memory_usage(k, samples=0) or 0 for k in per_user)
    print(f"state Redis bytes per end user: {held / users:.0f} ({len(per_user) / users} keys)")
    assert held / users < 2_000
    usage = call(rt.url, "/v1/usage?user=end-user-17").json()
    assert usage["spend"]["userTodayUSD"] > 0
    assert usage["activeUsersToday"] == pytest.approx(users, rel=0.02)
    day_hash = f"{AGENT}:usage:{usage['date']}"
    fields = client.hkeys(day_hash)
    assert fields and len(fields) < 50, len(fields)
    assert 0 < ttls[day_hash] <= 35 * 86_400
    assert timedelta(seconds=ttls[day_hash]) > timedelta(days=34)
