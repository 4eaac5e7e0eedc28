"""Failures the API server reports stay visible and are not retried in a hot loop: a
child's name taken by someone else's object, and a Redis storage change that the
StatefulSet cannot take. Each ends in Degraded with the reason and one Event, and the
operator's attempts (its metrics) never come faster than the back-off allows."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from .cluster import Cluster, wait_for
from .operator import (
    Operator,
    children,
    condition,
    events,
    example,
    install_crd,
    wait_condition,
)

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


def hand_over(cluster: Cluster, ns: str, name: str) -> None:
    """Make the agent ``name`` the controller of its labelled children that have no owner
    (what an agent deleted with ``--cascade=orphan`` left behind)."""
    uid = cluster.get("agentdeployment", name, "-n", ns)["metadata"]["uid"]
    owner = {
        "apiVersion": "swiftclaw.dev/v1alpha1",
        "kind": "AgentDeployment",
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
    for ref, obj in children(cluster, ns, name).items():
        if obj["metadata"].get("ownerReferences") or obj["kind"] == "Secret":
            continue
        patch = json.dumps({"metadata": {"ownerReferences": [owner]}})
        cluster.kubectl("patch", ref.lower(), "-n", ns, "--type=merge", "-p", patch)


def test_an_object_with_the_agents_labels_but_not_its_owner_is_neither_taken_nor_pruned(
    cluster: Cluster, operator: Operator, ns: str
) -> None:
    labels = {
        "app.kubernetes.io/managed-by": "swiftclaw-operator",
        "app.kubernetes.io/instance": "lab",
    }
    stranger = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "lab-config", "namespace": ns, "labels": labels},
        "data": {"a": "b"},
    }
    cluster.apply(yaml.safe_dump(stranger))
    apply(cluster, ns, example("lab"))
    body = wait_condition(cluster, ns, "lab", "Degraded", "True", "NameClash", timeout=30)
    assert "ConfigMap/lab-config exists and is not owned" in condition(body, "Degraded")["message"]
    cm = cluster.get("configmap", "lab-config", "-n", ns)
    assert cm["data"] == {"a": "b"} and not cm["metadata"].get("ownerReferences")
    cluster.kubectl("delete", "configmap", "lab-config", "-n", ns)
    wait_condition(cluster, ns, "lab", "Ready", "True", "Available", timeout=CAP + 60)

    # A stranger's object named and labelled as a child the spec does not want: an update
    # (which prunes what the spec no longer asks for) leaves it alone.
    redis_less = example("lab2")
    redis_less["spec"]["cache"]["redis"] = {"mode": "none"}
    decoy = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "lab2-redis-cache",
            "namespace": ns,
            "labels": {**labels, "app.kubernetes.io/instance": "lab2"},
        },
        "spec": {"ports": [{"port": 6379}]},
    }
    cluster.apply(yaml.safe_dump(decoy))
    apply(cluster, ns, redis_less)
    wait_condition(cluster, ns, "lab2", "Ready", "True", "Available", timeout=60)
    redis_less["spec"]["agent"]["maxOutputTokens"] = 321  # an update: it prunes
    apply(cluster, ns, redis_less)

    def updated() -> bool:
        body = cluster.get("agentdeployment", "lab2", "-n", ns)
        status = body.get("status") or {}
        return bool(status.get("observedGeneration") == body["metadata"]["generation"] == 2)

    wait_for("the update reconciled", updated, timeout=60)
    svc = cluster.get("service", "lab2-redis-cache", "-n", ns)
    assert not svc["metadata"].get("ownerReferences")  # the stranger's, still there


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
    apply(cluster, ns, doc)
    # Orphans lost their owner reference: labels alone do not make them the new agent's.
    wait_condition(cluster, ns, "disk", "Degraded", "True", "NameClash", timeout=30)
    before, started = attempts(operator), time.monotonic()
    hand_over(cluster, ns, "disk")  # their owner gives them to the new agent
    body = wait_condition(cluster, ns, "disk", "Degraded", "True", "ImmutableField", timeout=30)
    message = condition(body, "Degraded")["message"]
    assert 'StatefulSet.apps "disk-redis-state" is invalid' in message, message
    assert "Forbidden: updates to statefulset spec" in message, message
    # the back-off is at its cap already (the NameClash attempts came first): watch long
    # enough for three attempts 4 s apart on a loaded machine
    assert_backs_off(operator, before, started, watch=16)
    one_event(cluster, ns, "disk", "ImmutableField")
    sts = cluster.get("statefulset", "disk-redis-state", "-n", ns)
    claim = sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
    assert claim == size  # untouched
    assert "retrying in 4s" in operator.log()  # the back-off reached its cap
