"""Prometheus metrics of one runtime process, in a registry of its own.

Buckets run from 5 ms to 60 s, dense enough around 0.1-5 s that p50/p95/p99 read from
``histogram_quantile`` are close to the truth for interactive agents.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from . import contract

LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    3.0,
    5.0,
    7.5,
    10.0,
    15.0,
    20.0,
    30.0,
    45.0,
    60.0,
)

# A request's whole time, finer: the operator reads p95 from these counts
# (status.live), and a quantile read from buckets is off by up to a bucket's width. Steps
# of at most 25 % (from 0.1 s to 30 s) keep it within 6 % for LLM-like latency (lognormal,
# 80 ms to 6 s median); LATENCY_BUCKETS' steps of up to 67 % put it 18 % off.
REQUEST_BUCKETS = (
    *(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.175, 0.2, 0.25, 0.3, 0.35),
    *(0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0),
    *(5.0, 6.0, 7.0, 8.5, 10.0, 12.5, 15.0, 17.5, 20.0, 25.0, 30.0, 45.0, 60.0),
)

# Cache lookups and embeddings take micro- to milliseconds.
FAST_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """Every metric the runtime exports; one instance per app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "swiftclaw_requests",
            "Chat completion requests by tier, model and outcome.",
            ["tier", "model", "outcome"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "swiftclaw_request_duration_seconds",
            "End-to-end request latency.",
            ["tier", "stream"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.upstream_seconds = Histogram(
            "swiftclaw_upstream_duration_seconds",
            "Latency of each call to a provider.",
            ["provider", "model", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft_seconds = Histogram(
            "swiftclaw_time_to_first_token_seconds",
            "Time until the first streamed token.",
            ["tier"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            contract.IN_FLIGHT_METRIC,
            "Requests being served now.",
            registry=r,
        )
        self.retries = Counter(
            "swiftclaw_upstream_retries",
            "Retries of a provider call, by the failure retried.",
            ["provider", "model", "reason"],
            registry=r,
        )
        self.fallbacks = Counter(
            "swiftclaw_fallbacks",
            "Requests served by a fallback instead of the tier's model.",
            ["tier", "model"],
            registry=r,
        )
        self.breaker_state = Gauge(
            "swiftclaw_circuit_breaker_state",
            "Circuit breaker per provider and model: 0 closed, 1 open, 2 half-open.",
            ["provider", "model"],
            registry=r,
        )
        self.tokens = Counter(
            "swiftclaw_tokens",
            "Tokens sent to and received from models, by direction: in (every input token), "
            "out, and the parts of in that the provider read from its prompt cache "
            "(cache_read) or wrote to it (cache_write).",
            ["tier", "model", "direction"],
            registry=r,
        )
        self.affinity = Counter(
            "swiftclaw_affinity",
            "Conversation affinity per request by tier: new, kept, or broken with the "
            "reason (tier_changed, circuit_open, rate_limited, failed, unsupported, "
            "fleet_excluded).",
            ["tier", "outcome", "reason"],
            registry=r,
        )
        self.cost = Counter(
            "swiftclaw_cost_usd",
            "Spend on model calls in USD, from the manifest's prices.",
            ["tier", "model"],
            registry=r,
        )
        self.errors = Counter(
            "swiftclaw_errors",
            "Errors by class (client_error, auth, upstream, timeout, ...).",
            ["error_class"],
            registry=r,
        )

        self.connections_in_use = Gauge(
            "swiftclaw_upstream_connections_in_use",
            "Connection slots held per provider (at most its maxConnections).",
            ["provider"],
            registry=r,
        )
        self.connections_open = Gauge(
            "swiftclaw_upstream_connections_open",
            "Connections open per provider, in use or idle.",
            ["provider"],
            registry=r,
        )
        self.asyncio_tasks = Gauge(
            "swiftclaw_asyncio_tasks",
            "Tasks alive in the event loop (a leak shows as steady growth).",
            registry=r,
        )
        self.asyncio_tasks.set_function(_task_count)
        self.rejected = Counter(
            "swiftclaw_requests_rejected",
            "Requests and connections refused before any work: overload (concurrency "
            "bound), memory (body bytes bound), body timeout, and at the HTTP edge "
            "connections, header_timeout, header_too_large, write_timeout.",
            ["reason"],
            registry=r,
        )
        self.client_connections = Gauge(
            "swiftclaw_client_connections",
            "Client connections open on the service port.",
            registry=r,
        )
        self.retry_budget_exhausted = Counter(
            "swiftclaw_retry_budget_exhausted",
            "Retries not made because the tier's retry budget was spent.",
            ["tier"],
            registry=r,
        )
        self.cache_lookups = Counter(
            "swiftclaw_cache_lookups",
            "Cache lookups by kind (exact, semantic, stale: the degraded answer on an "
            "outage), tier and result (hit, miss).",
            ["kind", "tier", "result"],
            registry=r,
        )
        self.cache_bypassed = Counter(
            "swiftclaw_cache_bypassed",
            "Requests that did not use the cache, by reason (not_cacheable, no_cache, "
            "no_store, unavailable: the backend was down, busy: no backend connection came free "
            "before the request's deadline).",
            ["reason"],
            registry=r,
        )
        self.cache_saved_usd = Counter(
            "swiftclaw_cache_saved_usd",
            "The price of the model calls that cache hits avoided, from the tier's prices and "
            "the cached usage.",
            ["kind", "tier"],
            registry=r,
        )
        self.cache_stores = Counter(
            "swiftclaw_cache_stores",
            "Answers offered to the cache, by kind and result (stored, too_large, error).",
            ["kind", "result"],
            registry=r,
        )
        self.cache_rejected = Counter(
            "swiftclaw_cache_semantic_rejected",
            "Semantic candidates above the threshold that verification refused, by reason "
            "(and questions never answered by meaning, by kind: health, medication, "
            "chemical, electrical, legal, financial, security, hazard, instruction, payload).",
            ["reason"],
            registry=r,
        )
        self.cache_shadow = Counter(
            "swiftclaw_cache_semantic_shadow",
            "Would-be semantic hits checked against a fresh answer (shadow mode, and the "
            "audits of serve mode), by tier and whether the cached answer agreed.",
            ["tier", "agrees"],
            registry=r,
        )
        self.cache_coalesced = Counter(
            "swiftclaw_cache_coalesced",
            "Requests that waited for an identical request's upstream call instead of "
            "making their own (single flight), by where the other call ran (process, redis).",
            ["scope"],
            registry=r,
        )
        self.cache_errors = Counter(
            "swiftclaw_cache_backend_errors",
            "Failed calls to the cache backend (Redis), by operation.",
            ["operation"],
            registry=r,
        )
        self.cache_up = Gauge(
            "swiftclaw_cache_backend_up",
            "1 while the cache backend answers, 0 while requests bypass it.",
            registry=r,
        )
        self.cache_lookup_seconds = Histogram(
            "swiftclaw_cache_lookup_duration_seconds",
            "Time of a cache lookup by kind (semantic includes embedding and verification).",
            ["kind"],
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.embedding_seconds = Histogram(
            "swiftclaw_cache_embedding_duration_seconds",
            "Time to embed a question for the semantic cache.",
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.cache_entries = Gauge(
            "swiftclaw_cache_entries",
            "Entries in the in-process cache by kind: exact and semantic (redis.mode none), "
            "exact_local (the exact answers a replica keeps beside Redis).",
            ["kind"],
            registry=r,
        )
        self.cache_bytes = Gauge(
            "swiftclaw_cache_bytes",
            "Bytes of keys, answers and vectors in the in-process cache, by kind.",
            ["kind"],
            registry=r,
        )
        self.unsupported_skips = Counter(
            "swiftclaw_unsupported_skips",
            "Requests a model was skipped for because its API cannot express them.",
            ["tier", "model"],
            registry=r,
        )
        # --- routing, spend control, context, feedback -------------------------------
        self.routing_decisions = Counter(
            "swiftclaw_routing_decisions",
            "Routing decisions by tier and reason (a classifier feature, explicit, fixed, ...).",
            ["tier", "reason"],
            registry=r,
        )
        self.rate_limited = Counter(
            "swiftclaw_rate_limited",
            "Requests refused by a rate limit, by scope (user, tenant, global) and unit.",
            ["scope", "unit"],
            registry=r,
        )
        self.budget_used = Gauge(
            "swiftclaw_budget_used_ratio",
            "Share of the agent's budget spent in the current period (daily, monthly).",
            ["scope"],
            registry=r,
        )
        self.budget_exceeded = Counter(
            "swiftclaw_budget_exceeded",
            "Requests that found a budget spent, by scope and the action taken.",
            ["scope", "action"],
            registry=r,
        )
        self.high_cost = Counter(
            "swiftclaw_high_cost_requests",
            "Requests costing more than budget.alertHighCostUSD.",
            registry=r,
        )
        self.tenant_requests = Counter(
            "swiftclaw_tenant_requests",
            "Admitted requests by tenant (the first 50 tenants seen, then 'other').",
            ["tenant"],
            registry=r,
        )
        self.tenant_cost = Counter(
            "swiftclaw_tenant_cost_usd",
            "Spend by tenant in USD (the first 50 tenants seen, then 'other').",
            ["tenant"],
            registry=r,
        )
        self.spend_shared = Gauge(
            "swiftclaw_spend_redis_up",
            "1 while limits and budgets are counted in the shared Redis, 0 when per replica.",
            registry=r,
        )
        self.active_users = Gauge(
            "swiftclaw_active_users_today",
            "Distinct users today (HyperLogLog in Redis; this replica's own without Redis).",
            registry=r,
        )
        self.requests_today = Gauge(
            "swiftclaw_requests_today",
            "Requests today for the whole agent (from the shared daily counters).",
            registry=r,
        )
        self.context_failures = Counter(
            "swiftclaw_context_failures",
            "Context source fetches that failed or timed out (the request went on without).",
            ["source"],
            registry=r,
        )
        self.context_seconds = Histogram(
            "swiftclaw_context_fetch_duration_seconds",
            "Time spent fetching all context sources of a request (in parallel).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.trimmed_tokens = Counter(
            "swiftclaw_prompt_tokens_trimmed",
            "Estimated input tokens saved by dropping the oldest turns to fit maxInputTokens.",
            registry=r,
        )
        self.feedback_ratings = Counter(
            "swiftclaw_feedback_ratings",
            "Feedback ratings (1-5) received through POST /v1/feedback.",
            ["rating"],
            registry=r,
        )
        self.task_completion = Counter(
            "swiftclaw_feedback_task_completed",
            "Feedback saying whether the task was completed.",
            ["completed"],
            registry=r,
        )
        # --- the fleet document and the files re-read while running ------------------
        self.fleet_generation = Gauge(
            "swiftclaw_fleet_overrides_generation",
            "Generation of the fleet document this pod applies (0: none).",
            registry=r,
        )
        self.fleet_excluded = Gauge(
            "swiftclaw_fleet_excluded",
            "1 for each model the fleet document takes out of a tier's chain now.",
            ["tier", "model", "cause"],
            registry=r,
        )
        self.fleet_budget_state = Gauge(
            "swiftclaw_fleet_budget_state",
            "The fleet document's budget state: 0 normal, 1 downgrade, 2 exceeded.",
            registry=r,
        )
        self.fleet_skips = Counter(
            "swiftclaw_fleet_skips",
            "Models skipped in a tier's chain because the fleet document took them out.",
            ["tier", "model"],
            registry=r,
        )
        self.reloads = Counter(
            "swiftclaw_reloads",
            "Re-reads of a changed file (fleet, api_keys, provider_key) by outcome "
            "(applied, invalid, stale, removed).",
            ["file", "outcome"],
            registry=r,
        )
        self.loop_lag = Histogram(
            "swiftclaw_event_loop_lag_seconds",
            "How late the event loop ran a timer, sampled every half second by one task "
            "(the loop's backlog: what the operator's autopilot scales on besides CPU).",
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.retry_after = Gauge(
            "swiftclaw_upstream_retry_after_seconds",
            "Seconds this pod still waits before calling the provider again, from the "
            "Retry-After of its last 429 (capped by reliability.retry.maxRetryAfterSeconds); "
            "0 when it may call (the operator keeps a rate-limited model out at least this long).",
            ["provider"],
            registry=r,
        )
        # process_resident_memory_bytes, process_open_fds, ...: what a soak watches.
        ProcessCollector(registry=r)
        # python_gc_objects_collected_total: reference cycles a request path leaves behind
        GCCollector(registry=r)

        # Label children looked up once per combination: .labels() costs a lock and a dict
        # lookup per call, and these run on every request. Cardinality is bounded by config.
        self._request_children: dict[tuple[str, str, str, bool], tuple[Any, ...]] = {}
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}

    def child(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, looked up once per combination (for the per-request
        paths; the label values there come from the config, so the memo stays small)."""
        key = (metric, values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found

    def record_request(
        self,
        tier: str,
        model: str,
        outcome: str,
        stream: bool,
        seconds: float,
        tokens_in: int,
        tokens_out: int,
        cost_usd: float = 0.0,
        cached: int = 0,
        written: int = 0,
    ) -> None:
        """One finished chat request: count, latency, tokens and cost (``cached`` and
        ``written``: the input tokens read from and written to the provider's prompt cache)."""
        key = (tier, model, outcome, stream)
        children = self._request_children.get(key)
        if children is None:
            children = (
                self.requests.labels(tier, model, outcome),
                self.request_seconds.labels(tier, "true" if stream else "false"),
                self.tokens.labels(tier, model, "in"),
                self.tokens.labels(tier, model, "out"),
                self.cost.labels(tier, model),
            )
            self._request_children[key] = children
        count, latency, t_in, t_out, cost = children
        count.inc()
        latency.observe(seconds)
        if tokens_in:
            t_in.inc(tokens_in)
        if tokens_out:
            t_out.inc(tokens_out)
        if cost_usd:
            cost.inc(cost_usd)
        if cached:
            self.child(self.tokens, tier, model, "cache_read").inc(cached)
        if written:
            self.child(self.tokens, tier, model, "cache_write").inc(written)

    def record_upstream(self, provider: str, model: str, outcome: str, seconds: float) -> None:
        """One call to a provider."""
        self.child(self.upstream_seconds, provider, model, outcome).observe(seconds)

    def track_connections(self, provider: str, read: Callable[[], tuple[int, int]]) -> None:
        """Export a provider's connection figures, read when metrics are scraped."""
        self.connections_in_use.labels(provider).set_function(lambda: read()[0])
        self.connections_open.labels(provider).set_function(lambda: read()[1])

    def track_retry_after(self, provider: str, read: Callable[[], float]) -> None:
        """Export a provider's remaining Retry-After wait, read when metrics are scraped."""
        self.retry_after.labels(provider).set_function(read)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _task_count() -> float:
    try:
        return float(len(asyncio.all_tasks()))
    except RuntimeError:  # rendered outside the event loop
        return 0.0
