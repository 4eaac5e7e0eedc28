"""Failures the API server reports stay visible and are not retried in a hot loop: a
child's name taken by someone else's object, and a Redis storage change that the
StatefulSet cannot take. Each ends in Degraded with the reason and one Event, and the
operator's attempts (its metrics) never come faster than the back-off allows."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from .cluster import Cluster, wait_for
from .operator import Operator, condition, events, example, install_crd, wait_condition

BASE, CAP = 1.0, 4.0  # the back-off under test: 1, 2, 4, 4, 4... seconds


def max_attempts(seconds: float, base: float = BASE, cap: float = CAP) -> int:
    """The most attempts the back-off allows within ``seconds`` of the first one."""
    t, n = 0.0, 1
    while t + min(cap, base * 2 ** (n - 1)) <= seconds:
        t += min(cap, base * 2 ** (n - 1))
        n += 1
    return n


@pytest.fixture
def ns(cluster: Cluster) -> Iterator[str]:
    with cluster.namespace("fail-" + uuid.uuid4().hex[:8]) as name:
        yield name


@pytest.fixture
def operator(cluster: Cluster, ns: str, tmp_path: Path) -> Iterator[Operator]:
    """An operator serving only the test's namespace: its attempts are this test's."""
    install_crd(cluster)
    op = Operator(
        cluster,
        tmp_path,
        env={
            "SWIFTCLAW_NAMESPACES": ns,
            "SWIFTCLAW_DRIFT_SECONDS": "2",
            "SWIFTCLAW_RETRY_BASE_SECONDS": str(BASE),
            "SWIFTCLAW_RETRY_MAX_SECONDS": str(CAP),
        },
    )
    op.start()
    yield op
    op.stop()


def apply(cluster: Cluster, ns: str, doc: dict) -> None:
    cluster.apply(yaml.safe_dump({**doc, "metadata": {**doc["metadata"], "namespace": ns}}))


def attempts(op: Operator) -> float:
    return op.counter('swiftclaw_operator_reconciles_total{result="permanent"')


def assert_backs_off(op: Operator, before: float, started: float, watch: float) -> float:
    """Watch the failing agent for ``watch`` seconds: attempts go on, never faster than
    the back-off. Returns the attempts made."""
    time.sleep(watch)
    made = attempts(op) - before
    allowed = max_attempts(time.monotonic() - started + 0.5)
    assert 3 <= made <= allowed, (made, allowed)
    return made


def one_event(cluster: Cluster, ns: str, name: str, reason: str) -> dict:
    found = [e for e in events(cluster, ns, name) if e["reason"] == reason]
    assert len(found) == 1, [(e["reason"], e["message"]) for e in events(cluster, ns, name)]
    assert found[0]["type"] == "Warning"
    return found[0]


def test_name_clash_is_degraded_once_backs_off_and_recovers(
    cluster: Cluster, operator: Operator, ns: str
) -> None:
    # Someone else's ConfigMap holds the name the agent's config needs.
    cluster.kubectl("create", "configmap", "clash-config", "-n", ns, "--from-literal=a=b")
    before, started = attempts(operator), time.monotonic()
    apply(cluster, ns, example("clash"))
    body = wait_condition(cluster, ns, "clash", "Degraded", "True", "NameClash", timeout=30)
    message = condition(body, "Degraded")["message"]
    assert "ConfigMap/clash-config exists and is not owned by AgentDeployment clash" in message
    assert_backs_off(operator, before, started, watch=10)
    event = one_event(cluster, ns, "clash", "NameClash")
    assert "ConfigMap/clash-config" in event["message"]
    # Nothing was taken over: the stranger's ConfigMap is as it was.
    cm = cluster.get("configmap", "clash-config", "-n", ns)
    assert cm["data"] == {"a": "b"} and not cm["metadata"].get("ownerReferences")

    # The clash resolved, the next retry (at most CAP seconds away) succeeds.
    cluster.kubectl("delete", "configmap", "clash-config", "-n", ns)
    wait_condition(cluster, ns, "clash", "Ready", "True", "Available", timeout=CAP + 30)
    body = cluster.get("agentdeployment", "clash", "-n", ns)
    assert condition(body, "Degraded")["status"] == "False"
    one_event(cluster, ns, "clash", "NameClash")  # still one


def test_storage_change_is_degraded_once_and_backs_off(
    cluster: Cluster, operator: Operator, ns: str
) -> None:
    # The CRD refuses a storage edit (test_crd_api); one reaches the operator anyway when
    # an agent is recreated over the children it left behind with another size.
    doc = example("disk")
    apply(cluster, ns, doc)
    wait_for(
        "the Redis StatefulSet",
        lambda: "disk-redis-state" in cluster.kubectl("get", "sts", "-n", ns, "-o", "name"),
        30,
    )
    cluster.kubectl("delete", "agentdeployment", "disk", "-n", ns, "--cascade=orphan")
    size = doc["spec"]["cache"]["redis"]["storage"]
    bigger = "5Gi" if size != "5Gi" else "6Gi"
    doc["spec"]["cache"]["redis"]["storage"] = bigger
    before, started = attempts(operator), time.monotonic()
    apply(cluster, ns, doc)
    body = wait_condition(cluster, ns, "disk", "Degraded", "True", "ImmutableField", timeout=30)
    message = condition(body, "Degraded")["message"]
    assert 'StatefulSet.apps "disk-redis-state" is invalid' in message, message
    assert "Forbidden: updates to statefulset spec" in message, message
    assert_backs_off(operator, before, started, watch=10)
    one_event(cluster, ns, "disk", "ImmutableField")
    sts = cluster.get("statefulset", "disk-redis-state", "-n", ns)
    claim = sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
    assert claim == size  # untouched
    assert "retrying in 4s" in operator.log()  # the back-off reached its cap
