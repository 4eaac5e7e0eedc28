"""Rate limits, the spend budget, scaling and the SLO."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from .base import TIME_ZONE_PATTERN, Model, cel


class RateLimit(Model):
    """Requests and tokens per minute (a sliding 60 s window). Tokens are charged on an
    estimate before the call (input + the output cap) and settled on the real usage."""

    requests_per_minute: Annotated[int, Field(ge=1, le=10_000_000)] | None = None
    tokens_per_minute: Annotated[int, Field(ge=1, le=10_000_000_000)] | None = None


def _limit_rule(inner: str, outer: str, unit: str) -> tuple[str, str, str]:
    """CEL: ``inner.unit <= outer.unit`` when both are set (a narrower scope cannot allow more)."""
    return (
        f"!has(self.{inner}) || !has(self.{outer}) || !has(self.{inner}.{unit})"
        f" || !has(self.{outer}.{unit}) || self.{inner}.{unit} <= self.{outer}.{unit}",
        f"must not exceed {outer}.{unit}",
        f".{inner}.{unit}",
    )


class RateLimitsSpec(Model):
    """Per user (the key's user, or the request's ``user`` with ``auth.userFromRequest``),
    per tenant, and for the whole agent; exact across replicas through Redis."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            _limit_rule("perUser", "perTenant", "requestsPerMinute"),
            _limit_rule("perUser", "perTenant", "tokensPerMinute"),
            _limit_rule("perTenant", "global", "requestsPerMinute"),
            _limit_rule("perTenant", "global", "tokensPerMinute"),
        )
    )

    per_user: RateLimit | None = None
    per_tenant: RateLimit | None = None
    global_: Annotated[RateLimit | None, Field(alias="global")] = None


class BudgetSpec(Model):
    """Spend caps in USD at the manifest's prices. Days (and months) begin at midnight in
    ``timeZone`` (an IANA name). Each call reserves its largest possible cost first, so
    concurrent requests on any number of replicas cannot pass a cap by more than one
    request's worth; ``onExceeded`` says what happens at 100 %."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "!has(self.dailyUSD) || !has(self.perUserDailyUSD)"
                " || self.perUserDailyUSD <= self.dailyUSD",
                "must not exceed dailyUSD",
                ".perUserDailyUSD",
            ),
            (
                "!has(self.dailyUSD) || !has(self.monthlyUSD) || self.dailyUSD <= self.monthlyUSD",
                "must not exceed monthlyUSD",
                ".dailyUSD",
            ),
        )
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
    # One request costing more than this logs a warning and counts in
    # swiftclaw_high_cost_requests_total, whatever the caps.
    alert_high_cost_usd: Annotated[
        float | None, Field(gt=0, le=100_000, alias="alertHighCostUSD")
    ] = None


class ScalingSpec(Model):
    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "!has(self.minReplicas) || !has(self.maxReplicas)"
                " || self.minReplicas <= self.maxReplicas",
                "must not exceed maxReplicas",
                ".minReplicas",
            )
        )
    )

    min_replicas: Annotated[int, Field(ge=1, le=1000)] = 2
    max_replicas: Annotated[int, Field(ge=1, le=1000)] = 10
    target_concurrency: Annotated[int, Field(ge=1, le=10_000)] = 20


class SLOSpec(Model):
    p95_latency_ms: Annotated[int, Field(ge=1, le=600_000)] = 5000
    error_rate_percent: Annotated[float, Field(ge=0, le=100)] = 5.0

