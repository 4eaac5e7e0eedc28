"""The whole policy an AgentDeployment gives its agent (and its client API keys)."""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field

from .agent import AgentSpec
from .base import Model, SecretKeyRef, cel, map_list
from .cache import CacheSpec
from .limits import BudgetSpec, RateLimitsSpec, ScalingSpec, SLOSpec
from .providers import ModelsSpec, ProviderSpec, TierSpec
from .reliability import ReliabilitySpec


class AuthSpec(Model):
    """Bearer API keys mapped to tenant and user, from a Secret or a file."""

    required: bool = True
    api_keys_secret_ref: Annotated[SecretKeyRef | None, Field(alias="apiKeysSecretRef")] = None
    # The request's ``user`` field names the end user behind a shared key (a backend
    # serving many people with one key); limits, budgets and usage then count per end
    # user, scoped under the key's tenant. Without it, ``user`` is forwarded, not trusted.
    user_from_request: bool = False



_DECLARED = "self.providers.exists(p, {}.startsWith(p.name + '/'))"


class AgentPolicy(Model):
    """Everything an AgentDeployment says about how its agent is served."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "self.models.tiers.all(t, " + _DECLARED.format("t.model") + ")",
                "each tier's model must start with a provider declared in spec.providers",
                ".models.tiers",
            ),
            (
                "self.models.tiers.all(t, !has(t.fallbacks) || t.fallbacks.all(f, "
                + _DECLARED.format("f")
                + "))",
                "each fallback must start with a provider declared in spec.providers",
                ".models.tiers",
            ),
            (
                "!has(self.cache) || !has(self.cache.semantic)"
                " || !has(self.cache.semantic.embeddings)"
                " || !has(self.cache.semantic.embeddings.provider)"
                " || self.providers.exists(p, p.name == self.cache.semantic.embeddings.provider"
                " && (p.type == 'openai' || p.type == 'openai-compatible'))",
                "must name a provider of type openai or openai-compatible declared in"
                " spec.providers",
                ".cache.semantic.embeddings.provider",
            ),
            (
                "!has(self.models.embeddings) || ([self.models.embeddings.model]"
                " + (has(self.models.embeddings.fallbacks)"
                " ? self.models.embeddings.fallbacks : [])).all(m, " + _DECLARED.format("m") + ")",
                "the embeddings model and its fallbacks must start with a provider declared "
                "in spec.providers",
                ".models.embeddings",
            ),
            (
                "!has(self.models.embeddings) || ([self.models.embeddings.model]"
                " + (has(self.models.embeddings.fallbacks)"
                " ? self.models.embeddings.fallbacks : [])).all(m, "
                "!self.providers.exists(p, p.type == 'anthropic' && m.startsWith(p.name + '/')))",
                "Anthropic has no embeddings API: the embeddings model and its fallbacks cannot "
                "be on an anthropic provider",
                ".models.embeddings",
            ),
        )
    )

    agent: AgentSpec = AgentSpec()
    providers: Annotated[
        list[ProviderSpec],
        Field(min_length=1, max_length=32, json_schema_extra=map_list("name")),
    ]
    models: ModelsSpec
    cache: CacheSpec = CacheSpec()
    reliability: ReliabilitySpec = ReliabilitySpec()
    rate_limits: RateLimitsSpec = RateLimitsSpec()
    budget: BudgetSpec = BudgetSpec()
    scaling: ScalingSpec = ScalingSpec()
    slo: SLOSpec = SLOSpec()
    auth: AuthSpec = AuthSpec()

    def provider(self, name: str) -> ProviderSpec:
        """The provider called ``name`` (the reference rules guarantee it exists)."""
        return next(p for p in self.providers if p.name == name)

    def tier(self, name: str) -> TierSpec:
        return next(t for t in self.models.tiers if t.name == name)

    @property
    def default_tier(self) -> TierSpec:
        """The routing default, else the middle tier (cheapest first, so a fair middle)."""
        if self.models.routing.default:
            return self.tier(self.models.routing.default)
        tiers = self.models.tiers
        return tiers[(len(tiers) - 1) // 2]
