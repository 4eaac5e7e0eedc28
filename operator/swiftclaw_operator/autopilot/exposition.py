"""A runtime pod's Prometheus text exposition into the samples the autopilot needs.

Only the families the decisions read are kept (the rest of a scrape is dropped while
parsing), and at most :data:`MAX_SERIES` series per pod: label values come from the
agent's own config, so the real count is small; the bound keeps a broken or hostile
exposition from growing the operator's memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from swiftclaw_runtime import contract

Labels = tuple[tuple[str, str], ...]
SeriesKey = tuple[str, Labels]  # (sample name, sorted labels)

MAX_SERIES = 4096

REQUESTS = "swiftclaw_requests_total"
REQUEST_BUCKET = "swiftclaw_request_duration_seconds_bucket"
REQUEST_SUM = "swiftclaw_request_duration_seconds_sum"
REQUEST_COUNT = "swiftclaw_request_duration_seconds_count"
UPSTREAM_SUM = "swiftclaw_upstream_duration_seconds_sum"
UPSTREAM_COUNT = "swiftclaw_upstream_duration_seconds_count"
IN_FLIGHT = contract.IN_FLIGHT_METRIC
BREAKER = "swiftclaw_circuit_breaker_state"
COST = "swiftclaw_cost_usd_total"
TENANT_COST = "swiftclaw_tenant_cost_usd_total"
CACHE_LOOKUPS = "swiftclaw_cache_lookups_total"
BUDGET_USED = "swiftclaw_budget_used_ratio"
ACTIVE_USERS = "swiftclaw_active_users_today"
CPU = "process_cpu_seconds_total"
STARTED = "process_start_time_seconds"

# Counters: a value lower than the last read means the process restarted.
COUNTERS = frozenset(
    {
        REQUESTS,
        REQUEST_BUCKET,
        REQUEST_SUM,
        REQUEST_COUNT,
        UPSTREAM_SUM,
        UPSTREAM_COUNT,
        COST,
        TENANT_COST,
        CACHE_LOOKUPS,
        CPU,
    }
)
GAUGES = frozenset({IN_FLIGHT, BREAKER, BUDGET_USED, ACTIVE_USERS, STARTED})
WANTED = COUNTERS | GAUGES


@dataclass(frozen=True)
class PodSample:
    """One read of one pod: when (the operator's clock), and the series kept."""

    pod: str
    at: float
    series: Mapping[SeriesKey, float] = field(default_factory=dict)
    truncated: bool = False

    @property
    def started(self) -> float | None:
        """The process's start time: a change between two reads is a restart."""
        return self.series.get((STARTED, ()))

    def get(self, name: str, **labels: str) -> float:
        return self.series.get((name, tuple(sorted(labels.items()))), 0.0)


def parse(pod: str, at: float, text: str) -> PodSample:
    """The wanted series of one exposition; a malformed one raises ``ValueError``."""
    series: dict[SeriesKey, float] = {}
    truncated = False
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name not in WANTED:
                continue
            if len(series) >= MAX_SERIES:
                truncated = True
                break
            series[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return PodSample(pod, at, series, truncated)
