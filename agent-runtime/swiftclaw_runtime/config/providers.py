"""Upstream providers and the model tiers (with their fallbacks) and embeddings on them."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from .base import (
    ENV_NAME_PATTERN,
    URL_PATTERN,
    Model,
    ModelRef,
    Name,
    SecretKeyRef,
    map_list,
)
from .rules import Rule, checked, duplicates, holds, issue_if, python_only, unique_names

ProviderType = Literal["openai", "openai-compatible", "anthropic", "gemini"]


def fallback_rules(own_model: str) -> tuple[Rule, Rule]:
    """A model's fallbacks are other models, each listed once (the CRD: a set)."""
    return (
        checked(
            "!has(self.fallbacks) || !self.fallbacks.exists(f, f == self.model)",
            own_model,
            ".fallbacks",
            lambda s: [
                (("fallbacks", i), own_model) for i, f in enumerate(s.fallbacks) if f == s.model
            ],
        ),
        python_only(
            lambda s: [
                (("fallbacks", i), f"duplicate fallback {s.fallbacks[i]!r}")
                for i in duplicates(s.fallbacks, str)
            ]
        ),
    )


class ProviderSpec(Model):
    """An upstream model API. Keys come from a Secret (in cluster) or the environment."""

    rules = (
        holds(
            "!(has(self.apiKeySecretRef) && has(self.apiKeyEnv))",
            "set apiKeySecretRef or apiKeyEnv, not both",
            None,
            lambda s: s.api_key_secret_ref is None or s.api_key_env is None,
        ),
    )

    name: Name
    """The provider's name: model references are <name>/<model>. Labels the provider's metrics."""
    type: ProviderType
    """The API shape the runtime speaks to it: openai, openai-compatible (the same wire format; an
    output cap the client did not name is sent as max_tokens, not max_completion_tokens),
    anthropic (Messages) or gemini (generateContent)."""
    base_url: Annotated[str, Field(max_length=2048, pattern=URL_PATTERN, alias="baseURL")]
    """Where the runtime sends the provider's requests (and its API key). No user:password@ in the
    host: keys come from Secrets or the environment."""
    api_key_secret_ref: Annotated[SecretKeyRef | None, Field(alias="apiKeySecretRef")] = None
    """The Secret key holding the provider's API key; the operator mounts it at <secrets
    dir>/providers/<name>/apiKey for the runtime."""
    api_key_env: Annotated[str | None, Field(max_length=253, pattern=ENV_NAME_PATTERN)] = None
    """The environment variable the runtime reads the provider's API key from (for swiftclaw run
    outside a cluster)."""
    max_connections: Annotated[int, Field(ge=1, le=10_000)] = 512
    """The most connections the runtime opens to the provider at once; the wait for a free one
    counts against the attempt's deadline."""


class TierSpec(Model):
    """A model tier: the model it calls, its prices (USD per 1M tokens) and its fallbacks.

    ``cachedInputPer1M``: input tokens the provider read from its prompt cache (Anthropic's
    cache reads, OpenAI's and Gemini's cached tokens); ``cacheWritePer1M``: input tokens
    written to it (Anthropic's cache writes). Either left out costs ``inputPer1M``."""

    rules = fallback_rules("a tier cannot fall back to its own model")

    name: Name
    """The tier's name: clients may ask for it as the model; labels the tier's metrics."""
    model: ModelRef
    """The model the runtime calls first for this tier, as <provider>/<model>."""
    input_per_1m: Annotated[float, Field(ge=0, le=10_000, alias="inputPer1M")] = 0.0
    """USD per 1M input tokens: the runtime prices the tier's calls with it (budgets, usage, cost
    metrics, the cache's savings)."""
    output_per_1m: Annotated[float, Field(ge=0, le=10_000, alias="outputPer1M")] = 0.0
    """USD per 1M output tokens, as inputPer1M."""
    cached_input_per_1m: Annotated[
        float | None, Field(ge=0, le=10_000, alias="cachedInputPer1M")
    ] = None
    """USD per 1M input tokens the provider read from its prompt cache (OpenAI cached_tokens,
    Anthropic cache_read_input_tokens, Gemini cachedContentTokenCount); unset: inputPer1M. The
    runtime prices usage and reserves budget with it."""
    cache_write_per_1m: Annotated[float | None, Field(ge=0, le=10_000, alias="cacheWritePer1M")] = (
        None
    )
    """USD per 1M input tokens written to the provider's prompt cache (Anthropic
    cache_creation_input_tokens, billed at 125 % of input); unset: inputPer1M. The runtime
    prices usage and reserves budget with it."""
    fallbacks: Annotated[
        list[ModelRef], Field(max_length=8, json_schema_extra={"x-kubernetes-list-type": "set"})
    ] = []
    """Models (<provider>/<model>) the runtime tries in order after the tier's model fails, times
    out, is skipped (its API cannot express the request) or its breaker is open. A fallback that
    is another tier's model is priced at that tier's prices, any other at this tier's."""


class EmbeddingsSpec(Model):
    """The model behind ``POST /v1/embeddings``, its input price and its fallbacks.

    ``dimensions`` is the size of the vectors served when a request does not say (models
    that can shorten theirs: OpenAI's text-embedding-3, Gemini's). Anthropic has no
    embeddings API, so a model on an anthropic provider is refused.
    """

    rules = fallback_rules("embeddings cannot fall back to their own model")

    model: ModelRef
    """The model the runtime calls for POST /v1/embeddings (and for the semantic cache with
    embeddings: models), as <provider>/<model>."""
    input_per_1m: Annotated[float, Field(ge=0, le=10_000, alias="inputPer1M")] = 0.0
    """USD per 1M input tokens, for the cost metrics."""
    fallbacks: Annotated[
        list[ModelRef], Field(max_length=8, json_schema_extra={"x-kubernetes-list-type": "set"})
    ] = []
    """Models the runtime tries in order when the embeddings model fails (not for the semantic
    cache, whose vectors must come from one model)."""
    dimensions: Annotated[int, Field(ge=1, le=65_536)] | None = None
    """The vector size the runtime asks for when a request does not name one (models that can
    shorten theirs: OpenAI's text-embedding-3, Gemini's)."""

    @property
    def refs(self) -> list[str]:
        return [self.model, *self.fallbacks]


class RoutingSpec(Model):
    """How a request picks a tier when it does not name one."""

    strategy: Literal["complexity", "fixed"] = "complexity"
    """complexity: the runtime's classifier picks the tier of an auto request (simple -> the first
    tier, medium -> default, complex -> the last); fixed: auto goes to default."""
    default: Name | None = None
    """The tier that medium requests (and, with strategy fixed, every auto request) go to; unset,
    the middle tier."""


class ModelsSpec(Model):
    rules = (
        unique_names("tiers"),
        checked(
            "!has(self.routing) || !has(self.routing.default)"
            " || self.tiers.exists(t, t.name == self.routing.default)",
            "'unknown tier ' + self.routing.default",
            ".routing.default",
            lambda s: issue_if(
                s.routing.default is not None
                and s.routing.default not in [t.name for t in s.tiers],
                ("routing", "default"),
                f"unknown tier {s.routing.default!r}",
            ),
        ),
    )

    tiers: Annotated[
        list[TierSpec], Field(min_length=1, max_length=16, json_schema_extra=map_list("name"))
    ]
    """The model tiers, cheapest first: the complexity routing sends simple requests to the first
    and complex ones to the last."""
    routing: RoutingSpec = RoutingSpec()
    """How the runtime picks a tier for a request whose model is auto or the agent's name."""
    embeddings: EmbeddingsSpec | None = None
    """The model behind POST /v1/embeddings; without it that route answers 404."""
