"""The runtime fleet: its config, Deployment, Service, NetworkPolicy, HPA and
PodDisruptionBudget."""

from __future__ import annotations

from typing import Any

import yaml

from swiftclaw_runtime import contract
from swiftclaw_runtime.config import render_runtime_config

from . import redis as redis_resources
from .common import (
    CONFIG_CHECKSUM,
    METRICS_PORT,
    RUNTIME_PORT,
    SECRETS_DIR,
    Agent,
    digest,
    metadata,
    pod_security,
    restricted_container_security,
    selector,
)

COMPONENT = "runtime"
OPERATOR_APP = "swiftclaw-operator"  # the chart's operator pods' app.kubernetes.io/name
CONFIG_FILE = contract.CONFIG_FILE
RUNTIME_UID = 10001


def build_configmap(agent: Agent) -> dict[str, Any]:
    """The runtime config (the policy, defaults filled in). References to Secrets, no secrets."""
    doc = render_runtime_config(agent.name, agent.namespace, agent.spec.policy())
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(agent, agent.config_name, COMPONENT),
        "data": {CONFIG_FILE: yaml.safe_dump(doc, sort_keys=True)},
    }


def _secret_mounts(agent: Agent) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Provider keys and client API keys, each Secret key mounted as the file the runtime reads."""
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    for p in agent.spec.providers:
        if p.api_key_secret_ref is None:
            continue
        vol = f"provider-{p.name}"
        volumes.append(
            {
                "name": vol,
                "secret": {
                    "secretName": p.api_key_secret_ref.name,
                    "items": [
                        {"key": p.api_key_secret_ref.key, "path": contract.PROVIDER_KEY_FILE}
                    ],
                    "defaultMode": 0o440,
                },
            }
        )
        mounts.append(
            {"name": vol, "mountPath": contract.provider_key_dir(p.name), "readOnly": True}
        )
    ref = agent.spec.auth.api_keys_secret_ref
    if ref is not None:
        volumes.append(
            {
                "name": "api-keys",
                "secret": {
                    "secretName": ref.name,
                    "items": [{"key": ref.key, "path": contract.API_KEYS_FILE}],
                    "defaultMode": 0o440,
                },
            }
        )
        mounts.append({"name": "api-keys", "mountPath": contract.api_keys_dir(), "readOnly": True})
    return volumes, mounts


def _env(agent: Agent) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": contract.SECRETS_DIR_ENV, "value": SECRETS_DIR},
        {"name": contract.FLEET_FILE_ENV, "value": contract.FLEET_PATH},
        {"name": contract.LOG_FORMAT_ENV, "value": "json"},
        {  # the runtime derives its in-flight and body bounds from the container's limit
            "name": contract.MEMORY_LIMIT_ENV,
            "valueFrom": {
                "resourceFieldRef": {
                    "containerName": "runtime",
                    "resource": "limits.memory",
                    "divisor": "1",
                }
            },
        },
    ]
    redis = agent.spec.cache.redis
    if redis.mode == "managed":
        env += [
            redis_resources.password_env(contract.REDIS_PASSWORD_ENV, agent),
            {"name": contract.REDIS_URL_ENV, "value": redis_resources.url(agent, "cache")},
            {"name": contract.REDIS_STATE_URL_ENV, "value": redis_resources.url(agent, "state")},
        ]
    elif redis.mode == "external":
        for name, ref in (
            (contract.REDIS_URL_ENV, redis.url_secret_ref),
            (contract.REDIS_STATE_URL_ENV, redis.state_url_secret_ref),
        ):
            if ref is not None:
                env.append(
                    {
                        "name": name,
                        "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}},
                    }
                )
    return env


def _resources(agent: Agent) -> dict[str, Any]:
    res = agent.spec.runtime.resources
    out = {}
    for part, amounts in (("requests", res.requests), ("limits", res.limits)):
        values = {k: v for k, v in amounts.model_dump().items() if v is not None}
        if values:  # an empty map would be dropped by the API server
            out[part] = values
    return out


def build_deployment(agent: Agent, configmap: dict[str, Any]) -> dict[str, Any]:
    """The runtime pods. ``replicas`` is left to the HPA; a config change rolls the pods.

    The fleet document's ConfigMap (``<agent>-fleet``, written by the autopilot) is
    mounted optional, so pods start before it exists, and outside the config checksum: the
    pods re-read it when the kubelet updates the mount, it never rolls them."""
    rt = agent.spec.runtime
    secret_volumes, secret_mounts = _secret_mounts(agent)
    pod_annotations = {
        CONFIG_CHECKSUM: digest({"config": configmap["data"], "mounts": secret_volumes}),
        **rt.pod_annotations,
    }
    # the probes on the metrics port: the client port's connection cap does not refuse them
    http_get = {"port": "metrics"}
    container: dict[str, Any] = {
        "name": "runtime",
        "image": rt.image,
        "imagePullPolicy": rt.image_pull_policy,
        "command": [contract.COMMAND],
        "args": contract.run_args(
            drain_seconds=rt.drain_seconds,
            grace_seconds=rt.grace_seconds,
            log_level=rt.log_level,
            metrics_port=METRICS_PORT,
        ),
        "ports": [
            {"name": "http", "containerPort": RUNTIME_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "env": _env(agent),
        "resources": _resources(agent),
        "startupProbe": {
            "httpGet": {**http_get, "path": contract.HEALTH_PATH},
            "periodSeconds": 2,
            "failureThreshold": 30,
            "timeoutSeconds": 2,
        },
        "livenessProbe": {
            "httpGet": {**http_get, "path": contract.HEALTH_PATH},
            "periodSeconds": 10,
            "failureThreshold": 3,
            "timeoutSeconds": 2,
        },
        "readinessProbe": {
            "httpGet": {**http_get, "path": contract.READY_PATH},
            "periodSeconds": 5,
            "failureThreshold": 2,
            "timeoutSeconds": 2,
        },
        "securityContext": restricted_container_security(),
        "volumeMounts": [
            {"name": "config", "mountPath": contract.CONFIG_DIR, "readOnly": True},
            {"name": "fleet", "mountPath": contract.FLEET_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
            *secret_mounts,
        ],
    }
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": rt.drain_seconds + rt.grace_seconds + 5,
        "securityContext": pod_security(RUNTIME_UID),
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": selector(agent, COMPONENT)},
            }
        ],
        "containers": [container],
        "volumes": [
            {"name": "config", "configMap": {"name": agent.config_name}},
            {"name": "fleet", "configMap": {"name": agent.fleet_name, "optional": True}},
            {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
            *secret_volumes,
        ],
    }
    if rt.node_selector:
        pod_spec["nodeSelector"] = dict(rt.node_selector)
    if rt.priority_class_name:
        pod_spec["priorityClassName"] = rt.priority_class_name
    meta = metadata(agent, agent.name, COMPONENT)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector(agent, COMPONENT)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"},
            },
            "template": {
                "metadata": {"labels": dict(meta["labels"]), "annotations": pod_annotations},
                "spec": pod_spec,
            },
        },
    }


def build_service(agent: Agent) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(agent, agent.name, COMPONENT),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(agent, COMPONENT),
            "ports": [
                {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
                # for the ServiceMonitor; the NetworkPolicy lets only Prometheus reach it
                {
                    "name": "metrics",
                    "port": METRICS_PORT,
                    "targetPort": "metrics",
                    "protocol": "TCP",
                },
            ],
        },
    }


def build_network_policy(agent: Agent) -> dict[str, Any]:
    """The runtime pods: their client port open (clients are the tenants' workloads,
    anywhere), their metrics port (costs, tenant names, breaker states) only to pods of the
    Prometheus namespace of the operator's settings, and with the autopilot on to the
    operator's own pods."""
    ingress: list[dict[str, Any]] = [{"ports": [{"protocol": "TCP", "port": RUNTIME_PORT}]}]
    namespace = agent.settings.prometheus_namespace
    if namespace:
        ingress.append(
            {
                "from": [
                    {
                        "namespaceSelector": {
                            "matchLabels": {"kubernetes.io/metadata.name": namespace}
                        }
                    }
                ],
                "ports": [{"protocol": "TCP", "port": METRICS_PORT}],
            }
        )
    operator_ns = agent.settings.operator_namespace
    if agent.spec.autopilot.enabled and operator_ns:  # the autopilot reads the pods
        ingress.append(
            {
                "from": [
                    {
                        "namespaceSelector": {
                            "matchLabels": {"kubernetes.io/metadata.name": operator_ns}
                        },
                        "podSelector": {"matchLabels": {"app.kubernetes.io/name": OPERATOR_APP}},
                    }
                ],
                "ports": [{"protocol": "TCP", "port": METRICS_PORT}],
            }
        )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(agent, agent.name, COMPONENT),
        "spec": {
            "podSelector": {"matchLabels": selector(agent, COMPONENT)},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }


def hpa_bounds(agent: Agent) -> tuple[int, int]:
    """The HPA's (minReplicas, maxReplicas): spec.scaling's, or the autopilot's decision."""
    low, high = agent.spec.scaling.min_replicas, agent.spec.scaling.max_replicas
    if agent.spec.autopilot.enabled and agent.autopilot_replicas is not None:
        low = high = min(max(agent.autopilot_replicas, low), high)
    return low, high


def created_as(agent: Agent, desired: dict[str, Any]) -> dict[str, Any]:
    """What creating ``desired`` sends: the runtime Deployment at the HPA's lower bound.
    Its applies leave ``replicas`` to the HPA controller (build_hpa); created without it,
    it would start at 1 and the HPA raise it at its first sync (up to 15 s on): a new
    agent Ready on one pod, then not Ready while the second starts, then Ready again."""
    if desired["kind"] != "Deployment" or desired["metadata"]["name"] != agent.name:
        return desired
    return {**desired, "spec": {**desired["spec"], "replicas": hpa_bounds(agent)[0]}}


def build_hpa(agent: Agent) -> dict[str, Any]:
    """Autoscaling within spec.scaling: on CPU, and with ``targetConcurrency`` on the average
    requests in flight per pod too, where the cluster's custom metrics adapter serves them
    (the HPA takes the larger of the two replica counts; without an adapter the operator
    reports the field unsupported, see ``reconcile.unsupported``)."""
    scaling = agent.spec.scaling
    # With the autopilot on, one owner per field: the autopilot owns the HPA's bounds (its
    # decision, in the status, written here on every reconcile alike: min = max = the
    # decision) and the HPA controller owns ``replicas``. At each sync (15 s) the controller
    # sets ``replicas`` straight to ``maxReplicas`` when above it and to ``minReplicas``
    # when below it, before any metric or behaviour ("Current number of replicas above
    # Spec.MaxReplicas" / "below Spec.MinReplicas"), so it follows the decision both ways,
    # metrics-server or not; nothing else writes ``replicas`` (the Deployment leaves it
    # out). A floor alone was not enough: without a metric the HPA never scales down.
    # The autopilot's down window is the only one (the HPA's own 0: no two in series).
    low, high = hpa_bounds(agent)
    down_window = 0 if agent.spec.autopilot.enabled else scaling.scale_down_window_seconds
    metrics: list[dict[str, Any]] = [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 70},
            },
        }
    ]
    if scaling.target_concurrency is not None and agent.settings.custom_metrics:
        metrics.append(
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": contract.IN_FLIGHT_METRIC},
                    "target": {
                        "type": "AverageValue",
                        "averageValue": str(scaling.target_concurrency),
                    },
                },
            }
        )
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(agent, agent.name, COMPONENT),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": agent.name},
            "minReplicas": low,
            "maxReplicas": high,
            "metrics": metrics,
            "behavior": {
                "scaleUp": {
                    "stabilizationWindowSeconds": 0,
                    "selectPolicy": "Max",
                    "policies": [
                        {"type": "Percent", "value": 100, "periodSeconds": 15},
                        {"type": "Pods", "value": 4, "periodSeconds": 15},
                    ],
                },
                "scaleDown": {
                    "stabilizationWindowSeconds": down_window,
                    "policies": [{"type": "Percent", "value": 50, "periodSeconds": 60}],
                },
            },
        },
    }


def build_pdb(agent: Agent) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(agent, agent.name, COMPONENT),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(agent, COMPONENT)}},
    }
