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
    status: Literal["True", "False", "Unknown"]
    reason: Annotated[
        str, Field(max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    ]
    message: Annotated[str, Field(max_length=32768)] = ""
    last_transition_time: str
    observed_generation: int | None = None


class LiveFigures(Model):
    """Figures the autopilot scrapes from the runtime pods."""

    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    success_rate: float | None = None
    cost_today_usd: Annotated[float | None, Field(alias="costTodayUSD")] = None
    cache_hit_rate: float | None = None
    requests_per_second: float | None = None
    in_flight: float | None = None
    # the gateway's own time per request: request time minus the provider calls' time
    added_latency_ms: float | None = None
    cpu_per_pod: float | None = None  # cores
    burn_usd_per_hour: Annotated[float | None, Field(alias="burnUSDPerHour")] = None
    projected_usd: Annotated[float | None, Field(alias="projectedUSD")] = None
    active_users: float | None = None
    routing_mix: Annotated[dict[str, float], Field(max_length=64)] = {}
    breakers_open: Annotated[dict[str, int], Field(max_length=256)] = {}  # model -> pods
    pods_read: int | None = None
    read_at: str | None = None  # the last complete read (figures held while stale)


class AutopilotDecision(Model):
    time: str
    decision: Annotated[str, Field(max_length=64)]
    message: Annotated[str, Field(max_length=300)]


class AutopilotStatus(Model):
    """The autopilot's last scale decision (``replicas``: the HPA's ``minReplicas`` and
    ``maxReplicas``, which it owns) and its recent decisions, newest first."""

    replicas: int | None = None
    reason: str | None = None
    message: Annotated[str | None, Field(max_length=1024)] = None
    recent: Annotated[list[AutopilotDecision], Field(max_length=20)] = []


class AgentDeploymentStatus(Model):
    observed_generation: int | None = None
    conditions: Annotated[list[Condition], Field(json_schema_extra=map_list("type"))] = []
    replicas: int = 0
    ready_replicas: int = 0
    updated_replicas: int = 0
    endpoint: str | None = None
    live: LiveFigures | None = None
    autopilot: AutopilotStatus | None = None


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
