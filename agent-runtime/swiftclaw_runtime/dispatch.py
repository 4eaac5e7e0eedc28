"""Calling a tier's model: retries, Retry-After, circuit breakers and the fallback chain.

Order of attempts for a tier: its model, then each fallback. Each target gets up to
``retry.maxAttempts`` attempts with full-jitter backoff between them, within its share
of what is left of the deadline (:func:`resilience.target_timeout`: the last target gets
all of it), so a hung primary cannot starve a healthy fallback. Retries of a tier are
bounded by its retry budget. A target is skipped while its breaker is open, and while its
provider is cooling down after a 429 (unless it is the last target left, in which case
the request waits out the capped, jittered Retry-After if the deadline allows). A
provider's 4xx (other than 401/403/408/409/429) is the client's problem and is returned
without fallback.

Each target first translates the request into its provider's shape
(:meth:`Provider.prepare`), once for all its attempts. A target whose API cannot express
the request (a schema keyword Gemini lacks, a content part not translated) is skipped
before any call: not its fault, so its breaker is untouched, and no attempt is spent.
When no target of the chain can serve the request, the answer is a 400 naming the
parameter and what each model lacks.

What a client reads of a failure names each model tried and the kind of failure (HTTP
status, timeout, connection); the provider's own error text may hold account ids or
internal addresses, so it goes to the log only.

Streams are opened the same way, and count as answered once their first chunk arrives:
before that, a failure falls back transparently; after it, see :mod:`pipeline`.

The caller learns of each attempt that was sent and gave no usage back (``asked``): one
that timed out, whose answer was malformed, or that was in flight when the client hung
up. The provider may have done, and billed, that work, so the request is charged for it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .config import AgentPolicy, TierSpec
from .embeddings import EmbeddingsRequest
from .errors import ApiError
from .metrics import Metrics
from .overrides import Fleet
from .providers import (
    Call,
    Completion,
    EmbedCall,
    Embeddings,
    Provider,
    StreamUsage,
    Unsupported,
    UpstreamError,
)
from .resilience import (
    BreakerState,
    CircuitBreaker,
    Clock,
    Cooldown,
    Deadline,
    RetryBudget,
    capped_retry_after,
    jittered_wait,
    retry_delay,
    target_timeout,
    timeout_is_providers_fault,
)
from .routing.affinity import Affinity, Decision
from .schemas import ChatRequest

log = logging.getLogger("swiftclaw.dispatch")

# The name of the embeddings route, as its metrics label it (``tier="(embeddings)"``: not a
# DNS label, so no tier can have it).
EMBEDDINGS = "(embeddings)"
T = TypeVar("T")
C = TypeVar("C")
# Failures after which the provider may have done the work of the attempt (and billed it).
UNANSWERED = frozenset({"timeout", "protocol"})
# One attempt at one target: its provider, the call as prepared for it, the time it has.
AttemptFn = Callable[[Provider, C, float], Awaitable[T]]
# A request in one target's shape (raises Unsupported when that target cannot serve it).
PrepareFn = Callable[[Provider, "Target"], C]


@dataclass(frozen=True)
class Target:
    """One provider/model pair that a tier may call."""

    provider: str
    model: str

    @property
    def ref(self) -> str:
        return f"{self.provider}/{self.model}"

    @classmethod
    def parse(cls, ref: str) -> Target:
        provider, _, model = ref.partition("/")
        return cls(provider, model)


@dataclass
class Route:
    """A chain of targets tried in order (a tier's, or the embeddings model's), with its
    retry budget; ``name`` labels its metrics (``tier``)."""

    name: str
    targets: list[Target]
    budget: RetryBudget
    refs: list[str] = field(init=False)  # the targets' refs, as the fleet document names them

    def __post_init__(self) -> None:
        self.refs = [t.ref for t in self.targets]

    @property
    def title(self) -> str:
        """How a client's error message names it."""
        return "The embeddings model" if self.name == EMBEDDINGS else f"Tier '{self.name}'"


@dataclass
class Served:
    """Which target answered, whether it was a fallback (not the tier's model), what
    conversation affinity did (None: the request had none), and the models of the chain the
    fleet document took out (skipped without a call)."""

    target: Target
    fallback: bool
    attempts: int
    affinity: Decision | None = None
    fleet_skipped: tuple[str, ...] = ()


@dataclass
class OpenStream:
    """A stream whose first chunk has arrived; iterate ``rest`` for the others."""

    served: Served
    first: dict[str, Any]
    rest: AsyncIterator[dict[str, Any]]
    usage: StreamUsage


class Dispatcher:
    def __init__(
        self,
        policy: AgentPolicy,
        providers: dict[str, Provider],
        metrics: Metrics,
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
        fleet: Fleet | None = None,
    ) -> None:
        self.policy = policy
        self.fleet = fleet
        self.providers = providers
        self.metrics = metrics
        self.retry = policy.reliability.retry
        self.timeout_seconds = policy.reliability.timeout_seconds
        self.attempt_timeout = policy.reliability.attempt_timeout_seconds
        self._clock = clock
        self._rng = rng or random.Random()
        self.cooldowns = {name: Cooldown(clock) for name in providers}
        self.breakers: dict[str, CircuitBreaker] = {}
        self.affinity = Affinity()
        self.routes = {
            tier.name: self._route(tier.name, [tier.model, *tier.fallbacks])
            for tier in policy.models.tiers
        }
        embeddings = policy.models.embeddings
        self.embeddings_route = (
            self._route(EMBEDDINGS, embeddings.refs) if embeddings is not None else None
        )

    def _route(self, name: str, refs: list[str]) -> Route:
        targets = [Target.parse(ref) for ref in refs]
        for t in targets:
            if t.ref not in self.breakers:
                self.breakers[t.ref] = self._new_breaker(t)
        return Route(name, targets, RetryBudget(self.retry.budget_percent, self._clock))

    def _new_breaker(self, target: Target) -> CircuitBreaker:
        def on_change(state: BreakerState) -> None:
            log.warning("circuit breaker %s is now %s", target.ref, state.name.lower())

        breaker = CircuitBreaker(self.policy.reliability.circuit_breaker, self._clock, on_change)
        # The one source of the gauge, read at each scrape: an open breaker turns half-open
        # when its time is up, but only when something asks. A model the fleet took out gets
        # no call that would ask, and the operator, reading "open" for ever, would never let
        # it back.
        gauge = self.metrics.breaker_state.labels(target.provider, target.model)
        gauge.set_function(lambda: float(breaker.state))
        return breaker

    @staticmethod
    def _chat(request: ChatRequest, payload: dict[str, Any]) -> PrepareFn[Call]:
        def prepare(provider: Provider, target: Target) -> Call:
            return provider.prepare(Call(target.model, request, payload))

        return prepare

    async def complete(
        self,
        tier: TierSpec,
        request: ChatRequest,
        payload: dict[str, Any],
        deadline: Deadline,
        asked: list[Target] | None = None,
        conversation: bytes | None = None,
    ) -> tuple[Completion, Served]:
        """``conversation``: the request's conversation key, for affinity (see
        :mod:`.routing.affinity`; None: none)."""

        async def attempt(provider: Provider, call: Call, timeout: float) -> Completion:
            return await provider.complete(call)

        return await self._run(
            self.routes[tier.name],
            deadline,
            self._chat(request, payload),
            attempt,
            request.output_limit,
            False,
            asked,
            conversation,
        )

    async def embed(
        self, route: Route, request: EmbeddingsRequest, payload: dict[str, Any], deadline: Deadline
    ) -> tuple[Embeddings, Served]:
        def prepare(provider: Provider, target: Target) -> EmbedCall:
            return provider.prepare_embeddings(EmbedCall(target.model, request, payload))

        async def attempt(provider: Provider, call: EmbedCall, timeout: float) -> Embeddings:
            return await provider.embed(call)

        return await self._run(route, deadline, prepare, attempt, None, False)

    async def open_stream(
        self,
        tier: TierSpec,
        request: ChatRequest,
        payload: dict[str, Any],
        deadline: Deadline,
        asked: list[Target] | None = None,
        conversation: bytes | None = None,
    ) -> OpenStream:
        async def attempt(
            provider: Provider, call: Call, timeout: float
        ) -> tuple[dict[str, Any], AsyncIterator[dict[str, Any]], StreamUsage]:
            usage = StreamUsage()
            gen = provider.stream(call, usage, self.timeout_seconds)
            try:
                first = await anext(gen)
            except StopAsyncIteration:
                raise UpstreamError("protocol", "stream ended before any data") from None
            except BaseException:
                await _aclose(gen)
                raise
            return first, gen, usage

        (first, rest, usage), served = await self._run(
            self.routes[tier.name],
            deadline,
            self._chat(request, payload),
            attempt,
            request.output_limit,
            True,
            asked,
            conversation,
        )
        return OpenStream(served, first, rest, usage)

    def key_replaced(self, provider: str) -> None:
        """``provider``'s key was rotated: its models' breakers that refusals of the old
        key opened (401/403) let a probe through now instead of after ``openSeconds``."""
        for ref, breaker in self.breakers.items():
            if ref.startswith(provider + "/") and (breaker.last_error or "").startswith("auth"):
                breaker.probe_now()

    def record_stream_failure(self, target: Target, err: UpstreamError) -> None:
        """A stream broke after its first chunk: the provider still failed."""
        if err.trips_breaker:
            self.breakers[target.ref].record_failure(str(err))

    async def _run(
        self,
        route: Route,
        deadline: Deadline,
        prepare: PrepareFn[C],
        attempt_fn: AttemptFn[C, T],
        output_limit: int | None,
        stream: bool,
        asked: list[Target] | None = None,
        conversation: bytes | None = None,
    ) -> tuple[T, Served]:
        failures: list[str] = []  # what the client reads: model and kind of failure
        details: list[str] = []  # what the log reads: the providers' own words too
        unsupported: list[tuple[Target, Unsupported]] = []  # targets that cannot serve it
        deadline_hit = False  # the deadline, not the providers, ended some target's tries
        targets, preferred, decision = self._affine(route, conversation)
        budget = route.budget
        budget.record_request()
        skip = self.fleet.skipped(route.name, route.refs) if self.fleet is not None else {}
        skipped: list[str] = []
        passed_over = "failed"  # why the target being tried did not answer
        preferred_reason = passed_over  # why the preferred target (the first) did not
        for index, target in enumerate(targets):
            # the targets after this one that will be tried (the fleet's skips aside)
            after = len(targets) - index - 1
            if skip:
                after -= sum(1 for t in targets[index + 1 :] if t.ref in skip)
            last = after == 0
            if index == 1:
                preferred_reason = passed_over
            passed_over = "failed"
            excluded = skip.get(target.ref)
            if excluded is not None:  # out of this tier on every pod: no call, no breaker
                passed_over = "fleet_excluded"
                skipped.append(target.ref)
                self.metrics.fleet_skips.labels(route.name, target.ref).inc()
                failures.append(f"{target.ref}: out of the tier fleet-wide ({excluded.cause})")
                continue
            provider = self.providers[target.provider]
            try:
                call = prepare(provider, target)
            except Unsupported as err:
                passed_over = "unsupported"
                # kept without its traceback: the traceback holds this frame, whose list
                # holds the error, a cycle keeping the translator's frames and partial output
                # (1.4 MiB for a schema bomb) until a collector pass
                unsupported.append((target, err.with_traceback(None)))
                self.metrics.unsupported_skips.labels(route.name, target.ref).inc()
                failures.append(f"{target.ref}: cannot serve it ({err.message}: {err.param})")
                log.info("%s cannot serve a request: %s (%s)", target.ref, err.message, err.param)
                continue
            breaker = self.breakers[target.ref]
            cooldown = self.cooldowns[target.provider]
            share_ends = self._clock() + target_timeout(
                deadline.remaining(), after + 1, self.attempt_timeout
            )
            attempts = 0
            while attempts < self.retry.max_attempts:
                cooling = cooldown.wait()
                if cooling > 0 and not last:
                    passed_over = "rate_limited"
                    failures.append(f"{target.ref}: rate limited, Retry-After {cooling:.1f}s left")
                    break
                if attempts and not budget.try_spend():
                    self.metrics.retry_budget_exhausted.labels(route.name).inc()
                    failures.append(f"{target.ref}: no retry (the tier's retry budget is spent)")
                    break
                cooling = jittered_wait(cooling, self._rng)
                wait = (
                    retry_delay(attempts, self.retry, cooling, self._rng) if attempts else cooling
                )
                if wait > 0:
                    if wait >= deadline.remaining():
                        failures.append(
                            f"{target.ref}: next try in {wait:.1f}s would pass the deadline"
                        )
                        deadline_hit = True
                        break
                    await asyncio.sleep(wait)
                if not breaker.allow():
                    passed_over = "circuit_open"
                    failures.append(f"{target.ref}: circuit open for {breaker.retry_in():.0f}s")
                    break
                timeout = min(deadline.remaining(), share_ends - self._clock())
                if timeout <= 0:
                    breaker.release()
                    if deadline.expired or last:
                        deadline_hit = True
                    else:
                        failures.append(f"{target.ref}: its share of the deadline is spent")
                    break
                attempts += 1
                started = self._clock()
                try:
                    result = await self._attempt(provider, call, timeout, attempt_fn)
                except asyncio.CancelledError:
                    breaker.release()
                    if asked is not None:  # the caller left while the provider worked
                        asked.append(target)
                    raise
                except UpstreamError as err:
                    self._observe(target, started, err.kind)
                    if asked is not None and err.kind in UNANSWERED:
                        asked.append(target)
                    if err.kind == "rate_limited" and err.retry_after:
                        cooldown.hold(capped_retry_after(err.retry_after, self.retry))
                    if err.kind == "timeout" and not timeout_is_providers_fault(
                        output_limit, timeout, stream
                    ):
                        breaker.release()  # the request asked for more than fits its time
                    elif err.trips_breaker:
                        breaker.record_failure(str(err))
                    elif err.kind == "client":
                        breaker.record_success()  # it answered; the request was at fault
                        log.info("%s rejected a request: %s", target.ref, err)
                        raise _client_error(target, err) from None
                    else:
                        breaker.release()
                    failures.append(f"{target.ref}: {err.summary}")
                    details.append(f"{target.ref}: {err}")
                    if not err.retryable:
                        break
                    if attempts < self.retry.max_attempts:
                        self.metrics.retries.labels(target.provider, target.model, err.kind).inc()
                    continue
                self._observe(target, started, "ok")
                breaker.record_success()
                fallback = target != route.targets[0]
                if fallback:
                    self.metrics.fallbacks.labels(route.name, target.ref).inc()
                if preferred is not None:
                    decision = (
                        Decision("kept")
                        if index == 0
                        else Decision("broken", preferred_reason, preferred.ref)
                    )
                if conversation is not None and decision is not None:
                    self._affinity_decided(route.name, conversation, target, decision)
                return result, Served(target, fallback, attempts, decision, tuple(skipped))
        if unsupported and len(unsupported) == len(targets):
            raise _unsupported_error(unsupported)
        if details:
            log.warning("route %s: no model answered: %s", route.name, "; ".join(details))
        raise self._exhausted(route, deadline_hit or deadline.expired, failures)

    def _affine(
        self, route: Route, conversation: bytes | None
    ) -> tuple[list[Target], Target | None, Decision | None]:
        """The order to try ``route``'s targets in: the one that served the conversation
        last first (``preferred``), then the chain's order; and the decision so far (a new
        conversation, or one whose last model is not of this route)."""
        if conversation is None:
            return route.targets, None, None
        last = self.affinity.recall(conversation)
        if last is None:
            return route.targets, None, Decision("new")
        tier, ref = last
        preferred = next((t for t in route.targets if t.ref == ref), None)
        if tier != route.name or preferred is None:
            return route.targets, None, Decision("broken", "tier_changed", ref)
        return [preferred, *(t for t in route.targets if t != preferred)], preferred, None

    def _affinity_decided(
        self, route: str, conversation: bytes, served: Target, decision: Decision
    ) -> None:
        self.affinity.remember(conversation, route, served.ref)
        self.metrics.affinity.labels(route, decision.outcome, decision.reason).inc()
        if decision.outcome == "broken":
            log.info(
                "route %s: a conversation left %s for %s (%s)",
                route,
                decision.left,
                served.ref,
                decision.reason,
            )

    async def _attempt(
        self, provider: Provider, call: C, timeout: float, attempt_fn: AttemptFn[C, T]
    ) -> T:
        """One call within ``timeout``; every failure comes out as an :class:`UpstreamError`."""
        try:
            async with asyncio.timeout(timeout):
                return await attempt_fn(provider, call, timeout)
        except TimeoutError:
            raise UpstreamError("timeout", f"no answer within {timeout:.1f}s") from None
        except (UpstreamError, asyncio.CancelledError):
            raise
        except Exception as err:  # an adapter bug must not escape as a crash
            log.exception("provider %s failed unexpectedly", provider.name)
            raise UpstreamError("protocol", f"{type(err).__name__}") from err

    def _observe(self, target: Target, started: float, outcome: str) -> None:
        self.metrics.record_upstream(
            target.provider, target.model, outcome, self._clock() - started
        )

    def _exhausted(self, route: Route, out_of_time: bool, failures: list[str]) -> ApiError:
        detail = "; ".join(failures) or "no target could be tried"
        # The runtime already retried and fell back: tell SDKs not to retry on top of it.
        headers = {"x-should-retry": "false"}
        if out_of_time:
            return ApiError(
                504,
                f"{route.title} did not answer within the {self.timeout_seconds:g}s "
                f"deadline. Tried: {detail}",
                "timeout_error",
                "upstream_timeout",
                headers=headers,
            )
        return ApiError(
            503,
            f"{route.title} failed on every model. Tried: {detail}",
            "service_unavailable_error",
            "upstream_unavailable",
            headers=headers,
        )


def _unsupported_error(refused: list[tuple[Target, Unsupported]]) -> ApiError:
    """No model of the chain can express the request: a 400 naming the parameter. The
    messages are the runtime's own (written in translation), never a provider's."""
    reasons = "; ".join(f"{t.ref}: {err.message} ({err.param})" for t, err in refused)
    return ApiError(
        400,
        f"No model of this tier can serve the request as asked. {reasons}.",
        "invalid_request_error",
        "unsupported_parameter",
        param=refused[0][1].param,
    )


def _client_error(target: Target, err: UpstreamError) -> ApiError:
    """The provider refused the request itself. Its own message may hold account ids or
    internal names, so the client gets the status and the structured ``param`` and
    ``code`` it gave, and the message goes to the log."""
    status = err.status if err.status and 400 <= err.status < 500 else 400
    upstream = (err.body or {}).get("error")
    param = code = None
    if isinstance(upstream, dict):
        param = upstream.get("param") if isinstance(upstream.get("param"), str) else None
        code = upstream.get("code") if isinstance(upstream.get("code"), str) else None
    said = ", ".join(x for x in (f"HTTP {status}", code and f"code {code!r}") if x)
    return ApiError(
        status,
        f"{target.ref} rejected the request ({said}). Check the parameters"
        + (f", starting with {param!r}." if param else "."),
        "invalid_request_error",
        "upstream_rejected",
        param=param,
    )


async def _aclose(gen: AsyncIterator[Any]) -> None:
    aclose = getattr(gen, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:  # closing a broken stream may fail too; nothing to save
            log.debug("closing a failed stream raised", exc_info=True)
