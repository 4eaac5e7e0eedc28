"""A runtime pod's Prometheus text exposition into the samples the autopilot needs.

Only the families the decisions read are kept (the rest of a scrape is dropped while
parsing), and at most :data:`MAX_SERIES` series per pod: label values come from the
agent's own config, so the real count is small; the bound keeps a broken or hostile
exposition from growing the operator's memory.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

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
LOOP_LAG_SUM = "swiftclaw_event_loop_lag_seconds_sum"
LOOP_LAG_COUNT = "swiftclaw_event_loop_lag_seconds_count"
RETRY_AFTER = "swiftclaw_upstream_retry_after_seconds"
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
        LOOP_LAG_SUM,
        LOOP_LAG_COUNT,
        CPU,
    }
)
GAUGES = frozenset({IN_FLIGHT, BREAKER, BUDGET_USED, ACTIVE_USERS, RETRY_AFTER, STARTED})
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


_LINE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?[ \t]+(\S+)(?:[ \t]+-?\d+)?[ \t]*")
_LABEL = re.compile(r'[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\]|\\.)*)"[ \t]*(?:,|$)')
_ESCAPE = re.compile(r"\\(.)")
_ESCAPES = {"n": "\n", '"': '"', "\\": "\\"}


def _unescape(value: str) -> str:
    if "\\" not in value:
        return value
    return _ESCAPE.sub(lambda m: _ESCAPES.get(m.group(1), "\\" + m.group(1)), value)


def _labels(text: str | None) -> Labels:
    if not text:
        return ()
    out = []
    at = 0
    while at < len(text):
        m = _LABEL.match(text, at)
        if m is None or m.end() == at:
            raise ValueError(f"bad labels: {text[:80]!r}")
        out.append((m.group(1), _unescape(m.group(2))))
        at = m.end()
    return tuple(sorted(out))


def parse(pod: str, at: float, text: str) -> PodSample:
    """The wanted series of one exposition (the text format); a malformed line of a wanted
    series raises ``ValueError``. Only the wanted lines are parsed, by two regular
    expressions: prometheus_client's parser (pure Python) took tens of ms a runtime pod,
    the operator reads hundreds of pods a second at scale."""
    series: dict[SeriesKey, float] = {}
    truncated = False
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name not in WANTED:
            continue
        m = _LINE.fullmatch(line)
        if m is None:
            raise ValueError(f"bad sample line: {line[:80]!r}")
        if len(series) >= MAX_SERIES:
            truncated = True
            break
        series[(m.group(1), _labels(m.group(2)))] = float(m.group(3))
    return PodSample(pod, at, series, truncated)
