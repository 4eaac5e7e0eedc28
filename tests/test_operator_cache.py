"""The decisions around the operator's cache (pure): which version of an object wins,
when the create-only password Secret is created, when a create becomes an apply's.
The cache against a real API server is ``e2e/test_operator_cache.py``."""

from __future__ import annotations

from typing import Any

from swiftclaw_operator.cache import Store, entry_of, newer
from swiftclaw_operator.kube import FIELD_MANAGER, adoption_patch
from swiftclaw_operator.reconcile import agent_from, created_not_applied, password_secret_wanted
from swiftclaw_operator.resources import build_children
from swiftclaw_operator.resources.runtime import created_as

from .test_builders import SETTINGS, base_spec

OWNER = {"uid": "uid-1", "controller": True}


def obj(name: str, rv: str, instance: str = "agent", **extra: Any) -> dict[str, Any]:
    meta = {
        "name": name,
        "namespace": "team",
        "resourceVersion": rv,
        "labels": {"app.kubernetes.io/instance": instance},
        **extra,
    }
    return {"kind": "ConfigMap", "metadata": meta}


def test_an_older_version_never_replaces_a_newer_one() -> None:
    assert newer("10", "9") and newer("10", "10") and not newer("9", "10")
    assert newer("opaque", "10")  # not etcd revisions: the incoming one is taken
    store = Store("ConfigMap")
    assert store.put(("team", "a"), entry_of(obj("a", "10")))
    assert not store.put(("team", "a"), entry_of(obj("a", "9")))
    assert store.objects[("team", "a")].resource_version == "10"
    assert store.remove(("team", "a"), "9") is None  # a deletion older than what is held
    assert store.remove(("team", "a"), "11") is not None
    assert store.objects == {} and store.by_instance == {}


def test_the_agent_index_follows_relabels_and_removals() -> None:
    store = Store("Pod")
    for i in range(1000):
        store.put(("team", f"p{i}"), entry_of(obj(f"p{i}", str(i + 1), f"agent-{i % 10}")))
    assert len(list(store.keys("team", {"app.kubernetes.io/instance": "agent-3"}))) == 100
    store.put(("team", "p3"), entry_of(obj("p3", "5000", "agent-4")))
    assert len(list(store.keys("team", {"app.kubernetes.io/instance": "agent-3"}))) == 99
    for i in range(1000):
        store.remove(("team", f"p{i}"))
    assert store.by_instance == {}  # nothing kept for agents with no objects


def test_field_sets_are_not_kept() -> None:
    managers = [{"manager": FIELD_MANAGER, "operation": "Update", "fieldsV1": {"f:data": {}}}]
    held = entry_of(obj("a", "1", managedFields=managers)).load()
    assert held["metadata"]["managedFields"] == [{"manager": FIELD_MANAGER, "operation": "Update"}]


def test_a_create_is_adopted_for_apply_until_an_apply_entry_exists() -> None:
    update = {"manager": FIELD_MANAGER, "operation": "Update"}
    apply = {"manager": FIELD_MANAGER, "operation": "Apply"}
    other = {"manager": "kubectl", "operation": "Update"}
    status = {"manager": FIELD_MANAGER, "operation": "Update", "subresource": "status"}
    assert created_not_applied(obj("a", "1", managedFields=[update, other]))
    assert not created_not_applied(obj("a", "1", managedFields=[update, apply]))
    assert not created_not_applied(obj("a", "1", managedFields=[other, status]))


def test_the_password_secret_is_created_until_the_state_statefulset_is_cached() -> None:
    body = {"metadata": {"name": "agent", "namespace": "team", "uid": "uid-1"}}
    agent = agent_from({**body, "spec": base_spec()}, SETTINGS)
    state = obj("agent-redis-state", "1", ownerReferences=[OWNER])
    stranger = obj("agent-redis-state", "1")
    ok_pod = {"status": {"containerStatuses": [{"state": {"running": {}}}]}}
    waiting = {"waiting": {"reason": "CreateContainerConfigError"}}
    stuck_pod = {"status": {"containerStatuses": [{"state": waiting}]}}
    assert password_secret_wanted(agent, None, [])
    assert password_secret_wanted(agent, stranger, [])
    assert not password_secret_wanted(agent, state, [ok_pod])
    assert password_secret_wanted(agent, state, [ok_pod, stuck_pod])  # the Secret was deleted
    spec = base_spec()
    spec["cache"]["redis"] = {"mode": "none"}
    assert not password_secret_wanted(agent_from({**body, "spec": spec}, SETTINGS), None, [])


def test_the_runtime_deployment_is_created_at_the_hpas_lower_bound() -> None:
    """Created at 1 (no replicas: the applies leave them to the HPA), a new agent was Ready
    on one pod, then not Ready when the HPA's first sync raised it to minReplicas."""
    body = {"metadata": {"name": "agent", "namespace": "team", "uid": "uid-1"}}
    agent = agent_from({**body, "spec": base_spec()}, SETTINGS)
    children = {(c["kind"], c["metadata"]["name"]): c for c in build_children(agent)}
    runtime = children[("Deployment", "agent")]
    assert "replicas" not in runtime["spec"]
    created = created_as(agent, runtime)
    assert created["spec"]["replicas"] == agent.spec.scaling.min_replicas == 2
    assert "replicas" not in runtime["spec"]  # the desired object, as applied, unchanged
    assert created["metadata"] == runtime["metadata"]  # same spec hash: no apply follows
    others = [c for key, c in children.items() if key != ("Deployment", "agent")]
    assert all(created_as(agent, c) is c for c in others)


def test_adopting_a_create_releases_the_replicas_to_the_hpa() -> None:
    """The create's entry becomes an Apply one without ``replicas``: the first apply (which
    leaves them out) would otherwise remove them, and the Deployment drop to 1 pod."""
    fields = {"f:spec": {"f:replicas": {}, "f:template": {}}}
    update = {"manager": FIELD_MANAGER, "operation": "Update", "fieldsV1": fields}
    hpa = {"manager": "kube-controller-manager", "operation": "Update", "subresource": "scale"}
    live = {**obj("agent", "7", managedFields=[hpa, update]), "kind": "Deployment"}
    patch = adoption_patch(live)
    assert patch == [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "7"},
        {"op": "replace", "path": "/metadata/managedFields/1/operation", "value": "Apply"},
        {"op": "remove", "path": "/metadata/managedFields/1/fieldsV1/f:spec/f:replicas"},
    ]
    # The HPA took them over already (or another kind): nothing to release.
    taken = {**update, "fieldsV1": {"f:spec": {"f:template": {}}}}
    assert (
        len(
            adoption_patch({**obj("agent", "7", managedFields=[taken]), "kind": "Deployment"}) or []
        )
        == 2
    )
    assert (
        len(adoption_patch({**obj("s", "7", managedFields=[update]), "kind": "StatefulSet"}) or [])
        == 2
    )
    applied = {"manager": FIELD_MANAGER, "operation": "Apply"}
    assert adoption_patch({**live, "metadata": {"managedFields": [update, applied]}}) is None
