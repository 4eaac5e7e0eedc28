"""Which tier serves a request, from the ``model`` the client sent.

A client may name a tier (``simple``), a tier's model (``openai/gpt-4o-mini``), or leave
the choice to the runtime with ``auto`` or the agent's own name. Complexity routing (a
later step) plugs in where ``auto`` resolves to the default tier today.
"""

from __future__ import annotations

from .config import AgentPolicy, TierSpec
from .errors import not_found

AUTO = "auto"


def model_ids(policy: AgentPolicy, agent_name: str) -> list[str]:
    """What ``GET /v1/models`` lists: auto, the agent's name, then each tier."""
    return [AUTO, agent_name, *(t.name for t in policy.models.tiers)]


def resolve_tier(policy: AgentPolicy, agent_name: str, requested: str) -> TierSpec:
    if requested in (AUTO, agent_name):
        return policy.default_tier
    for tier in policy.models.tiers:
        if requested in (tier.name, tier.model):
            return tier
    known = ", ".join(repr(m) for m in model_ids(policy, agent_name))
    raise not_found(
        f"The model '{requested}' does not exist for this agent. Use one of: {known}.",
        code="model_not_found",
        param="model",
    )
