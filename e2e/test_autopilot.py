"""The autopilot on the local cluster: real runtime processes (the pod runner), simulated
providers, load from the test. The operator reads the pods, writes status.live and the
fleet ConfigMap, scales through the HPA's bounds (and nothing reverts them: drift
reconciles run every 2 s here), and takes a dead provider's model out of its tier
fleet-wide."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import yaml

from swiftclaw_devtools.processes import Proc, start_sim

from . import autopilot_env
from .autopilot_env import agent_namespace, body, hpa_bounds
from .balancer import Load, PodBalancer, openai_client
from .cluster import Cluster, wait_for
from .kubeapi import KubeAPI
from .operator import Operator, condition, events, wait_condition
from .podrunner import PodRunner

API_KEY = "sk-autopilot-0123456789"
RUNTIME = {"app.kubernetes.io/instance": "agent", "app.kubernetes.io/component": "runtime"}
INTERVAL = 5


# the module's API, pod runner and operator (fixtures)
api, runner, operator = autopilot_env.api, autopilot_env.runner, autopilot_env.operator


@pytest.fixture(scope="module")
def sims(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Proc]]:
    folder = tmp_path_factory.mktemp("sims")
    out = {
        name: start_sim(None, "--latency", "fixed:200", log_path=folder / f"{name}.log")
        for name in ("primary", "backup")
    }
    yield out
    for p in out.values():
        p.stop()


@pytest.fixture(scope="module")
def ns(cluster: Cluster, runner: PodRunner) -> Iterator[str]:
    with agent_namespace(cluster, runner, API_KEY) as name:
        yield name


def agent_doc(sims: dict[str, Proc]) -> dict[str, Any]:
    return {
        "apiVersion": "swiftclaw.dev/v1alpha1",
        "kind": "AgentDeployment",
        "metadata": {"name": "agent"},
        "spec": {
            "providers": [
                {"name": n, "type": "openai-compatible", "baseURL": f"{p.url}/v1"}
                for n, p in sims.items()
            ],
            "models": {
                "tiers": [{"name": "t", "model": "primary/m", "fallbacks": ["backup/m"]}],
                "routing": {"default": "t"},
            },
            "cache": {"redis": {"mode": "none"}},
            "reliability": {
                "timeoutSeconds": 10,
                "circuitBreaker": {"failureThreshold": 3, "windowSeconds": 30, "openSeconds": 60},
            },
            # a low per-pod target: 12 clients at 0.2 s need 6 pods, 1 client needs 2
            "scaling": {
                "minReplicas": 2,
                "maxReplicas": 6,
                "targetConcurrency": 2,
                "scaleDownWindowSeconds": 30,
            },
            "auth": {"apiKeysSecretRef": {"name": "api-keys", "key": "keys.yaml"}},
            "runtime": {"drainSeconds": 1, "graceSeconds": 10},
            "autopilot": {"enabled": True, "intervalSeconds": INTERVAL},
        },
    }


@pytest.fixture(scope="module")
def agent(cluster: Cluster, operator: Operator, ns: str, sims: dict[str, Proc]) -> None:
    doc = agent_doc(sims)
    cluster.apply(yaml.safe_dump({**doc, "metadata": {**doc["metadata"], "namespace": ns}}))
    wait_condition(cluster, ns, "agent", "Ready", "True", "Available", timeout=120)


@pytest.fixture(scope="module")
def balancer(api: KubeAPI, ns: str, agent: None) -> Iterator[PodBalancer]:
    b = PodBalancer(api, ns, RUNTIME, 8080).start()
    b.wait_ready(2)
    yield b
    b.stop()


@pytest.fixture(scope="module")
def client(balancer: PodBalancer, ns: str) -> openai.OpenAI:
    return openai_client(balancer, API_KEY, f"agent.{ns}.svc")


def test_live_figures_fleet_document_and_a_load_step(
    cluster: Cluster, api: KubeAPI, ns: str, balancer: PodBalancer, client: openai.OpenAI
) -> None:
    fleet = wait_for(
        "the fleet ConfigMap",
        lambda: api.get(f"/api/v1/namespaces/{ns}/configmaps/agent-fleet"),
        timeout=30,
    )
    meta = fleet["metadata"]
    assert meta["ownerReferences"][0]["kind"] == "AgentDeployment"
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "swiftclaw-operator"
    doc = json.loads(fleet["data"]["fleet.json"])
    assert doc["excluded"] == [] and doc["generation"] >= 1

    load = Load(client, threads=12, pause=0.0).start()
    try:
        load.wait_requests(200, timeout=120)
        live = wait_for(
            "live figures",
            lambda: (
                (b := body(cluster, ns)).get("status", {}).get("live", {}).get("p95Ms")
                and b["status"]["live"]
            ),
            timeout=6 * INTERVAL,
        )
        assert live["requestsPerSecond"] > 0 and live["successRate"] == 1.0
        # the step: a decision within a few intervals, new pods ready within 90 s
        ready = wait_for(
            "more ready pods", lambda: r if len(r := balancer.ready()) > 2 else None, timeout=90
        )
        assert len(ready) > 2
        st = body(cluster, ns)["status"]["autopilot"]
        assert st["replicas"] > 2 and any(r["decision"] == "ScaleUp" for r in st["recent"])
        # one owner per field: drift reconciles every 2 s rewrite the same bounds
        for _ in range(5):
            time.sleep(2)
            decided = body(cluster, ns)["status"]["autopilot"]["replicas"]
            assert hpa_bounds(api, ns) == (decided, decided)
    finally:
        load.stop()
    assert load.failed == 0, load.errors[:5]
    assert any(e["reason"] == "ScaleUp" for e in events(cluster, ns, "agent"))
    # idle: back down after the 30 s window
    wait_for(
        "the decision back at minReplicas",
        lambda: body(cluster, ns)["status"]["autopilot"]["replicas"] == 2,
        timeout=30 + 12 * INTERVAL,
    )
    assert wait_for("the HPA at 2", lambda: hpa_bounds(api, ns) == (2, 2), timeout=30)
    wait_for("two ready pods", lambda: len(balancer.ready()) == 2, timeout=90)
    ups = [
        r for r in body(cluster, ns)["status"]["autopilot"]["recent"] if r["decision"] == "ScaleUp"
    ]
    assert ups, "the step up is in the recent decisions"


def test_a_dead_provider_fails_over_fleet_wide(
    cluster: Cluster,
    api: KubeAPI,
    ns: str,
    sims: dict[str, Proc],
    balancer: PodBalancer,
    client: openai.OpenAI,
) -> None:
    load = Load(client, threads=4, pause=0.0).start()
    try:
        load.wait_requests(50, timeout=60)
        sims["primary"].kill()
        b = wait_condition(cluster, ns, "agent", "FailoverActive", "True", timeout=12 * INTERVAL)
        assert "primary/m" in condition(b, "FailoverActive")["message"]
        fleet = api.get(f"/api/v1/namespaces/{ns}/configmaps/agent-fleet")
        excluded = json.loads(fleet["data"]["fleet.json"])["excluded"]
        assert [(e["tier"], e["model"]) for e in excluded] == [("t", "primary/m")]
        assert any(e["reason"] == "FleetFailover" for e in events(cluster, ns, "agent"))
    finally:
        load.stop()
    # the pods fell back on their own meanwhile (their breakers): no request failed
    assert load.failed == 0, load.errors[:5]
