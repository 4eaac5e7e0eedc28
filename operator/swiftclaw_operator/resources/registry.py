"""The one list of what the operator touches in the cluster, and with which verbs.

Every other list derives from this one: the children built and pruned
(:func:`build_children`, :func:`unwanted_children`), the API paths
(:func:`plural`), the kinds the operator watches, and the chart's RBAC rules
(:mod:`swiftclaw_operator.rbac`, rendered into the chart by ``make crds``; a test
compares the rendered chart with them).

A child kind needs ``list`` and ``watch`` (the operator's cache of its children is fed
by a watch of each child kind), ``create`` (a child the cache lacks is created), ``get``
(whose is an object that holds a child's name, when a create finds one), ``patch``
(server-side apply); ``delete`` when a child of that kind can stop being wanted (pruning).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from ..api import API, PLURAL
from ..api import KIND as AGENT_KIND
from . import monitoring, redis, runtime
from .common import Agent

APPLY = frozenset({"get", "create", "patch"})
PRUNE = frozenset({"delete"})
WATCH = frozenset({"list", "watch"})
MONITORING_API = "monitoring.coreos.com/v1"


@dataclass(frozen=True)
class Kind:
    """An API resource the operator reads or writes."""

    api_version: str
    kind: str
    plural: str
    # Verbs needed beyond those its children imply (watched kinds, events, the CRD's own).
    verbs: frozenset[str] = frozenset()
    # Served only where an optional API is installed (the Prometheus operator's CRDs).
    requires: str | None = None
    subresource: str | None = None

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    @property
    def resource(self) -> str:
        return f"{self.plural}/{self.subresource}" if self.subresource else self.plural


def _monitoring(agent: Agent) -> bool:
    return agent.settings.monitoring_available and agent.spec.monitoring.enabled


def _managed_redis(agent: Agent) -> bool:
    return agent.spec.cache.redis.mode == "managed"


def _redis_backups(agent: Agent) -> bool:
    return _managed_redis(agent) and agent.spec.cache.redis.backup is not None


@dataclass(frozen=True)
class Child:
    """One child of an AgentDeployment: its kind, its builder, and when it is wanted
    (None: always; otherwise it is pruned when the predicate turns false)."""

    kind: Kind
    build: Callable[[Agent], dict[str, Any]]
    wanted: Callable[[Agent], bool] | None = None

    def available(self, agent: Agent) -> bool:
        """Is the kind's API served? (Only the monitoring kinds may be absent.)"""
        return self.kind.requires is None or agent.settings.monitoring_available


CONFIGMAP = Kind("v1", "ConfigMap", "configmaps")
SERVICE = Kind("v1", "Service", "services")
DEPLOYMENT = Kind("apps/v1", "Deployment", "deployments")
HPA = Kind("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers")
PDB = Kind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets")
NETWORK_POLICY = Kind("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies")
STATEFULSET = Kind("apps/v1", "StatefulSet", "statefulsets")
CRONJOB = Kind("batch/v1", "CronJob", "cronjobs")
SERVICE_MONITOR = Kind(MONITORING_API, "ServiceMonitor", "servicemonitors", requires=MONITORING_API)
PROMETHEUS_RULE = Kind(MONITORING_API, "PrometheusRule", "prometheusrules", requires=MONITORING_API)

# Not children, still touched:
POD = Kind("v1", "Pod", "pods", WATCH)  # cached: the pods' readiness, for the status
EVENT = Kind("v1", "Event", "events", frozenset({"create"}))
# Created once, never read back (the managed Redis's generated password): create only,
# so the operator can read no Secret.
SECRET = Kind("v1", "Secret", "secrets", frozenset({"create"}))
AGENT = Kind(API, AGENT_KIND, PLURAL, frozenset({"get", "list", "watch", "patch"}))  # kopf
AGENT_STATUS = Kind(API, AGENT_KIND, PLURAL, frozenset({"get", "patch"}), subresource="status")
# blockOwnerDeletion on the children's owner references needs update on the finalizers.
AGENT_FINALIZERS = Kind(API, AGENT_KIND, PLURAL, frozenset({"update"}), subresource="finalizers")
# kopf's peering (two replicas, one active): namespaced when namespaces are listed.
PEERING = Kind(
    "kopf.dev/v1", "KopfPeering", "kopfpeerings", frozenset({"get", "list", "watch", "patch"})
)
CLUSTER_PEERING = Kind("kopf.dev/v1", "ClusterKopfPeering", "clusterkopfpeerings", PEERING.verbs)
# Serving every namespace, kopf watches CRDs to notice resources come and go (read-only).
CRD = Kind(
    "apiextensions.k8s.io/v1",
    "CustomResourceDefinition",
    "customresourcedefinitions",
    frozenset({"list", "watch"}),
)

# In the order to apply them: config first, so pods find it.
CHILDREN: tuple[Child, ...] = (
    Child(CONFIGMAP, runtime.build_configmap),
    Child(SERVICE, runtime.build_service),
    Child(NETWORK_POLICY, runtime.build_network_policy),
    Child(DEPLOYMENT, lambda a: runtime.build_deployment(a, runtime.build_configmap(a))),
    Child(HPA, runtime.build_hpa),
    Child(PDB, runtime.build_pdb),
    *(
        Child(kind, partial(build, role=role), _managed_redis)
        for role in redis.ROLES
        for kind, build in (
            (NETWORK_POLICY, redis.build_network_policy),
            (SERVICE, redis.build_service),
            (STATEFULSET, redis.build_statefulset),
        )
    ),
    Child(CRONJOB, redis.build_backup_cronjob, _redis_backups),
    Child(SERVICE_MONITOR, monitoring.build_service_monitor, _monitoring),
    Child(PROMETHEUS_RULE, monitoring.build_prometheus_rule, _monitoring),
)
# Namespaced kinds other than children; the peering is added only where peering runs.
OTHERS: tuple[Kind, ...] = (POD, EVENT, SECRET, AGENT, AGENT_STATUS, AGENT_FINALIZERS)
KINDS: tuple[Kind, ...] = tuple(dict.fromkeys([c.kind for c in CHILDREN] + list(OTHERS)))


def wanted_children(agent: Agent) -> list[Child]:
    return [c for c in CHILDREN if c.available(agent) and (c.wanted is None or c.wanted(agent))]


def unwanted_children(agent: Agent) -> list[Child]:
    """Optional children the spec no longer asks for (their API served, so they may exist)."""
    return [
        c for c in CHILDREN if c.available(agent) and c.wanted is not None and not c.wanted(agent)
    ]


def child_kinds() -> list[Kind]:
    """Every kind the operator may create as a child (each once)."""
    return list(dict.fromkeys(c.kind for c in CHILDREN))


def verbs(kind: Kind) -> frozenset[str]:
    """Every verb the operator needs on ``kind``."""
    mine = [c for c in CHILDREN if c.kind == kind]
    out = set(kind.verbs)
    if mine:
        out |= APPLY | WATCH  # every child kind is cached from a watch
    if any(c.wanted is not None for c in mine):
        out |= PRUNE
    return frozenset(out)


_BY_KIND = {k.kind: k for k in (*KINDS, PEERING, CLUSTER_PEERING, CRD) if not k.subresource}


def plural(kind: str) -> str:
    """The URL plural of a kind the operator touches (KeyError for any other)."""
    return _BY_KIND[kind].plural
