"""The autopilot holds the budget on the local cluster (issue 18, Acceptance): spend from
the pods' shared ledger (a managed Redis), projected past the daily cap -> the fleet is
downgraded to the cheapest tier within two intervals (the fleet document, the status, an
Event), and at 100 % ``BudgetExceeded`` with the overshoot reported."""

from __future__ import annotations

import datetime
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from swiftclaw_devtools.processes import Proc, start_sim
from swiftclaw_runtime import contract

from . import autopilot_env
from .autopilot_env import agent_namespace, body
from .balancer import Load, PodBalancer, openai_client
from .cluster import Cluster, wait_for
from .kubeapi import ApiError, KubeAPI
from .operator import condition, events, wait_condition
from .podrunner import PodRunner

API_KEY = "sk-autopilot-budget-0123456789"
RUNTIME = {"app.kubernetes.io/instance": "agent", "app.kubernetes.io/component": "runtime"}
INTERVAL = 5
# about 50 tokens a request (the simulator's answers): $0.05 on tier t, $0.015 on the
# cheapest; 4 clients pausing 0.4 s spend about $0.4 a second on t: the projection passes
# the cap at once, the downgrade comes with $4-8 spent, and 100 % a minute after
CAP_USD = 12.0

# the module's API, pod runner and operator (fixtures)
api, runner, operator = autopilot_env.api, autopilot_env.runner, autopilot_env.operator


def agent_doc(sim: Proc) -> dict[str, Any]:
    return {
        "apiVersion": "swiftclaw.dev/v1alpha1",
        "kind": "AgentDeployment",
        "metadata": {"name": "agent"},
        "spec": {
            "providers": [{"name": "sim", "type": "openai-compatible", "baseURL": f"{sim.url}/v1"}],
            "models": {
                # the cheapest tier first: a downgrade serves every request with it
                "tiers": [
                    {"name": "cheap", "model": "sim/small", "inputPer1M": 300, "outputPer1M": 300},
                    {"name": "t", "model": "sim/big", "inputPer1M": 1000, "outputPer1M": 1000},
                ],
                "routing": {"default": "t"},
            },
            "cache": {"redis": {"mode": "managed", "storage": "1Gi"}},
            "reliability": {"timeoutSeconds": 10},
            "scaling": {"minReplicas": 2, "maxReplicas": 2, "targetConcurrency": 32},
            "budget": {
                "dailyUSD": CAP_USD,
                "onProjectedExceed": "downgrade",
                # served as asked at 100 %: the spend goes past the cap (reject and
                # downgrade stop it short of the cap, see the report)
                "onExceeded": "alert",
                "timeZone": "UTC",
            },
            "auth": {"apiKeysSecretRef": {"name": "api-keys", "key": "keys.yaml"}},
            "runtime": {"drainSeconds": 1, "graceSeconds": 10},
            "autopilot": {"enabled": True, "intervalSeconds": INTERVAL},
        },
    }


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    folder = tmp_path_factory.mktemp("sims")
    p = start_sim(None, "--latency", "fixed:100", log_path=folder / "sim.log")
    yield p
    p.stop()


def used_ratio(http: httpx.Client, ip: str) -> float | None:
    try:
        r = http.get(f"http://{ip}:{contract.METRICS_PORT}{contract.METRICS_PATH}")
    except httpx.HTTPError:
        return None
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            if s.name == "swiftclaw_budget_used_ratio" and s.labels.get("scope") == "daily":
                return float(s.value)
    return None


def tier_requests(http: httpx.Client, ip: str) -> dict[str, float]:
    r = http.get(f"http://{ip}:{contract.METRICS_PORT}{contract.METRICS_PATH}")
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            if s.name == "swiftclaw_requests_total":
                out[s.labels["tier"]] = out.get(s.labels["tier"], 0.0) + s.value
    return out


def iso(t: str) -> float:
    return (
        datetime.datetime.strptime(t, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC).timestamp()
    )


def test_projected_excess_downgrades_the_fleet_then_exceeded(
    cluster: Cluster, api: KubeAPI, runner: PodRunner, operator: Any, sim: Proc
) -> None:
    started = time.monotonic()
    with agent_namespace(cluster, runner, API_KEY) as ns:
        doc = agent_doc(sim)
        cluster.apply(yaml.safe_dump({**doc, "metadata": {**doc["metadata"], "namespace": ns}}))
        wait_condition(cluster, ns, "agent", "Ready", "True", "Available", timeout=180)
        balancer = PodBalancer(api, ns, RUNTIME, 8080).start()
        load: Load | None = None
        try:
            ips = balancer.wait_ready(2, timeout=120)
            client = openai_client(balancer, API_KEY, f"agent.{ns}.svc")
            load = Load(client, threads=4, pause=0.4).start()
            with httpx.Client(timeout=2) as http:
                wait_for(
                    "spend in the ledger",
                    lambda: any((used_ratio(http, ip) or 0) > 0 for ip in ips),
                    timeout=60,
                    interval=0.2,
                )
                visible = time.time()
                # the downgrade: in the fleet document, the recent decisions and an Event
                fleet_doc = wait_for(
                    "the fleet document's downgrade",
                    lambda: (
                        (d := fleet_document(api, ns)).get("budget", {}).get("state") == "downgrade"
                        and d
                    ),
                    timeout=12 * INTERVAL,
                    interval=0.2,
                )
                seen = time.time()
                recent = body(cluster, ns)["status"]["autopilot"]["recent"]
                decided = iso(next(r["time"] for r in recent if r["decision"] == "BudgetDowngrade"))
                live = body(cluster, ns)["status"]["live"]
                assert live["projectedUSD"] > CAP_USD, live
                # every pod then serves on the cheapest tier (once its volume is updated)
                before = {ip: tier_requests(http, ip) for ip in ips}
                wait_for(
                    "every pod serving on the cheapest tier",
                    lambda: all(
                        tier_requests(http, ip).get("cheap", 0) > before[ip].get("cheap", 0) + 5
                        for ip in ips
                    ),
                    timeout=60,
                )
            # 100 %: BudgetExceeded and its overshoot
            try:
                b = wait_condition(
                    cluster, ns, "agent", "BudgetExceeded", "True", "BudgetExceeded", timeout=150
                )
            except AssertionError as err:
                status = body(cluster, ns).get("status", {})
                raise AssertionError(f"{err}; live {status.get('live')}") from None
            exceeded = time.time()
            message = condition(b, "BudgetExceeded")["message"]
            m = re.search(
                r"\$([0-9.]+) of \$([0-9.]+) daily spent \(overshoot \$([0-9.]+)\)", message
            )
            assert m, message
            spent, cap, overshoot = (float(g) for g in m.groups())
            assert cap == CAP_USD and spent >= cap
            assert abs(overshoot - (spent - cap)) <= 0.01, message
            assert fleet_document(api, ns)["budget"]["state"] == "exceeded"
        finally:
            if load is not None:
                load.stop()
            balancer.stop()
        reasons = [e["reason"] for e in events(cluster, ns, "agent")]
    print(
        f"budget: spend visible, downgrade seen {seen - visible:.1f}s later (decided at "
        f"{decided - visible:+.0f}s, to the second); fleet document {fleet_doc['budget']}; "
        f"exceeded {exceeded - visible:.0f}s after: {message}; "
        f"{load.ok if load else 0} ok, {load.failed if load else 0} failed; "
        f"scenario {time.monotonic() - started:.0f}s"
    )
    # within two intervals of the spend showing (the decision's second counted whole)
    assert decided + 1 - visible <= 2 * INTERVAL, (decided, visible)
    assert reasons.count("BudgetDowngrade") == 1 and reasons.count("BudgetExceeded") == 1
    assert load is not None and load.failed == 0, load.errors[:5]


def fleet_document(api: KubeAPI, ns: str) -> dict[str, Any]:
    """The fleet ConfigMap's document; {} before the operator wrote it."""
    try:
        cm = api.get(f"/api/v1/namespaces/{ns}/configmaps/agent-fleet")
    except ApiError as err:
        if err.status == 404:
            return {}
        raise
    return dict(json.loads(cm["data"][contract.FLEET_FILE]))
