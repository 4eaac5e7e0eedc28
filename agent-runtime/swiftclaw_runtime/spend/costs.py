"""What a request cost, from the token counts and the prices in the manifest (USD per 1M)."""

from __future__ import annotations

from ..config import AgentPolicy, TierSpec


def prices(policy: AgentPolicy, tier: TierSpec, model_ref: str) -> tuple[float, float]:
    """Input and output price of the model that answered.

    A fallback that is some tier's own model costs that tier's prices; any other fallback
    is billed at the prices of the tier it stood in for (the best figure the manifest gives).
    """
    for t in policy.models.tiers:
        if t.model == model_ref:
            return t.input_per_1m, t.output_per_1m
    return tier.input_per_1m, tier.output_per_1m


def cost_usd(price_in: float, price_out: float, tokens_in: int, tokens_out: int) -> float:
    return (tokens_in * price_in + tokens_out * price_out) / 1_000_000


def max_cost_usd(policy: AgentPolicy, tier: TierSpec, tokens_in: int, tokens_out: int) -> float:
    """The most a request can cost on ``tier``: at the prices of the dearest model of its
    chain, since any of them may end up answering."""
    return max(
        cost_usd(*prices(policy, tier, ref), tokens_in, tokens_out)
        for ref in (tier.model, *tier.fallbacks)
    )


def price_bounds(policy: AgentPolicy, tier: TierSpec) -> tuple[float, float]:
    """The dearest input and output prices (USD per 1M) of ``tier``'s chain: what a
    request's tokens cost at most, whichever model of it answers."""
    chain = [prices(policy, tier, ref) for ref in (tier.model, *tier.fallbacks)]
    return max(p[0] for p in chain), max(p[1] for p in chain)
