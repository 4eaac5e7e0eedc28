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
    """CPU, as a Kubernetes quantity (250m, 1)."""
    memory: Quantity | None = None
    """Memory, as a Kubernetes quantity (256Mi); the operator also hands the runtime its memory
    limit, from which the runtime derives its edge bounds."""


class Resources(Model):
    requests: ResourceAmounts = ResourceAmounts(cpu="250m", memory="256Mi")
    """The runtime container's resource requests (the operator's Deployment)."""
    limits: ResourceAmounts = ResourceAmounts(memory="512Mi")
    """The runtime container's resource limits (the operator's Deployment)."""


class RuntimeSpec(Model):
    """How the runtime pods run."""

    image: Annotated[str, Field(min_length=1, max_length=512)] = DEFAULT_IMAGE
    """The runtime container's image (the operator's Deployment)."""
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    """The runtime container's imagePullPolicy."""
    resources: Resources = Resources()
    """The runtime container's requests and limits."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """The runtime's log level (its --log-level)."""
    pod_annotations: Annotated[dict[str, str], Field(max_length=64)] = {}
    """Annotations the operator adds to the runtime pods."""
    node_selector: Annotated[dict[str, str], Field(max_length=32)] = {}
    """The runtime pods' nodeSelector."""
    priority_class_name: Annotated[str, Field(max_length=253)] | None = None
    """The runtime pods' priorityClassName."""
    drain_seconds: Annotated[int, Field(ge=0, le=120)] = 5
    """On SIGTERM the runtime turns unready at once and keeps accepting requests this long before
    closing its listener (its --drain-seconds)."""
    grace_seconds: Annotated[int, Field(ge=1, le=3600)] = 30
    """After the drain, how long requests in flight get to finish before the runtime exits (its
    --grace-seconds)."""


class MonitoringSpec(Model):
    """ServiceMonitor and PrometheusRule, made only where the Prometheus operator's CRDs exist."""

    enabled: bool = True
    """Whether the operator creates the ServiceMonitor and PrometheusRule (only where the
    Prometheus operator's CRDs exist)."""
    scrape_interval: Annotated[str, Field(pattern=r"^[0-9]+(s|m)$")] = "15s"
    """The ServiceMonitor's scrape interval."""


class AgentDeploymentSpec(AgentPolicy):
    """The spec of an AgentDeployment: the policy (what the runtime enforces) and how its
    pods run (which only the operator acts on)."""

    runtime: RuntimeSpec = RuntimeSpec()
    """How the runtime pods run (the operator's Deployment; the runtime does not read it)."""
    monitoring: MonitoringSpec = MonitoringSpec()
    """The ServiceMonitor and alerting rules the operator creates."""
    autopilot: AutopilotSpec = AutopilotSpec()
    """The operator's autopilot: it reads the pods' metrics and scales, fails over and holds
    the budget fleet-wide (the operator)."""
    alerts: AlertsSpec = AlertsSpec()
    """What the autopilot alerts on beyond the SLOs (the operator)."""

    def policy(self) -> AgentPolicy:
        """The part a runtime pod loads (the operator-only fields left out)."""
        return AgentPolicy.model_validate(
            self.model_dump(by_alias=True, include=set(AgentPolicy.model_fields))
        )
