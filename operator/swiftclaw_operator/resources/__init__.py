"""Pure builders: an AgentDeployment in, the manifests of its children out.

No I/O here; :mod:`swiftclaw_operator.reconcile` applies what these return.
"""

from __future__ import annotations

from typing import Any

from . import monitoring, redis, runtime
from .common import Agent, Settings, with_spec_hash

__all__ = ["Agent", "Settings", "build_children", "child_kinds", "create_only_children"]


def build_children(agent: Agent) -> list[dict[str, Any]]:
    """Every child, in the order to apply them (config first, so pods find it)."""
    configmap = runtime.build_configmap(agent)
    children = [
        configmap,
        runtime.build_service(agent),
        runtime.build_deployment(agent, configmap),
        runtime.build_hpa(agent),
        runtime.build_pdb(agent),
    ]
    if agent.spec.cache.redis.mode == "managed":
        children += redis.build_children(agent)
    if agent.settings.monitoring_available and agent.spec.monitoring.enabled:
        children += [
            monitoring.build_service_monitor(agent),
            monitoring.build_prometheus_rule(agent),
        ]
    return [with_spec_hash(c) for c in children]


def create_only_children(agent: Agent, password: str) -> list[dict[str, Any]]:
    """Children created once and never read back or updated (a 409 means they exist):
    the managed Redis's password Secret, ``password`` a fresh random one."""
    if agent.spec.cache.redis.mode != "managed":
        return []
    return [redis.build_auth_secret(agent, password)]


def child_kinds() -> list[tuple[str, str]]:
    """(apiVersion, kind) of everything the operator may create, for listing and RBAC."""
    return [
        ("v1", "ConfigMap"),
        ("v1", "Service"),
        ("apps/v1", "Deployment"),
        ("autoscaling/v2", "HorizontalPodAutoscaler"),
        ("policy/v1", "PodDisruptionBudget"),
        ("networking.k8s.io/v1", "NetworkPolicy"),
        ("apps/v1", "StatefulSet"),
        ("batch/v1", "CronJob"),
        # create-only (the managed Redis's password): never read, updated or listed
        ("v1", "Secret"),
        ("monitoring.coreos.com/v1", "ServiceMonitor"),
        ("monitoring.coreos.com/v1", "PrometheusRule"),
    ]
