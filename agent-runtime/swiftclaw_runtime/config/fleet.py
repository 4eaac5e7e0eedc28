"""What the operator's autopilot decides for the whole fleet, and every pod applies.

The operator writes one :class:`FleetOverrides` document per AgentDeployment into the
ConfigMap ``<agent>-fleet`` (key :data:`swiftclaw_runtime.contract.FLEET_FILE`); each runtime
pod has it mounted at :data:`swiftclaw_runtime.contract.FLEET_DIR` and re-reads it when the
file changes, without a restart. A kubelet updates such a mount a minute or more after the
ConfigMap changes, so every decision carries its own expiry (``until``) and the pods' own
breakers stay the first line of defence; the document only widens what a pod already knows.
An absent or unreadable file means no overrides (the pod keeps its last good document and
logs why, never fails closed on a bad file).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from .base import Model, ModelRef, Name

# Why a model is out of a tier's chain; the runtime treats them alike, the operator keeps
# an auth or billing failure out far longer than a timeout (see the autopilot's failover).
FailoverCause = Literal["breaker-open", "error-rate", "auth", "billing", "rate-limited", "timeout"]


class ModelExclusion(Model):
    """One model taken out of one tier's chain (its primary or a fallback) on every pod."""

    tier: Name
    model: ModelRef
    cause: FailoverCause
    since: Annotated[float, Field(ge=0)]  # unix seconds
    until: Annotated[float, Field(ge=0)]  # unix seconds: after it the pod ignores the entry


class BudgetOverride(Model):
    """The fleet's budget state from the spend ledger: ``downgrade`` routes every request to
    the cheapest tier that can serve it; ``exceeded`` applies ``budget.onExceeded``."""

    state: Literal["normal", "downgrade", "exceeded"] = "normal"
    until: Annotated[float, Field(ge=0)] = 0.0  # unix seconds; 0 = until changed


class FleetOverrides(Model):
    """The whole document; ``generation`` only grows, so a pod ignores an older one."""

    generation: Annotated[int, Field(ge=0)] = 0
    excluded: Annotated[list[ModelExclusion], Field(max_length=256)] = []
    budget: BudgetOverride = BudgetOverride()
