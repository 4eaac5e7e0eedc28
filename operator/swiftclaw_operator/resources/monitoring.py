"""ServiceMonitor and PrometheusRule (Prometheus operator CRDs), each alert with its runbook."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from swiftclaw_runtime.contract import METRICS_PATH

from .common import Agent, metadata, selector
from .redis import backup_name

COMPONENT = "runtime"


@dataclass(frozen=True)
class Alert:
    name: str
    runbook: str
    expr: str
    for_: str
    severity: str
    summary: str


def alerts(agent: Agent) -> list[Alert]:
    sel = f'namespace="{agent.namespace}",service="{agent.name}"'
    slo = agent.spec.slo
    out = [
        Alert(
            "SwiftClawLatencyAboveSLO",
            "latency-above-slo",
            f"histogram_quantile(0.95, sum by (le) (rate("
            f"swiftclaw_request_duration_seconds_bucket{{{sel}}}[5m]))) > "
            f"{slo.p95_latency_ms / 1000:g}",
            "10m",
            "warning",
            f"p95 latency of {agent.name} is above its SLO of {slo.p95_latency_ms} ms",
        ),
        Alert(
            "SwiftClawErrorRateHigh",
            "error-rate-high",
            f'sum(rate(swiftclaw_requests_total{{{sel},outcome="error"}}[5m])) / '
            f"sum(rate(swiftclaw_requests_total{{{sel}}}[5m])) > "
            f"{slo.error_rate_percent / 100:g}",
            "5m",
            "critical",
            f"more than {slo.error_rate_percent:g}% of {agent.name}'s requests fail",
        ),
        Alert(
            "SwiftClawCostSpike",
            "cost-spike",
            # rate() divides by the whole window: for an agent younger than a day, the
            # day's rate is low by the missing part. Compare only once a day of it exists.
            f"sum(rate(swiftclaw_cost_usd_total{{{sel}}}[1h])) > "
            f"2 * sum(rate(swiftclaw_cost_usd_total{{{sel}}}[1d])) "
            f"and on () count(swiftclaw_cost_usd_total{{{sel}}} offset 1d)",
            "30m",
            "warning",
            f"{agent.name} spends more than twice its daily average rate",
        ),
        Alert(
            "SwiftClawCircuitBreakerOpen",
            "circuit-breaker-open",
            f"max by (provider, model) (swiftclaw_circuit_breaker_state{{{sel}}}) == 1",
            "2m",
            "warning",
            f"a circuit breaker of {agent.name} is open: a provider is failing",
        ),
    ]
    redis = agent.spec.cache.redis
    if redis.mode == "managed" and redis.backup is not None:
        job = f'namespace="{agent.namespace}",cronjob="{backup_name(agent)}"'
        scheduled = f"max(kube_cronjob_status_last_schedule_time{{{job}}})"
        succeeded = f"max(kube_cronjob_status_last_successful_time{{{job}}})"
        out.append(
            Alert(  # from kube-state-metrics: the last run started has not succeeded
                "SwiftClawRedisBackupFailed",
                "redis-backup-restore",
                f"({scheduled} - {succeeded} > 0) or ({scheduled} unless {succeeded})",
                "1h",
                "critical",
                f"the last Redis backup of {agent.name} did not succeed",
            )
        )
    budget = agent.spec.budget
    if budget.daily_usd:
        threshold = budget.daily_usd * budget.alert_at_percent / 100
        out.append(
            Alert(
                "SwiftClawBudgetAlert",
                "budget-alert",
                f"sum(increase(swiftclaw_cost_usd_total{{{sel}}}[1d])) > {threshold:g}",
                "0m",
                "warning",
                f"{agent.name} has spent {budget.alert_at_percent}% of its "
                f"{budget.daily_usd:g} USD daily budget",
            )
        )
    return out


def build_service_monitor(agent: Agent) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": metadata(agent, agent.name, COMPONENT),
        "spec": {
            "selector": {"matchLabels": selector(agent, COMPONENT)},
            "namespaceSelector": {"matchNames": [agent.namespace]},
            "endpoints": [
                {
                    "port": "metrics",
                    "path": METRICS_PATH,
                    "interval": agent.spec.monitoring.scrape_interval,
                }
            ],
        },
    }


def build_prometheus_rule(agent: Agent) -> dict[str, Any]:
    base = agent.settings.runbook_base_url.rstrip("/")
    rules = [
        {
            "alert": a.name,
            "expr": a.expr,
            "for": a.for_,
            "labels": {"severity": a.severity, "agent": agent.name},
            "annotations": {"summary": a.summary, "runbook_url": f"{base}/{a.runbook}.md"},
        }
        for a in alerts(agent)
    ]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": metadata(agent, agent.name, COMPONENT),
        "spec": {"groups": [{"name": f"swiftclaw.{agent.namespace}.{agent.name}", "rules": rules}]},
    }
