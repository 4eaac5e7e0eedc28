"""The operator's autopilot and its alerts: what it reads, how often, what it tells.

Only the operator acts on these (they are not in a pod's config): it reads the runtime
pods' metrics every ``intervalSeconds`` and scales, fails models over fleet-wide, holds
the budget and reports cost spikes (see ``swiftclaw_operator.autopilot``).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from .base import URL_PATTERN, Model


class AutopilotThresholds(Model):
    """When the autopilot acts; the defaults suit an interactive agent."""

    failover_error_rate_percent: Annotated[float, Field(gt=0, le=100)] = 50.0
    """A model's calls failing at this rate or more, with at least failoverMinCalls calls, two
    intervals in a row: the operator takes it out of its tiers' chains on every pod."""
    failover_min_calls: Annotated[int, Field(ge=1, le=1_000_000)] = 20
    """The fewest calls to a model in an interval for its error rate to count (the operator)."""
    healthy_seconds: Annotated[int, Field(ge=0, le=86_400)] = 120
    """Clean traffic this long before a failed-over model is trusted again (the operator
    fails it back)."""
    added_latency_ms: Annotated[int, Field(ge=1, le=60_000)] = 250
    """The gateway's own time per request (request minus provider time) above which the
    operator scales out."""
    loop_lag_ms: Annotated[int, Field(ge=1, le=10_000)] = 50
    """The pods' mean event-loop lag (how late a timer fires: the loop's own backlog) above
    which the operator scales out."""
    stale_hold_seconds: Annotated[int, Field(ge=0, le=3600)] = 300
    """How long the operator shows the last figures when the pods cannot be read (then they
    are absent, never zero)."""


class AutopilotSpec(Model):
    """The operator reads the pods' metrics and decides for the fleet. Off by default:
    on, it owns the HPA's bounds (``minReplicas`` = ``maxReplicas`` = its decision, within
    ``spec.scaling``) and the ``<agent>-fleet`` ConfigMap."""

    enabled: bool = False
    """On: the operator reads the ready pods' metrics and decides replicas, fleet failover and
    budget downgrades; off: the HPA scales within spec.scaling."""
    interval_seconds: Annotated[int, Field(ge=5, le=300)] = 10
    """How often the operator reads every ready pod and decides."""
    prometheus_url: Annotated[
        str | None, Field(max_length=2048, pattern=URL_PATTERN, alias="prometheusURL")
    ] = None
    """A Prometheus server that scrapes the runtime pods (with namespace and pod labels, as a
    ServiceMonitor's targets have): the operator reads the same series from its HTTP API
    (/api/v1/query) instead of reading each pod. No user:password@ in the host; set
    intervalSeconds to at least its scrape interval."""
    thresholds: AutopilotThresholds = AutopilotThresholds()
    """When the operator's autopilot acts."""


class CostSpikeSpec(Model):
    """The last hour's spend at ``ratio`` times its baseline (the same hour of earlier
    days, else the trailing mean) and at least ``minUSD`` over it is a spike."""

    ratio: Annotated[float, Field(gt=1, le=1000)] = 2.0
    """The last hour's spend at this many times its baseline is a spike (the operator sets
    CostSpike)."""
    min_usd: Annotated[float, Field(ge=0, le=1_000_000, alias="minUSD")] = 1.0
    """And at least this many USD over the baseline, so a quiet agent's cents never alarm."""


class AlertsSpec(Model):
    """What the autopilot reports (Events, the status, and the operator's webhook: its URL
    is the operator's setting, from a Secret mounted into the operator pod, since the
    operator reads no Secret of an agent's namespace)."""

    cost_spike: CostSpikeSpec = CostSpikeSpec()
    """When the operator reports a cost spike."""
