"""Rate limits, the spend budget, scaling and the SLO."""

from __future__ import annotations

from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field

from .base import TIME_ZONE_PATTERN, Model
from .rules import at_most, issue_if, python_only


class RateLimit(Model):
    """Requests and tokens per minute (a sliding 60 s window). Tokens are charged on an
    estimate before the call (input + the output cap) and settled on the real usage."""

    requests_per_minute: Annotated[int, Field(ge=1, le=10_000_000)] | None = None
    """Requests admitted per sliding minute; the runtime answers 429 past it."""
    tokens_per_minute: Annotated[int, Field(ge=1, le=10_000_000_000)] | None = None
    """Tokens (input estimate plus output cap, settled on usage) admitted per sliding minute; the
    runtime answers 429 past it."""


def valid_time_zone(name: str) -> bool:
    """Whether ``name`` is in the IANA zone database (as Python's zoneinfo knows it)."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


class RateLimitsSpec(Model):
    """Per user (the key's user, or the request's ``user`` with ``auth.userFromRequest``),
    per tenant, and for the whole agent; exact across replicas through Redis."""

    # a narrower scope cannot allow more
    rules = tuple(
        at_most(f"{inner}.{unit}", f"{outer}.{unit}")
        for inner, outer in (("perUser", "perTenant"), ("perTenant", "global"))
        for unit in ("requestsPerMinute", "tokensPerMinute")
    )

    per_user: RateLimit | None = None
    """The limit of each user (the key's user, or the request's user with auth.userFromRequest)."""
    per_tenant: RateLimit | None = None
    """The limit of each tenant."""
    global_: Annotated[RateLimit | None, Field(alias="global")] = None
    """The limit of the whole agent, all replicas together."""


class BudgetSpec(Model):
    """Spend caps in USD at the manifest's prices. Days (and months) begin at midnight in
    ``timeZone`` (an IANA name). Each call reserves its largest possible cost first, so
    concurrent requests on any number of replicas cannot pass a cap by more than one
    request's worth; ``onExceeded`` says what happens at 100 %."""

    rules = (
        at_most("perUserDailyUSD", "dailyUSD"),
        at_most("dailyUSD", "monthlyUSD"),
        # the CRD checks the name's shape (TIME_ZONE_PATTERN); the zone database only Python
        python_only(
            lambda s: issue_if(
                not valid_time_zone(s.time_zone),
                ("timeZone",),
                f"unknown time zone {s.time_zone!r} (an IANA name such as Europe/Paris)",
            )
        ),
    )

    daily_usd: Annotated[float | None, Field(gt=0, le=10_000_000, alias="dailyUSD")] = None
    """The agent's spend cap per day, in USD at the manifest's prices; the runtime reserves each
    call's largest cost against it. Also the base of the operator's budget alert."""
    per_user_daily_usd: Annotated[
        float | None, Field(gt=0, le=1_000_000, alias="perUserDailyUSD")
    ] = None
    """Each user's spend cap per day, in USD."""
    monthly_usd: Annotated[float | None, Field(gt=0, le=100_000_000, alias="monthlyUSD")] = None
    """The agent's spend cap per month, in USD."""
    time_zone: Annotated[
        str, Field(min_length=1, max_length=64, pattern=TIME_ZONE_PATTERN, alias="timeZone")
    ] = "UTC"
    """The IANA time zone in which the runtime's days and months begin (checked against the zone
    database)."""
    alert_at_percent: Annotated[int, Field(ge=1, le=100)] = 80
    """At this share of a cap the runtime logs a warning once per period; the operator's
    PrometheusRule raises SwiftClawBudgetAlert at this share of dailyUSD."""
    on_exceeded: Literal["reject", "downgrade", "alert"] = "downgrade"
    """What the runtime does at 100 % of a cap: reject (429 insufficient_quota), downgrade (serve
    on the cheapest tier) or alert (serve as asked, log and count)."""
    on_projected_exceed: Literal["downgrade", "alert"] = "alert"
    """With the operator's autopilot on: spend projected past a cap by the period's end
    downgrades every pod to cheaper tiers (held at least minDowngradeSeconds), or only alerts
    (a Warning Event and the webhook). The operator acts on it, not the pods."""
    min_downgrade_seconds: Annotated[int, Field(ge=0, le=86_400)] = 900
    """The shortest time the autopilot holds a fleet-wide budget downgrade once it starts it
    (the operator)."""
    # One request costing more than this logs a warning and counts in
    # swiftclaw_high_cost_requests_total, whatever the caps.
    alert_high_cost_usd: Annotated[
        float | None, Field(gt=0, le=100_000, alias="alertHighCostUSD")
    ] = None
    """One request costing more than this logs a warning and counts in
    swiftclaw_high_cost_requests_total (the runtime), whatever the caps."""


class ScalingSpec(Model):
    """The HPA's bounds, and what it scales on: CPU always; with ``targetConcurrency``, also
    the average of ``swiftclaw_requests_in_flight`` per pod. That one needs a custom metrics
    adapter serving it (Prometheus Adapter, KEDA), which the operator is told about
    (``operator.customMetrics`` in the chart); without one, the HPA scales on CPU alone and
    the agent shows ``Degraded`` (``InvalidSpec``) saying so, rather than ignore the field.
    With ``autopilot.enabled`` the operator reads the pods itself and needs no adapter."""

    rules = (at_most("minReplicas", "maxReplicas"),)

    min_replicas: Annotated[int, Field(ge=1, le=1000)] = 2
    """The HPA's minimum number of runtime pods (the operator)."""
    max_replicas: Annotated[int, Field(ge=1, le=1000)] = 10
    """The HPA's maximum number of runtime pods (the operator)."""
    target_concurrency: Annotated[int | None, Field(ge=1, le=10_000)] = None
    """The average swiftclaw_requests_in_flight per pod the HPA aims for, beside CPU; needs a
    custom metrics adapter and the chart's operator.customMetrics, else the agent shows
    Degraded/InvalidSpec and the HPA scales on CPU alone. With the autopilot on, the in-flight
    requests per pod the autopilot aims for (default 32), no adapter needed."""
    scale_down_window_seconds: Annotated[int, Field(ge=0, le=3600)] = 300
    """How long load must stay low before replicas go down: the HPA's scale-down stabilisation
    (the operator renders it), or with the autopilot on the autopilot's own (the HPA's is
    then 0)."""


class SLOSpec(Model):
    p95_latency_ms: Annotated[int, Field(ge=1, le=600_000)] = 5000
    """The p95 latency above which the operator's PrometheusRule raises SwiftClawLatencyAboveSLO."""
    error_rate_percent: Annotated[float, Field(ge=0, le=100)] = 5.0
    """The share of failed requests above which the operator's PrometheusRule raises
    SwiftClawErrorRateHigh."""
