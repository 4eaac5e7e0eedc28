"""The agent policy: one pydantic definition for the manifest, the CRD and the pod's config.

The operator embeds :class:`AgentPolicy` as the ``spec`` of an ``AgentDeployment`` and
renders it into the runtime config a pod loads, so the manifest, the CRD schema and the
runtime all validate against the same model. Field names on the wire are camelCase as in
Kubernetes; Python attributes are snake_case.

Cross-field rules (fallbacks name declared providers, the default tier exists, ...) live
in :func:`reference_issues` so that each error carries the exact field path, and the
operator mirrors them as CEL rules in the CRD.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

API_GROUP = "swiftclaw.dev"
API_VERSION = "v1alpha1"
KIND = "AgentDeployment"
RUNTIME_CONFIG_KIND = "RuntimeConfig"

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
MODEL_REF_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[^\s/][^\s]*$"
# Also matches templated context URLs, whose {user} and {tenant} placeholders are plain text.
URL_PATTERN = r"^https?://[^\s/?#]+(/[^\s]*)?$"
# A context source's host has no placeholders: only its path and query are templated.
CONTEXT_URL_PATTERN = r"^https?://[^\s/?#{}]+(/[^\s]*)?$"
PLACEHOLDERS = ("{user}", "{tenant}")
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
# The shape of an IANA zone name; whether it exists is checked against the zone database.
TIME_ZONE_PATTERN = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$"

Name = Annotated[str, Field(min_length=1, max_length=63, pattern=NAME_PATTERN)]
ModelRef = Annotated[str, Field(min_length=3, max_length=253, pattern=MODEL_REF_PATTERN)]


def cel(*rules: tuple[str, str, str | None]) -> dict[str, Any]:
    """``x-kubernetes-validations`` for the CRD: (rule, message, fieldPath) each.

    The same rules are checked in Python by :func:`reference_issues`; a CEL rule lives
    next to the model it guards so that the two are read, and changed, together.
    """
    out = []
    for rule, message, field_path in rules:
        entry = {"rule": rule}
        entry["messageExpression" if message.startswith("'") else "message"] = message
        if field_path:
            entry["fieldPath"] = field_path
        out.append(entry)
    return {"x-kubernetes-validations": out}


def map_list(*keys: str) -> dict[str, Any]:
    """A list whose items are unique by ``keys``: the API server rejects duplicates itself."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)}


class Model(BaseModel):
    """Base for every policy model: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


# --- agent -------------------------------------------------------------------------


class ContextSource(Model):
    """An HTTP source fetched for each request and added to the prompt as a system message.

    ``{user}`` and ``{tenant}`` in the path or query are replaced, URL-encoded, by the
    caller's identity; the host is fixed (no placeholders), so the connection pool and the
    network policy know where each source lives.
    """

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "!self.url.replace('{user}', '').replace('{tenant}', '').matches('[{}]')",
                "only the placeholders {user} and {tenant} are allowed",
                ".url",
            )
        )
    )

    name: Name
    url: Annotated[str, Field(max_length=2048, pattern=CONTEXT_URL_PATTERN)]
    timeout_ms: Annotated[int, Field(ge=1, le=60_000, alias="timeoutMs")] = 300
    cache_ttl_seconds: Annotated[int, Field(ge=0, le=86_400, alias="cacheTTLSeconds")] = 0


class AgentSpec(Model):
    """What the agent says and how much it may read."""

    system_prompt: Annotated[str, Field(max_length=100_000)] = ""
    max_input_tokens: Annotated[int, Field(ge=1, le=2_000_000)] = 8_000
    max_output_tokens: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    context: Annotated[
        list[ContextSource], Field(max_length=16, json_schema_extra=map_list("name"))
    ] = []


# --- providers and models ----------------------------------------------------------


class SecretKeyRef(Model):
    """A key inside a Kubernetes Secret in the AgentDeployment's namespace."""

    name: Name
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")]


ProviderType = Literal["openai", "openai-compatible", "anthropic", "gemini"]


class ProviderSpec(Model):
    """An upstream model API. Keys come from a Secret (in cluster) or the environment."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "!(has(self.apiKeySecretRef) && has(self.apiKeyEnv))",
                "set apiKeySecretRef or apiKeyEnv, not both",
                None,
            )
        )
    )

    name: Name
    type: ProviderType
    base_url: Annotated[str, Field(max_length=2048, pattern=URL_PATTERN, alias="baseURL")]
    api_key_secret_ref: Annotated[SecretKeyRef | None, Field(alias="apiKeySecretRef")] = None
    api_key_env: Annotated[str | None, Field(max_length=253, pattern=ENV_NAME_PATTERN)] = None
    max_connections: Annotated[int, Field(ge=1, le=10_000)] = 512


class TierSpec(Model):
    """A model tier: the model it calls, its prices (USD per 1M tokens) and its fallbacks."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "!has(self.fallbacks) || !self.fallbacks.exists(f, f == self.model)",
                "a tier cannot fall back to its own model",
                ".fallbacks",
            )
        )
    )

    name: Name
    model: ModelRef
    input_per_1m: Annotated[float, Field(ge=0, le=10_000, alias="inputPer1M")] = 0.0
    output_per_1m: Annotated[float, Field(ge=0, le=10_000, alias="outputPer1M")] = 0.0
    fallbacks: Annotated[
        list[ModelRef], Field(max_length=8, json_schema_extra={"x-kubernetes-list-type": "set"})
    ] = []


class EmbeddingsSpec(Model):
    """The model behind ``POST /v1/embeddings``, its input price and its fallbacks.

    ``dimensions`` is the size of the vectors served when a request does not say (models
    that can shorten theirs: OpenAI's text-embedding-3, Gemini's). Anthropic has no
    embeddings API, so a model on an anthropic provider is refused.
    """

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "!has(self.fallbacks) || !self.fallbacks.exists(f, f == self.model)",
                "embeddings cannot fall back to their own model",
                ".fallbacks",
            )
        )
    )

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
    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "!has(self.routing) || !has(self.routing.default)"
                " || self.tiers.exists(t, t.name == self.routing.default)",
                "'unknown tier ' + self.routing.default",
                ".routing.default",
            )
        )
    )

    tiers: Annotated[
        list[TierSpec], Field(min_length=1, max_length=16, json_schema_extra=map_list("name"))
    ]
    routing: RoutingSpec = RoutingSpec()
    embeddings: EmbeddingsSpec | None = None


# --- cache -------------------------------------------------------------------------


class ExactCacheSpec(Model):
    """Answers replayed for requests identical in everything that changes the answer.

    ``cacheable: deterministic`` (the default) caches only requests whose sampling makes
    a repeat the expected answer: ``temperature`` at most ``maxTemperature``, or a
    ``seed``. A request that leaves ``temperature`` out samples at the provider's
    default (1.0 for OpenAI) and asked for variety, so it is not cached.
    ``always`` caches every request.
    """

    enabled: bool = True
    ttl_seconds: Annotated[int, Field(ge=1, le=2_592_000)] = 3600
    cacheable: Literal["deterministic", "always"] = "deterministic"
    max_temperature: Annotated[float, Field(ge=0, le=2)] = 0.3


class SemanticCacheSpec(Model):
    """Answers reused for a question that means the same as a cached one.

    A candidate must reach ``threshold`` (cosine similarity) *and* pass the verification
    stage (numbers, negations, antonyms, entity order, dates, products, language), which
    rejects the near-misses that embeddings score at 0.93-0.99. When every model of a tier
    has failed, a cached answer up to ``staleTTLSeconds`` old at ``degradeThreshold`` (also
    verified) is served instead of the 503, marked ``stale-similar``.

    ``embeddings``: ``local`` embeds questions with the bundled all-MiniLM-L6-v2 on the
    pod's CPU (offline); ``models`` with the model of ``spec.models.embeddings`` (the one
    ``POST /v1/embeddings`` serves), without its fallbacks.
    """

    enabled: bool = False
    ttl_seconds: Annotated[int, Field(ge=1, le=2_592_000)] = 1800
    threshold: Annotated[float, Field(ge=0.5, le=1.0)] = 0.68
    verify: bool = True
    degrade_threshold: Annotated[float, Field(ge=0.5, le=1.0)] = 0.62
    stale_ttl_seconds: Annotated[int, Field(ge=1, le=2_592_000, alias="staleTTLSeconds")] = 86_400
    embeddings: Literal["local", "models"] = "local"


class LocalCacheSpec(Model):
    """Bounds of the in-process cache (``redis.mode: none``), per replica."""

    max_entries: Annotated[int, Field(ge=1, le=10_000_000)] = 10_000
    max_bytes: Annotated[int, Field(ge=1024, le=68_719_476_736)] = 64 * 1024 * 1024


class RedisSpec(Model):
    """Where the shared state lives: a Redis the operator runs, an external one, or none."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "!has(self.mode) || self.mode != 'external' || has(self.urlSecretRef)",
                "required when mode is external",
                ".urlSecretRef",
            ),
            (
                "!has(self.urlSecretRef) || (has(self.mode) && self.mode == 'external')",
                "only allowed when mode is external",
                ".urlSecretRef",
            ),
        )
    )

    mode: Literal["managed", "external", "none"] = "managed"
    url_secret_ref: Annotated[SecretKeyRef | None, Field(alias="urlSecretRef")] = None
    # Without Redis (mode none, or while it is unreachable) limits and budgets are counted
    # in each replica, each enforcing 1/fallbackReplicas of every limit and cap: set it to
    # the replicas you usually run. A manifest field rather than the live replica count, so
    # that scaling never rolls the pods; a fleet larger than this lets more through while
    # Redis is away, a smaller one less.
    fallback_replicas: Annotated[int, Field(ge=1, le=1000)] = 1
    storage: Annotated[str, Field(pattern=r"^[0-9]+(Mi|Gi|Ti)$")] = "1Gi"
    backup_schedule: Annotated[str, Field(min_length=9, max_length=100)] = "0 3 * * *"


class CacheSpec(Model):
    exact: ExactCacheSpec = ExactCacheSpec()
    semantic: SemanticCacheSpec = SemanticCacheSpec()
    redis: RedisSpec = RedisSpec()
    # An answer larger than this is not stored (one huge answer must not evict the rest).
    max_entry_bytes: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = 256 * 1024
    local: LocalCacheSpec = LocalCacheSpec()


# --- reliability -------------------------------------------------------------------


class RetrySpec(Model):
    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "!has(self.initialBackoffMs) || !has(self.maxBackoffMs)"
                " || self.initialBackoffMs <= self.maxBackoffMs",
                "must not exceed maxBackoffMs",
                ".initialBackoffMs",
            )
        )
    )

    max_attempts: Annotated[int, Field(ge=1, le=10)] = 3
    initial_backoff_ms: Annotated[int, Field(ge=0, le=60_000)] = 250
    max_backoff_ms: Annotated[int, Field(ge=0, le=300_000)] = 8_000
    # A provider's Retry-After is honoured up to this many seconds; a longer one (a
    # misconfigured or hostile upstream asking for an hour) is cut to it.
    max_retry_after_seconds: Annotated[int, Field(ge=0, le=3600)] = 60
    # Retries per tier are at most this share of its requests over the last 10 s (with a
    # floor of 10 retries), so that an outage does not multiply the load on a provider.
    budget_percent: Annotated[int, Field(ge=0, le=100)] = 20


class CircuitBreakerSpec(Model):
    """Opens when, within ``windowSeconds``, at least ``failureThreshold`` calls failed and
    they are at least ``failureRatePercent`` % of the calls: a rate, so a busy provider
    with a few errors stays in use, with a minimum, so a quiet one is not judged on one."""

    failure_threshold: Annotated[int, Field(ge=1, le=10_000)] = 5
    failure_rate_percent: Annotated[int, Field(ge=1, le=100)] = 50
    window_seconds: Annotated[int, Field(ge=1, le=3600)] = 30
    open_seconds: Annotated[int, Field(ge=1, le=3600)] = 60
    half_open_probes: Annotated[int, Field(ge=1, le=100)] = 1


class ReliabilitySpec(Model):
    """The deadline of a request, and how much of it one attempt may take.

    Without ``attemptTimeoutSeconds``, each model of a tier's chain gets an equal share
    of what is left of the deadline when its turn comes (the last one gets all of it), so
    a hung primary cannot starve a healthy fallback. The wait for a connection slot
    counts against the attempt.
    """

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "!has(self.attemptTimeoutSeconds) || !has(self.timeoutSeconds)"
                " || self.attemptTimeoutSeconds <= self.timeoutSeconds",
                "must not exceed timeoutSeconds",
                ".attemptTimeoutSeconds",
            )
        )
    )

    timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 30.0
    attempt_timeout_seconds: Annotated[float, Field(gt=0, le=600)] | None = None
    retry: RetrySpec = RetrySpec()
    circuit_breaker: CircuitBreakerSpec = CircuitBreakerSpec()


# --- limits, budget, scaling, SLO ----------------------------------------------------


class RateLimit(Model):
    """Requests and tokens per minute (a sliding 60 s window). Tokens are charged on an
    estimate before the call (input + the output cap) and settled on the real usage."""

    requests_per_minute: Annotated[int, Field(ge=1, le=10_000_000)] | None = None
    tokens_per_minute: Annotated[int, Field(ge=1, le=10_000_000_000)] | None = None


def _limit_rule(inner: str, outer: str, unit: str) -> tuple[str, str, str]:
    """CEL: ``inner.unit <= outer.unit`` when both are set (a narrower scope cannot allow more)."""
    return (
        f"!has(self.{inner}) || !has(self.{outer}) || !has(self.{inner}.{unit})"
        f" || !has(self.{outer}.{unit}) || self.{inner}.{unit} <= self.{outer}.{unit}",
        f"must not exceed {outer}.{unit}",
        f".{inner}.{unit}",
    )


class RateLimitsSpec(Model):
    """Per user (the key's user, or the request's ``user`` with ``auth.userFromRequest``),
    per tenant, and for the whole agent; exact across replicas through Redis."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            _limit_rule("perUser", "perTenant", "requestsPerMinute"),
            _limit_rule("perUser", "perTenant", "tokensPerMinute"),
            _limit_rule("perTenant", "global", "requestsPerMinute"),
            _limit_rule("perTenant", "global", "tokensPerMinute"),
        )
    )

    per_user: RateLimit | None = None
    per_tenant: RateLimit | None = None
    global_: Annotated[RateLimit | None, Field(alias="global")] = None


class BudgetSpec(Model):
    """Spend caps in USD at the manifest's prices. Days (and months) begin at midnight in
    ``timeZone`` (an IANA name). Each call reserves its largest possible cost first, so
    concurrent requests on any number of replicas cannot pass a cap by more than one
    request's worth; ``onExceeded`` says what happens at 100 %."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "!has(self.dailyUSD) || !has(self.perUserDailyUSD)"
                " || self.perUserDailyUSD <= self.dailyUSD",
                "must not exceed dailyUSD",
                ".perUserDailyUSD",
            ),
            (
                "!has(self.dailyUSD) || !has(self.monthlyUSD) || self.dailyUSD <= self.monthlyUSD",
                "must not exceed monthlyUSD",
                ".dailyUSD",
            ),
        )
    )

    daily_usd: Annotated[float | None, Field(gt=0, le=10_000_000, alias="dailyUSD")] = None
    per_user_daily_usd: Annotated[
        float | None, Field(gt=0, le=1_000_000, alias="perUserDailyUSD")
    ] = None
    monthly_usd: Annotated[float | None, Field(gt=0, le=100_000_000, alias="monthlyUSD")] = None
    time_zone: Annotated[
        str, Field(min_length=1, max_length=64, pattern=TIME_ZONE_PATTERN, alias="timeZone")
    ] = "UTC"
    alert_at_percent: Annotated[int, Field(ge=1, le=100)] = 80
    on_exceeded: Literal["reject", "downgrade", "alert"] = "downgrade"
    # One request costing more than this logs a warning and counts in
    # swiftclaw_high_cost_requests_total, whatever the caps.
    alert_high_cost_usd: Annotated[
        float | None, Field(gt=0, le=100_000, alias="alertHighCostUSD")
    ] = None


class ScalingSpec(Model):
    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "!has(self.minReplicas) || !has(self.maxReplicas)"
                " || self.minReplicas <= self.maxReplicas",
                "must not exceed maxReplicas",
                ".minReplicas",
            )
        )
    )

    min_replicas: Annotated[int, Field(ge=1, le=1000)] = 2
    max_replicas: Annotated[int, Field(ge=1, le=1000)] = 10
    target_concurrency: Annotated[int, Field(ge=1, le=10_000)] = 20


class SLOSpec(Model):
    p95_latency_ms: Annotated[int, Field(ge=1, le=600_000)] = 5000
    error_rate_percent: Annotated[float, Field(ge=0, le=100)] = 5.0


class AuthSpec(Model):
    """Bearer API keys mapped to tenant and user, from a Secret or a file."""

    required: bool = True
    api_keys_secret_ref: Annotated[SecretKeyRef | None, Field(alias="apiKeysSecretRef")] = None
    # The request's ``user`` field names the end user behind a shared key (a backend
    # serving many people with one key); limits, budgets and usage then count per end
    # user, scoped under the key's tenant. Without it, ``user`` is forwarded, not trusted.
    user_from_request: bool = False


# --- the whole policy ----------------------------------------------------------------


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
                " || self.cache.semantic.embeddings != 'models' || has(self.models.embeddings)",
                "models needs spec.models.embeddings",
                ".cache.semantic.embeddings",
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


# --- how the pods run (the operator acts on these; the runtime only validates them) ----

DEFAULT_IMAGE = "ghcr.io/swiftclaw/agent-runtime:0.1.0"

Quantity = Annotated[
    str, Field(pattern=r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti|k|M|G|T)?$", max_length=32)
]


class ResourceAmounts(Model):
    cpu: Quantity | None = None
    memory: Quantity | None = None


class Resources(Model):
    requests: ResourceAmounts = ResourceAmounts(cpu="250m", memory="256Mi")
    limits: ResourceAmounts = ResourceAmounts(memory="512Mi")


class RuntimeSpec(Model):
    """How the runtime pods run."""

    image: Annotated[str, Field(min_length=1, max_length=512)] = DEFAULT_IMAGE
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    resources: Resources = Resources()
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    pod_annotations: Annotated[dict[str, str], Field(max_length=64)] = {}
    node_selector: Annotated[dict[str, str], Field(max_length=32)] = {}
    priority_class_name: Annotated[str, Field(max_length=253)] | None = None
    drain_seconds: Annotated[int, Field(ge=0, le=120)] = 5
    grace_seconds: Annotated[int, Field(ge=1, le=3600)] = 30


class MonitoringSpec(Model):
    """ServiceMonitor and PrometheusRule, made only where the Prometheus operator's CRDs exist."""

    enabled: bool = True
    scrape_interval: Annotated[str, Field(pattern=r"^[0-9]+(s|m)$")] = "15s"


class AgentDeploymentSpec(AgentPolicy):
    """The spec of an AgentDeployment: the policy (what the runtime enforces) and how its
    pods run (which only the operator acts on)."""

    runtime: RuntimeSpec = RuntimeSpec()
    monitoring: MonitoringSpec = MonitoringSpec()

    def policy(self) -> AgentPolicy:
        """The part a runtime pod loads (the operator-only fields left out)."""
        return AgentPolicy.model_validate(
            self.model_dump(by_alias=True, include=set(AgentPolicy.model_fields))
        )


# --- loading and errors ----------------------------------------------------------------


@dataclass(frozen=True)
class FieldIssue:
    """One problem with a config, at a field path such as ``spec.models.tiers[1].name``."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ConfigError(ValueError):
    """A manifest or runtime config that does not validate; lists every issue found."""

    def __init__(self, issues: list[FieldIssue], source: str = "config") -> None:
        self.issues = issues
        self.source = source
        lines = "\n".join(f"  {i}" for i in issues)
        super().__init__(f"{source} is invalid ({len(issues)} problem(s)):\n{lines}")


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "none", "dict", "list"})


def _is_union_tag(part: int | str) -> bool:
    """pydantic puts the member type of a union in error locations (``str``,
    ``list[ContentPart]``, ``SecretKeyRef``); those are not part of the field's path."""
    return isinstance(part, str) and (part[:1].isupper() or "[" in part or part in _TYPE_TAGS)


def format_path(prefix: str, loc: Iterable[int | str]) -> str:
    """``("models", "tiers", 1, "name")`` -> ``spec.models.tiers[1].name``."""
    out = prefix
    for part in loc:
        if _is_union_tag(part):
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _issues_from_validation(err: ValidationError, prefix: str) -> list[FieldIssue]:
    issues = []
    for e in err.errors(include_url=False):
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        elif e["type"] == "string_pattern_mismatch":
            msg = f"{e['input']!r} does not match {e['ctx']['pattern']}"
        issues.append(FieldIssue(format_path(prefix, e["loc"]), msg))
    return issues


def _split_ref(ref: str) -> tuple[str, str]:
    provider, _, model = ref.partition("/")
    return provider, model


def reference_issues(policy: AgentPolicy, prefix: str = "spec") -> list[FieldIssue]:
    """Cross-field rules: names unique, references resolve, bounds ordered."""
    issues: list[FieldIssue] = []
    provider_names = [p.name for p in policy.providers]
    for i, name in enumerate(provider_names):
        if name in provider_names[:i]:
            issues.append(FieldIssue(f"{prefix}.providers[{i}].name", f"duplicate name {name!r}"))
    for i, p in enumerate(policy.providers):
        if p.api_key_secret_ref and p.api_key_env:
            issues.append(
                FieldIssue(
                    f"{prefix}.providers[{i}]",
                    "set apiKeySecretRef or apiKeyEnv, not both",
                )
            )
    tier_names = [t.name for t in policy.models.tiers]
    for i, t in enumerate(policy.models.tiers):
        path = f"{prefix}.models.tiers[{i}]"
        if t.name in tier_names[:i]:
            issues.append(FieldIssue(f"{path}.name", f"duplicate name {t.name!r}"))
        provider, _ = _split_ref(t.model)
        if provider not in provider_names:
            issues.append(FieldIssue(f"{path}.model", f"unknown provider {provider!r}"))
        for j, fb in enumerate(t.fallbacks):
            fb_provider, _ = _split_ref(fb)
            if fb_provider not in provider_names:
                issues.append(
                    FieldIssue(f"{path}.fallbacks[{j}]", f"unknown provider {fb_provider!r}")
                )
            if fb == t.model:
                issues.append(
                    FieldIssue(f"{path}.fallbacks[{j}]", "a tier cannot fall back to its own model")
                )
            if fb in t.fallbacks[:j]:
                issues.append(FieldIssue(f"{path}.fallbacks[{j}]", f"duplicate fallback {fb!r}"))
    issues += _embeddings_issues(policy, prefix)
    default = policy.models.routing.default
    if default is not None and default not in tier_names:
        issues.append(FieldIssue(f"{prefix}.models.routing.default", f"unknown tier {default!r}"))
    retry = policy.reliability.retry
    if retry.initial_backoff_ms > retry.max_backoff_ms:
        issues.append(
            FieldIssue(
                f"{prefix}.reliability.retry.initialBackoffMs",
                "must not exceed maxBackoffMs",
            )
        )
    reliability = policy.reliability
    if (
        reliability.attempt_timeout_seconds is not None
        and reliability.attempt_timeout_seconds > reliability.timeout_seconds
    ):
        issues.append(
            FieldIssue(
                f"{prefix}.reliability.attemptTimeoutSeconds", "must not exceed timeoutSeconds"
            )
        )
    scaling = policy.scaling
    if scaling.min_replicas > scaling.max_replicas:
        issues.append(FieldIssue(f"{prefix}.scaling.minReplicas", "must not exceed maxReplicas"))
    budget = policy.budget
    if (
        budget.daily_usd is not None
        and budget.per_user_daily_usd is not None
        and budget.per_user_daily_usd > budget.daily_usd
    ):
        issues.append(FieldIssue(f"{prefix}.budget.perUserDailyUSD", "must not exceed dailyUSD"))
    if (
        budget.daily_usd is not None
        and budget.monthly_usd is not None
        and budget.daily_usd > budget.monthly_usd
    ):
        issues.append(FieldIssue(f"{prefix}.budget.dailyUSD", "must not exceed monthlyUSD"))
    if not valid_time_zone(budget.time_zone):
        issues.append(
            FieldIssue(
                f"{prefix}.budget.timeZone",
                f"unknown time zone {budget.time_zone!r} (an IANA name such as Europe/Paris)",
            )
        )
    limits = policy.rate_limits
    for inner, outer, inner_name, outer_name in (
        (limits.per_user, limits.per_tenant, "perUser", "perTenant"),
        (limits.per_tenant, limits.global_, "perTenant", "global"),
    ):
        if inner is None or outer is None:
            continue
        for unit in ("requests_per_minute", "tokens_per_minute"):
            a, b = getattr(inner, unit), getattr(outer, unit)
            if a is not None and b is not None and a > b:
                wire = to_camel(unit)
                issues.append(
                    FieldIssue(
                        f"{prefix}.rateLimits.{inner_name}.{wire}",
                        f"must not exceed {outer_name}.{wire}",
                    )
                )
    for i, source in enumerate(policy.agent.context):
        rest = source.url
        for placeholder in PLACEHOLDERS:
            rest = rest.replace(placeholder, "")
        if "{" in rest or "}" in rest:
            issues.append(
                FieldIssue(
                    f"{prefix}.agent.context[{i}].url",
                    "only the placeholders {user} and {tenant} are allowed",
                )
            )
    redis = policy.cache.redis
    if redis.mode == "external" and redis.url_secret_ref is None:
        issues.append(
            FieldIssue(f"{prefix}.cache.redis.urlSecretRef", "required when mode is external")
        )
    if redis.mode != "external" and redis.url_secret_ref is not None:
        issues.append(
            FieldIssue(f"{prefix}.cache.redis.urlSecretRef", "only allowed when mode is external")
        )
    if policy.cache.semantic.embeddings == "models" and policy.models.embeddings is None:
        issues.append(
            FieldIssue(f"{prefix}.cache.semantic.embeddings", "models needs spec.models.embeddings")
        )
    context_names = [c.name for c in policy.agent.context]
    for i, name in enumerate(context_names):
        if name in context_names[:i]:
            issues.append(
                FieldIssue(f"{prefix}.agent.context[{i}].name", f"duplicate name {name!r}")
            )
    return issues


def valid_time_zone(name: str) -> bool:
    """Whether ``name`` is in the IANA zone database (as Python's zoneinfo knows it)."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _embeddings_issues(policy: AgentPolicy, prefix: str) -> list[FieldIssue]:
    spec = policy.models.embeddings
    if spec is None:
        return []
    types = {p.name: p.type for p in policy.providers}
    issues = []
    for i, ref in enumerate(spec.refs):
        path = f"{prefix}.models.embeddings." + ("model" if i == 0 else f"fallbacks[{i - 1}]")
        provider, _ = _split_ref(ref)
        if provider not in types:
            issues.append(FieldIssue(path, f"unknown provider {provider!r}"))
        elif types[provider] == "anthropic":
            issues.append(
                FieldIssue(path, f"provider {provider!r} is anthropic, which has no embeddings API")
            )
        if i and ref == spec.model:
            issues.append(FieldIssue(path, "embeddings cannot fall back to their own model"))
        elif i and ref in spec.refs[1:i]:
            issues.append(FieldIssue(path, f"duplicate fallback {ref!r}"))
    return issues


def parse_policy(
    spec: Mapping[str, Any],
    source: str = "config",
    prefix: str = "spec",
    model: type[AgentPolicy] = AgentPolicy,
) -> AgentPolicy:
    """Validate a ``spec`` mapping into ``model`` (the policy, or the operator's spec that
    extends it), or raise :class:`ConfigError`."""
    if not isinstance(spec, Mapping):
        raise ConfigError([FieldIssue(prefix, "must be a mapping")], source)
    try:
        policy = model.model_validate(spec)
    except ValidationError as err:
        raise ConfigError(_issues_from_validation(err, prefix), source) from None
    issues = reference_issues(policy, prefix)
    if issues:
        raise ConfigError(issues, source)
    return policy


@dataclass(frozen=True)
class LoadedConfig:
    """A validated policy with the identity of the AgentDeployment it came from."""

    name: str
    namespace: str
    policy: AgentPolicy


def parse_document(
    doc: Any, source: str = "config", model: type[AgentPolicy] = AgentPolicy
) -> LoadedConfig:
    """Accept an ``AgentDeployment`` manifest or the ``RuntimeConfig`` the operator renders."""
    if not isinstance(doc, Mapping):
        raise ConfigError([FieldIssue("(document)", "must be a YAML/JSON mapping")], source)
    issues: list[FieldIssue] = []
    api_version = doc.get("apiVersion")
    kind = doc.get("kind")
    if api_version != f"{API_GROUP}/{API_VERSION}":
        issues.append(
            FieldIssue("apiVersion", f"expected '{API_GROUP}/{API_VERSION}', got {api_version!r}")
        )
    if kind not in (KIND, RUNTIME_CONFIG_KIND):
        issues.append(FieldIssue("kind", f"expected {KIND} or {RUNTIME_CONFIG_KIND}, got {kind!r}"))
    metadata = doc.get("metadata") or {}
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    if not isinstance(name, str) or not re.match(NAME_PATTERN, name):
        issues.append(FieldIssue("metadata.name", f"must be a DNS label, got {name!r}"))
    if "spec" not in doc:
        issues.append(FieldIssue("spec", "required"))
    if issues:
        raise ConfigError(issues, source)
    if model is AgentPolicy and kind == KIND:
        model = AgentDeploymentSpec  # the whole manifest is checked, pod settings included
    policy = parse_policy(doc["spec"], source, model=model)
    namespace = metadata.get("namespace") or "default"
    return LoadedConfig(name=str(name), namespace=str(namespace), policy=policy)


def load_config(path: str | Path) -> LoadedConfig:
    """Read a manifest or runtime config file (YAML or JSON; the first document is used)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as err:
        raise ConfigError(
            [FieldIssue("(file)", f"cannot read {p}: {err.strerror}")], str(p)
        ) from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as err:
        raise ConfigError([FieldIssue("(document)", f"not valid YAML: {err}")], str(p)) from None
    agents = [
        d for d in docs if isinstance(d, Mapping) and d.get("kind") in (KIND, RUNTIME_CONFIG_KIND)
    ]
    if not agents:
        raise ConfigError(
            [FieldIssue("kind", f"no {KIND} or {RUNTIME_CONFIG_KIND} document in the file")], str(p)
        )
    return parse_document(agents[0], str(p))


# Policy fields no runtime reads: the HPA acts on scaling, the alert rules on the SLO. Kept
# out of the pods' config, whose checksum is in the pod template, so that changing them does
# not roll every pod.
NOT_FOR_PODS = frozenset({"scaling", "slo"})


def render_runtime_config(name: str, namespace: str, policy: AgentPolicy) -> dict[str, Any]:
    """The document a runtime pod loads: the policy the runtime acts on, defaults filled in,
    no secrets."""
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": RUNTIME_CONFIG_KIND,
        "metadata": {"name": name, "namespace": namespace},
        # Only the policy: pod settings of an AgentDeploymentSpec are the operator's business.
        "spec": policy.model_dump(
            mode="json",
            by_alias=True,
            exclude_none=True,
            include=set(AgentPolicy.model_fields) - NOT_FOR_PODS,
        ),
    }
