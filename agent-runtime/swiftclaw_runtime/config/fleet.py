"""What the operator's autopilot decides for the whole fleet, and every pod applies.

The operator writes one :class:`FleetOverrides` document per AgentDeployment into the
ConfigMap ``<agent>-fleet`` (key :data:`swiftclaw_runtime.contract.FLEET_FILE`); each runtime
pod has it mounted at :data:`swiftclaw_runtime.contract.FLEET_DIR` and re-reads it when the
file changes, without a restart. A kubelet updates such a mount a minute or more after the
ConfigMap changes, so every decision carries its own expiry (``until``) and the pods' own
breakers stay the first line of defence; the document only widens what a pod already knows.
An absent or unreadable file means no overrides (the pod keeps its last good document and
logs why, never fails closed on a bad file).

How a pod applies it (``swiftclaw_runtime.overrides`` and ``.reload``, checked every
``--reload-seconds``): a file that does not parse or validate, or is over 1 MiB, keeps the
document in force; a lower ``generation`` than the one in force is ignored (write every
change with a higher one; the same one again is applied); a file that is gone (the
ConfigMap deleted) means no overrides and forgets the generation. Entries naming a tier
the agent lacks, or a model outside that tier's chain, are ignored. A chain is never
emptied: when every model of a tier is excluded, that tier's exclusions are not applied.
What a pod applies shows in ``swiftclaw_fleet_overrides_generation``,
``swiftclaw_fleet_excluded{tier,model,cause}``, ``swiftclaw_fleet_budget_state`` and, for
an API-key holder, ``GET /health``'s ``fleet``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from .base import Model, ModelRef, Name

# Why a model is out of a tier's chain; the runtime treats them alike, the operator keeps
# an auth or billing failure out far longer than a timeout (see the autopilot's failover).
FailoverCause = Literal["breaker-open", "error-rate", "auth", "billing", "rate-limited", "timeout"]


class ModelExclusion(Model):
    """One model taken out of one tier's chain (its primary or a fallback) on every pod:
    skipped without a call (its breaker untouched) while ``until`` is ahead; ``model`` is
    the tier's ref as the manifest writes it (``provider/model``)."""

    tier: Name
    model: ModelRef
    cause: FailoverCause
    since: Annotated[float, Field(ge=0)]  # unix seconds
    until: Annotated[float, Field(ge=0)]  # unix seconds: after it the pod ignores the entry


class BudgetOverride(Model):
    """The fleet's budget state from the spend ledger: ``downgrade`` routes every request to
    the cheapest tier that can serve it; ``exceeded`` applies ``budget.onExceeded``."""

    # downgrade: the cheapest tier (the first) serves every request, as a pod's own budget
    # does with onExceeded: downgrade; exceeded: onExceeded (reject: 429 insufficient_quota
    # with Retry-After up to ``until``; downgrade; alert: served, counted)
    state: Literal["normal", "downgrade", "exceeded"] = "normal"
    until: Annotated[float, Field(ge=0)] = 0.0  # unix seconds; 0 = until changed


class FleetOverrides(Model):
    """The whole document; ``generation`` only grows, so a pod ignores an older one."""

    generation: Annotated[int, Field(ge=0)] = 0
    excluded: Annotated[list[ModelExclusion], Field(max_length=256)] = []
    budget: BudgetOverride = BudgetOverride()
