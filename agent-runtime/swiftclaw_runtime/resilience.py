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


def capped_retry_after(seconds: float, retry: RetrySpec) -> float:
    """A provider's Retry-After, cut to ``maxRetryAfterSeconds``."""
    return min(seconds, float(retry.max_retry_after_seconds))


def jittered_wait(seconds: float, rng: random.Random | None = None) -> float:
    """Waiting out a Retry-After: add up to 10 % (at most 1 s), never less, so that the
    requests held back do not all hit the provider in the same instant."""
    if seconds <= 0:
        return 0.0
    return seconds + (rng or random).uniform(0.0, min(1.0, 0.1 * seconds))


# A healthy model writes at least this many tokens a second; a request whose max_tokens
# cannot be written within its time asked for the timeout itself.
MIN_OUTPUT_TOKENS_PER_SECOND = 25.0


def timeout_is_providers_fault(output_limit: int | None, seconds: float, stream: bool) -> bool:
    """Should a timeout count against the provider's breaker?

    Not when the client caused it: a non-streamed request for more output than a healthy
    model writes in the time it had. A stream is judged on its first chunk, which comes
    before any long output, so its timeouts always count.
    """
    if stream or output_limit is None:
        return True
    return output_limit / MIN_OUTPUT_TOKENS_PER_SECOND <= seconds


def target_timeout(remaining: float, targets_left: int, attempt_timeout: float | None) -> float:
    """Time one target of a fallback chain may take: an equal share of what is left of the
    deadline (the last target gets all of it), capped by ``attemptTimeoutSeconds``."""
    share = remaining / max(1, targets_left)
    return min(share, attempt_timeout) if attempt_timeout is not None else share


class Window:
    """Two counts (events, and those marked) in one-second buckets over the last
    ``seconds``: a failure rate for breakers, a retry share for budgets. Memory is one
    bucket a second whatever the traffic."""

    def __init__(self, seconds: float, clock: Clock = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._buckets: deque[list[int]] = deque()  # [second, events, marked]

    def add(self, marked: bool, count_event: bool = True) -> None:
        second = int(self._clock())
        if self._buckets and self._buckets[-1][0] == second:
            bucket = self._buckets[-1]
        else:
            bucket = [second, 0, 0]
            self._buckets.append(bucket)
            self._trim(second)
        if count_event:
            bucket[1] += 1
        if marked:
            bucket[2] += 1

    def _trim(self, second: int) -> None:
        horizon = second - self.seconds
        while self._buckets and self._buckets[0][0] <= horizon:
            self._buckets.popleft()

    def totals(self) -> tuple[int, int]:
        """(events, marked) within the window."""
        self._trim(int(self._clock()))
        return sum(b[1] for b in self._buckets), sum(b[2] for b in self._buckets)

    def clear(self) -> None:
        self._buckets.clear()


RETRY_BUDGET_WINDOW_SECONDS = 10.0
RETRY_BUDGET_FLOOR = 10


class RetryBudget:
    """Retries at most ``percent`` % of requests over a window, with a small floor so that
    a quiet tier can still retry (Envoy's and Finagle's retry budgets work this way)."""

    def __init__(
        self,
        percent: int,
        clock: Clock = time.monotonic,
        window_seconds: float = RETRY_BUDGET_WINDOW_SECONDS,
        floor: int = RETRY_BUDGET_FLOOR,
    ) -> None:
        self.percent = percent
        self.floor = floor
        self._window = Window(window_seconds, clock)

    def record_request(self) -> None:
        self._window.add(marked=False)

    def try_spend(self) -> bool:
        """May a retry go now? If so, it is counted."""
        requests, retries = self._window.totals()
        if retries >= max(self.floor, requests * self.percent / 100):
            return False
        self._window.add(marked=True, count_event=False)
        return True


class BreakerState(enum.IntEnum):
    """Exported as a gauge: 0 closed, 1 open, 2 half-open."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class CircuitBreaker:
    """Closed/open/half-open breaker over the failure rate in a rolling time window.

    Closed: calls flow; it opens when, within ``window_seconds``, at least
    ``failure_threshold`` calls failed and failures are at least ``failure_rate_percent`` %
    of the calls. Open: calls are refused for ``open_seconds``. Half-open: up to
    ``half_open_probes`` calls at once are let through; a success closes the breaker, a
    failure re-opens it.
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
        self._calls = Window(spec.window_seconds, clock)
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
            self._calls.clear()
            self._set(BreakerState.CLOSED)
        elif self._state is BreakerState.CLOSED:
            self._calls.add(marked=False)

    def record_failure(self, error: str) -> None:
        now = self._clock()
        self.last_error = error
        if self._state is BreakerState.HALF_OPEN:
            self._probes = max(0, self._probes - 1)
            self._open(now)
            return
        if self._state is BreakerState.OPEN:
            return
        self._calls.add(marked=True)
        calls, failures = self._calls.totals()
        if (
            failures >= self.spec.failure_threshold
            and failures * 100 >= self.spec.failure_rate_percent * calls
        ):
            self._open(now)

    def probe_now(self) -> None:
        """An open breaker lets a probe through at once (half-open): what opened it may be
        gone (a provider key that was refused has been replaced)."""
        if self.state is BreakerState.OPEN:
            self._opened_at = self._clock() - self.spec.open_seconds

    def release(self) -> None:
        """A call that ended neither in success nor failure (e.g. cancelled) frees its slot."""
        if self._state is BreakerState.HALF_OPEN:
            self._probes = max(0, self._probes - 1)

    def _open(self, now: float) -> None:
        self._opened_at = now
        self._calls.clear()
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
