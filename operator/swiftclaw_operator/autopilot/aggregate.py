"""Two reads of a fleet's pods into one interval's figures (pure).

Counters are turned into deltas per pod and series, then summed: a pod whose process
restarted (its start time changed, or a counter went down) counts its whole value, since
its counters began at zero; a pod first seen whose process started after the previous
read counts its whole value too (it served only within the interval); any other new pod
is a baseline (its counts belong to time before the interval). So rolling restarts lose
nothing and a pod never counts twice.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

from . import exposition as x
from .exposition import PodSample, SeriesKey

OPEN, HALF_OPEN = 1.0, 2.0
FAILED_REQUEST = "error"
CLIENT_GONE = frozenset({"client_closed_request", "client_closed"})
CACHE_SERVED = frozenset({"cached", "stale"})


def _labels(key: SeriesKey) -> dict[str, str]:
    return dict(key[1])


def pod_deltas(
    prev: PodSample | None, cur: PodSample, since: float | None
) -> dict[SeriesKey, float]:
    """The counters' growth of one pod between two reads (see the module's rules)."""
    restarted = prev is not None and prev.started != cur.started
    whole = restarted or (
        prev is None and since is not None and cur.started is not None and cur.started >= since
    )
    out: dict[SeriesKey, float] = {}
    for key, value in cur.series.items():
        if key[0] not in x.COUNTERS:
            continue
        if whole:
            out[key] = value
        elif prev is None:
            continue
        else:
            before = prev.series.get(key)
            if before is None or value < before:  # a series born in the interval (a new label set)
                out[key] = value
            else:
                out[key] = value - before
    return out


@dataclass(frozen=True)
class Interval:
    """What the fleet did between two reads: counts are deltas, gauges the latest values."""

    seconds: float
    pods: int
    requests: dict[tuple[str, str, str], float] = field(
        default_factory=dict
    )  # tier, model, outcome
    buckets: dict[float, float] = field(default_factory=dict)  # le -> cumulative count
    request_sum: float = 0.0
    request_count: float = 0.0
    upstream_sum: float = 0.0
    upstream_count: float = 0.0
    upstream_calls: dict[tuple[str, str, str], float] = field(default_factory=dict)  # p, m, outcome
    in_flight: float = 0.0
    breakers: dict[str, list[float]] = field(default_factory=dict)  # "provider/model" -> states
    cost: dict[tuple[str, str], float] = field(default_factory=dict)  # tier, model
    tenant_cost: dict[str, float] = field(default_factory=dict)
    cache_hits: float = 0.0
    cache_lookups: float = 0.0
    cpu_seconds: float = 0.0
    loop_lag_sum: float = 0.0  # seconds of lag over the pods' samples of it
    loop_lag_count: float = 0.0
    retry_after: dict[str, float] = field(default_factory=dict)  # provider -> longest wait
    budget_used: dict[str, float] = field(default_factory=dict)  # scope -> ratio (ledger)
    active_users: float | None = None

    # --- figures ----------------------------------------------------------------------

    @property
    def total_requests(self) -> float:
        return sum(self.requests.values())

    @property
    def requests_per_second(self) -> float:
        return self.total_requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def success_rate(self) -> float | None:
        """Answered over asked; requests whose client hung up first count neither way."""
        asked = sum(v for (_, _, o), v in self.requests.items() if o not in CLIENT_GONE)
        if asked <= 0:
            return None
        failed = sum(v for (_, _, o), v in self.requests.items() if o == FAILED_REQUEST)
        return 1.0 - failed / asked

    def quantile_ms(self, q: float) -> float | None:
        value = histogram_quantile(q, self.buckets)
        return None if value is None else value * 1000.0

    @property
    def added_latency_ms(self) -> float | None:
        """The gateway's own time per request: request time minus the provider calls' time
        (cache hits included: they are the gateway's own work)."""
        if self.request_count <= 0:
            return None
        return max(0.0, (self.request_sum - self.upstream_sum) / self.request_count) * 1000.0

    @property
    def mean_latency_s(self) -> float | None:
        return self.request_sum / self.request_count if self.request_count > 0 else None

    @property
    def mean_upstream_s(self) -> float | None:
        return self.upstream_sum / self.upstream_count if self.upstream_count > 0 else None

    @property
    def in_flight_per_pod(self) -> float:
        return self.in_flight / self.pods if self.pods else 0.0

    @property
    def cpu_per_pod(self) -> float | None:
        """Cores used per pod on average over the interval."""
        if not self.pods or self.seconds <= 0:
            return None
        return self.cpu_seconds / self.seconds / self.pods

    @property
    def loop_lag_ms(self) -> float | None:
        """The pods' mean event-loop lag over the interval."""
        if self.loop_lag_count <= 0:
            return None
        return self.loop_lag_sum / self.loop_lag_count * 1000.0

    def retry_after_of(self, model: str) -> float | None:
        """The longest Retry-After wait a pod has left for the provider of ``model``
        (``provider/model``), None when none waits."""
        wait = self.retry_after.get(model.split("/", 1)[0], 0.0)
        return wait if wait > 0 else None

    @property
    def cache_hit_rate(self) -> float | None:
        return self.cache_hits / self.cache_lookups if self.cache_lookups > 0 else None

    @property
    def routing_mix(self) -> dict[str, float]:
        """Each tier's share of the requests."""
        total = self.total_requests
        by_tier: dict[str, float] = defaultdict(float)
        for (tier, _, _), v in self.requests.items():
            by_tier[tier] += v
        return {t: v / total for t, v in sorted(by_tier.items())} if total > 0 else {}

    @property
    def spend_usd(self) -> float:
        return sum(self.cost.values())


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """Prometheus's ``histogram_quantile`` over cumulative bucket counts (``le`` -> count):
    linear within the bucket; the last finite bound when the rank falls in ``+Inf``."""
    if not buckets:
        return None
    ordered = sorted(buckets.items())
    total = ordered[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


def interval(
    prev: Mapping[str, PodSample], cur: Mapping[str, PodSample], prev_at: float, now: float
) -> Interval:
    """The fleet's interval between the read at ``prev_at`` (``prev``) and ``now`` (``cur``)."""
    requests: dict[tuple[str, str, str], float] = defaultdict(float)
    buckets: dict[float, float] = defaultdict(float)
    calls: dict[tuple[str, str, str], float] = defaultdict(float)
    cost: dict[tuple[str, str], float] = defaultdict(float)
    tenant_cost: dict[str, float] = defaultdict(float)
    breakers: dict[str, list[float]] = defaultdict(list)
    budget_used: dict[str, float] = {}
    retry_after: dict[str, float] = {}
    sums: dict[str, float] = defaultdict(float)
    in_flight = 0.0
    users: float | None = None
    hits = lookups = 0.0
    for name, sample in cur.items():
        for key, value in sample.series.items():
            metric, labels = key[0], _labels(key)
            if metric == x.IN_FLIGHT:
                in_flight += value
            elif metric == x.BREAKER:
                breakers[f"{labels.get('provider', '')}/{labels.get('model', '')}"].append(value)
            elif metric == x.BUDGET_USED:
                # every pod reads the same ledger: the newest (largest) reading is the truth
                scope = labels.get("scope", "")
                budget_used[scope] = max(budget_used.get(scope, 0.0), value)
            elif metric == x.ACTIVE_USERS:
                users = max(users or 0.0, value)
            elif metric == x.RETRY_AFTER:
                provider = labels.get("provider", "")
                retry_after[provider] = max(retry_after.get(provider, 0.0), value)
        for key, delta in pod_deltas(prev.get(name), sample, prev_at).items():
            metric, labels = key[0], _labels(key)
            if metric == x.REQUESTS:
                requests[
                    (labels.get("tier", ""), labels.get("model", ""), labels.get("outcome", ""))
                ] += delta
            elif metric == x.REQUEST_BUCKET:
                buckets[float(labels.get("le", "+Inf"))] += delta
            elif metric == x.UPSTREAM_COUNT:
                calls[
                    (labels.get("provider", ""), labels.get("model", ""), labels.get("outcome", ""))
                ] += delta
                sums["upstream_count"] += delta
            elif metric == x.COST:
                cost[(labels.get("tier", ""), labels.get("model", ""))] += delta
            elif metric == x.TENANT_COST:
                tenant_cost[labels.get("tenant", "")] += delta
            elif metric == x.CACHE_LOOKUPS:
                lookups += delta
                if labels.get("result") == "hit":
                    hits += delta
            elif metric in (
                x.REQUEST_SUM,
                x.REQUEST_COUNT,
                x.UPSTREAM_SUM,
                x.CPU,
                x.LOOP_LAG_SUM,
                x.LOOP_LAG_COUNT,
            ):
                sums[metric] += delta
    return Interval(
        seconds=max(0.0, now - prev_at),
        pods=len(cur),
        requests=dict(requests),
        buckets=dict(buckets),
        request_sum=sums[x.REQUEST_SUM],
        request_count=sums[x.REQUEST_COUNT],
        upstream_sum=sums[x.UPSTREAM_SUM],
        upstream_count=sums["upstream_count"],
        upstream_calls=dict(calls),
        in_flight=in_flight,
        breakers=dict(breakers),
        cost=dict(cost),
        tenant_cost=dict(tenant_cost),
        cache_hits=hits,
        cache_lookups=lookups,
        cpu_seconds=sums[x.CPU],
        loop_lag_sum=sums[x.LOOP_LAG_SUM],
        loop_lag_count=sums[x.LOOP_LAG_COUNT],
        retry_after=retry_after,
        budget_used=budget_used,
        active_users=users,
    )
