"""The load test's figures, as pure functions of what the client saw (no I/O here).

``make loadtest`` sends ten times the example's expected peak through the local cluster's
Service; these functions turn its per-request outcomes into windows over time (rate,
latency percentiles, error rate, cache hit rate), an overall summary and the SLO verdict.

The example (``examples/agent-in-cluster.yaml``) states no traffic figure, so its expected
peak is derived from what it does state: its budget is sized for ``dailyUSD /
perUserDailyUSD`` users (500 / 5 = 100), and at the busiest minute of a support desk each
of them sends one message a minute (a sixtieth of its ``rateLimits.perUser`` of 60): 100
messages a minute, 1.67 requests/s. Ten times that is 16.7 requests/s, from the same 100
users each sending ten a minute, under their limit of 60 so the rate limiter refuses
nothing that the test counts as the gateway's failure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .demo import percentile

# One message per user per minute at the peak: the assumption behind the expected peak.
PEAK_MESSAGES_PER_USER_PER_MINUTE = 1.0
# The success rate the verdict uses when the manifest states no SLO.
DEFAULT_SUCCESS_PERCENT = 99.9


@dataclass(frozen=True)
class Outcome:
    """One request as the client saw it: when it was sent (seconds from the start), how long
    it took, whether it succeeded, and what the cache did (``x-swiftclaw-cache``)."""

    at: float
    latency_ms: float
    ok: bool
    cache: str = ""


@dataclass(frozen=True)
class Window:
    """The requests sent in ``[start, start + width)``."""

    start: float
    requests: int
    rate: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    error_rate: float
    cache_hit_rate: float


def budgeted_users(spec: Mapping[str, Any]) -> int:
    """How many users the manifest's budget is sized for: ``dailyUSD / perUserDailyUSD``."""
    budget = spec.get("budget") or {}
    daily, per_user = budget.get("dailyUSD"), budget.get("perUserDailyUSD")
    if not daily or not per_user:
        raise ValueError("the manifest's budget needs dailyUSD and perUserDailyUSD")
    return max(1, round(float(daily) / float(per_user)))


def expected_peak_rps(spec: Mapping[str, Any]) -> float:
    """The expected peak in requests/s: every budgeted user sending
    :data:`PEAK_MESSAGES_PER_USER_PER_MINUTE`, at most its per-user rate limit."""
    per_minute = PEAK_MESSAGES_PER_USER_PER_MINUTE
    limit = ((spec.get("rateLimits") or {}).get("perUser") or {}).get("requestsPerMinute")
    if limit:
        per_minute = min(per_minute, float(limit))
    return budgeted_users(spec) * per_minute / 60.0


def success_target_percent(spec: Mapping[str, Any]) -> float:
    """The success rate the run must reach: 100 minus the SLO's ``errorRatePercent``, or
    :data:`DEFAULT_SUCCESS_PERCENT` when the manifest has no SLO."""
    slo = spec.get("slo") or {}
    if slo.get("errorRatePercent") is None:
        return DEFAULT_SUCCESS_PERCENT
    return 100.0 - float(slo["errorRatePercent"])


def windows(outcomes: Sequence[Outcome], width: float, duration: float) -> list[Window]:
    """The outcomes in consecutive windows of ``width`` seconds over ``[0, duration)``."""
    if width <= 0:
        raise ValueError("the window width must be positive")
    count = max(1, int(-(-duration // width)))
    buckets: list[list[Outcome]] = [[] for _ in range(count)]
    for o in outcomes:
        i = int(o.at // width)
        if 0 <= i < count:
            buckets[i].append(o)
    out = []
    for i, bucket in enumerate(buckets):
        latencies = [o.latency_ms for o in bucket if o.ok]
        n = len(bucket)
        out.append(
            Window(
                start=i * width,
                requests=n,
                rate=n / width,
                p50_ms=percentile(latencies, 50) if latencies else None,
                p95_ms=percentile(latencies, 95) if latencies else None,
                p99_ms=percentile(latencies, 99) if latencies else None,
                error_rate=(n - sum(o.ok for o in bucket)) / n if n else 0.0,
                cache_hit_rate=sum(o.ok and o.cache == "exact" for o in bucket) / n if n else 0.0,
            )
        )
    return out


def summarize(
    outcomes: Sequence[Outcome], duration: float, target_percent: float, width: float = 5.0
) -> dict[str, Any]:
    """The run's figures and its verdict: ``passed`` when the success rate (of every request
    sent) is at least ``target_percent``. No request at all is a failed run."""
    total = len(outcomes)
    ok = sum(o.ok for o in outcomes)
    latencies = [o.latency_ms for o in outcomes if o.ok]
    success = 100.0 * ok / total if total else 0.0
    rates = [w.rate for w in windows(outcomes, width, duration)] if total else [0.0]
    return {
        "requests": total,
        "succeeded": ok,
        "failed": total - ok,
        "success_percent": round(success, 3),
        "target_success_percent": target_percent,
        "passed": bool(total) and success >= target_percent,
        "mean_rps": round(total / duration, 2) if duration > 0 else 0.0,
        "peak_rps": round(max(rates), 2),
        "p50_ms": round(percentile(latencies, 50), 1) if latencies else None,
        "p95_ms": round(percentile(latencies, 95), 1) if latencies else None,
        "p99_ms": round(percentile(latencies, 99), 1) if latencies else None,
        "cache_hit_percent": round(
            100.0 * sum(o.ok and o.cache == "exact" for o in outcomes) / total, 2
        )
        if total
        else 0.0,
    }
