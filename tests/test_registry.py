"""The registry of kinds is the one list: the builders' output, the API paths and the
chart's committed RBAC rules all agree with it."""

from __future__ import annotations

from pathlib import Path

from swiftclaw_operator.kube import path_of
from swiftclaw_operator.rbac import render_template
from swiftclaw_operator.reconcile import agent_from
from swiftclaw_operator.resources import build_children, child_kinds
from swiftclaw_operator.resources.registry import (
    CHILDREN,
    DEPLOYMENT,
    SECRET,
    SERVICE,
    unwanted_children,
    verbs,
)

from .test_builders import SETTINGS, base_spec, build

REPO = Path(__file__).resolve().parent.parent


def test_committed_chart_rules_match_the_registry() -> None:
    committed = REPO / "charts" / "swiftclaw" / "templates" / "_rules.tpl"
    assert committed.read_text() == render_template(), "run `make crds` and commit the result"


def test_every_child_is_of_its_registered_kind() -> None:
    kids = build(base_spec())  # managed Redis and monitoring: every child
    assert len(kids) == len(CHILDREN)
    registered = {(k.api_version, k.kind) for k in child_kinds()}
    assert {(c["apiVersion"], c["kind"]) for c in kids.values()} == registered


def test_paths_come_from_the_registry() -> None:
    assert path_of("apps/v1", "StatefulSet", "team", "a") == (
        "/apis/apps/v1/namespaces/team/statefulsets/a"
    )
    assert path_of("v1", "Service", "team") == "/api/v1/namespaces/team/services"


def test_verbs_follow_from_building_pruning_and_watching() -> None:
    # Every child kind is watched (the operator's cache); a Service can be pruned (the
    # managed Redis's), so delete; the runtime Deployment is never pruned; a Secret is only
    # ever created, never read.
    assert verbs(SERVICE) == {"get", "list", "watch", "create", "patch", "delete"}
    assert verbs(DEPLOYMENT) == {"get", "list", "watch", "create", "patch"}
    assert verbs(SECRET) == {"create"}
    pruned = {c.kind for c in CHILDREN if c.wanted is not None}
    assert all("delete" in verbs(k) for k in pruned)
    assert not any("delete" in verbs(c.kind) for c in CHILDREN if c.kind not in pruned)


def test_build_children_and_unwanted_children_partition_the_registry() -> None:
    spec = base_spec()
    spec["cache"]["redis"] = {"mode": "none"}
    body = {"metadata": {"name": "agent", "namespace": "team", "uid": "u"}, "spec": spec}
    agent = agent_from(body, SETTINGS)
    built = {(c["kind"], c["metadata"]["name"]) for c in build_children(agent)}
    unwanted = {(c.kind.kind, c.build(agent)["metadata"]["name"]) for c in unwanted_children(agent)}
    assert not built & unwanted
    assert len(built) + len(unwanted) == len(CHILDREN)
