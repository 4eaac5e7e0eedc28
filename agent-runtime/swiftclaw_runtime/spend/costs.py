"""What a request cost, from the token counts and the prices in the manifest (USD per 1M)."""

from __future__ import annotations

from ..config import AgentPolicy, TierSpec


def _priced(policy: AgentPolicy, tier: TierSpec, model_ref: str) -> TierSpec:
    """The tier whose prices ``model_ref`` is billed at.

    A fallback that is some tier's own model costs that tier's prices; any other fallback
    is billed at the prices of the tier it stood in for (the best figure the manifest gives).
    """
    for t in policy.models.tiers:
        if t.model == model_ref:
            return t
    return tier


def prices(policy: AgentPolicy, tier: TierSpec, model_ref: str) -> tuple[float, float]:
    """Input and output price of the model that answered."""
    t = _priced(policy, tier, model_ref)
    return t.input_per_1m, t.output_per_1m


def cache_prices(policy: AgentPolicy, tier: TierSpec, model_ref: str) -> tuple[float, float]:
    """The prices of input tokens read from and written to the provider's prompt cache
    (each the input price when the manifest gives none)."""
    t = _priced(policy, tier, model_ref)
    read = t.input_per_1m if t.cached_input_per_1m is None else t.cached_input_per_1m
    write = t.input_per_1m if t.cache_write_per_1m is None else t.cache_write_per_1m
    return read, write


def cost_usd(price_in: float, price_out: float, tokens_in: int, tokens_out: int) -> float:
    return (tokens_in * price_in + tokens_out * price_out) / 1_000_000


def usage_cost(
    policy: AgentPolicy,
    tier: TierSpec,
    model_ref: str,
    tokens_in: int,
    tokens_out: int,
    cached: int = 0,
    written: int = 0,
) -> float:
    """What the provider charges for the usage it reported: ``cached`` and ``written``
    (parts of ``tokens_in``) at the cache's prices, the rest of the input at the input
    price."""
    price_in, price_out = prices(policy, tier, model_ref)
    price_read, price_write = cache_prices(policy, tier, model_ref)
    cached = min(cached, tokens_in)
    written = min(written, tokens_in - cached)
    plain = tokens_in - cached - written
    return (
        plain * price_in + cached * price_read + written * price_write + tokens_out * price_out
    ) / 1_000_000


def _input_bound(policy: AgentPolicy, tier: TierSpec, model_ref: str) -> tuple[float, float]:
    """The most an input token and an output token of ``model_ref`` can cost (a cache
    write may cost more than plain input)."""
    price_in, price_out = prices(policy, tier, model_ref)
    return max(price_in, *cache_prices(policy, tier, model_ref)), price_out


def max_cost_usd(policy: AgentPolicy, tier: TierSpec, tokens_in: int, tokens_out: int) -> float:
    """The most a request can cost on ``tier``: at the prices of the dearest model of its
    chain, since any of them may end up answering."""
    return max(
        cost_usd(*_input_bound(policy, tier, ref), tokens_in, tokens_out)
        for ref in (tier.model, *tier.fallbacks)
    )


def price_bounds(policy: AgentPolicy, tier: TierSpec) -> tuple[float, float]:
    """The dearest input and output prices (USD per 1M) of ``tier``'s chain: what a
    request's tokens cost at most, whichever model of it answers."""
    chain = [_input_bound(policy, tier, ref) for ref in (tier.model, *tier.fallbacks)]
    return max(p[0] for p in chain), max(p[1] for p in chain)
