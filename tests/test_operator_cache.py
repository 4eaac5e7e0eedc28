"""The decisions around the operator's cache (pure): which version of an object wins,
when the create-only password Secret is created, when a create becomes an apply's.
The cache against a real API server is ``e2e/test_operator_cache.py``."""

from __future__ import annotations

from typing import Any

from swiftclaw_operator.cache import Store, entry_of, newer
from swiftclaw_operator.kube import FIELD_MANAGER
from swiftclaw_operator.reconcile import agent_from, created_not_applied, password_secret_wanted

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
