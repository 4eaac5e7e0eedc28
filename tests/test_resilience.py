"""Backoff, deadlines, breakers and cooldowns, driven by a fake clock."""

from __future__ import annotations

import random

import pytest

from swiftclaw_runtime.config import CircuitBreakerSpec, RetrySpec
from swiftclaw_runtime.resilience import (
    BreakerState,
    CircuitBreaker,
    Cooldown,
    Deadline,
    backoff_delay,
    retry_delay,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_full_jitter_stays_within_the_exponential_cap() -> None:
    retry = RetrySpec(initial_backoff_ms=100, max_backoff_ms=1000)
    rng = random.Random(7)
    for attempt, cap in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (9, 1.0)]:
        draws = [backoff_delay(attempt, retry, rng) for _ in range(2000)]
        assert min(draws) >= 0
        assert max(draws) <= cap
        assert max(draws) > cap * 0.9  # full jitter spans the whole range
        assert sum(draws) / len(draws) == pytest.approx(cap / 2, rel=0.1)


def test_retry_after_is_a_floor_on_the_delay() -> None:
    retry = RetrySpec(initial_backoff_ms=10, max_backoff_ms=20)
    assert retry_delay(1, retry, 2.0, random.Random(1)) == 2.0
    assert retry_delay(1, retry, None, random.Random(1)) <= 0.01


def test_deadline_counts_down_and_expires() -> None:
    clock = FakeClock()
    d = Deadline(5, clock)
    assert d.remaining() == 5
    clock.now += 4.5
    assert d.remaining() == pytest.approx(0.5)
    assert not d.expired
    clock.now += 1
    assert d.remaining() == 0 and d.expired


def breaker(clock: FakeClock, changes: list[BreakerState] | None = None) -> CircuitBreaker:
    spec = CircuitBreakerSpec(
        failure_threshold=3, window_seconds=10, open_seconds=30, half_open_probes=2
    )
    return CircuitBreaker(spec, clock, changes.append if changes is not None else None)


def test_breaker_opens_on_threshold_failures_within_the_window() -> None:
    clock, changes = FakeClock(), []
    b = breaker(clock, changes)
    b.record_failure("e1")
    clock.now += 8
    b.record_failure("e2")
    clock.now += 5  # the first failure left the 10 s window
    b.record_failure("e3")
    assert b.state is BreakerState.CLOSED
    b.record_failure("e4")
    assert b.state is BreakerState.OPEN
    assert changes == [BreakerState.OPEN]
    assert not b.allow()
    assert b.retry_in() == pytest.approx(30)
    assert b.last_error == "e4"


def test_half_open_limits_probes_and_success_closes() -> None:
    clock, changes = FakeClock(), []
    b = breaker(clock, changes)
    for _ in range(3):
        b.record_failure("down")
    clock.now += 30
    assert b.state is BreakerState.HALF_OPEN
    assert b.allow() and b.allow()
    assert not b.allow()  # only two probes at once
    b.record_success()
    assert b.state is BreakerState.CLOSED
    assert b.allow()
    assert changes == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]


def test_half_open_failure_reopens_for_a_full_period() -> None:
    clock = FakeClock()
    b = breaker(clock)
    for _ in range(3):
        b.record_failure("down")
    clock.now += 31
    assert b.allow()
    b.record_failure("still down")
    assert b.state is BreakerState.OPEN
    clock.now += 29
    assert not b.allow()
    clock.now += 1
    assert b.allow()


def test_released_probe_frees_its_slot() -> None:
    clock = FakeClock()
    b = breaker(clock)
    for _ in range(3):
        b.record_failure("down")
    clock.now += 30
    assert b.allow() and b.allow() and not b.allow()
    b.release()
    assert b.allow()


def test_cooldown_holds_the_longest_retry_after() -> None:
    clock = FakeClock()
    c = Cooldown(clock)
    assert c.wait() == 0
    c.hold(2)
    c.hold(1)
    assert c.wait() == 2
    clock.now += 1.5
    assert c.wait() == pytest.approx(0.5)
    clock.now += 1
    assert c.wait() == 0
