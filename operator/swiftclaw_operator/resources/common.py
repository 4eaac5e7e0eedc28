"""What every child manifest shares: names, labels, the owner reference, a content hash.

``RUNTIME_PORT`` and ``SECRETS_DIR`` come from the runtime's :mod:`swiftclaw_runtime.contract`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

# re-exported for the builders
from swiftclaw_runtime.contract import METRICS_PORT as METRICS_PORT
from swiftclaw_runtime.contract import RUNTIME_PORT as RUNTIME_PORT
from swiftclaw_runtime.contract import SECRETS_DIR as SECRETS_DIR

from ..api import API, KIND, AgentDeploymentSpec

MANAGED_BY = "swiftclaw-operator"
SPEC_HASH = "swiftclaw.dev/spec-hash"
CONFIG_CHECKSUM = "swiftclaw.dev/config-checksum"
REDIS_PORT = 6379


@dataclass(frozen=True)
class Settings:
    """Operator-wide settings, the same for every agent (made by ``OperatorConfig``)."""

    redis_image: str = "redis/redis-stack-server:7.4.0-v1"
    runbook_base_url: str = "https://github.com/swiftclaw/swiftclaw/blob/main/docs/runbooks"
    monitoring_available: bool = False
    # A custom metrics adapter serves the runtime's in-flight gauge to the HPA.
    custom_metrics: bool = False
    # The namespace Prometheus scrapes from: the only one the runtime pods' NetworkPolicy
    # lets reach their metrics port ("": none, the port then answers the kubelet's probes).
    prometheus_namespace: str = "monitoring"
    # The operator's own namespace: with the autopilot on, its pods read the runtime pods'
    # metrics port (the NetworkPolicy lets them, and only them, besides Prometheus).
    operator_namespace: str = ""


@dataclass(frozen=True)
class Agent:
    """One AgentDeployment, as the builders need it."""

    name: str
    namespace: str
    uid: str
    spec: AgentDeploymentSpec
    settings: Settings = field(default_factory=Settings)
    # The autopilot's replica count (status.autopilot.replicas), the HPA's bounds while
    # spec.autopilot.enabled; read with the spec so that every reconcile writes the same.
    autopilot_replicas: int | None = None

    @property
    def redis_name(self) -> str:
        return f"{self.name}-redis"

    @property
    def config_name(self) -> str:
        return f"{self.name}-config"

    @property
    def fleet_name(self) -> str:
        """The ConfigMap of the autopilot's fleet document (``swiftclaw_runtime.config.fleet``)."""
        return f"{self.name}-fleet"


def labels(agent: Agent, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "swiftclaw-agent",
        "app.kubernetes.io/instance": agent.name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/part-of": "swiftclaw",
    }


def selector(agent: Agent, component: str) -> dict[str, str]:
    """The labels that select a component's pods (a subset of :func:`labels` that never changes)."""
    return {
        "app.kubernetes.io/name": "swiftclaw-agent",
        "app.kubernetes.io/instance": agent.name,
        "app.kubernetes.io/component": component,
    }


def owner_reference(agent: Agent) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": KIND,
        "name": agent.name,
        "uid": agent.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(agent: Agent, name: str, component: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": agent.namespace,
        "labels": labels(agent, component),
        "ownerReferences": [owner_reference(agent)],
        **extra,
    }


def digest(obj: Any) -> str:
    """A stable short hash of JSON-able content."""
    return hashlib.sha256(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def with_spec_hash(manifest: dict[str, Any]) -> dict[str, Any]:
    """Stamp a manifest with the hash of its own desired content (drift and change detection)."""
    annotations = manifest["metadata"].setdefault("annotations", {})
    annotations.pop(SPEC_HASH, None)
    annotations[SPEC_HASH] = digest(manifest)
    return manifest


def restricted_container_security() -> dict[str, Any]:
    """Pod Security Standards "restricted" for a container."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security(uid: int) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
