"""The operator against objects and readers it does not trust: an object that carries the
agent's labels but not its owner reference is not the agent's (neither applied over nor
pruned: e2e/test_operator_failures.py shows it on a real API server), and the managed
Redis password is in no container's argv nor in the running server's command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from swiftclaw_devtools.processes import Proc
from swiftclaw_operator.reconcile import owned

from .test_builders import base_spec, build
from .test_managed_redis import PASSWORD, managed_agent, start_instance

UID = "uid-1"
LABELS = {
    "app.kubernetes.io/managed-by": "swiftclaw-operator",
    "app.kubernetes.io/instance": "agent",
}


def live(
    labels: dict[str, str] | None = None, owners: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "agent-config", "labels": labels or {}}
    if owners is not None:
        meta["ownerReferences"] = owners
    return {"metadata": meta}


def agent_owner(uid: str = UID, controller: bool = True) -> dict[str, Any]:
    return {
        "apiVersion": "swiftclaw.dev/v1alpha1",
        "kind": "AgentDeployment",
        "name": "agent",
        "uid": uid,
        "controller": controller,
    }


@pytest.mark.parametrize(
    ("obj", "mine"),
    [
        (live(LABELS), False),  # labels alone: anyone can write them
        (live(LABELS, []), False),
        (live(LABELS, [agent_owner("another-uid")]), False),  # an agent of the same name before
        (live(LABELS, [agent_owner(controller=False)]), False),  # owned, not controlled
        (live({}, [agent_owner()]), True),
        (live(LABELS, [{"uid": "x", "controller": False}, agent_owner()]), True),
    ],
)
def test_an_object_is_the_agents_only_by_its_controller_owner_reference(
    obj: dict[str, Any], mine: bool
) -> None:
    assert owned(obj, UID) is mine


def test_every_child_the_operator_applies_is_controlled_by_the_agent() -> None:
    """What it writes, it recognises again."""
    for ref, child in build(base_spec()).items():
        assert owned(child, "uid-1"), ref


def containers(obj: Any) -> list[dict[str, Any]]:
    if isinstance(obj, dict):
        found = [obj] if "image" in obj and "name" in obj else []
        return found + [c for v in obj.values() for c in containers(v)]
    if isinstance(obj, list):
        return [c for v in obj for c in containers(v)]
    return []


def test_no_container_has_a_secret_in_its_argv() -> None:
    """A Secret's value reaches a container through its environment only: no argv holds
    ``$(NAME)`` of an environment variable from a Secret (the kubelet would expand it into
    the argv), nor ``--requirepass``."""
    kids = build(base_spec())
    checked = 0
    for ref, child in kids.items():
        for c in containers(child):
            secret_envs = {
                e["name"]
                for e in c.get("env") or []
                if "secretKeyRef" in (e.get("valueFrom") or {})
            }
            argv = " ".join([*(c.get("command") or []), *(c.get("args") or [])])
            assert "--requirepass" not in argv, ref
            for name in secret_envs:
                assert f"$({name})" not in argv, (ref, name)
            checked += bool(secret_envs)
    assert checked >= 3  # both Redis instances and the runtime read one


def test_the_running_redis_has_no_password_in_its_command_line(tmp_path: Path) -> None:
    agent = managed_agent(cacheMemory="32Mi", stateMemory="32Mi")
    proc: Proc = start_instance(agent, "state", tmp_path)
    try:
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert b"redis" in cmdline and PASSWORD.encode() not in cmdline
    finally:
        proc.stop()
