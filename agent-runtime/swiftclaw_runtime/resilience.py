"""Deadlines, backoff and circuit breakers: the decisions, with the clock passed in.

Nothing here does I/O, so every rule is tested with a fake clock; :mod:`dispatch` is the
thin part that sleeps and calls providers.
"""

from __future__ import annotations

import enum
import random
import time
from collections import deque
from collections.abc import Callable

from .config import CircuitBreakerSpec, RetrySpec

Clock = Callable[[], float]


class Deadline:
    """The moment by which the whole request must be answered."""

    def __init__(self, seconds: float, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self.at = clock() + seconds

    def remaining(self) -> float:
        return max(0.0, self.at - self._clock())

    @property
    def expired(self) -> bool:
        return self._clock() >= self.at


def backoff_delay(attempt: int, retry: RetrySpec, rng: random.Random | None = None) -> float:
    """Seconds before retry number ``attempt`` (1 = first retry): full jitter.

    ``uniform(0, min(max, initial * 2**(attempt-1)))``, the AWS "full jitter" rule, which
    spreads retries of many clients so that they do not hit a recovering provider at once.
    """
    cap = min(retry.max_backoff_ms, retry.initial_backoff_ms * (2 ** (attempt - 1))) / 1000.0
    return (rng or random).uniform(0.0, cap)


def retry_delay(
    attempt: int, retry: RetrySpec, retry_after: float | None, rng: random.Random | None = None
) -> float:
    """Backoff, but never sooner than the provider's Retry-After."""
    return max(backoff_delay(attempt, retry, rng), retry_after or 0.0)


class BreakerState(enum.IntEnum):
    """Exported as a gauge: 0 closed, 1 open, 2 half-open."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class CircuitBreaker:
    """Closed/open/half-open breaker over failures in a rolling time window.

    Closed: calls flow; ``failure_threshold`` failures within ``window_seconds`` open it.
    Open: calls are refused for ``open_seconds``. Half-open: up to ``half_open_probes``
    calls at once are let through; a success closes the breaker, a failure re-opens it.
    """

    def __init__(
        self,
        spec: CircuitBreakerSpec,
        clock: Clock = time.monotonic,
        on_change: Callable[[BreakerState], None] | None = None,
    ) -> None:
        self.spec = spec
        self._clock = clock
        self._on_change = on_change
        self._failures: deque[float] = deque()
        self._state = BreakerState.CLOSED
        self._opened_at = 0.0
        self._probes = 0
        self.last_error: str | None = None

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and (
            self._clock() - self._opened_at >= self.spec.open_seconds
        ):
            self._set(BreakerState.HALF_OPEN)
            self._probes = 0
        return self._state

    def _set(self, state: BreakerState) -> None:
        if state is not self._state:
            self._state = state
            if self._on_change:
                self._on_change(state)

    def allow(self) -> bool:
        """May a call go now? In half-open, taking a probe slot counts as the call."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and self._probes < self.spec.half_open_probes:
            self._probes += 1
            return True
        return False

    def retry_in(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when not open)."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.spec.open_seconds - self._clock())

    def record_success(self) -> None:
        if self._state is BreakerState.HALF_OPEN:
            self._probes = max(0, self._probes - 1)
            self._failures.clear()
            self._set(BreakerState.CLOSED)

    def record_failure(self, error: str) -> None:
        now = self._clock()
        self.last_error = error
        if self._state is BreakerState.HALF_OPEN:
            self._probes = max(0, self._probes - 1)
            self._open(now)
            return
        if self._state is BreakerState.OPEN:
            return
        self._failures.append(now)
        horizon = now - self.spec.window_seconds
        while self._failures and self._failures[0] < horizon:
            self._failures.popleft()
        if len(self._failures) >= self.spec.failure_threshold:
            self._open(now)

    def release(self) -> None:
        """A call that ended neither in success nor failure (e.g. cancelled) frees its slot."""
        if self._state is BreakerState.HALF_OPEN:
            self._probes = max(0, self._probes - 1)

    def _open(self, now: float) -> None:
        self._opened_at = now
        self._failures.clear()
        self._set(BreakerState.OPEN)


class Cooldown:
    """A provider's Retry-After: no call to it before ``until``."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self.until = 0.0

    def hold(self, seconds: float) -> None:
        self.until = max(self.until, self._clock() + seconds)

    def wait(self) -> float:
        """Seconds left to wait (0 when the provider may be called)."""
        return max(0.0, self.until - self._clock())
