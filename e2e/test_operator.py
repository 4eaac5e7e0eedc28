"""The operator on a real control plane: children, status, changes, no-op reconciles,
deletion, and a crash in the middle of a reconcile."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from swiftclaw_operator.resources import child_kinds

from .cluster import Cluster, wait_for
from .operator import (
    Operator,
    children,
    condition,
    events,
    example,
    install_crd,
    wait_condition,
    write_marker,
)

EXPECTED = {
    "ConfigMap/{n}-config",
    "Service/{n}",
    "Deployment/{n}",
    "HorizontalPodAutoscaler/{n}",
    "PodDisruptionBudget/{n}",
    "NetworkPolicy/{n}",
    "NetworkPolicy/{n}-redis-cache",
    "Service/{n}-redis-cache",
    "StatefulSet/{n}-redis-cache",
    "NetworkPolicy/{n}-redis-state",
    "Service/{n}-redis-state",
    "StatefulSet/{n}-redis-state",
    "CronJob/{n}-redis-backup",
}


def expected(name: str) -> set[str]:
    return {e.format(n=name) for e in EXPECTED}


@pytest.fixture(scope="module")
def operator(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    install_crd(cluster)
    op = Operator(
        cluster, tmp_path_factory.mktemp("operator"), env={"SWIFTCLAW_DRIFT_SECONDS": "2"}
    )
    op.start()
    yield op
    op.stop()


@pytest.fixture
def ns(cluster: Cluster) -> Iterator[str]:
    with cluster.namespace("op-" + uuid.uuid4().hex[:8]) as name:
        yield name


def apply(cluster: Cluster, ns: str, doc: dict) -> None:
    cluster.apply(yaml.safe_dump({**doc, "metadata": {**doc["metadata"], "namespace": ns}}))


def all_children(cluster: Cluster, ns: str, name: str) -> dict[str, dict]:
    return wait_for(
        f"every child of {name}",
        lambda: c if set(c := children(cluster, ns, name)) >= expected(name) else None,
        timeout=60,
    )


def test_example_gets_owned_children_and_truthful_status(
    cluster: Cluster, operator: Operator, ns: str
) -> None:
    # Pods that cannot be scheduled first: the status must say so, in words.
    doc = example("agent", runtime={"nodeSelector": {"pool": "gpu-that-does-not-exist"}})
    apply(cluster, ns, doc)
    body = wait_condition(cluster, ns, "agent", "Ready", "False", "PodsNotReady")
    ready = condition(body, "Ready")
    # a new agent starts at its minReplicas (2 in the example), not at 1 for the HPA to raise
    assert "0/2 runtime pods ready: 2 in Unschedulable" in ready["message"]
    assert body["status"]["observedGeneration"] == body["metadata"]["generation"]

    kids = all_children(cluster, ns, "agent")
    assert set(kids) == expected("agent")
    for ref, obj in kids.items():
        owners = obj["metadata"]["ownerReferences"]
        assert owners == [
            {
                "apiVersion": "swiftclaw.dev/v1alpha1",
                "kind": "AgentDeployment",
                "name": "agent",
                "uid": body["metadata"]["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ], ref

    # Secrets stay Secrets: the ConfigMap names them, never holds them.
    config = kids["ConfigMap/agent-config"]["data"]["config.yaml"]
    assert "apiKeySecretRef" in config and "nodeSelector" not in config
    pod_spec = kids["Deployment/agent"]["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in pod_spec["containers"][0]["volumeMounts"]}
    assert mounts["provider-openai"] == "/var/run/secrets/swiftclaw/providers/openai"

    # Make the pods schedulable: the same AgentDeployment becomes Ready.
    doc["spec"]["runtime"] = {}
    apply(cluster, ns, doc)
    body = wait_condition(cluster, ns, "agent", "Ready", "True", "Available")
    assert body["status"]["readyReplicas"] >= 1
    assert condition(body, "Degraded")["status"] == "False"
    assert body["status"]["observedGeneration"] == body["metadata"]["generation"] == 2
    reasons = {e["reason"] for e in events(cluster, ns, "agent")}
    assert {"PodsNotReady", "Available"} <= reasons
    printed = cluster.kubectl("get", "agentdeployments", "-n", ns)
    assert "READY" in printed and "True" in printed.splitlines()[1]


def test_spec_change_rolls_pods_and_writes_only_the_config(
    cluster: Cluster, operator: Operator, ns: str
) -> None:
    doc = example("agent")
    apply(cluster, ns, doc)
    wait_condition(cluster, ns, "agent", "Ready", "True")
    before = all_children(cluster, ns, "agent")
    old_rs = {r["metadata"]["name"] for r in cluster.get("replicasets", "-n", ns)["items"]}
    time.sleep(1.1)  # managed-fields times have a resolution of one second

    doc["spec"]["agent"]["systemPrompt"] = "You are a very brief support agent."
    apply(cluster, ns, doc)
    wait_for(
        "a new ReplicaSet (the pods roll)",
        lambda: (
            {r["metadata"]["name"] for r in cluster.get("replicasets", "-n", ns)["items"]} - old_rs
        ),
    )
    after = children(cluster, ns, "agent")
    assert "very brief" in after["ConfigMap/agent-config"]["data"]["config.yaml"]
    changed = {ref for ref in before if write_marker(before[ref]) != write_marker(after[ref])}
    assert changed == {"ConfigMap/agent-config", "Deployment/agent"}
    wait_condition(cluster, ns, "agent", "Ready", "True")


def test_a_new_agent_starts_at_min_replicas_and_keeps_them_after_an_apply(
    cluster: Cluster, operator: Operator, ns: str
) -> None:
    """Created at the HPA's lower bound (2), not at 1 and raised by the HPA's first sync (a
    new agent was Ready on one pod, then not Ready, then Ready again: two status writes
    and two Events more per agent); the first apply after the create leaves them to the HPA."""
    doc = example("agent")
    apply(cluster, ns, doc)
    wait_condition(cluster, ns, "agent", "Ready", "True")
    made = cluster.get("deployment", "agent", "-n", ns)
    assert (made["spec"]["replicas"], made["metadata"]["generation"]) == (2, 1)

    doc["spec"]["agent"]["systemPrompt"] = "You are a very brief support agent."
    apply(cluster, ns, doc)

    def applied() -> dict | None:
        d = cluster.get("deployment", "agent", "-n", ns, "--show-managed-fields")
        ours = [
            m
            for m in d["metadata"]["managedFields"]
            if m["manager"] == "swiftclaw-operator" and m["operation"] == "Apply"
        ]
        return {"deployment": d, "entry": ours[0]} if ours else None

    found = wait_for("the Deployment applied", applied, timeout=60)
    assert found["deployment"]["spec"]["replicas"] == 2
    assert "f:replicas" not in found["entry"]["fieldsV1"]["f:spec"]
    wait_condition(cluster, ns, "agent", "Ready", "True")


def test_reconciles_without_change_write_nothing(
    cluster: Cluster, operator: Operator, ns: str
) -> None:
    apply(cluster, ns, example("agent"))
    wait_condition(cluster, ns, "agent", "Ready", "True")
    time.sleep(3)  # let the Deployment's own rollout status settle
    before = all_children(cluster, ns, "agent")
    body_before = cluster.get("agentdeployment", "agent", "-n", ns)

    operator.stop()  # resume on restart, then the 2 s drift timer
    operator.start()
    wait_for(
        "a resume and two drift checks",
        lambda: (
            operator.counter('swiftclaw_operator_reconciles_total{result="ok",trigger="drift"}')
            >= 2
            and operator.counter(
                'swiftclaw_operator_reconciles_total{result="ok",trigger="resume"}'
            )
            >= 1
        ),
        timeout=60,
    )

    after = children(cluster, ns, "agent")
    assert {r: write_marker(o) for r, o in after.items()} == {
        r: write_marker(o) for r, o in before.items()
    }
    body_after = cluster.get("agentdeployment", "agent", "-n", ns)
    assert body_after["metadata"]["resourceVersion"] == body_before["metadata"]["resourceVersion"]
    # Other agents of earlier tests may still be in namespaces being deleted: look at ours.
    wrote = [
        line for line in operator.log().splitlines() if f"{ns}/agent " in line and "wrote" in line
    ]
    assert not wrote, wrote


def test_drift_is_repaired(cluster: Cluster, operator: Operator, ns: str) -> None:
    apply(cluster, ns, example("agent"))
    wait_condition(cluster, ns, "agent", "Ready", "True")
    cluster.kubectl(
        "patch",
        "configmap",
        "agent-config",
        "-n",
        ns,
        "--type=merge",
        "-p",
        json.dumps({"data": {"config.yaml": "tampered"}}),
    )
    wait_for(
        "the drift check to restore the ConfigMap",
        lambda: (
            "tampered"
            not in cluster.get("configmap", "agent-config", "-n", ns)["data"]["config.yaml"]
        ),
        timeout=30,
    )


def child_reads(op: Operator) -> float:
    """GETs of children the operator made: with its watch-fed cache, only when a create
    finds the name taken."""
    kinds = {k.kind for k in child_kinds()}
    return sum(
        v
        for k, v in op.metrics().items()
        if k.startswith("swiftclaw_operator_api_requests_total{")
        and 'verb="get"' in k
        and any(f'kind="{kind}"' in k for kind in kinds)
    )


def test_a_deleted_child_is_recreated_from_the_cache_alone(
    cluster: Cluster, operator: Operator, ns: str
) -> None:
    apply(cluster, ns, example("agent"))
    wait_condition(cluster, ns, "agent", "Ready", "True")
    uid = cluster.get("agentdeployment", "agent", "-n", ns)["metadata"]["uid"]
    old = all_children(cluster, ns, "agent")
    reads = child_reads(operator)
    for ref in ("Service/agent", "StatefulSet/agent-redis-state"):
        kind, _, name = ref.partition("/")
        cluster.kubectl("delete", kind.lower(), name, "-n", ns, "--wait=true")

    # The drift check (every 2 s here) sees them gone from its cache and creates them again.
    def recreated() -> dict | None:
        now = children(cluster, ns, "agent")
        fresh = all(
            r in now and now[r]["metadata"]["uid"] != old[r]["metadata"]["uid"]
            for r in ("Service/agent", "StatefulSet/agent-redis-state")
        )
        return now if fresh else None

    now = wait_for("the deleted children recreated", recreated, timeout=30)
    assert set(now) == expected("agent")
    for ref in ("Service/agent", "StatefulSet/agent-redis-state"):
        owners = now[ref]["metadata"]["ownerReferences"]
        assert [o["uid"] for o in owners if o.get("controller")] == [uid], ref
    # Nothing was read from the API server to find them missing: the cache was the reader.
    assert child_reads(operator) == reads


def test_delete_garbage_collects_every_child(cluster: Cluster, operator: Operator, ns: str) -> None:
    apply(cluster, ns, example("agent"))
    all_children(cluster, ns, "agent")
    cluster.kubectl("delete", "agentdeployment", "agent", "-n", ns, "--wait=true")
    wait_for(
        "the garbage collector to remove every child",
        lambda: not children(cluster, ns, "agent"),
        timeout=90,
    )
    assert not cluster.get("pods", "-n", ns)["items"] or wait_for(
        "pods gone", lambda: not cluster.get("pods", "-n", ns)["items"], timeout=60
    )


def test_redis_mode_change_and_deletion_keep_the_state_volume_and_password(
    cluster: Cluster, operator: Operator, ns: str
) -> None:
    doc = example("agent")
    apply(cluster, ns, doc)
    all_children(cluster, ns, "agent")

    def state_claim() -> dict | None:
        out = cluster.kubectl(
            "get", "pvc", "data-agent-redis-state-0", "-n", ns, "-o", "json", check=False
        )
        return json.loads(out) if out.startswith("{") else None

    claim = wait_for("the state instance's claim", state_claim, timeout=60)
    assert not claim["metadata"].get("ownerReferences")
    secret = cluster.kubectl("get", "secret", "agent-redis-auth", "-n", ns, "-o", "name")
    assert secret.strip() == "secret/agent-redis-auth"

    doc["spec"]["cache"]["redis"] = {"mode": "none"}
    apply(cluster, ns, doc)
    wait_for(
        "the managed Redis pruned",
        lambda: not any("redis" in ref for ref in children(cluster, ns, "agent")),
        timeout=60,
    )
    kept = cluster.get("pvc", "data-agent-redis-state-0", "-n", ns)
    assert kept["metadata"]["uid"] == claim["metadata"]["uid"]

    cluster.kubectl("delete", "agentdeployment", "agent", "-n", ns, "--wait=true")
    wait_for("every child gone", lambda: not children(cluster, ns, "agent"), timeout=90)
    kept = cluster.get("pvc", "data-agent-redis-state-0", "-n", ns)
    assert kept["metadata"]["uid"] == claim["metadata"]["uid"]
    assert cluster.kubectl("get", "secret", "agent-redis-auth", "-n", ns, "-o", "name").strip()


def test_operator_killed_mid_reconcile_converges(
    cluster: Cluster, operator: Operator, ns: str, tmp_path: Path
) -> None:
    operator.stop()
    slow = Operator(cluster, tmp_path, env={"SWIFTCLAW_RECONCILE_STEP_DELAY": "1"}).start()
    try:
        apply(cluster, ns, example("agent"))
        wait_for("the first children", lambda: len(children(cluster, ns, "agent")) >= 2)
        slow.kill()  # SIGKILL halfway through the children
    finally:
        slow.stop()
    partial = children(cluster, ns, "agent")
    assert 0 < len(set(partial) & expected("agent")) < len(expected("agent"))

    operator.start()
    kids = all_children(cluster, ns, "agent")
    wait_condition(cluster, ns, "agent", "Ready", "True")
    assert set(kids) == expected("agent")  # nothing twice, nothing extra
    owned = [
        o
        for o in cluster.get("deployments,configmaps,services", "-n", ns)["items"]
        if o["metadata"].get("ownerReferences")
    ]
    assert len(owned) == len(
        [r for r in expected("agent") if r.split("/")[0] in ("Deployment", "ConfigMap", "Service")]
    )
