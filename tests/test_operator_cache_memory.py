"""What the operator's cache holds of an object (``cache.slim``, compressed): a fraction of
the memory of the object as the API server sends it, and still everything the reconcile,
the status and the autopilot read. Objects here are the operator's own children as the
API server returns them (managed fields with their field sets, kubectl's and kopf's
copies of the agent in its annotations, pods with their spec and status)."""

from __future__ import annotations

import copy
import gc
import json
import tracemalloc
from typing import Any

import orjson

from swiftclaw_operator.autopilot.scraper import pod_target
from swiftclaw_operator.cache import KOPF_DIFFBASE_KEY, ChildCache, slim
from swiftclaw_operator.handlers import read_children
from swiftclaw_operator.kube import FIELD_MANAGER
from swiftclaw_operator.reconcile import (
    agent_from,
    created_not_applied,
    needs_apply,
    owned,
    password_secret_wanted,
)
from swiftclaw_operator.resources import build_children, child_kinds
from swiftclaw_operator.resources.common import SPEC_HASH
from swiftclaw_operator.resources.registry import AGENT, POD
from swiftclaw_operator.status import compute_status

from .test_builders import SETTINGS, base_spec

AGENTS = 50


def field_set(obj: Any) -> Any:
    """A managed-fields field set covering ``obj`` (the API server's ``fieldsV1``)."""
    if isinstance(obj, dict):
        return {f"f:{k}": field_set(v) for k, v in obj.items()}
    return {}


def served(obj: dict[str, Any], rv: int, uid: str, status: dict[str, Any]) -> dict[str, Any]:
    """``obj`` as the API server returns it: its version, uid, status, managed fields."""
    out = copy.deepcopy(obj)
    meta = out["metadata"]
    meta.update({"resourceVersion": str(rv), "uid": uid, "generation": 1})
    meta["creationTimestamp"] = "2026-12-07T10:00:00Z"
    meta["managedFields"] = [
        {
            "manager": FIELD_MANAGER,
            "operation": "Apply",
            "apiVersion": obj["apiVersion"],
            "time": "2026-12-07T10:00:00Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": field_set({k: v for k, v in obj.items() if k != "status"}),
        },
        {
            "manager": "kube-controller-manager",
            "operation": "Update",
            "subresource": "status",
            "apiVersion": obj["apiVersion"],
            "time": "2026-12-07T10:00:01Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": field_set({"status": status}),
        },
    ]
    out["status"] = status
    return out


def agent_body(i: int) -> dict[str, Any]:
    spec = base_spec()
    body = {
        "apiVersion": "swiftclaw.dev/v1alpha1",
        "kind": "AgentDeployment",
        "metadata": {"name": f"agent-{i:03d}", "namespace": "team"},
        "spec": spec,
    }
    copy_of_spec = json.dumps(body, separators=(",", ":"))
    body["metadata"]["annotations"] = {
        "kubectl.kubernetes.io/last-applied-configuration": copy_of_spec,
        f"swiftclaw.dev/{KOPF_DIFFBASE_KEY}": json.dumps({"spec": spec}),
    }
    ready = {"type": "Ready", "status": "True", "reason": "Available", "message": "2/2 ready"}
    return served(body, 10 + i, f"uid-{i}", {"observedGeneration": 1, "conditions": [ready]})


def pod_of(deployment: dict[str, Any], n: int, rv: int) -> dict[str, Any]:
    template = deployment["spec"]["template"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            **copy.deepcopy(template["metadata"]),
            "name": f"{deployment['metadata']['name']}-{n}",
            "namespace": deployment["metadata"]["namespace"],
            "ownerReferences": [{"uid": "rs-uid", "controller": True, "kind": "ReplicaSet"}],
        },
        "spec": {**copy.deepcopy(template["spec"]), "nodeName": "node-1"},
    }
    status = {
        "phase": "Running",
        "podIP": f"127.0.1.{n + 1}",
        "conditions": [{"type": "Ready", "status": "True"}],
        "containerStatuses": [
            {"name": "runtime", "ready": True, "state": {"running": {}}, "restartCount": 0}
        ],
    }
    return served(pod, rv, f"pod-{rv}", status)


def fleet(agents: int) -> list[dict[str, Any]]:
    """Every object the operator caches for ``agents`` agents: the agent, its children as
    applied (with a status where the kind has one), its runtime and Redis pods."""
    out = []
    for i in range(agents):
        body = agent_body(i)
        agent = agent_from(body, SETTINGS)
        for j, child in enumerate(build_children(agent)):
            child["metadata"].setdefault("namespace", "team")
            status = (
                {"replicas": 2, "readyReplicas": 2} if "template" in child.get("spec", {}) else {}
            )
            live = served(child, 1000 * i + j, f"c-{i}-{j}", status)
            out.append(live)
            if child["kind"] in ("Deployment", "StatefulSet"):
                out += [pod_of(child, n, 1000 * i + 900 + n) for n in range(2)]
        out.append(body)
    return out


def held_bytes(objects: list[dict[str, Any]]) -> int:
    """The memory a cache takes to hold ``objects`` (tracemalloc: every allocation)."""
    gc.collect()
    tracemalloc.start()
    try:
        cache = ChildCache(None, [*child_kinds(), POD], unlabelled=[AGENT])  # type: ignore[arg-type]
        for obj in objects:
            cache.put(obj)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert sum(len(s.objects) for s in cache.stores.values()) == len(objects)
    return held


def test_the_cache_holds_a_fleet_in_a_fraction_of_its_json() -> None:
    """The saving at fleet scale: a thousand agents' 18,000-odd objects are what the
    operator's memory grows with. Measured against the objects' compact JSON as sent."""
    objects = fleet(AGENTS)
    sent = sum(len(orjson.dumps(o)) for o in objects)
    held = held_bytes(objects)
    print(  # the figure for the record (pytest -s)
        f"{len(objects) / AGENTS:.0f} objects per agent: {sent / AGENTS / 1024:.1f} KiB"
        f" of JSON as sent, {held / AGENTS / 1024:.1f} KiB held"
    )
    # Whole objects as JSON (their field sets dropped) held more than their size (orjson's
    # buffer keeps its slack); parsed into dicts, several times it.
    assert held < 0.4 * sent, (held, sent)


def test_a_slim_object_drives_the_reconcile_and_the_status_as_the_whole_one() -> None:
    objects = fleet(1)
    body = next(o for o in objects if o["kind"] == "AgentDeployment")
    agent = agent_from(body, SETTINGS)
    desired = {(c["kind"], c["metadata"]["name"]): c for c in build_children(agent)}
    for live in objects:
        lean = slim(live)
        assert "fieldsV1" not in json.dumps(lean)
        assert created_not_applied(lean) == created_not_applied(live)
        assert owned(lean, agent.uid) == owned(live, agent.uid)
        want = desired.get((live["kind"], live["metadata"]["name"]))
        if want is not None:  # as applied; then changed (its hash); then drifted (its body)
            assert needs_apply(want, lean) is None and needs_apply(want, live) is None
            changed = copy.deepcopy(live)
            changed["metadata"]["annotations"][SPEC_HASH] = "another"
            assert needs_apply(want, slim(changed)) == needs_apply(want, changed) == "changed"
            for part in ("spec", "data"):
                if want.get(part):
                    drifted = {**copy.deepcopy(live), part: {}}
                    assert needs_apply(want, slim(drifted)) == "drifted"
                    assert needs_apply(want, drifted) == "drifted"
        if live["kind"] == "Pod":
            assert "spec" not in lean and pod_target(lean) == pod_target(live)
    # An Update entry of the operator's (a create never applied) survives the slimming.
    created = copy.deepcopy(objects[0])
    created["metadata"]["managedFields"][0]["operation"] = "Update"
    assert created_not_applied(slim(created)) and created_not_applied(created)
    # kubectl's and kopf's copies of the agent go; what the operator reads stays.
    assert not slim(body)["metadata"]["annotations"]
    assert agent_from(slim(body), SETTINGS) == agent

    # The status read from a cache of slim objects is the status of the whole ones.
    cache = ChildCache(None, [*child_kinds(), POD], unlabelled=[AGENT])  # type: ignore[arg-type]
    for obj in objects:
        cache.put(obj)
    whole = WholeCache(objects)
    from_slim = read_children(cache, body, SETTINGS)
    from_whole = read_children(whole, body, SETTINGS)  # type: ignore[arg-type]
    assert len(from_slim.pods) == 2 and len(from_slim.redis) == 2
    assert compute_status(body, from_slim, "T") == compute_status(body, from_whole, "T")
    pods = cache.list(POD.kind, "team", {"app.kubernetes.io/instance": agent.name})
    all_pods = [o for o in objects if o["kind"] == "Pod"]
    state = cache.get("StatefulSet", "team", f"{agent.name}-redis-state")
    live_state = next(o for o in objects if o["metadata"]["name"] == f"{agent.name}-redis-state")
    assert password_secret_wanted(agent, state, pods) == password_secret_wanted(
        agent, live_state, all_pods
    )


class WholeCache:
    """The objects as the API server sent them, read like the cache (the reference)."""

    def __init__(self, objects: list[dict[str, Any]]) -> None:
        self.objects = objects

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return next(
            (
                copy.deepcopy(o)
                for o in self.objects
                if o["kind"] == kind and o["metadata"]["name"] == name
            ),
            None,
        )

    def list(self, kind: str, namespace: str, selector: dict[str, str]) -> list[dict[str, Any]]:
        return sorted(
            (
                copy.deepcopy(o)
                for o in self.objects
                if o["kind"] == kind
                and all(o["metadata"].get("labels", {}).get(k) == v for k, v in selector.items())
            ),
            key=lambda o: o["metadata"]["name"],
        )
