"""The one object the pipeline talks to: plan, look up, finish (store), degrade.

Per request: :meth:`ResponseCache.plan` decides from the spec, the request and its
``Cache-Control`` what the caches may do (the outcome starts as ``bypass`` or
``miss``); :meth:`lookup` tries the exact cache, then the semantic one, then joins the
single flight of its key (waiting for an identical call under way, here or on another
replica); after the upstream call :meth:`finish` stores a clean answer and wakes the
followers (it must be called once for every lookup, failed calls included);
:meth:`degrade` looks for a similar answer when every model of the tier failed.

Nothing here fails a request: a backend that is down, an embedding that fails or a
corrupt entry each make the request bypass the cache, and are counted.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ..asgi import watch_for_hangup
from ..config import AgentPolicy, TierSpec
from ..logs import FailureLog
from ..metrics import Metrics
from ..redis_client import queue_until
from ..schemas import ChatRequest
from ..spend.costs import cost_usd, prices
from ..spend.identity import Identity
from . import safety, verify
from .embeddings import Embedder, EmbeddingFailed
from .entry import CachedAnswer
from .flight import Flight, SingleFlight
from .keys import (
    CacheControl,
    Scope,
    exact_key,
    is_cacheable,
    semantic_question,
    semantic_scope,
)
from .semantic import MemoryIndex, RedisIndex, SemanticIndex
from .shadow import ShadowBook, answers_agree
from .store import MemoryStore, RedisStore, Store, StoreBusy, StoreUnavailable

if TYPE_CHECKING:  # numpy is imported once a semantic cache is built, not at startup
    from .minilm import Vector

log = logging.getLogger("swiftclaw.cache")

CacheOutcome = Literal["exact", "semantic", "stale-similar", "miss", "bypass"]
CANDIDATES = 4  # nearest neighbours a semantic lookup verifies, best first
# How long a replica serves an exact answer from its memory before reading Redis again
# (one GET a minute per hot question; a refresh or a purge reaches every replica in that).
HOT_SECONDS = 60.0


@dataclass
class Lookup:
    """One request's dealings with the caches."""

    tier: TierSpec
    outcome: CacheOutcome = "bypass"
    read: bool = False  # look the answer up
    write: bool = False  # store the fresh answer
    key: str | None = None  # exact key, when the exact cache applies
    question: str | None = None  # single-turn question, when the semantic cache applies
    scope: Scope | None = None
    vector: Vector | None = None
    # The embedding failed once: the request neither looks up nor stores semantically (a
    # provider that is down would otherwise cost it a second wait when the answer is stored).
    embed_failed: bool = False
    flight: Flight | None = None
    similarity: float | None = None
    # A would-be semantic hit not served (shadow mode, or an audit in serve mode): the
    # fresh answer is compared with it when the call is done.
    shadow_of: CachedAnswer | None = None
    # The request's deadline (time.monotonic()): its Redis calls queue for a connection
    # until then, no longer (set by the lookup).
    until: float | None = None

    @contextlib.contextmanager
    def queued(self) -> Iterator[None]:
        """Redis calls made inside queue for a connection until the request's deadline."""
        if self.until is None:
            yield
            return
        with queue_until(self.until):
            yield


class ResponseCache:
    def __init__(
        self,
        policy: AgentPolicy,
        agent: str,
        metrics: Metrics,
        redis_url: str | None,
        embedder: Embedder | None = None,
    ) -> None:
        spec = policy.cache
        self.policy = policy
        self.spec = spec
        self.agent = agent
        self.metrics = metrics
        self.exact_on = spec.exact.enabled
        self.semantic_on = spec.semantic.enabled and embedder is not None
        self.embedder = embedder
        # A failing embeddings provider fails every request: logged when it starts and
        # stops (cache_errors{kind="embedding"} counts each one).
        self._embed_failures = FailureLog(
            log,
            "semantic cache skipped: embeddings fail",
            "embeddings work again",
            "requests go to the model without the semantic cache",
            "the semantic cache is used again",
        )
        self.prefix = f"swiftclaw:{agent}:"
        semantic = spec.semantic
        self.shadow = ShadowBook(
            semantic.mode,
            semantic.require_precision,
            semantic.min_samples,
            [t.name for t in policy.models.tiers],
        )
        metrics.cache_up.set(1)
        local = spec.local
        # With Redis, the exact answers this replica stored or served lately are also kept
        # in its memory (the hot tier, bounded by cache.local, each until its own expiry and
        # for HOT_SECONDS at most): a hit from memory costs no Redis round trip. Only what
        # Redis accepted gets in, and while Redis is down its answers are still served (the
        # rest bypass the cache, as without it).
        self.hot: MemoryStore | None = None
        if redis_url and spec.redis.mode != "none":
            self.store: Store = RedisStore(redis_url, self._backend_error, self._redis_ready)
            self.index: SemanticIndex | None = None  # made once the embedding size is known
            if self.exact_on:
                hot = self.hot = MemoryStore(local.max_entries, local.max_bytes)
                metrics.cache_entries.labels("exact_local").set_function(lambda: len(hot))
                metrics.cache_bytes.labels("exact_local").set_function(lambda: hot.bytes)
        else:
            if redis_url:
                log.info("cache.redis.mode is none: caching in process, not in Redis")
            self.store = MemoryStore(local.max_entries, local.max_bytes)
            self.index = MemoryIndex(local.max_entries, local.max_bytes)
            memory_store, memory_index = self.store, self.index
            metrics.cache_entries.labels("exact").set_function(lambda: len(memory_store))
            metrics.cache_entries.labels("semantic").set_function(lambda: len(memory_index))
            metrics.cache_bytes.labels("exact").set_function(lambda: memory_store.bytes)
            metrics.cache_bytes.labels("semantic").set_function(lambda: memory_index.bytes)
        metrics.cache_up.set_function(lambda: 1.0 if self.store.available else 0.0)
        self.flights = SingleFlight(self.store, self.prefix + "lock:")

    @property
    def kind(self) -> str:
        return self.store.kind

    def _backend_error(self, op: str) -> None:
        self.metrics.cache_errors.labels(op).inc()

    async def _redis_ready(self) -> None:
        """Redis answered (at start or after an outage): make sure the index exists."""
        if isinstance(self.index, RedisIndex) and isinstance(self.store, RedisStore):
            await self._prepare(self.index, self.store.client)

    async def _prepare(self, index: RedisIndex, client: Any) -> None:
        """Create the index; a Redis without vector search turns the semantic cache off
        (the exact cache goes on) instead of failing every request."""
        from redis.exceptions import ResponseError

        try:
            await index.prepare(client)
        except ResponseError as err:
            self.semantic_on = False
            log.error(
                "the semantic cache is off: this Redis cannot make a vector index (%s); "
                "use Redis Stack or Redis 8",
                str(err)[:200],
            )

    async def start(self) -> None:
        if self.embedder is not None and self.semantic_on:
            await self.embedder.start()
            if isinstance(self.store, RedisStore) and self.embedder.dim is not None:
                self.index = RedisIndex(self.store, self.prefix, self.embedder.dim)
        await self.store.start()

    async def _index_for(self, vector: Vector) -> SemanticIndex:
        """The index; on Redis made with the size of the first vector when the embedding
        provider's size was not known in advance."""
        if self.index is None:
            assert isinstance(self.store, RedisStore)
            index = RedisIndex(self.store, self.prefix, int(vector.shape[0]))
            await self.store.call("index", lambda c: self._prepare(index, c))
            self.index = index
        return self.index

    async def close(self) -> None:
        await self.store.close()
        if self.hot is not None:
            await self.hot.close()
        if self.embedder is not None:
            await self.embedder.close()

    # --- per request ------------------------------------------------------------------

    def plan(
        self,
        who: Identity,
        tier: TierSpec,
        request: ChatRequest,
        payload: dict[str, Any],
        control: CacheControl,
    ) -> Lookup:
        lk = Lookup(tier)
        if not (self.exact_on or self.semantic_on):
            return lk
        reason = None
        if control.no_store:
            reason = "no_store"
        elif not is_cacheable(self.spec.exact, request):
            reason = "not_cacheable"
        elif not self.store.available and self.hot is None:
            reason = "unavailable"  # (with a hot tier, its answers are served; the rest bypass)
        if reason is not None:
            self.metrics.cache_bypassed.labels(reason).inc()
            return lk
        lk.write = True
        lk.read = not control.no_cache
        user = who.user if self.spec.sharing == "user" else None
        if self.exact_on:
            lk.key = exact_key(who.tenant, user, self.agent, tier, payload)
        if self.semantic_on:
            lk.question = semantic_question(request)
            if lk.question is not None:
                lk.scope = semantic_scope(who.tenant, user, self.agent, tier, payload)
        if lk.read:
            lk.outcome = "miss"
        else:
            self.metrics.cache_bypassed.labels("no_cache").inc()
        return lk

    async def lookup(self, lk: Lookup, timeout: float) -> CachedAnswer | None:
        """A cached answer for the request, or None (then call upstream and
        :meth:`finish`). ``timeout``: how long it may wait for an identical call, or
        for a Redis connection (the request's deadline)."""
        lk.until = time.monotonic() + timeout
        if not lk.read:
            return None
        with lk.queued():
            return await self._lookup(lk, timeout)

    async def _lookup(self, lk: Lookup, timeout: float) -> CachedAnswer | None:
        try:
            if lk.key is not None:
                answer = await self._exact(lk)
                if answer is not None:
                    return answer
            if lk.question is not None:
                answer = await self._semantic(
                    lk, self.spec.semantic.threshold, time.time() - self.spec.semantic.ttl_seconds
                )
                if answer is not None and self.shadow.decide(lk.tier.name) == "serve":
                    self._count("semantic", lk, answer)
                    lk.outcome = "semantic"
                    return answer
                lk.shadow_of = answer  # checked against the fresh answer (None: a miss)
                if lk.vector is not None:
                    self._count("semantic", lk, None)
            if lk.key is not None:
                return await self._single_flight(lk, lk.key, timeout)
        except StoreUnavailable as err:
            self._unavailable(lk, "busy" if isinstance(err, StoreBusy) else "unavailable")
        except Exception:  # a cache bug or a Redis reply it did not expect: serve anyway
            log.exception("cache lookup failed; bypassing the cache")
            self.metrics.cache_errors.labels("lookup").inc()
            self._unavailable(lk, "unavailable")
        return None

    def _unavailable(self, lk: Lookup, reason: str) -> None:
        self.metrics.cache_bypassed.labels(reason).inc()
        lk.outcome, lk.read, lk.write = "bypass", False, False

    async def _exact(self, lk: Lookup) -> CachedAnswer | None:
        assert lk.key is not None
        started = time.perf_counter()
        key = self.prefix + "x:" + lk.key
        raw = await self.hot.get(key) if self.hot is not None else None
        shared = raw is None
        if shared:
            raw = await self.store.get(key)
        answer = CachedAnswer.from_bytes(raw) if raw is not None else None
        if shared and raw is not None and answer is not None and self.hot is not None:
            await self._keep_hot(key, raw, answer.created)
        self.metrics.child(self.metrics.cache_lookup_seconds, "exact").observe(
            time.perf_counter() - started
        )
        self._count("exact", lk, answer)
        if answer is not None:
            lk.outcome = "exact"
        return answer

    async def _single_flight(self, lk: Lookup, key: str, timeout: float) -> CachedAnswer | None:
        flight = self.flights.join(key)
        watch_for_hangup()  # waiting for an identical call under way here or on another replica
        if not flight.leader:
            answer = await self.flights.wait(flight, timeout)
            if answer is not None:
                self.metrics.cache_coalesced.labels("process").inc()
                self._saved("exact", lk, answer)
                lk.outcome = "exact"
            return answer  # None: the leader got no answer; call upstream on our own
        lk.flight = flight

        async def read() -> CachedAnswer | None:
            raw = await self.store.get(self.prefix + "x:" + key)
            return CachedAnswer.from_bytes(raw) if raw is not None else None

        answer = await self.flights.lock_or_wait(flight, timeout, read)
        if answer is not None:
            self.metrics.cache_coalesced.labels("redis").inc()
            self._saved("exact", lk, answer)
            lk.outcome = "exact"
            await self.flights.land(flight, answer)
            lk.flight = None
        return answer

    async def _semantic(
        self, lk: Lookup, threshold: float, not_before: float, kind: str = "semantic"
    ) -> CachedAnswer | None:
        """The best verified candidate (counted here for ``stale``; the caller counts a
        fresh lookup, which shadow mode may not serve)."""
        assert lk.question is not None and lk.scope is not None
        never = safety.never_by_meaning(lk.question)
        if never is not None:  # whatever the score: no search, no answer by meaning
            self.metrics.child(self.metrics.cache_rejected, never).inc()
            return None
        started = time.perf_counter()
        vector = await self._vector(lk)
        if vector is None:
            return None
        if kind == "semantic":
            self.shadow.looked_up(lk.tier.name)
        index = await self._index_for(vector)
        found: CachedAnswer | None = None
        for c in await index.search(vector, lk.scope, CANDIDATES, not_before):
            if c.similarity < threshold:
                break
            reason = safety.never_by_meaning(c.answer.question) and "never_by_meaning"
            reason = reason or verify.injected(lk.question, c.answer.question)
            if reason is None and self.spec.semantic.verify:
                reason = verify.mismatch(lk.question, c.answer.question)
            if reason is not None:
                self.metrics.cache_rejected.labels(reason).inc()
                continue
            found, lk.similarity = c.answer, c.similarity
            break
        self.metrics.child(self.metrics.cache_lookup_seconds, kind).observe(
            time.perf_counter() - started
        )
        if kind != "semantic":
            self._count(kind, lk, found)
        return found

    async def _vector(self, lk: Lookup) -> Vector | None:
        if lk.vector is None and not lk.embed_failed:
            assert self.embedder is not None and lk.question is not None
            started = time.perf_counter()
            try:
                lk.vector = await self.embedder.embed(lk.question)
            except EmbeddingFailed as err:
                self.metrics.cache_errors.labels("embedding").inc()
                self._embed_failures.failed(str(err))
                lk.embed_failed = True
                return None
            self._embed_failures.worked()
            self.metrics.embedding_seconds.observe(time.perf_counter() - started)
        return lk.vector

    def _count(self, kind: str, lk: Lookup, answer: CachedAnswer | None) -> None:
        self.metrics.child(
            self.metrics.cache_lookups, kind, lk.tier.name, "hit" if answer else "miss"
        ).inc()
        if answer is not None:
            self._saved(kind, lk, answer)

    def _saved(self, kind: str, lk: Lookup, answer: CachedAnswer) -> None:
        price_in, price_out = prices(self.policy, lk.tier, answer.model_ref)
        saved = cost_usd(price_in, price_out, answer.prompt_tokens, answer.completion_tokens)
        if saved:
            self.metrics.child(self.metrics.cache_saved_usd, kind, lk.tier.name).inc(saved)

    async def finish(self, lk: Lookup, answer: CachedAnswer | None) -> None:
        """After the upstream call: store a clean ``answer`` (None: the call failed or
        was cut off) and end the single flight. Safe to call more than once."""
        try:
            if answer is not None and lk.shadow_of is not None:
                cached, lk.shadow_of = lk.shadow_of, None
                await self._check_shadow(lk, cached, answer)
            if answer is not None and lk.write and _worth_keeping(answer):
                with lk.queued():
                    await self._store(lk, answer)
        except StoreUnavailable:
            pass
        except Exception:
            log.exception("storing an answer failed")
            self.metrics.cache_errors.labels("store").inc()
        finally:
            if lk.flight is not None:
                flight, lk.flight = lk.flight, None
                with lk.queued():
                    await self.flights.land(flight, answer)

    async def _check_shadow(self, lk: Lookup, cached: CachedAnswer, fresh: CachedAnswer) -> None:
        """Whether the would-be hit's cached answer agreed with the fresh one: counted per
        tier (an embedding that fails leaves it uncounted)."""
        assert self.embedder is not None
        a, b = _answer_text(fresh), _answer_text(cached)
        try:
            similarity = 1.0
            if a != b:
                va, vb = await self.embedder.embed(a[:4000]), await self.embedder.embed(b[:4000])
                similarity = float(va @ vb)
        except EmbeddingFailed:
            self.metrics.cache_errors.labels("embedding").inc()
            return
        agrees = answers_agree(similarity, a, b)
        self.shadow.record(lk.tier.name, agrees)
        self.metrics.child(
            self.metrics.cache_shadow, lk.tier.name, "true" if agrees else "false"
        ).inc()

    async def _store(self, lk: Lookup, answer: CachedAnswer) -> None:
        if lk.question is not None:
            answer = answer.with_question(lk.question)
        raw = answer.to_bytes()
        if len(raw) > self.spec.max_entry_bytes:
            self.metrics.child(self.metrics.cache_stores, "exact", "too_large").inc()
            return
        if lk.key is not None:
            key = self.prefix + "x:" + lk.key
            # a leader's lock goes with its answer's write (one round trip)
            unlock = self.flights.hand_over(lk.flight)
            await self.store.set(key, raw, self.spec.exact.ttl_seconds, unlock)
            if self.hot is not None:
                await self._keep_hot(key, raw, answer.created)
            self.metrics.child(self.metrics.cache_stores, "exact", "stored").inc()
        if (
            lk.question is not None
            and lk.scope is not None
            and safety.never_by_meaning(lk.question) is None
        ):
            vector = await self._vector(lk)
            if vector is not None:
                semantic = self.spec.semantic
                ttl = max(semantic.ttl_seconds, semantic.stale_ttl_seconds)
                await (await self._index_for(vector)).add(vector, lk.scope, answer, ttl)
                self.metrics.child(self.metrics.cache_stores, "semantic", "stored").inc()

    async def _keep_hot(self, key: str, raw: bytes, created: float) -> None:
        """Keep an exact entry in this replica's memory for what is left of its TTL, and
        at most ``HOT_SECONDS``: an entry that another replica refreshed (``no-cache``) or
        that was purged from Redis is served from here no longer than that."""
        assert self.hot is not None
        left = min(created + self.spec.exact.ttl_seconds - time.time(), HOT_SECONDS)
        if left > 0:
            await self.hot.set(key, raw, left)

    async def degrade(self, lk: Lookup) -> CachedAnswer | None:
        """Every model of the tier failed: a similar answer, verified, at the relaxed
        ``degradeThreshold``, up to ``staleTTLSeconds`` old (None: the 503 stands)."""
        if lk.question is None or lk.scope is None or not self.store.available:
            return None
        if not self.shadow.serving(lk.tier.name):  # nothing is served by meaning in shadow
            return None
        semantic = self.spec.semantic
        try:
            with lk.queued():
                answer = await self._semantic(
                    lk,
                    semantic.degrade_threshold,
                    time.time() - semantic.stale_ttl_seconds,
                    "stale",
                )
        except StoreUnavailable:
            return None
        except Exception:
            log.exception("looking for a similar answer failed")
            self.metrics.cache_errors.labels("degrade").inc()
            return None
        if answer is not None:
            lk.outcome = "stale-similar"
        return answer


def _answer_text(answer: CachedAnswer) -> str:
    """What an answer says: its text, or its tool calls."""
    import orjson

    if answer.content:
        return answer.content
    return orjson.dumps(answer.message.get("tool_calls") or []).decode()


def _worth_keeping(answer: CachedAnswer) -> bool:
    """An answer with text or tool calls, and not cut by a content filter."""
    if answer.finish_reason == "content_filter":
        return False
    return bool(answer.content or answer.message.get("tool_calls"))
