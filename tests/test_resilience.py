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
    RetryBudget,
    Window,
    backoff_delay,
    capped_retry_after,
    jittered_wait,
    retry_delay,
    target_timeout,
    timeout_is_providers_fault,
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


def rate_breaker(clock: FakeClock, threshold: int = 5, rate: int = 50) -> CircuitBreaker:
    spec = CircuitBreakerSpec(
        failure_threshold=threshold, failure_rate_percent=rate, window_seconds=30, open_seconds=60
    )
    return CircuitBreaker(spec, clock)


def test_breaker_on_a_busy_provider_with_a_few_errors_stays_closed() -> None:
    """2 % errors at 100 calls a second: 60 failures in the window, far past a bare count
    of 5, but a 2 % rate: the provider is healthy and must stay in use."""
    clock = FakeClock()
    b = rate_breaker(clock)
    for second in range(120):
        clock.now = 1000.0 + second
        for i in range(100):
            if i < 2:
                b.record_failure("500")
            else:
                b.record_success()
    assert b.state is BreakerState.CLOSED


def test_breaker_opens_when_the_rate_and_the_minimum_are_both_reached() -> None:
    clock = FakeClock()
    b = rate_breaker(clock, threshold=5, rate=50)
    for _ in range(10):
        b.record_success()
    for _ in range(9):  # 9 of 19 calls: 47 %
        b.record_failure("down")
    assert b.state is BreakerState.CLOSED
    b.record_failure("down")  # 10 of 20: 50 %
    assert b.state is BreakerState.OPEN


def test_breaker_needs_its_minimum_of_failures_even_at_100_percent() -> None:
    clock = FakeClock()
    b = rate_breaker(clock, threshold=5, rate=50)
    for _ in range(4):
        b.record_failure("down")
    assert b.state is BreakerState.CLOSED  # 4 of 4 failed, but 4 is not enough to judge
    b.record_failure("down")
    assert b.state is BreakerState.OPEN


def test_breaker_forgets_calls_older_than_its_window() -> None:
    clock = FakeClock()
    b = rate_breaker(clock, threshold=3, rate=50)
    for _ in range(100):
        b.record_success()
    clock.now += 31  # the successes left the window
    for _ in range(3):
        b.record_failure("down")
    assert b.state is BreakerState.OPEN


def test_window_memory_is_one_bucket_a_second_whatever_the_traffic() -> None:
    clock = FakeClock()
    w = Window(10, clock)
    for second in range(1000):
        clock.now = 1000.0 + second
        for _ in range(50):
            w.add(marked=False)
    assert len(w._buckets) <= 11
    assert w.totals() == (500, 0)


def test_retry_budget_caps_retries_at_its_share_of_requests() -> None:
    clock = FakeClock()
    budget = RetryBudget(20, clock, window_seconds=10, floor=10)
    for _ in range(1000):
        budget.record_request()
    allowed = sum(budget.try_spend() for _ in range(1000))
    assert allowed == 200  # 20 % of 1,000 requests, not one retry per request
    clock.now += 11  # a new window
    budget.record_request()
    assert budget.try_spend()


def test_retry_budget_floor_lets_a_quiet_tier_retry() -> None:
    clock = FakeClock()
    budget = RetryBudget(20, clock, window_seconds=10, floor=10)
    budget.record_request()
    assert sum(budget.try_spend() for _ in range(50)) == 10


def test_retry_budget_of_zero_percent_keeps_only_the_floor() -> None:
    budget = RetryBudget(0, FakeClock(), floor=0)
    budget.record_request()
    assert not budget.try_spend()


def test_retry_after_is_capped_and_waits_are_jittered_upwards_only() -> None:
    retry = RetrySpec(max_retry_after_seconds=30)
    assert capped_retry_after(3600, retry) == 30
    assert capped_retry_after(2, retry) == 2
    rng = random.Random(3)
    waits = [jittered_wait(2.0, rng) for _ in range(500)]
    assert min(waits) >= 2.0 and max(waits) <= 2.2
    assert max(waits) - min(waits) > 0.1  # spread, not one instant for all
    assert all(2.0 <= jittered_wait(60.0, rng) <= 61.0 for _ in range(100))  # at most 1 s
    assert jittered_wait(0.0, rng) == 0.0


def test_each_target_gets_its_share_of_the_deadline() -> None:
    assert target_timeout(30.0, 3, None) == 10.0  # primary of three
    assert target_timeout(20.0, 2, None) == 10.0  # then the first fallback
    assert target_timeout(10.0, 1, None) == 10.0  # the last one gets all that is left
    assert target_timeout(30.0, 3, 4.0) == 4.0  # attemptTimeoutSeconds caps it
    assert target_timeout(3.0, 1, 4.0) == 3.0  # never past the deadline


def test_a_timeout_the_client_asked_for_is_not_the_providers_fault() -> None:
    # 100k output tokens cannot be written in 30 s by any healthy model
    assert not timeout_is_providers_fault(100_000, 30.0, stream=False)
    assert timeout_is_providers_fault(500, 30.0, stream=False)
    assert timeout_is_providers_fault(None, 30.0, stream=False)
    # a stream is judged on its first chunk, which a huge max_tokens does not delay
    assert timeout_is_providers_fault(100_000, 30.0, stream=True)
