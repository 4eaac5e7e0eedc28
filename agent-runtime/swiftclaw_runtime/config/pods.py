"""How the runtime pods run: the operator acts on these; the runtime only validates them."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from .autopilot import AlertsSpec, AutopilotSpec
from .base import Model
from .policy import AgentPolicy

DEFAULT_IMAGE = "ghcr.io/swiftclaw/agent-runtime:0.1.0"

Quantity = Annotated[
    str, Field(pattern=r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti|k|M|G|T)?$", max_length=32)
]


class ResourceAmounts(Model):
    cpu: Quantity | None = None
    memory: Quantity | None = None


class Resources(Model):
    requests: ResourceAmounts = ResourceAmounts(cpu="250m", memory="256Mi")
    limits: ResourceAmounts = ResourceAmounts(memory="512Mi")


class RuntimeSpec(Model):
    """How the runtime pods run."""

    image: Annotated[str, Field(min_length=1, max_length=512)] = DEFAULT_IMAGE
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    resources: Resources = Resources()
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    pod_annotations: Annotated[dict[str, str], Field(max_length=64)] = {}
    node_selector: Annotated[dict[str, str], Field(max_length=32)] = {}
    priority_class_name: Annotated[str, Field(max_length=253)] | None = None
    drain_seconds: Annotated[int, Field(ge=0, le=120)] = 5
    grace_seconds: Annotated[int, Field(ge=1, le=3600)] = 30


class MonitoringSpec(Model):
    """ServiceMonitor and PrometheusRule, made only where the Prometheus operator's CRDs exist."""

    enabled: bool = True
    scrape_interval: Annotated[str, Field(pattern=r"^[0-9]+(s|m)$")] = "15s"


class AgentDeploymentSpec(AgentPolicy):
    """The spec of an AgentDeployment: the policy (what the runtime enforces) and how its
    pods run (which only the operator acts on)."""

    runtime: RuntimeSpec = RuntimeSpec()
    monitoring: MonitoringSpec = MonitoringSpec()
    autopilot: AutopilotSpec = AutopilotSpec()
    alerts: AlertsSpec = AlertsSpec()

    def policy(self) -> AgentPolicy:
        """The part a runtime pod loads (the operator-only fields left out)."""
        return AgentPolicy.model_validate(
            self.model_dump(by_alias=True, include=set(AgentPolicy.model_fields))
        )
