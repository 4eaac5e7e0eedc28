"""The managed Redis: two instances, each a StatefulSet with a Service and a NetworkPolicy,
a generated password, and backups to S3-compatible object storage.

- **cache** (``<agent>-redis-cache``): the exact and semantic caches and stored Responses,
  ``allkeys-lru`` under a ``maxmemory`` below the container's limit, no persistence: under
  pressure it evicts, and a restart empties it; nothing there is more than a provider call.
- **state** (``<agent>-redis-state``): rate-limit counters and budget spend,
  ``noeviction`` (a full instance refuses writes, and the runtime counts locally, rather
  than forget a counter), append-only persistence on a volume kept when the agent goes
  unless ``deleteDataWithAgent``; this is what the backup CronJob snapshots.

The password lives in the Secret ``<agent>-redis-auth``, made once by the operator
(create-only: it never reads a Secret back) and handed to every pod by ``secretKeyRef``.
Never in an argv (``--requirepass`` would show it to anything that reads the container's
spec as the runtime ran it, or the processes' command lines): the container's shell
writes it from the environment into an ACL file of its own (``mktemp``: mode 0600) and
starts Redis with ``--aclfile`` (:data:`START`).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from swiftclaw_runtime import contract

from .common import (
    REDIS_PORT,
    Agent,
    metadata,
    pod_security,
    restricted_container_security,
    selector,
)

Role = Literal["cache", "state"]
ROLES: tuple[Role, ...] = ("cache", "state")
BACKUP_COMPONENT = "redis-backup"
BACKUP_DEADLINE_SECONDS = 3600
REDIS_UID = 999
BACKUP_UID = 10001  # the runtime image's user
PASSWORD_KEY = "password"
# redis-cli reads it, so the probes authenticate; the server reads it through START.
PASSWORD_ENV = "REDISCLI_AUTH"
# The container's command, before the server's arguments: ``sh -c START <server> <args>``.
# The shell writes the password (printf is a builtin: in no argv) as the default user's
# in a fresh 0600 file, then becomes ``$0`` (redis-stack-server) with ``--aclfile``.
START = (
    "umask 077 && acl=`mktemp` && "
    f'printf \'user default on >%s ~* &* +@all\\n\' "${PASSWORD_ENV}" > "$acl" && '
    'exec "$0" --aclfile "$acl" "$@"'
)
SERVER = "redis-stack-server"
RUNTIME_PASSWORD_ENV = contract.REDIS_PASSWORD_ENV
# maxmemory as a share of the container's memory limit. The rest is Redis's own overhead
# (buffers, fragmentation) and, for the state instance, the copy-on-write pages of the
# fork that writes a snapshot or rewrites the append-only file, and the backup's transfer.
MAXMEMORY_FRACTION: dict[Role, float] = {"cache": 0.75, "state": 0.5}
POLICY: dict[Role, str] = {"cache": "allkeys-lru", "state": "noeviction"}
DATA_DIR = "/data"
UNITS = {"Mi": 1 << 20, "Gi": 1 << 30}


def component(role: Role) -> str:
    return f"redis-{role}"


def instance_name(agent: Agent, role: Role) -> str:
    return f"{agent.redis_name}-{role}"


def auth_secret_name(agent: Agent) -> str:
    return f"{agent.redis_name}-auth"


def state_claim_name(agent: Agent) -> str:
    """The state instance's volume claim (the StatefulSet's template ``data``, ordinal 0)."""
    return f"data-{instance_name(agent, 'state')}-0"


def memory_bytes(quantity: str) -> int:
    m = re.fullmatch(r"([0-9]+)(Mi|Gi)", quantity)
    if m is None:
        raise ValueError(f"not a memory quantity in Mi or Gi: {quantity!r}")
    return int(m.group(1)) * UNITS[m.group(2)]


def memory_limit(agent: Agent, role: Role) -> str:
    return agent.spec.cache.redis.memory_limit(role)


def maxmemory(agent: Agent, role: Role) -> int:
    return int(memory_bytes(memory_limit(agent, role)) * MAXMEMORY_FRACTION[role])


def server_command() -> list[str]:
    """The container's command: the shell that reads the password (see :data:`START`)."""
    return ["sh", "-c", START, SERVER]


def server_args(agent: Agent, role: Role) -> list[str]:
    """redis-server's arguments (none of them the password: see :data:`START`)."""
    args = [
        "--port",
        str(REDIS_PORT),
        "--maxmemory",
        str(maxmemory(agent, role)),
        "--maxmemory-policy",
        POLICY[role],
    ]
    if role == "cache":
        return [*args, "--save", "", "--appendonly", "no"]
    return [
        *args,
        "--dir",
        DATA_DIR,
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--save",
        "900 1",
    ]


def url(agent: Agent, role: Role, password_env: str = RUNTIME_PASSWORD_ENV) -> str:
    """The instance's URL, its password as ``$(env)`` for the kubelet to expand."""
    return f"redis://:$({password_env})@{instance_name(agent, role)}:{REDIS_PORT}/0"


def password_env(name: str, agent: Agent) -> dict[str, Any]:
    return {
        "name": name,
        "valueFrom": {"secretKeyRef": {"name": auth_secret_name(agent), "key": PASSWORD_KEY}},
    }


def build_auth_secret(agent: Agent, password: str) -> dict[str, Any]:
    """The password Secret, created once (never updated: the pods hold the password).

    Kept with the data, like the state volume: without an owner reference (unless
    ``deleteDataWithAgent``), so an agent deleted and created again finds the same
    password, and no garbage collection of the old one races the new agent's pods."""
    meta = metadata(agent, auth_secret_name(agent), "redis")
    if not agent.spec.cache.redis.deletes_data:
        del meta["ownerReferences"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta,
        "type": "Opaque",
        "stringData": {PASSWORD_KEY: password},
    }


def _redis_security() -> dict[str, Any]:
    # redis-stack-server writes its module config next to the binary: root FS stays writable.
    return {**restricted_container_security(), "readOnlyRootFilesystem": False}


def build_statefulset(agent: Agent, role: Role) -> dict[str, Any]:
    redis = agent.spec.cache.redis
    name = instance_name(agent, role)
    meta = metadata(agent, name, component(role))
    limit = memory_limit(agent, role)
    container: dict[str, Any] = {
        "name": "redis",
        "image": agent.settings.redis_image,
        "command": server_command(),
        "args": server_args(agent, role),
        "env": [password_env(PASSWORD_ENV, agent)],
        "ports": [{"name": "redis", "containerPort": REDIS_PORT}],
        "readinessProbe": {
            "exec": {"command": ["redis-cli", "-p", str(REDIS_PORT), "ping"]},
            "periodSeconds": 5,
            "timeoutSeconds": 2,
        },
        "livenessProbe": {
            "tcpSocket": {"port": "redis"},
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        "resources": {
            "requests": {"cpu": "100m", "memory": limit},
            "limits": {"memory": limit},
        },
        "securityContext": _redis_security(),
    }
    spec: dict[str, Any] = {
        "serviceName": name,
        "replicas": 1,
        "selector": {"matchLabels": selector(agent, component(role))},
        "template": {
            "metadata": {"labels": dict(meta["labels"])},
            "spec": {
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "securityContext": pod_security(REDIS_UID),
                "containers": [container],
            },
        },
    }
    if role == "state":
        container["volumeMounts"] = [{"name": "data", "mountPath": DATA_DIR}]
        # The claim has no owner reference of the agent's: with Retain it outlives the
        # StatefulSet (the agent deleted, or the mode changed); with Delete, the StatefulSet
        # controller makes it the StatefulSet's, and it goes with it.
        keep = "Delete" if redis.deletes_data else "Retain"
        spec["persistentVolumeClaimRetentionPolicy"] = {"whenDeleted": keep, "whenScaled": "Retain"}
        spec["volumeClaimTemplates"] = [
            {
                "metadata": {"name": "data", "labels": selector(agent, component(role))},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": redis.storage_size}},
                },
            }
        ]
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta, "spec": spec}


def build_service(agent: Agent, role: Role) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(agent, instance_name(agent, role), component(role)),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(agent, component(role)),
            "ports": [{"name": "redis", "port": REDIS_PORT, "targetPort": "redis"}],
        },
    }


def build_network_policy(agent: Agent, role: Role) -> dict[str, Any]:
    """Only the agent's runtime pods reach an instance (and the backup job, the state one)."""
    sources = ["runtime", BACKUP_COMPONENT] if role == "state" else ["runtime"]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(agent, instance_name(agent, role), component(role)),
        "spec": {
            "podSelector": {"matchLabels": selector(agent, component(role))},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": selector(agent, s)}} for s in sources],
                    "ports": [{"protocol": "TCP", "port": REDIS_PORT}],
                }
            ],
        },
    }


def backup_name(agent: Agent) -> str:
    return f"{agent.redis_name}-backup"


def backup_prefix(agent: Agent) -> str:
    backup = agent.spec.cache.redis.backup
    assert backup is not None
    return backup.s3.prefix or f"{agent.namespace}/{agent.name}"


def s3_args(agent: Agent) -> list[str]:
    """``--bucket ... --prefix ... [--endpoint ...] --region ...`` of redis-backup/-restore."""
    backup = agent.spec.cache.redis.backup
    assert backup is not None
    s3 = backup.s3
    args = ["--bucket", s3.bucket, "--prefix", backup_prefix(agent)]
    if s3.endpoint:
        args += ["--endpoint", s3.endpoint]
    return [*args, "--region", s3.region]


def s3_env(agent: Agent) -> list[dict[str, Any]]:
    backup = agent.spec.cache.redis.backup
    assert backup is not None
    return [
        {
            "name": key,
            "valueFrom": {"secretKeyRef": {"name": backup.s3.credentials_secret_name, "key": key}},
        }
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    ]


def build_backup_cronjob(agent: Agent) -> dict[str, Any]:
    """``swiftclaw redis-backup`` (the runtime image) on schedule: an RDB snapshot of the
    state instance uploaded to object storage, the retention applied. Without
    ``backup`` in the spec, only its identity (what pruning needs)."""
    backup = agent.spec.cache.redis.backup
    meta = metadata(agent, backup_name(agent), BACKUP_COMPONENT)
    if backup is None:
        return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta}
    args = ["redis-backup", *s3_args(agent), "--keep", str(backup.keep)]
    if backup.max_age_days is not None:
        args += ["--max-age-days", str(backup.max_age_days)]
    rt = agent.spec.runtime
    container = {
        "name": "backup",
        "image": rt.image,
        "imagePullPolicy": rt.image_pull_policy,
        "command": [contract.COMMAND],
        "args": [*args, "--work-dir", "/tmp"],
        "env": [
            password_env(RUNTIME_PASSWORD_ENV, agent),
            {"name": contract.REDIS_STATE_URL_ENV, "value": url(agent, "state")},
            *s3_env(agent),
        ],
        "securityContext": restricted_container_security(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        # Namespaces with quotas refuse pods without them; the snapshot streams to disk.
        "resources": {
            "requests": {"cpu": "100m", "memory": "192Mi"},
            "limits": {"memory": "384Mi"},
        },
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": meta,
        "spec": {
            "schedule": backup.schedule,
            "concurrencyPolicy": "Forbid",
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "spec": {
                    "backoffLimit": 2,
                    # A hung run would hold the schedule (concurrencyPolicy Forbid): end it.
                    "activeDeadlineSeconds": BACKUP_DEADLINE_SECONDS,
                    "template": {
                        "metadata": {"labels": dict(meta["labels"])},
                        "spec": {
                            "restartPolicy": "Never",
                            "automountServiceAccountToken": False,
                            "enableServiceLinks": False,
                            "securityContext": pod_security(BACKUP_UID),
                            "containers": [container],
                            "volumes": [{"name": "tmp", "emptyDir": {}}],
                        },
                    },
                }
            },
        },
    }
