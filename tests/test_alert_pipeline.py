"""The alert path end to end over real processes: a runtime serving traffic from the
simulator, a real Prometheus scraping its metrics port as the operator's ServiceMonitor
implies with the operator's rules loaded, a real Alertmanager, and a webhook receiver.
The provider fails under load: ``SwiftClawErrorRateHigh`` fires after its ``for`` (5m, as
rendered: the operator has no setting to shorten it), reaches the receiver once with its
runbook link, and resolves once the provider is back.

The threshold is the agent's SLO (``slo.errorRatePercent``); this agent's is 50% so that
the resolution, a 5m rate window draining, comes within a few minutes of the recovery.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from swiftclaw_devtools.processes import free_port, sim_control

from .conftest import Launcher, manifest, openai_provider
from .monitoring import (
    Webhook,
    agent_of,
    alertmanager,
    prometheus,
    rule_file,
    scrape_config,
    until,
)
from .test_cache_exact import post

# Needs Prometheus and Alertmanager (make monitoring, which make test runs first).
pytestmark = pytest.mark.monitoring

ALERT = "SwiftClawErrorRateHigh"


class Traffic:
    """A steady stream of distinct chat requests (no cache hits) on a thread."""

    def __init__(self, send: Callable[[int], int]) -> None:
        self.send = send
        self.statuses: list[int] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for i in itertools.count():
            if self.stop.wait(0.1):
                return
            self.statuses.append(self.send(i))

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(60)


@pytest.mark.timeout(1800)  # the rule's 5m `for`, then a 5m window draining
def test_error_rate_alert_fires_once_with_its_runbook_and_resolves(
    launch: Launcher, tmp_path: Path
) -> None:
    sim = launch.sim()
    doc = manifest(
        [openai_provider("up", sim)],
        [{"name": "t", "model": "up/m", "inputPer1M": 1.0, "outputPer1M": 4.0}],
        slo={"p95LatencyMs": 2000, "errorRatePercent": 50},
    )
    metrics_port = free_port()
    rt = launch.runtime(doc, "--metrics-port", str(metrics_port))
    agent = agent_of(doc)
    rules = rule_file(agent)
    rule = next(r for g in rules["groups"] for r in g["rules"] if r["alert"] == ALERT)
    assert rule["for"] == "5m"

    def send(i: int) -> int:
        body = {"model": "t", "messages": [{"role": "user", "content": f"question {i}"}]}
        return post(rt, body)[0]

    scrape = [scrape_config(agent, f"127.0.0.1:{metrics_port}", interval="1s")]
    with (
        Webhook() as hook,
        alertmanager(tmp_path / "am", hook.url) as am,
        prometheus(tmp_path / "prom", scrape, rules, am.url, evaluation_interval="1s") as prom,
        Traffic(send) as traffic,
    ):
        until(
            "Prometheus scrapes the runtime",
            lambda: prom.query(
                f'swiftclaw_requests_total{{namespace="{agent.namespace}",service="{agent.name}"}}'
            )["data"]["result"],
            120,
        )
        assert not hook.alerts(ALERT)

        sim_control(sim.url, mode="error")  # the provider fails, every call, until told
        until("the alert fires and reaches the receiver", lambda: hook.alerts(ALERT), 900)
        assert 500 <= traffic.statuses[-1] < 600
        [firing] = hook.alerts(ALERT)
        assert firing["status"] == "firing"
        assert firing["annotations"]["runbook_url"] == rule["annotations"]["runbook_url"]
        assert firing["annotations"]["runbook_url"].endswith("/error-rate-high.md")
        assert firing["labels"]["severity"] == "critical"

        sim_control(sim.url, mode="normal")  # the provider is back
        until(
            "the alert resolves and the receiver hears it",
            lambda: [a for a in hook.alerts(ALERT) if a["status"] == "resolved"],
            900,
        )
        assert traffic.statuses[-1] == 200
        delivered = hook.alerts(ALERT)
        assert [a["status"] for a in delivered] == ["firing", "resolved"], delivered
