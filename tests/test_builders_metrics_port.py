"""The runtime pods' metrics port and NetworkPolicy, and the memory limit they are told
(issue 20, items 12 and 8), from the operator's pure builders; and the runtime serving
/metrics on that port only, over real HTTP."""

from __future__ import annotations

import urllib.error
import urllib.request

from swiftclaw_devtools.processes import free_port
from swiftclaw_operator.resources import Settings
from swiftclaw_operator.settings import OperatorConfig
from swiftclaw_runtime import contract
from swiftclaw_runtime.cli import build_parser

from .conftest import Launcher
from .test_builders import SETTINGS, base_spec, build
from .test_connection_lifecycle import one_upstream
from .test_resilience_live import client


def test_metrics_probes_and_scrape_use_the_metrics_port() -> None:
    kids = build(base_spec())
    pod = kids["Deployment/agent"]["spec"]["template"]["spec"]
    c = pod["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": contract.RUNTIME_PORT, "metrics": contract.METRICS_PORT}
    args = build_parser().parse_args(c["args"])
    assert args.metrics_port == contract.METRICS_PORT  # the runtime serves it there only
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"]["port"] == "metrics", probe
    monitor = kids["ServiceMonitor/agent"]["spec"]
    assert [e["port"] for e in monitor["endpoints"]] == ["metrics"]
    service = kids["Service/agent"]["spec"]
    assert {p["name"]: p["targetPort"] for p in service["ports"]} == {
        "http": "http",
        "metrics": "metrics",
    }


def test_the_runtime_pods_network_policy_admits_only_prometheus_to_metrics() -> None:
    kids = build(base_spec(), Settings(**{**SETTINGS.__dict__, "prometheus_namespace": "prom"}))
    np = kids["NetworkPolicy/agent"]
    deployment = kids["Deployment/agent"]
    assert np["spec"]["podSelector"]["matchLabels"].items() <= (
        deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    assert np["spec"]["policyTypes"] == ["Ingress"]
    rules = np["spec"]["ingress"]
    # the client port from anywhere; the metrics port from the Prometheus namespace only
    assert rules[0] == {"ports": [{"protocol": "TCP", "port": contract.RUNTIME_PORT}]}
    assert rules[1] == {
        "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "prom"}}}],
        "ports": [{"protocol": "TCP", "port": contract.METRICS_PORT}],
    }
    assert len(rules) == 2
    # no namespace configured: no one scrapes (the rule is absent, not open)
    closed = build(base_spec(), Settings(**{**SETTINGS.__dict__, "prometheus_namespace": ""}))
    assert closed["NetworkPolicy/agent"]["spec"]["ingress"] == rules[:1]


def test_the_prometheus_namespace_comes_from_the_operator_environment() -> None:
    config = OperatorConfig.from_env({"SWIFTCLAW_PROMETHEUS_NAMESPACE": "observability"})
    assert config.builder_settings(True).prometheus_namespace == "observability"
    assert OperatorConfig.from_env({}).builder_settings(True).prometheus_namespace == "monitoring"


def test_the_runtime_is_told_its_memory_limit() -> None:
    c = build(base_spec())["Deployment/agent"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in c["env"]}
    ref = env[contract.MEMORY_LIMIT_ENV]["valueFrom"]["resourceFieldRef"]
    assert ref == {"containerName": c["name"], "resource": "limits.memory", "divisor": "1"}


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as err:
        return err.code


def test_with_a_metrics_port_the_service_port_does_not_serve_metrics(launch: Launcher) -> None:
    path = contract.METRICS_PATH
    port = free_port()
    _, rt = one_upstream(launch, contract.METRICS_PORT_FLAG, str(port), sim_args=())
    admin = f"http://127.0.0.1:{port}"
    assert get(f"{rt.url}{path}") == 404
    assert get(f"{admin}{path}") == 200
    assert get(f"{admin}{contract.HEALTH_PATH}") == 200
    assert get(f"{admin}{contract.READY_PATH}") == 200
    assert get(f"{admin}/v1/models") == 404  # the API is not on the metrics port
    reply = client(rt).chat.completions.create(
        model="t", messages=[{"role": "user", "content": "x"}]
    )
    assert reply.choices[0].message.content
    with urllib.request.urlopen(f"{admin}{path}", timeout=10) as r:
        assert b"swiftclaw_requests_total" in r.read()


def test_with_the_autopilot_the_operator_pods_read_the_metrics_port() -> None:
    settings = Settings(**{**SETTINGS.__dict__, "operator_namespace": "swiftclaw-system"})
    spec = base_spec()
    spec["autopilot"] = {"enabled": True}
    rules = build(spec, settings)["NetworkPolicy/agent"]["spec"]["ingress"]
    operator = [r for r in rules if r.get("from") and "podSelector" in r["from"][0]]
    assert operator == [
        {
            "from": [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "swiftclaw-system"}
                    },
                    "podSelector": {
                        "matchLabels": {"app.kubernetes.io/name": "swiftclaw-operator"}
                    },
                }
            ],
            "ports": [{"protocol": "TCP", "port": 9090}],
        }
    ]
    spec["autopilot"] = {"enabled": False}  # off: no way in for the operator
    rules = build(spec, settings)["NetworkPolicy/agent"]["spec"]["ingress"]
    assert not [r for r in rules if r.get("from") and "podSelector" in r["from"][0]]
    env = OperatorConfig.from_env({"SWIFTCLAW_OPERATOR_NAMESPACE": "ops"})
    assert env.builder_settings(True).operator_namespace == "ops"
