"""The whole policy an AgentDeployment gives its agent (and its client API keys)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any

from pydantic import Field

from .agent import AgentSpec
from .base import Model, SecretKeyRef, map_list
from .cache import CacheSpec
from .limits import BudgetSpec, RateLimitsSpec, ScalingSpec, SLOSpec
from .providers import ModelsSpec, ProviderSpec, TierSpec
from .reliability import ReliabilitySpec
from .rules import Issue, Loc, checked, holds, unique_names


class AuthSpec(Model):
    """Bearer API keys mapped to tenant and user, from a Secret or a file."""

    required: bool = True
    """Whether the runtime requires a valid API key on every API request (false: anyone who reaches
    the Service may call it)."""
    api_keys_secret_ref: Annotated[SecretKeyRef | None, Field(alias="apiKeysSecretRef")] = None
    """The Secret key holding the keys file (keys mapped to tenant and user); the operator mounts
    it at <secrets dir>/api-keys/keys.yaml, where the runtime reads it."""
    # The request's ``user`` field names the end user behind a shared key (a backend
    # serving many people with one key); limits, budgets and usage then count per end
    # user, scoped under the key's tenant. Without it, ``user`` is forwarded, not trusted.
    user_from_request: bool = False
    """The runtime takes the request's user field as the end user behind a shared key (a backend
    serving many people with one key): limits, budgets and usage then count per end user, scoped
    under the key's tenant. Without it, user is forwarded, not trusted."""


_DECLARED = "self.providers.exists(p, {}.startsWith(p.name + '/'))"
_EMBEDDING_REFS = (
    "!has(self.models.embeddings) || ([self.models.embeddings.model]"
    " + (has(self.models.embeddings.fallbacks)"
    " ? self.models.embeddings.fallbacks : [])).all(m, "
)


def _provider_of(ref: str) -> str:
    return ref.partition("/")[0]


def _undeclared(policy: Any, refs: Iterable[tuple[Loc, str]]) -> list[Issue]:
    """The model references whose provider is not in spec.providers."""
    names = {p.name for p in policy.providers}
    return [
        (loc, f"unknown provider {_provider_of(ref)!r}")
        for loc, ref in refs
        if _provider_of(ref) not in names
    ]


def _tier_models(policy: Any) -> list[tuple[Loc, str]]:
    return [(("models", "tiers", i, "model"), t.model) for i, t in enumerate(policy.models.tiers)]


def _tier_fallbacks(policy: Any) -> list[tuple[Loc, str]]:
    return [
        (("models", "tiers", i, "fallbacks", j), f)
        for i, t in enumerate(policy.models.tiers)
        for j, f in enumerate(t.fallbacks)
    ]


def _embedding_models(policy: Any) -> list[tuple[Loc, str]]:
    spec = policy.models.embeddings
    if spec is None:
        return []
    return [
        (("models", "embeddings", "model"), spec.model),
        *((("models", "embeddings", "fallbacks", i), f) for i, f in enumerate(spec.fallbacks)),
    ]


def _on_anthropic(policy: Any) -> list[Issue]:
    types = {p.name: p.type for p in policy.providers}
    return [
        (loc, f"provider {_provider_of(ref)!r} is anthropic, which has no embeddings API")
        for loc, ref in _embedding_models(policy)
        if types.get(_provider_of(ref)) == "anthropic"
    ]


def _semantic_embedder_ok(policy: Any) -> bool:
    return policy.cache.semantic.embeddings != "models" or policy.models.embeddings is not None


class AgentPolicy(Model):
    """Everything an AgentDeployment says about how its agent is served."""

    rules = (
        unique_names("providers"),
        checked(
            "self.models.tiers.all(t, " + _DECLARED.format("t.model") + ")",
            "each tier's model must start with a provider declared in spec.providers",
            ".models.tiers",
            lambda s: _undeclared(s, _tier_models(s)),
        ),
        checked(
            "self.models.tiers.all(t, !has(t.fallbacks) || t.fallbacks.all(f, "
            + _DECLARED.format("f")
            + "))",
            "each fallback must start with a provider declared in spec.providers",
            ".models.tiers",
            lambda s: _undeclared(s, _tier_fallbacks(s)),
        ),
        holds(
            "!has(self.cache) || !has(self.cache.semantic)"
            " || !has(self.cache.semantic.embeddings)"
            " || self.cache.semantic.embeddings != 'models' || has(self.models.embeddings)",
            "models needs spec.models.embeddings",
            ".cache.semantic.embeddings",
            _semantic_embedder_ok,
        ),
        checked(
            _EMBEDDING_REFS + _DECLARED.format("m") + ")",
            "the embeddings model and its fallbacks must start with a provider declared "
            "in spec.providers",
            ".models.embeddings",
            lambda s: _undeclared(s, _embedding_models(s)),
        ),
        checked(
            _EMBEDDING_REFS
            + "!self.providers.exists(p, p.type == 'anthropic' && m.startsWith(p.name + '/')))",
            "Anthropic has no embeddings API: the embeddings model and its fallbacks cannot "
            "be on an anthropic provider",
            ".models.embeddings",
            _on_anthropic,
        ),
    )

    agent: AgentSpec = AgentSpec()
    """What the agent says and how much it may read: system prompt, token limits, context sources
    (the runtime)."""
    providers: Annotated[
        list[ProviderSpec],
        Field(min_length=1, max_length=32, json_schema_extra=map_list("name")),
    ]
    """The upstream model APIs the tiers and embeddings call (the runtime); the operator mounts
    their key Secrets."""
    models: ModelsSpec
    """The model tiers (cheapest first), how a request picks one, and the embeddings model (the
    runtime)."""
    cache: CacheSpec = CacheSpec()
    """The exact and semantic caches (the runtime) and the Redis that holds shared state (the
    operator runs a managed one)."""
    reliability: ReliabilitySpec = ReliabilitySpec()
    """Deadlines, retries and circuit breakers (the runtime)."""
    rate_limits: RateLimitsSpec = RateLimitsSpec()
    """Requests and tokens per minute per user, tenant and agent (the runtime)."""
    budget: BudgetSpec = BudgetSpec()
    """Spend caps in USD and what happens when one is reached (the runtime; the operator alerts at
    alertAtPercent)."""
    scaling: ScalingSpec = ScalingSpec()
    """The HorizontalPodAutoscaler the operator creates. Left out of the pods' config, so scaling
    never rolls them."""
    slo: SLOSpec = SLOSpec()
    """The targets of the alerts in the PrometheusRule the operator creates."""
    auth: AuthSpec = AuthSpec()
    """How the runtime authenticates clients: API keys mapped to tenant and user."""

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
