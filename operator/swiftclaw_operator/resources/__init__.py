"""Pure builders: an AgentDeployment in, the manifests of its children out.

No I/O here; :mod:`swiftclaw_operator.reconcile` applies what these return.
"""

from __future__ import annotations

from typing import Any

from . import monitoring, redis, runtime
from .common import Agent, Settings, with_spec_hash

__all__ = ["Agent", "Settings", "build_children", "child_kinds"]


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
        children += [
            redis.build_network_policy(agent),
            redis.build_service(agent),
            redis.build_statefulset(agent),
            redis.build_backup_pvc(agent),
            redis.build_backup_cronjob(agent),
        ]
    if agent.settings.monitoring_available and agent.spec.monitoring.enabled:
        children += [
            monitoring.build_service_monitor(agent),
            monitoring.build_prometheus_rule(agent),
        ]
    return [with_spec_hash(c) for c in children]


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
        ("v1", "PersistentVolumeClaim"),
        ("batch/v1", "CronJob"),
        ("monitoring.coreos.com/v1", "ServiceMonitor"),
        ("monitoring.coreos.com/v1", "PrometheusRule"),
    ]
