"""The chart's Grafana dashboard against a real Prometheus: after real traffic through a
runtime (cache hits, a provider failing under load, fallbacks, an open breaker, errors,
spend against a budget, a fleet document taking a model out), every panel's every query
parses and returns data, except the few on series that cannot exist without a cluster,
listed below with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from swiftclaw_devtools.processes import Proc, free_port, sim_control
from swiftclaw_operator.resources import Agent
from swiftclaw_runtime import contract

from .conftest import Launcher, manifest, openai_provider
from .monitoring import REPO, Prometheus, agent_of, prometheus, scrape_config, until
from .test_cache_exact import post
from .test_fleet_reload import fleet_doc, out

# Needs Prometheus and Alertmanager (make monitoring, which make test runs first).
pytestmark = pytest.mark.monitoring

DASHBOARD = REPO / "charts" / "swiftclaw" / "dashboards" / "swiftclaw.json"
# Series a local runtime cannot have: (panel title, legend) -> why.
NO_LOCAL_SERIES = {
    ("Replicas", "available"): "kube-state-metrics' Deployment series: needs a cluster",
    ("Replicas", "desired (HPA)"): "kube-state-metrics' HPA series: needs a cluster",
}


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(panel title, legend, expression) of every query of every panel."""
    return [
        (p["title"], t["legendFormat"], t["expr"])
        for p in dashboard["panels"]
        for t in p.get("targets", [])
    ]


def resolve(expr: str, namespace: str, agent: str) -> str:
    """The expression as Grafana sends it: its variables replaced."""
    for var, value in (
        ("$__rate_interval", "1m"),
        ("$namespace", namespace),
        ("$agent", agent),
    ):
        expr = expr.replace(var, value)
    return expr


DASH = json.loads(DASHBOARD.read_text())
QUERIES = panel_queries(DASH)


def test_the_dashboard_has_every_panel_the_issue_asks_for() -> None:
    titles = {p["title"] for p in DASH["panels"]}
    assert {
        "Latency percentiles (end to end)",
        "Gateway's own time per request",
        "Error rate",
        "Requests by tier and model",
        "Fallbacks",
        "Circuit breakers",
        "Cache hit rate",
        "Money saved by the cache",
        "Spend",
        "Budget used",
        "Routing mix",
        "Replicas",
        "Fleet decisions the pods apply",
    } <= titles
    assert len({p["id"] for p in DASH["panels"]}) == len(DASH["panels"])
    assert set(NO_LOCAL_SERIES) <= {(t, legend) for t, legend, _ in QUERIES}


@pytest.fixture(scope="module")
def scraped(
    module_launch: Launcher, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Prometheus, Agent]]:
    """A runtime after traffic of every kind, and a Prometheus that has scraped it."""
    a, b = module_launch.sim(), module_launch.sim()
    doc = manifest(
        [openai_provider("a", a), openai_provider("b", b)],
        [
            {
                "name": "simple",
                "model": "a/small",
                "inputPer1M": 1.0,
                "outputPer1M": 4.0,
                "fallbacks": ["b/backup"],
            },
            {"name": "complex", "model": "a/big", "inputPer1M": 5.0, "outputPer1M": 20.0},
            {
                "name": "spare",
                "model": "a/spare",
                "inputPer1M": 1.0,
                "outputPer1M": 4.0,
                "fallbacks": ["b/backup"],
            },
        ],
        budget={"dailyUSD": 100, "alertAtPercent": 80},
        cache={"exact": {"enabled": True, "ttlSeconds": 600}, "redis": {"mode": "none"}},
    )
    folder = tmp_path_factory.mktemp("dashboard")
    fleet = folder / "fleet.json"
    fleet.write_bytes(fleet_doc(1, [out("spare", "a/spare")]))
    metrics_port = free_port()
    rt = module_launch.runtime(
        doc, "--metrics-port", str(metrics_port), env={contract.FLEET_FILE_ENV: str(fleet)}
    )
    agent = agent_of(doc)
    scrape = [scrape_config(agent, f"127.0.0.1:{metrics_port}", interval="1s")]
    with prometheus(folder / "prom", scrape) as prom:
        sent = traffic(rt, a)
        sel = f'namespace="{agent.namespace}",service="{agent.name}"'

        def scraped_at() -> float | None:
            """When the last scrape that saw every request sent was, if one did."""
            total = prom.query(f"sum(swiftclaw_requests_total{{{sel}}})")["data"]["result"]
            if not total or float(total[0]["value"][1]) != sent:
                return None
            return float(prom.query(f"timestamp(up{{{sel}}})")["data"]["result"][0]["value"][1])

        first = until("Prometheus scrapes the traffic", scraped_at, 120)
        # a second scrape after it: every series made by the traffic has two points to rate
        until("a second scrape", lambda: (scraped_at() or 0) > first, 120)
        yield prom, agent


def traffic(rt: Proc, a: Proc) -> int:
    """Requests of every kind; returns how many were sent."""

    def chat(model: str, content: str) -> int:
        body = {"model": model, "messages": [{"role": "user", "content": content}]}
        return post(rt, {**body, "temperature": 0})[0]  # temperature 0: cacheable

    for i in range(10):
        assert chat("simple", f"simple {i}") == 200
        assert chat("simple", "the same question") == 200  # cache hits after the first
        assert chat("complex", f"complex {i}") == 200
        assert chat("spare", f"spare {i}") == 200  # a/spare is out: served by b/backup
    sim_control(a.url, mode="error")  # provider a fails: fallbacks, its breaker opens
    statuses = [chat("simple", f"outage {i}") for i in range(10)]
    statuses += [chat("complex", f"outage {i}") for i in range(5)]  # no fallback: errors
    assert statuses[:10] == [200] * 10 and all(s >= 500 for s in statuses[10:]), statuses
    sim_control(a.url, mode="normal")
    return 4 * 10 + len(statuses)


@pytest.mark.parametrize(
    ("title", "legend", "expr"), QUERIES, ids=[f"{t}/{q}" for t, q, _ in QUERIES]
)
def test_every_panel_query_returns_data(
    title: str, legend: str, expr: str, scraped: tuple[Prometheus, Agent]
) -> None:
    prom, agent = scraped
    got = prom.query(resolve(expr, agent.namespace, agent.name))
    assert got["status"] == "success", got  # a query that does not parse fails here
    if (title, legend) in NO_LOCAL_SERIES:
        return
    assert got["data"]["result"], f"{title} / {legend}: no data for {expr}"
