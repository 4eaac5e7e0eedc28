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
    """What ``GET /v1/models`` lists: auto, the agent's name, each tier, then the
    embeddings model."""
    ids = [AUTO, agent_name, *(t.name for t in policy.models.tiers)]
    if policy.models.embeddings is not None:
        ids.append(policy.models.embeddings.model)
    return ids


def resolve_embeddings_model(policy: AgentPolicy, agent_name: str, requested: str) -> None:
    """An embeddings request names the agent (``auto``, its name) or its embeddings model,
    by reference (``openai/text-embedding-3-small``) or by the model's own name."""
    spec = policy.models.embeddings
    assert spec is not None
    if requested in (AUTO, agent_name) or any(
        requested in (ref, ref.partition("/")[2]) for ref in spec.refs
    ):
        return
    raise not_found(
        f"The embeddings model '{requested}' does not exist for this agent. Use "
        f"'{spec.model}' or 'auto'.",
        code="model_not_found",
        param="model",
    )


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
