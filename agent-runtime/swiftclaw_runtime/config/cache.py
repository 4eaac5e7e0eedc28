"""The caches (exact, semantic, in-process) and the Redis that holds the shared state."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field

from .base import URL_PATTERN, Model, Name, SecretKeyRef, cel
from .rules import holds


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

    ``verify: false`` turns the near-miss checks off, not the refusal of questions that
    carry instructions, URLs, e-mail addresses or code (see ``CacheSpec``), which always
    runs.

    ``embeddings``: ``local`` embeds questions with the bundled all-MiniLM-L6-v2 on the
    pod's CPU (offline); ``models`` with the model of ``spec.models.embeddings`` (the one
    ``POST /v1/embeddings`` serves), without its fallbacks.

    ``mode``: ``shadow`` (the default) serves nothing by meaning: a would-be semantic hit
    goes upstream, and the fresh answer is compared with the cached one to measure, per
    tier, the precision the cache would have had (``/v1/usage``,
    ``swiftclaw_cache_semantic_shadow_total``). ``serve`` serves semantic hits in a tier
    once ``minSamples`` would-be hits were measured there at ``requirePrecision`` or
    better, and goes back to shadow while the measured precision (of the last
    ``minSamples``, at least 100, checks; serving, one would-be hit in 10 is still checked)
    is below it; ``requirePrecision: null`` serves without measuring.
    Questions about health, medication, chemicals, electrical work, legal or financial
    actions and security, and questions that carry instructions, URLs, e-mail addresses
    or code, are never answered by meaning, in any mode.
    """

    enabled: bool = False
    ttl_seconds: Annotated[int, Field(ge=1, le=2_592_000)] = 1800
    threshold: Annotated[float, Field(ge=0.5, le=1.0)] = 0.62
    verify: bool = True
    degrade_threshold: Annotated[float, Field(ge=0.5, le=1.0)] = 0.62
    stale_ttl_seconds: Annotated[int, Field(ge=1, le=2_592_000, alias="staleTTLSeconds")] = 86_400
    embeddings: Literal["local", "models"] = "local"
    mode: Literal["shadow", "serve"] = "shadow"
    require_precision: Annotated[float | None, Field(ge=0.5, le=1.0)] = 0.95
    min_samples: Annotated[int, Field(ge=1, le=100_000)] = 200


class LocalCacheSpec(Model):
    """Bounds of a replica's in-process cache: the whole cache with ``redis.mode: none``;
    with Redis, the hot tier of exact answers each replica keeps beside it."""

    max_entries: Annotated[int, Field(ge=1, le=10_000_000)] = 10_000
    max_bytes: Annotated[int, Field(ge=1024, le=68_719_476_736)] = 64 * 1024 * 1024


class RedisS3Spec(Model):
    """S3-compatible object storage for the managed Redis's backups. The Secret
    ``credentialsSecretName`` holds the keys ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY``."""

    endpoint: Annotated[str | None, Field(max_length=2048, pattern=URL_PATTERN)] = None
    bucket: Annotated[str, Field(min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.-]*$")]
    # default: <namespace>/<agent name>
    prefix: Annotated[str | None, Field(max_length=512, pattern=r"^[-._/a-zA-Z0-9]+$")] = None
    region: Annotated[str, Field(min_length=1, max_length=64)] = "us-east-1"
    credentials_secret_name: Name


def _managed_only(attr: str, spec: Any) -> bool:
    return getattr(spec, attr) is None or bool(spec.mode == "managed")


DEFAULT_STORAGE = "1Gi"
DEFAULT_CACHE_MEMORY = "512Mi"
DEFAULT_STATE_MEMORY = "256Mi"

CRON_PATTERN = (
    r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)"
    r"|[0-9*/,?LW#A-Za-z-]+( +[0-9*/,?LW#A-Za-z-]+){4})$"
)


class RedisBackupSpec(Model):
    """RDB snapshots of the state instance uploaded on a schedule, the newest ``keep`` kept
    (and none older than ``maxAgeDays`` when set)."""

    # A CronJob schedule: five fields, or a macro; refused here rather than by the CronJob,
    # whose error would name its own field, not this one.
    schedule: Annotated[str, Field(max_length=100, pattern=CRON_PATTERN)] = "0 3 * * *"
    keep: Annotated[int, Field(ge=1, le=1000)] = 7
    max_age_days: Annotated[int | None, Field(ge=1, le=3650)] = None
    s3: RedisS3Spec


RedisMemory = Annotated[str, Field(pattern=r"^[0-9]+(Mi|Gi)$", max_length=16)]


class RedisSpec(Model):
    """Where the shared state lives: a Redis the operator runs, an external one, or none.

    Managed: two instances, a cache (``allkeys-lru``, evictable: the response caches and
    stored responses) and a state one (``noeviction``, persisted: rate-limit counters and
    budget spend), each with a password from a generated Secret."""

    # The managed Redis's storage cannot change: a StatefulSet's volume claims are
    # immutable (the runbook agent-degraded.md says how to move to another size). A
    # transition rule, so only the API server checks it (it needs the stored value); a
    # change of mode may change the size (none -> managed creates a new StatefulSet).
    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "(has(self.mode) && self.mode != 'managed')"
                " || (has(oldSelf.mode) && oldSelf.mode != 'managed')"
                f" || (has(self.storage) ? self.storage : '{DEFAULT_STORAGE}')"
                f" == (has(oldSelf.storage) ? oldSelf.storage : '{DEFAULT_STORAGE}')",
                "cannot be changed while the Redis is managed: its StatefulSet's volume claims "
                "are immutable; the runbook agent-degraded says how to resize",
                ".storage",
            )
        )
    )

    rules = (
        holds(
            "!has(self.mode) || self.mode != 'external' || has(self.urlSecretRef)",
            "required when mode is external",
            ".urlSecretRef",
            lambda s: s.mode != "external" or s.url_secret_ref is not None,
        ),
        holds(
            "!has(self.urlSecretRef) || (has(self.mode) && self.mode == 'external')",
            "only allowed when mode is external",
            ".urlSecretRef",
            lambda s: s.url_secret_ref is None or s.mode == "external",
        ),
        holds(
            "!has(self.stateUrlSecretRef) || (has(self.mode) && self.mode == 'external')",
            "only allowed when mode is external",
            ".stateUrlSecretRef",
            lambda s: s.state_url_secret_ref is None or s.mode == "external",
        ),
        *(
            holds(
                f"!has(self.{name}) || !has(self.mode) || self.mode == 'managed'",
                "only allowed when mode is managed",
                f".{name}",
                partial(_managed_only, attr),
            )
            for name, attr in (
                ("backup", "backup"),
                ("storage", "storage"),
                ("cacheMemory", "cache_memory"),
                ("stateMemory", "state_memory"),
                ("deleteDataWithAgent", "delete_data_with_agent"),
            )
        ),
    )

    mode: Literal["managed", "external", "none"] = "managed"
    url_secret_ref: Annotated[SecretKeyRef | None, Field(alias="urlSecretRef")] = None
    # external: the Redis for counters and spend, run with maxmemory-policy noeviction;
    # without it they share urlSecretRef's Redis, which must then be noeviction itself.
    state_url_secret_ref: Annotated[SecretKeyRef | None, Field(alias="stateUrlSecretRef")] = None
    # Without Redis (mode none, or while it is unreachable) limits and budgets are counted
    # in each replica, each enforcing 1/fallbackReplicas of every limit and cap: set it to
    # the replicas you usually run. A manifest field rather than the live replica count, so
    # that scaling never rolls the pods; a fleet larger than this lets more through while
    # Redis is away, a smaller one less.
    fallback_replicas: Annotated[int, Field(ge=1, le=1000)] = 1
    # The fields below act only on the managed Redis, and are refused with another mode
    # (so they have no schema defaults: a default would be "set" there). Fixed while
    # managed: see the transition rule above.
    storage: Annotated[str | None, Field(pattern=r"^[0-9]+(Mi|Gi|Ti)$")] = None
    # Each instance's memory limit; maxmemory is a fraction of it.
    cache_memory: RedisMemory | None = None
    state_memory: RedisMemory | None = None
    backup: RedisBackupSpec | None = None
    # The state instance's volume and password are kept when the agent is deleted or the
    # mode changes, unless this is true.
    delete_data_with_agent: bool | None = None

    @property
    def storage_size(self) -> str:
        return self.storage or DEFAULT_STORAGE

    def memory_limit(self, role: Literal["cache", "state"]) -> str:
        chosen = self.cache_memory if role == "cache" else self.state_memory
        return chosen or (DEFAULT_CACHE_MEMORY if role == "cache" else DEFAULT_STATE_MEMORY)

    @property
    def deletes_data(self) -> bool:
        return bool(self.delete_data_with_agent)


class CacheSpec(Model):
    """``sharing``: who is served an answer another request stored. ``user`` (the
    default): only the user who asked (the key's user, or the request's ``user`` with
    ``auth.userFromRequest``), so no user is served what another wrote into a question,
    and ``x-swiftclaw-cache`` and timing tell a user only about their own questions.
    ``tenant``: every user of the tenant shares the exact and semantic answers (more
    hits); a user can then tell from the header (or the timing) that someone in the
    tenant asked the same or a similar question. Tenants never share either way, and in
    both modes a semantic hit is refused when either question carries instructions
    ("always answer", "ignore previous"...) or the two carry different URLs, e-mail
    addresses or code (:func:`~swiftclaw_runtime.cache.verify.injected`)."""

    sharing: Literal["user", "tenant"] = "user"
    exact: ExactCacheSpec = ExactCacheSpec()
    semantic: SemanticCacheSpec = SemanticCacheSpec()
    redis: RedisSpec = RedisSpec()
    # An answer larger than this is not stored (one huge answer must not evict the rest).
    max_entry_bytes: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = 256 * 1024
    local: LocalCacheSpec = LocalCacheSpec()
