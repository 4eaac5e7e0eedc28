"""The budget's course from the spend ledger (pure): spend, burn rate, projection, state.

Spend comes from the ledger the pods share (``swiftclaw_budget_used_ratio`` is the
ledger's spent/cap, the same on every pod), not from summed pod counters, which lose what
a restarted pod had counted. The burn rate is the spend's growth over the last hour (or
since the period began); the projection is spend + burn x time left in the period.

States: ``downgrade`` when the projection passes the cap and
``budget.onProjectedExceed`` is ``downgrade`` (held at least ``minDowngradeSeconds``, left
when the projection falls under 90 % of the cap: hysteresis); ``exceeded`` at 100 %, until
the period rolls over. Alerts: once per period at ``alertAtPercent``, once per projected
excess, once at 100 %.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field, replace
from typing import Literal
from zoneinfo import ZoneInfo

from swiftclaw_runtime.spend.budgets import current_periods

BURN_WINDOW = 3600.0
LEAVE_DOWNGRADE_AT = 0.9  # of the cap
HISTORY_POINTS = 400  # spend readings kept (one per interval: an hour at 10 s)

State = Literal["normal", "downgrade", "exceeded"]


@dataclass(frozen=True)
class BudgetPlan:
    """The knobs the decision reads (from ``spec.budget``)."""

    daily_usd: float | None
    monthly_usd: float | None
    time_zone: str
    alert_at_percent: int
    on_projected_exceed: Literal["downgrade", "alert"]
    min_downgrade_seconds: float


@dataclass(frozen=True)
class BudgetState:
    period: str = ""  # the period's id the state belongs to
    state: State = "normal"
    since: float = 0.0
    alerted: bool = False
    projected_alerted: bool = False
    spend: tuple[tuple[float, float], ...] = ()  # (time, spent) readings of this period


@dataclass(frozen=True)
class BudgetResult:
    state: BudgetState
    scope: str
    cap: float
    spent: float
    burn_per_hour: float
    projected: float
    until: float  # unix seconds the state holds to at least (the period's end for exceeded)
    alerts: list[tuple[str, str]] = field(default_factory=list)  # (reason, message)


def burn_per_second(spend: tuple[tuple[float, float], ...], now: float) -> float:
    """The spend's growth over the last :data:`BURN_WINDOW` seconds of readings."""
    recent = [(t, s) for t, s in spend if now - t <= BURN_WINDOW]
    if len(recent) < 2 or recent[-1][0] <= recent[0][0]:
        return 0.0
    return max(0.0, (recent[-1][1] - recent[0][1]) / (recent[-1][0] - recent[0][0]))


def decide(
    plan: BudgetPlan,
    used: dict[str, float],
    previous: BudgetState,
    now: float,
) -> BudgetResult | None:
    """The budget's state from the ledger's ``used`` ratios (scope -> spent/cap); None
    without a cap. The daily cap governs when both are set and the ledger shows it."""
    day, month = current_periods(
        datetime.datetime.fromtimestamp(now, datetime.UTC), ZoneInfo(plan.time_zone)
    )
    if plan.daily_usd is not None and "daily" in used:
        scope, cap, period = "daily", plan.daily_usd, day
    elif plan.monthly_usd is not None and "monthly" in used:
        scope, cap, period = "monthly", plan.monthly_usd, month
    else:
        return None
    st = (
        previous
        if previous.period == f"{scope}:{period.id}"
        else BudgetState(f"{scope}:{period.id}")
    )
    spent = used[scope] * cap
    st = replace(st, spend=(*st.spend, (now, spent))[-HISTORY_POINTS:])
    end = period.resets_at.timestamp()
    burn = burn_per_second(st.spend, now)
    projected = spent + burn * max(0.0, end - now)
    alerts: list[tuple[str, str]] = []
    figures = (
        f"${spent:.2f} of ${cap:.2f} {scope} spent, burning ${burn * 3600:.2f}/h, "
        f"projected ${projected:.2f}"
    )
    if spent >= cap:
        if st.state != "exceeded":
            alerts.append(
                ("BudgetExceeded", f"{figures}; onExceeded in force until the period ends")
            )
            st = replace(st, state="exceeded", since=now)
    elif projected > cap and plan.on_projected_exceed == "downgrade":
        if st.state == "normal":
            alerts.append(("BudgetDowngrade", f"{figures}: cheaper tiers fleet-wide"))
            st = replace(st, state="downgrade", since=now)
    elif projected > cap:
        if not st.projected_alerted:
            alerts.append(("BudgetProjected", f"{figures} (onProjectedExceed: alert)"))
            st = replace(st, projected_alerted=True)
    elif (
        st.state == "downgrade"
        and now - st.since >= plan.min_downgrade_seconds
        and projected <= LEAVE_DOWNGRADE_AT * cap
    ):
        alerts.append(("BudgetNormal", f"{figures}: downgrade lifted"))
        st = replace(st, state="normal", since=now)
    if not st.alerted and spent >= cap * plan.alert_at_percent / 100:
        alerts.append(("BudgetAlert", f"{figures} (alertAtPercent {plan.alert_at_percent})"))
        st = replace(st, alerted=True)
    until = {
        "exceeded": end,
        "downgrade": 0.0,  # until the operator lifts it (after minDowngradeSeconds)
        "normal": 0.0,
    }[st.state]
    return BudgetResult(st, scope, cap, spent, burn * 3600, projected, until, alerts)
