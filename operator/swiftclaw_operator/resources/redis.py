"""The managed Redis: StatefulSet with AOF persistence, Service, scheduled backups, and a
NetworkPolicy that lets only the agent's own pods (and its backup job) reach it."""

from __future__ import annotations

from typing import Any

from .common import (
    REDIS_PORT,
    Agent,
    metadata,
    pod_security,
    restricted_container_security,
    selector,
)

COMPONENT = "redis"
BACKUP_COMPONENT = "redis-backup"
REDIS_UID = 999
KEEP_BACKUPS = 7


def _redis_security() -> dict[str, Any]:
    # redis-stack-server writes its module config next to the binary: root FS stays writable.
    return {**restricted_container_security(), "readOnlyRootFilesystem": False}


def build_statefulset(agent: Agent) -> dict[str, Any]:
    redis = agent.spec.cache.redis
    meta = metadata(agent, agent.redis_name, COMPONENT)
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": meta,
        "spec": {
            "serviceName": agent.redis_name,
            "replicas": 1,
            "selector": {"matchLabels": selector(agent, COMPONENT)},
            # PVCs go with the StatefulSet, so deleting the agent leaves no volume behind.
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": "Delete",
                "whenScaled": "Retain",
            },
            "template": {
                "metadata": {"labels": dict(meta["labels"])},
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": pod_security(REDIS_UID),
                    "containers": [
                        {
                            "name": "redis",
                            "image": agent.settings.redis_image,
                            "env": [
                                {
                                    "name": "REDIS_ARGS",
                                    "value": (
                                        "--appendonly yes --appendfsync everysec --dir /data "
                                        "--save 900 1 --maxmemory-policy allkeys-lru"
                                    ),
                                }
                            ],
                            "ports": [{"name": "redis", "containerPort": REDIS_PORT}],
                            "readinessProbe": {
                                "exec": {"command": ["redis-cli", "ping"]},
                                "periodSeconds": 5,
                                "timeoutSeconds": 2,
                            },
                            "livenessProbe": {
                                "tcpSocket": {"port": "redis"},
                                "periodSeconds": 10,
                                "failureThreshold": 6,
                            },
                            "resources": {
                                "requests": {"cpu": "100m", "memory": "256Mi"},
                                "limits": {"memory": "1Gi"},
                            },
                            "securityContext": _redis_security(),
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                        }
                    ],
                },
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data", "labels": selector(agent, COMPONENT)},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": redis.storage}},
                    },
                }
            ],
        },
    }


def build_service(agent: Agent) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(agent, agent.redis_name, COMPONENT),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(agent, COMPONENT),
            "ports": [{"name": "redis", "port": REDIS_PORT, "targetPort": "redis"}],
        },
    }


def build_backup_pvc(agent: Agent) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata(agent, f"{agent.redis_name}-backups", BACKUP_COMPONENT),
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": agent.spec.cache.redis.storage}},
        },
    }


def build_backup_cronjob(agent: Agent) -> dict[str, Any]:
    """An RDB snapshot on schedule, the last few kept."""
    script = (
        f"set -e; f=/backups/dump-$(date +%Y%m%dT%H%M%S).rdb; "
        f'redis-cli -h {agent.redis_name} -p {REDIS_PORT} --rdb "$f"; '
        f"ls -1t /backups/dump-*.rdb | tail -n +{KEEP_BACKUPS + 1} | xargs -r rm --"
    )
    meta = metadata(agent, f"{agent.redis_name}-backup", BACKUP_COMPONENT)
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": meta,
        "spec": {
            "schedule": agent.spec.cache.redis.backup_schedule,
            "concurrencyPolicy": "Forbid",
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "spec": {
                    "backoffLimit": 2,
                    "template": {
                        "metadata": {"labels": dict(meta["labels"])},
                        "spec": {
                            "restartPolicy": "OnFailure",
                            "automountServiceAccountToken": False,
                            "securityContext": pod_security(REDIS_UID),
                            "containers": [
                                {
                                    "name": "backup",
                                    "image": agent.settings.redis_image,
                                    "command": ["sh", "-c", script],
                                    "securityContext": restricted_container_security(),
                                    "volumeMounts": [{"name": "backups", "mountPath": "/backups"}],
                                }
                            ],
                            "volumes": [
                                {
                                    "name": "backups",
                                    "persistentVolumeClaim": {
                                        "claimName": f"{agent.redis_name}-backups"
                                    },
                                }
                            ],
                        },
                    },
                }
            },
        },
    }


def build_network_policy(agent: Agent) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(agent, agent.redis_name, COMPONENT),
        "spec": {
            "podSelector": {"matchLabels": selector(agent, COMPONENT)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {"podSelector": {"matchLabels": selector(agent, "runtime")}},
                        {"podSelector": {"matchLabels": selector(agent, BACKUP_COMPONENT)}},
                    ],
                    "ports": [{"protocol": "TCP", "port": REDIS_PORT}],
                }
            ],
        },
    }
