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
    type: ProviderType
    base_url: Annotated[str, Field(max_length=2048, pattern=URL_PATTERN, alias="baseURL")]
    api_key_secret_ref: Annotated[SecretKeyRef | None, Field(alias="apiKeySecretRef")] = None
    api_key_env: Annotated[str | None, Field(max_length=253, pattern=ENV_NAME_PATTERN)] = None
    max_connections: Annotated[int, Field(ge=1, le=10_000)] = 512


class TierSpec(Model):
    """A model tier: the model it calls, its prices (USD per 1M tokens) and its fallbacks.

    ``cachedInputPer1M``: input tokens the provider read from its prompt cache (Anthropic's
    cache reads, OpenAI's and Gemini's cached tokens); ``cacheWritePer1M``: input tokens
    written to it (Anthropic's cache writes). Either left out costs ``inputPer1M``."""

    rules = fallback_rules("a tier cannot fall back to its own model")

    name: Name
    model: ModelRef
    input_per_1m: Annotated[float, Field(ge=0, le=10_000, alias="inputPer1M")] = 0.0
    output_per_1m: Annotated[float, Field(ge=0, le=10_000, alias="outputPer1M")] = 0.0
    cached_input_per_1m: Annotated[
        float | None, Field(ge=0, le=10_000, alias="cachedInputPer1M")
    ] = None
    cache_write_per_1m: Annotated[float | None, Field(ge=0, le=10_000, alias="cacheWritePer1M")] = (
        None
    )
    fallbacks: Annotated[
        list[ModelRef], Field(max_length=8, json_schema_extra={"x-kubernetes-list-type": "set"})
    ] = []


class EmbeddingsSpec(Model):
    """The model behind ``POST /v1/embeddings``, its input price and its fallbacks.

    ``dimensions`` is the size of the vectors served when a request does not say (models
    that can shorten theirs: OpenAI's text-embedding-3, Gemini's). Anthropic has no
    embeddings API, so a model on an anthropic provider is refused.
    """

    rules = fallback_rules("embeddings cannot fall back to their own model")

    model: ModelRef
    input_per_1m: Annotated[float, Field(ge=0, le=10_000, alias="inputPer1M")] = 0.0
    fallbacks: Annotated[
        list[ModelRef], Field(max_length=8, json_schema_extra={"x-kubernetes-list-type": "set"})
    ] = []
    dimensions: Annotated[int, Field(ge=1, le=65_536)] | None = None

    @property
    def refs(self) -> list[str]:
        return [self.model, *self.fallbacks]


class RoutingSpec(Model):
    """How a request picks a tier when it does not name one."""

    strategy: Literal["complexity", "fixed"] = "complexity"
    default: Name | None = None


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
    routing: RoutingSpec = RoutingSpec()
    embeddings: EmbeddingsSpec | None = None
