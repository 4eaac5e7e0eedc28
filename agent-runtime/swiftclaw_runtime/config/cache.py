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
    """Whether the runtime looks requests up in, and stores answers into, the exact cache."""
    ttl_seconds: Annotated[int, Field(ge=1, le=2_592_000)] = 3600
    """How long the runtime keeps an exact answer."""
    cacheable: Literal["deterministic", "always"] = "deterministic"
    """Which requests the runtime caches (exact and semantic): deterministic (temperature at most
    maxTemperature, or a seed) or always."""
    max_temperature: Annotated[float, Field(ge=0, le=2)] = 0.3
    """With cacheable: deterministic, the highest temperature of a request the runtime still
    caches."""


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
    """Whether the runtime looks single-turn questions without tools up by meaning (and stores
    their answers for it), and serves stale-similar answers when every model of a tier failed."""
    ttl_seconds: Annotated[int, Field(ge=1, le=2_592_000)] = 1800
    """How long the runtime serves an entry as a semantic hit."""
    threshold: Annotated[float, Field(ge=0.5, le=1.0)] = 0.62
    """The lowest cosine similarity at which the runtime considers a cached question for a semantic
    hit (it must then pass verification and the safety filter too). Higher: fewer, safer hits."""
    verify: bool = True
    """Whether the runtime runs the near-miss checks (numbers, negations, antonyms, order, dates,
    products, language) on a candidate; false turns them off (not advised), not the refusal of
    questions that carry instructions or payloads."""
    degrade_threshold: Annotated[float, Field(ge=0.5, le=1.0)] = 0.62
    """The lowest cosine similarity at which the runtime serves a cached answer (verified) as
    stale-similar when every model of the tier failed."""
    stale_ttl_seconds: Annotated[int, Field(ge=1, le=2_592_000, alias="staleTTLSeconds")] = 86_400
    """The oldest entry the runtime serves as stale-similar; entries are kept this long."""
    embeddings: Literal["local", "models"] = "local"
    """What the runtime embeds questions with: local (the bundled all-MiniLM-L6-v2, offline, on the
    pod's CPU) or models (spec.models.embeddings, without its fallbacks, waited for at most 1
    s)."""
    mode: Literal["shadow", "serve"] = "shadow"
    """shadow (the default): the runtime serves nothing by meaning; a would-be hit goes upstream
    and its fresh answer is compared with the cached one, to measure precision per tier. serve:
    a tier serves by meaning once its measured precision reaches requirePrecision over
    minSamples checks, and goes back to shadow when it drops."""
    require_precision: Annotated[float | None, Field(ge=0.5, le=1.0)] = 0.95
    """The measured precision a tier needs before the runtime serves by meaning in serve mode
    (null: serve without measuring)."""
    min_samples: Annotated[int, Field(ge=1, le=100_000)] = 200
    """How many shadow checks the runtime needs before requirePrecision is judged (the window is
    the last max(minSamples, 100) checks)."""


class LocalCacheSpec(Model):
    """Bounds of a replica's in-process cache: the whole cache with ``redis.mode: none``;
    with Redis, the hot tier of exact answers each replica keeps beside it."""

    max_entries: Annotated[int, Field(ge=1, le=10_000_000)] = 10_000
    """The most entries the runtime keeps in process, each for the exact and the semantic cache
    (least recently used out first)."""
    max_bytes: Annotated[int, Field(ge=1024, le=68_719_476_736)] = 64 * 1024 * 1024
    """The most bytes of entries the runtime keeps in process, each for the exact and the semantic
    cache (Python's overhead, about 200 bytes an entry, comes on top)."""


class RedisS3Spec(Model):
    """S3-compatible object storage for the managed Redis's backups. The Secret
    ``credentialsSecretName`` holds the keys ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY``."""

    endpoint: Annotated[str | None, Field(max_length=2048, pattern=URL_PATTERN)] = None
    """The S3-compatible endpoint the backup job uploads to; unset, AWS."""
    bucket: Annotated[str, Field(min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.-]*$")]
    """The bucket the backup job uploads snapshots to."""
    # default: <namespace>/<agent name>
    prefix: Annotated[str | None, Field(max_length=512, pattern=r"^[-._/a-zA-Z0-9]+$")] = None
    """The key prefix of the snapshots; unset, <namespace>/<agent name>."""
    region: Annotated[str, Field(min_length=1, max_length=64)] = "us-east-1"
    """The bucket's region."""
    credentials_secret_name: Name
    """The Secret (keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) the operator hands the backup
    job as its environment."""


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
    """The backup CronJob's schedule (five fields, or a macro such as @daily), in the controller
    manager's time zone."""
    keep: Annotated[int, Field(ge=1, le=1000)] = 7
    """How many of the newest snapshots the backup job keeps; older ones are deleted."""
    max_age_days: Annotated[int | None, Field(ge=1, le=3650)] = None
    """The backup job also deletes snapshots older than this (never the newest)."""
    s3: RedisS3Spec
    """Where the backup job uploads the snapshots."""


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
    """managed: the operator runs two Redis instances (cache and state) for the agent; external:
    the runtime uses the Redis of urlSecretRef (and stateUrlSecretRef); none: the caches, limits
    and budgets live in each replica's process."""
    url_secret_ref: Annotated[SecretKeyRef | None, Field(alias="urlSecretRef")] = None
    """With mode external: the Secret key holding the Redis URL (redis://:PASSWORD@host:6379/0) the
    runtime uses for the caches, and for counters and spend unless stateUrlSecretRef is set."""
    # external: the Redis for counters and spend, run with maxmemory-policy noeviction;
    # without it they share urlSecretRef's Redis, which must then be noeviction itself.
    state_url_secret_ref: Annotated[SecretKeyRef | None, Field(alias="stateUrlSecretRef")] = None
    """With mode external: the Secret key holding the URL of a second Redis for rate-limit counters
    and spend, run with maxmemory-policy noeviction. Without it they share urlSecretRef's Redis,
    which must then be noeviction itself."""
    # Without Redis (mode none, or while it is unreachable) limits and budgets are counted
    # in each replica, each enforcing 1/fallbackReplicas of every limit and cap: set it to
    # the replicas you usually run. A manifest field rather than the live replica count, so
    # that scaling never rolls the pods; a fleet larger than this lets more through while
    # Redis is away, a smaller one less.
    fallback_replicas: Annotated[int, Field(ge=1, le=1000)] = 1
    """Without Redis (mode none, or while it is unreachable) each replica of the runtime enforces
    1/fallbackReplicas of every limit and cap: set it to the replicas you usually run. A
    manifest field rather than the live count, so that scaling never rolls the pods."""
    # The fields below act only on the managed Redis, and are refused with another mode
    # (so they have no schema defaults: a default would be "set" there). Fixed while
    # managed: see the transition rule above.
    storage: Annotated[str | None, Field(pattern=r"^[0-9]+(Mi|Gi|Ti)$")] = None
    """The size of the managed state instance's volume claim (default 1Gi). Fixed while the Redis
    is managed: the StatefulSet's claims are immutable."""
    # Each instance's memory limit; maxmemory is a fraction of it.
    cache_memory: RedisMemory | None = None
    """The managed cache instance's memory limit (default 512Mi); the operator sets its maxmemory
    to 75 % of it."""
    state_memory: RedisMemory | None = None
    """The managed state instance's memory limit (default 256Mi); the operator sets its maxmemory
    to 50 % of it, the rest being room for the snapshot's fork and a backup's transfer."""
    backup: RedisBackupSpec | None = None
    """Scheduled backups of the managed state instance to S3-compatible storage: the operator
    creates the CronJob <agent>-redis-backup."""
    # The state instance's volume and password are kept when the agent is deleted or the
    # mode changes, unless this is true.
    delete_data_with_agent: bool | None = None
    """Whether the operator deletes the managed state instance's claim and password Secret with the
    agent; unset or false, they are kept (also when mode changes) and found again by an agent of
    the same name."""

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
    addresses or code (:func:`~swiftclaw_runtime.cache.verify.injected`).

    ``promptCaching`` is about the providers' own prompt caches, not these answers: ``auto``
    (the default) places Anthropic's ``cache_control`` breakpoints on a request's stable
    prefix when the client marked none, and keeps a conversation on one model of its tier
    while that model is healthy; ``manual`` only keeps the conversation there (the client's
    breakpoints alone); ``off`` does neither. The client's own breakpoints always pass
    through (see :mod:`~swiftclaw_runtime.providers.breakpoints`)."""

    sharing: Literal["user", "tenant"] = "user"
    """Who the runtime serves a cached answer to: user (only the user who asked) or tenant (every
    user of the tenant). Tenants never share."""
    prompt_caching: Literal["auto", "manual", "off"] = "auto"
    """The providers' own prompt caches (the runtime): auto places Anthropic cache_control
    breakpoints on a request's stable prefix when the client marked none and keeps a
    conversation on one model of its tier while it is healthy; manual keeps the conversation
    there with the client's breakpoints alone; off does neither. A client's own breakpoints
    always pass through."""
    exact: ExactCacheSpec = ExactCacheSpec()
    """The exact cache: answers replayed for identical requests (the runtime)."""
    semantic: SemanticCacheSpec = SemanticCacheSpec()
    """The semantic cache: answers reused for questions that mean the same (the runtime)."""
    redis: RedisSpec = RedisSpec()
    """Where the shared state lives (caches, rate-limit counters, spend, stored responses): a Redis
    the operator runs, an external one, or none."""
    # An answer larger than this is not stored (one huge answer must not evict the rest).
    max_entry_bytes: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = 256 * 1024
    """The runtime does not store an answer larger than this (one huge answer must not evict the
    rest)."""
    local: LocalCacheSpec = LocalCacheSpec()
    """Bounds of each replica's in-process cache (the whole cache without Redis, the hot tier of
    exact answers with it)."""
