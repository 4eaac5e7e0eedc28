"""How many runtime pods the fleet needs (pure): fast up, slow down, never for a slow provider.

The load measure is the gateway's own work, per pod, as a ratio to its target (1.0 = on
target): requests in flight *at the fleet's usual latency* against the per-pod target
(Little's law: in flight = rate x latency; the rate is the requests finished per second,
so a provider's slowness is not counted, not even in the interval it begins, when the
gauge has risen and no slow request has finished yet), the event loop's CPU against
``cpu_target``, its lag (how late a timer fires: the loop's backlog) against
``loop_lag_target_ms``, the gateway's added latency against its target. When raw in flight is
over target only because requests take longer upstream, the decision is
``ProviderBound``: more pods would only multiply retries.

Up: at once, by at most max(2x, +4) pods per decision (the HPA's default policy); not while
pods are pending (AIBrix #2670 cascaded while pods were pending). Down: the largest
recommendation of the last ``scale_down_window`` seconds (the HPA's stabilisation), by at
most half per decision, never from a stale or partial read, and not before a whole window
has been seen (after an operator restart too).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

TOLERANCE = 0.1  # ratios within 10 % of 1.0 change nothing (the HPA's default)
MAX_UP_FACTOR = 2.0
MAX_UP_PODS = 4
MAX_DOWN_FACTOR = 0.5
BASELINE_POINTS = 60  # intervals of latency kept for the fleet's usual latency
PROVIDER_SLOW_FACTOR = 2.0  # latency this far above usual is the provider's doing


@dataclass(frozen=True)
class ScaleSpec:
    min_replicas: int
    max_replicas: int
    target_in_flight: float  # per pod
    scale_down_window: float  # seconds
    cpu_target: float = 0.7  # cores per pod
    added_latency_target_ms: float = 250.0
    loop_lag_target_ms: float = 50.0


@dataclass(frozen=True)
class ScaleSignals:
    ready: int
    pending: int
    current: int  # the replicas the Deployment asks for now
    in_flight_per_pod: float
    mean_latency_s: float | None
    cpu_per_pod: float | None
    added_latency_ms: float | None
    stale: bool = False
    complete: bool = True
    rate_per_pod: float | None = None  # requests finished per second
    loop_lag_ms: float | None = None  # the pods' mean event-loop lag


@dataclass(frozen=True)
class ScaleHistory:
    """What the decision remembers: recent recommendations (for the down window) and
    recent mean latencies (for the usual latency); both bounded."""

    recommendations: tuple[tuple[float, int], ...] = ()
    latencies: tuple[float, ...] = ()
    since: float | None = None  # the first decision: no scale-down before a whole window


@dataclass(frozen=True)
class ScaleDecision:
    desired: int
    reason: str
    message: str
    ratio: float | None = None
    history: ScaleHistory = field(default_factory=ScaleHistory)


def usual_latency(latencies: tuple[float, ...]) -> float | None:
    """The fleet's usual latency: the lower quartile of recent intervals' means, so that
    a slow spell does not become the norm within the window."""
    if not latencies:
        return None
    ordered = sorted(latencies)
    return ordered[len(ordered) // 4]


def load_ratio(spec: ScaleSpec, s: ScaleSignals, usual: float | None) -> tuple[float, float, str]:
    """(the gateway's load ratio, the raw in-flight ratio, the signal that drives it)."""
    raw = s.in_flight_per_pod / spec.target_in_flight
    in_flight = raw
    if usual is not None and s.rate_per_pod is not None:
        in_flight = min(raw, s.rate_per_pod * usual / spec.target_in_flight)
    elif usual is not None and s.mean_latency_s and s.mean_latency_s > usual:
        in_flight = raw * usual / s.mean_latency_s  # the rate's share at usual latency
    ratios = {"in-flight": in_flight}
    if s.cpu_per_pod is not None:
        ratios["cpu"] = s.cpu_per_pod / spec.cpu_target
    if s.added_latency_ms is not None:
        ratios["added-latency"] = s.added_latency_ms / spec.added_latency_target_ms
    if s.loop_lag_ms is not None:
        ratios["loop-lag"] = s.loop_lag_ms / spec.loop_lag_target_ms
    driver = max(ratios, key=lambda k: ratios[k])
    return ratios[driver], raw, driver


def decide(spec: ScaleSpec, s: ScaleSignals, history: ScaleHistory, now: float) -> ScaleDecision:
    """The desired replica count, a reason (one word) and a message."""
    current = max(s.current, 1)
    latencies = history.latencies
    if s.complete and not s.stale and s.mean_latency_s is not None:
        latencies = (*latencies, s.mean_latency_s)[-BASELINE_POINTS:]
    usual = usual_latency(history.latencies)
    since = history.since if history.since is not None else now
    history = replace(history, latencies=latencies, since=since)
    bounded = min(max(current, spec.min_replicas), spec.max_replicas)

    def keep(reason: str, message: str, ratio: float | None = None) -> ScaleDecision:
        return ScaleDecision(
            bounded, reason if bounded == current else "Bounds", message, ratio, history
        )

    if s.stale:
        return keep("MetricsStale", "no complete read of the pods: holding the replica count")
    ratio, raw, driver = load_ratio(spec, s, usual)
    if ratio > 1 + TOLERANCE:
        want = math.ceil(s.ready * ratio) if s.ready else current
    elif ratio < 1 - TOLERANCE:
        want = math.ceil(max(s.ready, 1) * ratio)
    else:
        want = current
    want = min(max(want, spec.min_replicas), spec.max_replicas)
    kept = [(t, r) for t, r in history.recommendations if now - t < spec.scale_down_window]
    window = (*kept, (now, want))
    history = replace(history, recommendations=window[-512:])
    provider_bound = (
        raw > 1 + TOLERANCE
        and ratio <= 1 + TOLERANCE
        and usual is not None
        and s.mean_latency_s is not None
        and s.mean_latency_s >= PROVIDER_SLOW_FACTOR * usual
    )
    if want > current:
        if s.pending:
            return keep(
                "PodsPending",
                f"{s.pending} pod(s) pending: no further scale-up until they run",
                ratio,
            )
        step = max(math.ceil(current * MAX_UP_FACTOR), current + MAX_UP_PODS)
        desired = min(want, step, spec.max_replicas)
        return ScaleDecision(
            desired,
            "ScaleUp",
            f"{driver} at {ratio:.0%} of target: {current} -> {desired}",
            ratio,
            history,
        )
    stable = max(r for _, r in window)  # the largest recommendation within the window
    if stable < current and s.complete and now - since >= spec.scale_down_window:
        desired = max(stable, math.floor(current * MAX_DOWN_FACTOR), spec.min_replicas)
        return ScaleDecision(
            desired,
            "ScaleDown",
            f"{driver} at {ratio:.0%} of target for {spec.scale_down_window:.0f}s: "
            f"{current} -> {desired}",
            ratio,
            history,
        )
    if provider_bound:
        return keep(
            "ProviderBound",
            f"in flight at {raw:.0%} of target because requests take "
            f"{s.mean_latency_s:.2f}s against a usual {usual:.2f}s (the provider is slow): "
            "more pods would not help",
            ratio,
        )
    return keep("Steady", f"{driver} at {ratio:.0%} of target", ratio)
