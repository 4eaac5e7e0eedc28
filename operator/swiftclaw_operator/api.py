"""The AgentDeployment API (swiftclaw.dev/v1alpha1) as the operator serves it.

The spec model is the runtime's (:class:`AgentDeploymentSpec`: the policy the pods enforce
plus how they run), so one definition validates the manifest, the CRD and the pod config.
This module adds the status, the CRD's names, printer columns and root rules.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from swiftclaw_runtime.config import (
    API_GROUP,
    API_VERSION,
    KIND,
    AgentDeploymentSpec,
    Model,
    cel,
    map_list,
)

PLURAL = "agentdeployments"
SINGULAR = "agentdeployment"
SHORT_NAMES = ["agd", "agents"]
CRD_NAME = f"{PLURAL}.{API_GROUP}"
# Children append suffixes to the name; the longest is the backup CronJob's "-redis-backup",
# and a CronJob's name may have at most 52 characters (its Jobs add 11).
MAX_NAME_LENGTH = 52 - len("-redis-backup")

# --- status ----------------------------------------------------------------------------

ConditionType = Literal[
    "Ready",
    "Progressing",
    "Degraded",
    "FailoverActive",
    "BudgetExceeded",
    "MetricsStale",
    "CostSpike",
]
CONDITION_TYPES: tuple[ConditionType, ...] = (
    "Ready",
    "Progressing",
    "Degraded",
    "FailoverActive",
    "BudgetExceeded",
    "MetricsStale",
    "CostSpike",
)


class Condition(Model):
    type: ConditionType
    """Ready, Progressing, Degraded (set by the operator), or FailoverActive and BudgetExceeded
    (reserved for the autopilot, not set today)."""
    status: Literal["True", "False", "Unknown"]
    """True, False or Unknown."""
    reason: Annotated[
        str, Field(max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    ]
    """A CamelCase word saying why (InvalidSpec, NameClash, RedisStarting, ...): the runbook
    agent-degraded lists them."""
    message: Annotated[str, Field(max_length=32768)] = ""
    """What the operator saw, in words (0/3 runtime pods ready: 3 in ImagePullBackOff)."""
    last_transition_time: str
    """When the status last changed."""
    observed_generation: int | None = None
    """The metadata.generation the condition describes."""


class LiveFigures(Model):
    """Figures the autopilot reads from the runtime pods."""

    p50_ms: float | None = None
    """Median latency in ms."""
    p95_ms: float | None = None
    """95th percentile latency in ms (the P95 column)."""
    p99_ms: float | None = None
    """99th percentile latency in ms."""
    success_rate: float | None = None
    """Share of successful requests."""
    cost_today_usd: Annotated[float | None, Field(alias="costTodayUSD")] = None
    """Spend today in USD (the COST TODAY column)."""
    cache_hit_rate: float | None = None
    """Share of requests served from the cache."""
    requests_per_second: float | None = None
    """Requests per second over the last interval, summed over the ready pods."""
    in_flight: float | None = None
    """Requests in flight across the fleet."""
    added_latency_ms: float | None = None
    """The gateway's own time per request in ms: request time minus the provider calls' time."""
    cpu_per_pod: float | None = None
    """CPU cores used per pod."""
    loop_lag_ms: float | None = None
    """The pods' mean event-loop lag in ms (how late a timer fires: the gateway's backlog)."""
    burn_usd_per_hour: Annotated[float | None, Field(alias="burnUSDPerHour")] = None
    """Spend rate over the last hour in USD."""
    projected_usd: Annotated[float | None, Field(alias="projectedUSD")] = None
    """Spend projected at the budget period's end in USD."""
    active_users: float | None = None
    """Distinct users today (the shared count in Redis; without Redis, the largest pod's own)."""
    routing_mix: Annotated[dict[str, float], Field(max_length=64)] = {}
    """Share of requests per tier."""
    breakers_open: Annotated[dict[str, int], Field(max_length=256)] = {}
    """Per model, the number of ready pods whose breaker for it is open."""
    pods_read: int | None = None
    """Ready pods read in the last interval."""
    read_at: str | None = None
    """When the last complete read was (the figures are held while reads are stale)."""


class AutopilotDecision(Model):
    """One decision of the autopilot."""

    time: str
    """When it was made."""
    decision: Annotated[str, Field(max_length=64)]
    """What was decided (ScaleUp, FleetFailover, BudgetDowngrade, ...)."""
    message: Annotated[str, Field(max_length=300)]
    """Why, in words."""


class AutopilotStatus(Model):
    """The autopilot's last scale decision (``replicas``: the HPA's ``minReplicas`` and
    ``maxReplicas``, which it owns) and its recent decisions, newest first."""

    replicas: int | None = None
    """The replicas the autopilot decided (the HPA's minReplicas and maxReplicas)."""
    reason: str | None = None
    """The reason of that decision (for example ProviderBound)."""
    message: Annotated[str | None, Field(max_length=1024)] = None
    """The decision in words."""
    recent: Annotated[list[AutopilotDecision], Field(max_length=20)] = []
    """The last 20 decisions, newest first."""


class AgentDeploymentStatus(Model):
    """What the operator observed: the conditions, the runtime pods, the endpoint."""

    observed_generation: int | None = None
    """The metadata.generation the operator last reconciled."""
    conditions: Annotated[list[Condition], Field(json_schema_extra=map_list("type"))] = []
    """Ready, Progressing and Degraded, each with a reason and a message. An Event goes with
    every change of a condition's status and, while Degraded, with every new reason of what
    reports trouble; a change of words or counts alone is written within 20 s."""
    replicas: int = 0
    """Runtime pods the Deployment has."""
    ready_replicas: int = 0
    """Runtime pods ready (the REPLICAS column)."""
    updated_replicas: int = 0
    """Runtime pods running the current spec."""
    endpoint: str | None = None
    """The agent's OpenAI-compatible base URL inside the cluster
    (http://<name>.<namespace>.svc/v1)."""
    live: LiveFigures | None = None
    """Live figures the autopilot reads from the runtime pods every interval (the operator)."""
    autopilot: AutopilotStatus | None = None
    """What the autopilot decided last, and its recent decisions (the operator)."""


ROOT_RULES: dict[str, Any] = cel(
    (
        f"self.metadata.name.size() <= {MAX_NAME_LENGTH}",
        f"metadata.name must be at most {MAX_NAME_LENGTH} characters: children add suffixes to it",
        None,
    )
)

PRINTER_COLUMNS = [
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
    },
    {"name": "Replicas", "type": "integer", "jsonPath": ".status.readyReplicas"},
    {
        "name": "P95",
        "type": "number",
        "jsonPath": ".status.live.p95Ms",
        "description": "p95 latency (ms)",
    },
    {
        "name": "Cost today",
        "type": "number",
        "jsonPath": ".status.live.costTodayUSD",
        "description": "spend today (USD)",
    },
    {
        "name": "Reason",
        "type": "string",
        "priority": 1,
        "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

API = f"{API_GROUP}/{API_VERSION}"
__all__ = [
    "API",
    "API_GROUP",
    "API_VERSION",
    "KIND",
    "AgentDeploymentSpec",
    "AgentDeploymentStatus",
    "Condition",
]
