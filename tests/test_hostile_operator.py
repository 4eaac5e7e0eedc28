"""The operator against objects and readers it does not trust: an object that carries the
agent's labels but not its owner reference is not the agent's (neither applied over nor
pruned: e2e/test_operator_failures.py shows it on a real API server), and the managed
Redis password is in no container's argv nor in the running server's command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml
from pydantic import ValidationError

from swiftclaw_devtools.processes import Proc
from swiftclaw_operator.api import API_GROUP, AgentDeploymentSpec
from swiftclaw_operator.reconcile import owned
from swiftclaw_runtime.config.agent import MAX_SYSTEM_PROMPT_STORED_BYTES, stored_bytes

from .test_builders import REPO, base_spec, build
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


# --- the system prompt and kopf's annotation ------------------------------------------------

ANNOTATIONS_LIMIT = 256 * 1024  # Kubernetes: all of an object's annotations, keys and values


def annotations_bytes(prompt: str) -> int:
    """The annotations of an AgentDeployment with ``prompt``, applied with ``kubectl apply``
    (its UTF-8 copy of the object) and handled by the operator (kopf's copy of the spec,
    made by kopf's own storage as the operator configures it)."""
    spec = yaml.safe_load((REPO / "examples" / "agent-in-cluster.yaml").read_text())["spec"]
    spec["agent"]["systemPrompt"] = prompt
    obj = {
        "apiVersion": "swiftclaw.dev/v1alpha1",
        "kind": "AgentDeployment",
        "metadata": {"name": "agent", "namespace": "team"},
        "spec": spec,
    }
    kubectl = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    obj["metadata"]["annotations"] = {"kubectl.kubernetes.io/last-applied-configuration": kubectl}
    storage = kopf.AnnotationsDiffBaseStorage(prefix=API_GROUP, key="last-handled-configuration")
    body = kopf.Body(obj)
    patch = kopf.Patch()
    storage.store(body=body, patch=patch, essence=storage.build(body=body))
    annotations = {**obj["metadata"]["annotations"], **patch["metadata"]["annotations"]}
    return sum(len(k.encode()) + len(str(v).encode()) for k, v in annotations.items())


@pytest.mark.parametrize("char", ["a", "é", "中", "\U0001f600"])
def test_the_largest_system_prompt_allowed_fits_in_the_annotations(char: str) -> None:
    per_char = stored_bytes(char)
    prompt = char * (MAX_SYSTEM_PROMPT_STORED_BYTES // per_char)
    spec = base_spec()
    spec["agent"]["systemPrompt"] = prompt
    AgentDeploymentSpec.model_validate(spec)  # allowed
    assert annotations_bytes(prompt) <= ANNOTATIONS_LIMIT


@pytest.mark.parametrize("char", ["é", "\U0001f600"])
def test_a_system_prompt_past_the_annotations_is_refused_naming_it(char: str) -> None:
    """100,000 non-ASCII characters (the field's length bound in characters) do not fit:
    the operator could not record that it handled the agent. Refused with a clear message."""
    prompt = char * 100_000
    assert annotations_bytes(prompt) > ANNOTATIONS_LIMIT  # where it fails
    spec = base_spec()
    spec["agent"]["systemPrompt"] = prompt
    with pytest.raises(ValidationError) as caught:
        AgentDeploymentSpec.model_validate(spec)
    text = str(caught.value)
    assert "systemPrompt" in text and "256 KiB of annotations" in text
