"""Spend control: who a request is for, whether its limits and budgets admit it, and
what it cost. :class:`SpendControl` is the one object the pipeline talks to:
:meth:`~SpendControl.admit` before the model is called, :meth:`~SpendControl.settle`
after, :meth:`~SpendControl.usage` for ``GET /v1/usage``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..config import AgentPolicy
from ..errors import ApiError
from ..metrics import Metrics
from ..overrides import Fleet
from ..routing import Route
from .budgets import MIN_OUTPUT_TOKENS, Ask, Budget, BudgetBusy, CapState, Reservation
from .costs import max_cost_usd, price_bounds
from .identity import Identity, TenantLabels, identify
from .limits import REQUESTS, Outcome, RateLimiter, duration
from .redis import SpendRedis
from .usage import Charge, UsageBook

__all__ = ["Admission", "Identity", "SpendControl", "identify"]

log = logging.getLogger("swiftclaw.spend")

# The output a request is assumed to take at most when neither it (max_tokens) nor the
# agent (agent.maxOutputTokens) caps it: what reservations and token charges count.
DEFAULT_OUTPUT_TOKENS = 4096
GAUGE_SECONDS = 15.0
Headers = list[tuple[bytes, bytes]]
# What admission holds when no rate limits, or no budgets, are configured.
UNLIMITED = Outcome(True, [])
NO_RESERVATION = Reservation(0.0, [], "ok", None, [], True)


@dataclass
class Admission:
    """A request let through: its identity, charges, and the route the budget allows."""

    who: Identity
    rid: str
    tokens: int
    route: Route
    limits: Outcome
    reservation: Reservation
    day: str
    output: int  # the output cap reserved for, and sent to the provider
    settled: bool = field(default=False)
    fleet: str = "normal"  # the fleet document's budget state when admitted

    def headers(self) -> Headers:
        out = self.limits.headers()
        if self.fleet != "normal":
            out.append((b"x-swiftclaw-budget", f"{self.fleet}; scope=fleet".encode()))
        r = self.reservation
        if r.action in ("downgrade", "alert") and r.exceeded is not None:
            out.append((b"x-swiftclaw-budget", f"exceeded; scope={r.exceeded.scope}".encode()))
        if r.action == "capped" and r.exceeded is not None:
            value = f"capped; scope={r.exceeded.scope}; max_tokens={self.output}"
            out.append((b"x-swiftclaw-budget", value.encode()))
        return out


class SpendControl:
    """Limits, budgets and usage of one agent."""

    def __init__(
        self,
        policy: AgentPolicy,
        agent: str,
        metrics: Metrics,
        redis_url: str | None = None,
        replicas: int = 1,
        cache_redis_url: str | None = None,
        fleet: Fleet | None = None,
    ) -> None:
        """``redis_url``: the state Redis (counters, spend). ``cache_redis_url``: the
        evictable one, where the served responses' owners go (None: the state one).
        ``fleet``: the fleet document's budget state, applied before this pod's own."""
        self.policy = policy
        self.fleet = fleet
        self.metrics = metrics
        self.tenants = TenantLabels()
        # A hash tag: all of an agent's keys live in one Redis Cluster slot.
        prefix = "sc:{" + agent + "}"
        self.redis = SpendRedis(redis_url, self._redis_changed) if redis_url else None
        self.limiter = RateLimiter(policy.rate_limits, prefix, self.redis, replicas)
        self.budget = Budget(policy.budget, prefix, self.redis, replicas)
        self.owners = self.redis
        if self.redis is not None and cache_redis_url and cache_redis_url != redis_url:
            self.owners = SpendRedis(
                cache_redis_url,
                down_note="feedback is matched against this replica's responses",
                up_note="feedback is matched against every replica's responses again",
            )
        self.book = UsageBook(prefix, self.redis, self.owners)
        self.cheapest = policy.models.tiers[0]
        metrics.spend_shared.set(1 if self.redis is not None else 0)
        self._gauges_at = 0.0
        self._gauges_task: asyncio.Task[None] | None = None
        self._flush_task: asyncio.Task[None] | None = None

    def _redis_changed(self, up: bool) -> None:
        self.metrics.spend_shared.set(1 if up else 0)
        if up and self.budget.pending:  # the settlements that waited for it
            self._flush_task = asyncio.get_running_loop().create_task(self.budget.flush())

    async def start(self) -> None:
        if self.redis is not None:
            await self.redis.start()
        if self.owners is not self.redis and self.owners is not None:
            await self.owners.start()

    async def close(self) -> None:
        if self._gauges_task is not None:
            await asyncio.gather(self._gauges_task, return_exceptions=True)
        if self.budget.pending and self.redis is not None and self.redis.up:
            await asyncio.gather(self.budget.flush(), return_exceptions=True)
        await self.book.flush()
        if self.redis is not None:
            await self.redis.close()
        if self.owners is not self.redis and self.owners is not None:
            await self.owners.close()

    def who(self, principal: Any, request_user: str | None) -> Identity:
        return identify(principal, request_user, self.policy.auth.user_from_request)

    def output_cap(self, requested: int | None) -> int:
        cap = self.policy.agent.max_output_tokens
        if requested is not None and (cap is None or requested < cap):
            return requested
        return cap or DEFAULT_OUTPUT_TOKENS

    async def admit(
        self, who: Identity, rid: str, route: Route, input_tokens: int, output_tokens: int
    ) -> Admission:
        """Check the rate limits, then reserve the budget; raises a 429 when either refuses.
        The returned route is the one to serve (the cheapest tier when downgraded). With no
        limits or no budgets configured, there is nothing of theirs to check."""
        tokens = input_tokens + output_tokens
        periods = self.budget.periods()  # once a request: the usage day and the caps' periods
        day = periods[0].id
        outcome = UNLIMITED
        if self.limiter.active:
            outcome = await self.limiter.acquire(who, rid, tokens)
            if not outcome.allowed:
                self.metrics.rate_limited.labels(
                    outcome.refused.name if outcome.refused else "", outcome.unit
                ).inc()
                raise self._limit_error(who, outcome, tokens)
        fleet = self.fleet.budget() if self.fleet is not None else "normal"
        if fleet != "normal":
            try:
                route = self._fleet_budget(fleet, route)
            except ApiError:
                await self.limiter.settle(who, rid, -tokens)
                raise
        if not self.budget.active:
            return Admission(
                who, rid, tokens, route, outcome, NO_RESERVATION, day, output_tokens, fleet=fleet
            )
        price_in, price_out = price_bounds(self.policy, route.tier)
        ask = Ask(
            max(
                max_cost_usd(self.policy, route.tier, input_tokens, output_tokens),
                (input_tokens * price_in + output_tokens * price_out) / 1_000_000,
            ),
            max_cost_usd(self.policy, self.cheapest, input_tokens, output_tokens),
            output_tokens,
            price_out / 1_000_000,
        )
        try:
            reservation = await self.budget.reserve(who, ask, periods=periods)
        except BaseException as err:
            await self.limiter.settle(who, rid, -tokens)
            if isinstance(err, BudgetBusy):
                raise ApiError(
                    503,
                    "This agent's budget store is busy and cannot check this request's "
                    "cost against its budget now; retry shortly.",
                    "service_unavailable_error",
                    "budget_busy",
                    headers={"retry-after": "1"},
                ) from None
            raise
        output = output_tokens
        if reservation.exceeded is not None:
            cap = reservation.exceeded
            self.metrics.budget_exceeded.labels(cap.scope, reservation.action).inc()
            if reservation.action == "reject":
                await self.limiter.settle(who, rid, -tokens)
                raise self._budget_error(cap, input_tokens, output_tokens)
            if reservation.action == "downgrade":
                route = route.downgrade(self.cheapest)
            if reservation.action == "capped" and reservation.output is not None:
                output = reservation.output
        return Admission(who, rid, tokens, route, outcome, reservation, day, output, fleet=fleet)

    def _fleet_budget(self, state: str, route: Route) -> Route:
        """The fleet document's budget state on one request: ``downgrade`` (projected over
        budget) serves it on the cheapest tier; ``exceeded`` applies ``budget.onExceeded``
        as this pod's own budget would (reject: a 429; alert: served as asked, counted)."""
        action = "downgrade" if state == "downgrade" else self.policy.budget.on_exceeded
        if state == "exceeded":
            self.metrics.budget_exceeded.labels("fleet", action).inc()
        if action == "downgrade":
            return route.downgrade(self.cheapest, "fleet-budget")
        if action == "reject":
            raise self._fleet_budget_error()
        return route

    def _fleet_budget_error(self) -> ApiError:
        headers = {"x-should-retry": "false"}
        until = self.fleet.view.budget_until if self.fleet is not None else 0.0
        when = "until the operator lifts it"
        if until:
            seconds = max(1, math.ceil(until - time.time()))
            headers["retry-after"] = str(seconds)
            when = f"for {duration(seconds)} at least"
        return ApiError(
            429,
            "This agent's fleet has spent its budget (the operator read the spend ledger; "
            f"budget.onExceeded: reject): requests are refused {when}.",
            "insufficient_quota",
            "insufficient_quota",
            headers=headers,
        )

    async def settle(
        self,
        adm: Admission,
        model: str,
        cost: float,
        tokens_in: int,
        tokens_out: int,
        response_ids: tuple[str, ...] = (),
        cached: int = 0,
        written: int = 0,
    ) -> None:
        """After the answer: correct the token charge, settle the budget, count the usage
        (``cached``, ``written``: the parts of ``tokens_in`` the provider read from and
        wrote to its prompt cache).
        Done once per admission, whatever way the request ended, and safe to cancel: what
        is counted is queued before the first wait, and the round trips of limits and
        budgets are shielded, so callers need no shield (a task each) of their own."""
        if adm.settled:
            return
        adm.settled = True
        used = tokens_in + tokens_out
        who = adm.who
        charge = Charge(
            who,
            adm.route.tier.name,
            model,
            cost,
            tokens_in,
            tokens_out,
            response_ids,
            cached,
            written,
        )
        limit = self.limiter.active and used != adm.tokens
        budget = bool(adm.reservation.caps)
        tenant = self.tenants(who.tenant)
        self.metrics.child(self.metrics.tenant_cost, tenant).inc(cost)
        self.metrics.child(self.metrics.tenant_requests, tenant).inc()
        self._refresh_gauges(adm.day)
        high = self.policy.budget.alert_high_cost_usd
        if high is not None and cost > high:
            self.metrics.high_cost.inc()
            log.warning(
                "one request cost %.4f USD (over budget.alertHighCostUSD %.4f)",
                cost,
                high,
                extra={
                    "tenant": who.tenant,
                    "user": who.user,
                    "tier": adm.route.tier.name,
                    "model": model,
                },
            )
        if self.redis is not None and (limit or budget):
            await asyncio.shield(self._settle_shared(adm, charge, cost, used, limit, budget))
            return
        # In process (nothing here waits), or on Redis with only the usage to count: the
        # charge joins the next group write as record() starts, before it waits.
        states: list[tuple[CapState, bool, bool]] = []
        if limit:
            await self.limiter.settle(who, adm.rid, used - adm.tokens)
        if budget:
            states = await self.budget.settle(adm.reservation, cost)
        await self.book.record(adm.day, charge)
        for state, alerted, full in states:
            self._budget_signals(who, state, alerted, full)

    async def _settle_shared(
        self, adm: Admission, charge: Charge, cost: float, used: int, limit: bool, budget: bool
    ) -> None:
        """The Redis writes of a settlement (only those with something to do), each queued
        before the first wait: together they go in one round trip, and no task each."""
        limits = self.limiter.settle(adm.who, adm.rid, used - adm.tokens) if limit else None
        budgets = self.budget.settle(adm.reservation, cost) if budget else None
        recorded = self.book.record(adm.day, charge)
        if limits is not None:
            await limits
        states = await budgets if budgets is not None else []
        await recorded
        for state, alerted, full in states:
            self._budget_signals(adm.who, state, alerted, full)

    def _refresh_gauges(self, day: str) -> None:
        """Today's active users and requests, read back at most every GAUGE_SECONDS (in the
        background: one PFCOUNT and one HGETALL, off the request's path)."""
        now = time.monotonic()
        if now - self._gauges_at < GAUGE_SECONDS:
            return
        self._gauges_at = now

        async def refresh() -> None:
            counters, users, _ = await self.book.day(day)
            self.metrics.active_users.set(users)
            self.metrics.requests_today.set(counters.get("requests:total", 0))

        self._gauges_task = asyncio.get_running_loop().create_task(refresh())

    def _budget_signals(self, who: Identity, state: CapState, alerted: bool, full: bool) -> None:
        cap = state.cap
        if cap.scope != "user_daily":
            self.metrics.budget_used.labels(cap.scope).set(state.spent / cap.limit_usd)
        whose = {"tenant": who.tenant, "user": who.user} if cap.scope == "user_daily" else {}
        if alerted:
            log.warning(
                "budget alert: %s is %.0f%% spent (alertAtPercent %d)",
                cap.label,
                100 * state.spent / cap.limit_usd,
                self.policy.budget.alert_at_percent,
                extra=whose,
            )
        if full:
            log.warning(
                "budget exhausted: %s is spent until %s; onExceeded=%s",
                cap.label,
                cap.period.resets_at.isoformat(),
                self.policy.budget.on_exceeded,
                extra=whose,
            )

    def _limit_error(self, who: Identity, outcome: Outcome, tokens: int) -> ApiError:
        scope = outcome.refused
        assert scope is not None
        field_name = {"user": "perUser", "tenant": "perTenant", "global": "global"}[scope.name]
        per = "requestsPerMinute" if outcome.unit == REQUESTS else "tokensPerMinute"
        cap = scope.requests if outcome.unit == REQUESTS else scope.tokens
        whose = {
            "user": f"user '{who.user}'",
            "tenant": f"tenant '{who.tenant}'",
            "global": "this agent",
        }[scope.name]
        headers = {k.decode(): v.decode() for k, v in outcome.headers()}
        if outcome.retry_after is None:
            message = (
                f"Request too large for {whose}: about {tokens} tokens (input + max output) "
                f"against a limit of {cap} tokens per minute (rateLimits.{field_name}.{per}). "
                "Send fewer tokens or lower max_tokens."
            )
            headers["x-should-retry"] = "false"
        else:
            wait = outcome.retry_after
            message = (
                f"Rate limit reached for {whose} on {outcome.unit} per minute "
                f"(rateLimits.{field_name}.{per}): limit {cap}. "
                f"Please try again in {duration(wait)}."
            )
            headers["retry-after"] = str(max(1, math.ceil(wait)))
            headers["retry-after-ms"] = str(math.ceil(wait * 1000))
        return ApiError(429, message, outcome.unit, "rate_limit_exceeded", headers=headers)

    def _budget_error(self, cap: Any, input_tokens: int, output_tokens: int) -> ApiError:
        resets = cap.period.resets_at
        seconds = max(1, math.ceil((resets - datetime.now(resets.tzinfo)).total_seconds()))
        least = min(output_tokens, MIN_OUTPUT_TOKENS)
        return ApiError(
            429,
            f"This agent has spent {cap.label} (budget.onExceeded: reject): what is left "
            f"cannot pay for this request's {input_tokens} input tokens and {least} output "
            f"tokens. It resets at {resets.isoformat()} (in {duration(seconds)}).",
            "insufficient_quota",
            "insufficient_quota",
            headers={"retry-after": str(seconds), "x-should-retry": "false"},
        )

    async def usage(self, who: Identity) -> dict[str, Any]:
        """``GET /v1/usage`` for the caller: today's spend, budgets left, limits left."""
        day, month = self.budget.periods()
        (counters, users, shared), (caps, caps_shared), limits = await asyncio.gather(
            self.book.day(day.id, who), self.budget.peek(who), self.limiter.peek(who)
        )
        self.metrics.active_users.set(users)
        self.metrics.requests_today.set(counters.get("requests:total", 0))
        t = who.tenant_key
        budgets = {
            {"daily": "daily", "monthly": "monthly", "user_daily": "perUserDaily"}[s.cap.scope]: {
                "limitUSD": s.cap.limit_usd,
                "spentUSD": round(s.spent, 6),
                "reservedUSD": round(s.reserved, 6),
                "remainingUSD": round(s.remaining, 6),
                "resetsAt": s.cap.period.resets_at.isoformat(),
            }
            for s in caps
        }
        limit_view: dict[str, Any] = {}
        for state in limits.states:
            entry: dict[str, Any] = {}
            for unit, cap, used in (
                ("requests", state.scope.requests, state.requests),
                ("tokens", state.scope.tokens, state.tokens),
            ):
                if cap is not None:
                    reset = (state.oldest_ms + 60_000 - limits.now_ms) / 1000 if used else 0.0
                    entry[unit] = {
                        "limit": cap,
                        "used": used,
                        "remaining": max(0, cap - used),
                        "resetSeconds": round(max(0.0, reset), 3),
                    }
            limit_view[
                {"user": "perUser", "tenant": "perTenant", "global": "global"}[state.scope.name]
            ] = entry
        return {
            "object": "usage",
            "tenant": who.tenant,
            "user": who.user,
            "date": day.id,
            "timeZone": self.policy.budget.time_zone,
            "spend": {
                "agentTodayUSD": round(counters.get("cost:total", 0.0), 6),
                "tenantTodayUSD": round(counters.get(f"cost:tenant:{t}", 0.0), 6),
                "userTodayUSD": round(counters.get(f"cost:user:{who.key}", 0.0), 6),
            },
            "requestsToday": {
                "agent": int(counters.get("requests:total", 0)),
                "tenant": int(counters.get(f"requests:tenant:{t}", 0)),
            },
            # the tenant's tokens today; cachedInput and cacheWrite are parts of input
            "tokensToday": {
                "input": int(counters.get(f"tokens_in:tenant:{t}", 0)),
                "output": int(counters.get(f"tokens_out:tenant:{t}", 0)),
                "cachedInput": int(counters.get(f"tokens_cached:tenant:{t}", 0)),
                "cacheWrite": int(counters.get(f"tokens_cache_write:tenant:{t}", 0)),
            },
            "activeUsersToday": users,
            "budget": {
                "onExceeded": self.policy.budget.on_exceeded,
                # the fleet document's state (normal, downgrade, exceeded), from the ledger
                "fleet": self.fleet.budget() if self.fleet is not None else "normal",
                **budgets,
            },
            "rateLimits": limit_view,
            # False while Redis is away: the figures are this replica's own.
            "shared": shared and caps_shared and limits.shared,
            "month": month.id,
        }

    async def feedback(
        self, who: Identity, rid: str, rating: int | None, completed: bool | None
    ) -> str:
        day = self.budget.periods()[0].id
        fields = []
        if rating is not None:
            fields.append(f"feedback:rating:{rating}")
        if completed is not None:
            fields.append(f"feedback:completed:{str(completed).lower()}")
        result = await self.book.feedback(day, rid, who, fields)
        if result == "ok":
            if rating is not None:
                self.metrics.feedback_ratings.labels(str(rating)).inc()
            if completed is not None:
                self.metrics.task_completion.labels("true" if completed else "false").inc()
        return result
