"""The operator's own settings, read from its environment in one place.

Every ``SWIFTCLAW_*`` variable the operator process reads is a field here; nothing else
in the operator calls ``os.environ``. A bad value fails at start with the variable named.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .resources.common import Settings

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

# field name -> environment variable
ENV = {
    "standalone": "SWIFTCLAW_STANDALONE",
    "peering": "SWIFTCLAW_PEERING",
    "peering_lifetime": "SWIFTCLAW_PEERING_LIFETIME",
    "priority": "SWIFTCLAW_PRIORITY",
    "namespaces": "SWIFTCLAW_NAMESPACES",
    "workers": "SWIFTCLAW_WORKERS",
    "drift_seconds": "SWIFTCLAW_DRIFT_SECONDS",
    "retry_base_seconds": "SWIFTCLAW_RETRY_BASE_SECONDS",
    "retry_max_seconds": "SWIFTCLAW_RETRY_MAX_SECONDS",
    "metrics_port": "SWIFTCLAW_METRICS_PORT",
    "liveness_port": "SWIFTCLAW_LIVENESS_PORT",
    "log_format": "SWIFTCLAW_LOG_FORMAT",
    "log_level": "SWIFTCLAW_LOG_LEVEL",
    "redis_image": "SWIFTCLAW_REDIS_IMAGE",
    "custom_metrics": "SWIFTCLAW_CUSTOM_METRICS",
    "prometheus_namespace": "SWIFTCLAW_PROMETHEUS_NAMESPACE",
    "runbook_base_url": "SWIFTCLAW_RUNBOOK_BASE_URL",
    "service_account_dir": "SWIFTCLAW_SERVICE_ACCOUNT_DIR",
    "reconcile_step_delay": "SWIFTCLAW_RECONCILE_STEP_DELAY",
    "alert_webhook_file": "SWIFTCLAW_ALERT_WEBHOOK_FILE",
    "operator_namespace": "SWIFTCLAW_OPERATOR_NAMESPACE",
}


class OperatorConfig(BaseModel):
    """What the operator process is told by its Deployment (the chart) or the shell."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # One replica without peering (tests, single-replica installs) or several, one active.
    standalone: bool = False
    peering: str = "swiftclaw"
    # How long a silent peer counts as alive.
    peering_lifetime: Annotated[int, Field(ge=1)] = 60
    # kopf freezes operators of equal priority: each replica takes a random one unless set.
    priority: Annotated[int, Field(ge=1)] = Field(
        default_factory=lambda: random.randint(1, 2**31 - 1)
    )
    # Serve these namespaces only (comma-separated in the environment); none: every one.
    namespaces: tuple[str, ...] = ()
    workers: Annotated[int, Field(ge=1)] = 64
    drift_seconds: Annotated[float, Field(gt=0)] = 300.0
    # Failed reconciles are retried after base * 2^(attempt-1) seconds, at most max.
    retry_base_seconds: Annotated[float, Field(gt=0)] = 5.0
    retry_max_seconds: Annotated[float, Field(gt=0)] = 300.0
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 0
    liveness_port: Annotated[int, Field(ge=0, le=65535)] = 0
    log_format: Literal["json", "plain"] = "json"
    log_level: Literal["info", "debug"] = "info"
    redis_image: str = Settings.redis_image
    runbook_base_url: str = Settings.runbook_base_url
    # The cluster's custom metrics API serves swiftclaw_requests_in_flight (per pod), so the
    # HPA can scale on spec.scaling.targetConcurrency.
    custom_metrics: bool = Settings.custom_metrics
    # The namespace whose pods may scrape the runtime pods' metrics port (NetworkPolicy).
    prometheus_namespace: str = Settings.prometheus_namespace
    # The operator's own namespace (the chart sets it): its autopilot reads that port too.
    operator_namespace: str = Settings.operator_namespace
    # Where the in-cluster credentials are mounted (a test points it at a folder of its own).
    service_account_dir: Path = Path(SERVICE_ACCOUNT_DIR)
    # Fault injection for tests: a pause after each child write.
    reconcile_step_delay: Annotated[float, Field(ge=0)] = 0.0
    # A file holding a Slack-compatible webhook URL (a Secret mounted into the operator
    # pod): the autopilot posts each episode's start and end there. Re-read at each send.
    alert_webhook_file: Path | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorConfig:
        """Read every ``SWIFTCLAW_*`` setting; unset or empty means the default."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {
            field: env[var] for field, var in ENV.items() if env.get(var, "") != ""
        }
        if "namespaces" in values:
            names = str(values["namespaces"]).split(",")
            values["namespaces"] = tuple(n.strip() for n in names if n.strip())
        try:
            return cls.model_validate(values)
        except ValidationError as err:
            problems = "; ".join(
                f"{ENV[str(e['loc'][0])]}: {e['msg']}" for e in err.errors() if e["loc"]
            )
            raise ValueError(f"invalid operator setting: {problems}") from None

    def builder_settings(self, monitoring_available: bool) -> Settings:
        """What the pure builders need (the same for every agent)."""
        return Settings(
            redis_image=self.redis_image,
            runbook_base_url=self.runbook_base_url,
            monitoring_available=monitoring_available,
            custom_metrics=self.custom_metrics,
            prometheus_namespace=self.prometheus_namespace,
            operator_namespace=self.operator_namespace,
        )
