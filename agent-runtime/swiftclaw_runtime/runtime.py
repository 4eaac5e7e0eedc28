"""One served agent: its config and the live parts built from it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from .auth import ApiKeyStore
from .cache import ResponseCache
from .cache.embeddings import Embedder, LocalEmbedder, ProviderEmbedder
from .config import AgentPolicy, LoadedConfig
from .credentials import resolve_provider_key
from .dispatch import Dispatcher
from .health import Health
from .looplag import LoopLag
from .metrics import Metrics
from .overrides import Fleet, fleet_path
from .prompt import ContextSources
from .providers import Provider, build_provider
from .reload import Reloader
from .responses.store import MemoryStore, RedisStore, ResponseStore
from .routing import Router
from .spend import SpendControl

log = logging.getLogger("swiftclaw.runtime")


@dataclass
class RuntimeOptions:
    """What comes from the process (flags, environment) rather than the manifest."""

    redis_url: str | None = None
    # Rate-limit counters and budget spend, which must never be evicted: a Redis run with
    # noeviction (the managed state instance). None: the same Redis as ``redis_url``.
    state_redis_url: str | None = None
    max_body_bytes: int = 4 * 1024 * 1024
    body_timeout_seconds: float = 10.0
    max_in_flight: int = 1024
    access_log: bool = False
    drain_seconds: float = 0.0
    grace_seconds: float = 30.0
    # The HTTP edge (see edge.py): header deadline and size, connections, write deadline.
    header_timeout_seconds: float = 10.0
    max_header_bytes: int = 32 * 1024
    max_connections: int = 4096
    write_timeout_seconds: float = 30.0
    # From the memory limit (memory.py): the body pool and the JSON elements of one body.
    body_pool_bytes: int = 256 * 1024 * 1024
    max_json_elements: int = 262_144
    # /metrics and the probes on a port of their own; None: /metrics on the service port.
    metrics_port: int | None = None
    # Re-read while running (reload.py): the API keys file (None: not watched), the fleet
    # document (None: $SWIFTCLAW_FLEET_FILE, else the operator's mount), every this often.
    api_keys_path: Path | None = None
    fleet_path: Path | None = None
    reload_seconds: float = 1.0


@dataclass
class Runtime:
    config: LoadedConfig
    keys: ApiKeyStore
    options: RuntimeOptions = field(default_factory=RuntimeOptions)

    def __post_init__(self) -> None:
        self.metrics = Metrics()
        self.provider_specs = {p.name: p for p in self.policy.providers}
        self.providers: dict[str, Provider] = {
            p.name: build_provider(p, resolve_provider_key(p), self.policy.cache.prompt_caching)
            for p in self.policy.providers
        }
        for name, provider in self.providers.items():
            self.metrics.track_connections(name, provider.connections)
        # the operator's fleet-wide decisions, read now and whenever the file changes
        self.fleet = Fleet(self.policy)
        self.reloader = Reloader(
            self, self.options.fleet_path or fleet_path(), self.options.api_keys_path
        )
        self.reloader.load_fleet()
        self.dispatcher = Dispatcher(self.policy, self.providers, self.metrics, fleet=self.fleet)
        for name, cooldown in self.dispatcher.cooldowns.items():
            self.metrics.track_retry_after(name, cooldown.wait)
        self.loop_lag = LoopLag(self.metrics.loop_lag)
        self.health = Health(
            self.providers, self.dispatcher, self.options.redis_url, self.state_redis_url
        )
        agent = f"{self.config.namespace}/{self.name}"  # what the caches' and spend's keys name
        self.cache = ResponseCache(
            self.policy,
            agent,
            self.metrics,
            self.options.redis_url,
            self._embedder(),
        )
        # Stored Responses conversations (previous_response_id): shared through Redis by
        # every pod when there is one, else in this process. In the cache's Redis, not the
        # state's: they grow with traffic, and the state instance must stay bounded by the
        # configuration (it never evicts), so under memory pressure an old conversation
        # goes before a counter does.
        self.responses: ResponseStore = (
            RedisStore(self.options.redis_url) if self.options.redis_url else MemoryStore()
        )
        self.router = Router(self.policy, self.name)
        self.spend = SpendControl(
            self.policy,
            agent,
            self.metrics,
            self.state_redis_url,
            self.policy.cache.redis.fallback_replicas,
            # which response is whose, for feedback: a key per response, evictable
            cache_redis_url=self.options.redis_url,
            fleet=self.fleet,
        )
        self.context = ContextSources(self.policy.agent.context, self.metrics)

    def _embedder(self) -> Embedder | None:
        semantic = self.policy.cache.semantic
        if not semantic.enabled:
            return None
        spec, route = self.policy.models.embeddings, self.dispatcher.embeddings_route
        if semantic.embeddings == "local" or spec is None or route is None:
            return LocalEmbedder()
        target = route.targets[0]
        return ProviderEmbedder(self.providers[target.provider], target, spec.dimensions)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def state_redis_url(self) -> str | None:
        return self.options.state_redis_url or self.options.redis_url

    @property
    def policy(self) -> AgentPolicy:
        return self.config.policy

    async def startup(self) -> None:
        for p in self.policy.providers:
            if p.api_key_env and not resolve_provider_key(p):
                log.warning(
                    "provider %s: environment variable %s is not set", p.name, p.api_key_env
                )
        if self.keys.required and len(self.keys) == 0:
            log.warning("auth is required but no API keys are loaded: every request gets 401")
        await self.cache.start()
        log.info(
            "cache: exact %s, semantic %s, in %s",
            "on" if self.cache.exact_on else "off",
            f"on ({self.cache.embedder.name})" if self.cache.embedder else "off",
            self.cache.kind,
        )
        await self.spend.start()
        if self.spend.redis is None and (self.spend.limiter.active or self.spend.budget.active):
            log.info(
                "no Redis: rate limits and budgets are counted in this process, "
                "each at 1/%d of its value (cache.redis.fallbackReplicas)",
                self.policy.cache.redis.fallback_replicas,
            )
        self.reloader.start()
        self.loop_lag.start()
        self.health.started = True
        log.info(
            "agent %s/%s serving tiers %s",
            self.config.namespace,
            self.name,
            ", ".join(t.name for t in self.policy.models.tiers),
        )

    async def shutdown(self) -> None:
        await self.reloader.stop()
        await self.loop_lag.stop()
        await self.cache.close()
        await self.context.close()
        await self.spend.close()
        for provider in self.providers.values():
            await provider.close()
        await self.responses.close()
