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
    tokens_per_minute: Annotated[int, Field(ge=1, le=10_000_000_000)] | None = None


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
    per_tenant: RateLimit | None = None
    global_: Annotated[RateLimit | None, Field(alias="global")] = None


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
    per_user_daily_usd: Annotated[
        float | None, Field(gt=0, le=1_000_000, alias="perUserDailyUSD")
    ] = None
    monthly_usd: Annotated[float | None, Field(gt=0, le=100_000_000, alias="monthlyUSD")] = None
    time_zone: Annotated[
        str, Field(min_length=1, max_length=64, pattern=TIME_ZONE_PATTERN, alias="timeZone")
    ] = "UTC"
    alert_at_percent: Annotated[int, Field(ge=1, le=100)] = 80
    on_exceeded: Literal["reject", "downgrade", "alert"] = "downgrade"
    # With the operator's autopilot on: spend projected past a cap by the period's end
    # downgrades every pod to cheaper tiers (held at least minDowngradeSeconds), or only
    # alerts (a Warning Event and the webhook).
    on_projected_exceed: Literal["downgrade", "alert"] = "alert"
    min_downgrade_seconds: Annotated[int, Field(ge=0, le=86_400)] = 900
    # One request costing more than this logs a warning and counts in
    # swiftclaw_high_cost_requests_total, whatever the caps.
    alert_high_cost_usd: Annotated[
        float | None, Field(gt=0, le=100_000, alias="alertHighCostUSD")
    ] = None


class ScalingSpec(Model):
    """The HPA's bounds, and what it scales on: CPU always; with ``targetConcurrency``, also
    the average of ``swiftclaw_requests_in_flight`` per pod. That one needs a custom metrics
    adapter serving it (Prometheus Adapter, KEDA), which the operator is told about
    (``operator.customMetrics`` in the chart); without one, the HPA scales on CPU alone and
    the agent shows ``Degraded`` (``InvalidSpec``) saying so, rather than ignore the field.
    With ``autopilot.enabled`` the operator reads the pods itself and needs no adapter."""

    rules = (at_most("minReplicas", "maxReplicas"),)

    min_replicas: Annotated[int, Field(ge=1, le=1000)] = 2
    max_replicas: Annotated[int, Field(ge=1, le=1000)] = 10
    target_concurrency: Annotated[int | None, Field(ge=1, le=10_000)] = None
    # How long load must stay low before replicas go down (the HPA's scale-down
    # stabilisation; with the autopilot on, the autopilot's own, the HPA's then 0).
    scale_down_window_seconds: Annotated[int, Field(ge=0, le=3600)] = 300


class SLOSpec(Model):
    p95_latency_ms: Annotated[int, Field(ge=1, le=600_000)] = 5000
    error_rate_percent: Annotated[float, Field(ge=0, le=100)] = 5.0
