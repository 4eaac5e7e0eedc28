"""The request path of ``POST /v1/chat/completions`` (and of Responses, which shares it),
transport aside.

auth (in app) -> parse -> identity (tenant, user) -> route (explicit tier or complexity
class) -> context sources (in parallel) -> prompt build (system prompt, context, history
trimmed to maxInputTokens) -> admit (rate limits, then the budget's reservation: may
downgrade the tier or refuse) -> exact cache -> semantic cache -> dispatch (retries,
breakers, fallbacks) -> store the answer -> degrade (a similar cached answer when every
model failed) -> settle (tokens, budget, usage) and record -> respond. Each step is one
call in :func:`answer_chat`; what it does lives in its own package (routing/, prompt/,
spend/, cache/, dispatch). A cached answer costs nothing: it settles at zero.

Every chat response carries ``x-swiftclaw-cache`` (``exact``, ``semantic``,
``stale-similar``, ``miss`` or ``bypass``: see :mod:`.cache`), the route
(``x-swiftclaw-route``), OpenAI's
``x-ratelimit-*`` headers when limits are set, ``x-swiftclaw-budget`` when a budget was
found spent (``scope=fleet``: the fleet document's budget state), ``x-swiftclaw-fleet-skipped``
when the fleet document took models out of the tier's chain, and
``x-swiftclaw-trimmed-tokens`` when older turns were dropped.

Streams: headers are sent only when the first chunk is in hand, so any failure before
that falls back transparently. If a provider fails after that, the stream ends with one
``data: {"error": {...}}`` event in OpenAI's error shape, then ``data: [DONE]`` (the
official SDKs raise ``APIError`` on such an event).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from .asgi import watch_for_hangup
from .auth import Principal
from .cache import Lookup
from .cache.entry import CachedAnswer, StreamAssembler
from .cache.keys import CacheControl, parse_cache_control
from .config import TierSpec
from .dispatch import OpenStream, Served, Target
from .embeddings import parse_embeddings_request
from .errors import ApiError, invalid_request, not_found
from .ids import random_hex
from .prompt import build_prompt
from .providers import Completion, StreamUsage, UpstreamError
from .providers.params import with_output_cap
from .resilience import Deadline
from .routing import Route, resolve_embeddings_model
from .routing.affinity import CACHEABLE_TOKENS, conversation_key
from .runtime import Runtime
from .schemas import ChatRequest, parse_chat_request
from .spend import Admission, Identity
from .spend.costs import cost_usd, prices, usage_cost
from .sse import DONE, encode_event
from .tokens import estimate_tokens

log = logging.getLogger("swiftclaw.pipeline")

Headers = list[tuple[bytes, bytes]]
# The outcome of a request whose client hung up first (nginx's 499).
CLIENT_CLOSED = "client_closed"
Cleanup = Callable[[], Awaitable[None]]


@dataclass
class JsonResult:
    status: int
    body: bytes
    headers: Headers = field(default_factory=list)
    who: Identity | None = None


@dataclass
class StreamResult:
    headers: Headers
    events: AsyncIterator[bytes]
    who: Identity | None = None
    # Called by the transport once the response is over, however it ended: closes the
    # upstream stream and settles the request if ``events`` never ran to its end (an
    # async generator closed before its first step skips its ``finally``).
    cleanup: Cleanup | None = None


def decode_json(body: bytes) -> Any:
    if not body:
        raise invalid_request("The request body is empty; send a JSON object.", code="invalid_json")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise invalid_request(
            f"We could not parse the JSON body of your request: {err}.", code="invalid_json"
        ) from None


@dataclass(frozen=True)
class Unanswered:
    """What the attempts that gave no usage back are charged: for each, the input
    estimate and the output cap it was sent, at its model's prices. (A provider that
    timed out, or whose caller left, may still have done and billed the work.)"""

    cost: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0
    model: str = "none"

    @classmethod
    def of(
        cls, rt: Runtime, tier: TierSpec, asked: list[Target], tokens_in: int, tokens_out: int
    ) -> Unanswered:
        if not asked:
            return cls()
        cost = sum(cost_usd(*prices(rt.policy, tier, t.ref), tokens_in, tokens_out) for t in asked)
        n = len(asked)
        return cls(cost, n * tokens_in, n * tokens_out, asked[-1].ref)


def generated_tokens(chunk: dict[str, Any]) -> int:
    """The output tokens a stream chunk carries (estimated): its text, tool calls'
    arguments and thinking (Anthropic bills thinking as output), what a stream cut before
    its usage is charged for."""
    out = 0
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if not isinstance(delta, dict):
            continue
        text = delta.get("content")
        if isinstance(text, str) and text:
            out += estimate_tokens(text)
        for call in delta.get("tool_calls") or ():
            fn = call.get("function") if isinstance(call, dict) else None
            args = fn.get("arguments") if isinstance(fn, dict) else None
            if isinstance(args, str) and args:
                out += estimate_tokens(args)
        for piece in delta.get("thinking_blocks") or ():
            thought = piece.get("thinking") if isinstance(piece, dict) else None
            if isinstance(thought, str) and thought:
                out += estimate_tokens(thought)
    return out


CACHE_HEADER = "x-swiftclaw-cache"
# Errors from the dispatcher after which a similar cached answer is served instead.
DEGRADABLE = frozenset({"upstream_unavailable", "upstream_timeout"})


def served_headers(request_id: str, tier: str, served: Served) -> Headers:
    headers = [
        (b"x-request-id", request_id.encode()),
        (b"x-swiftclaw-tier", tier.encode()),
        (b"x-swiftclaw-model", served.target.ref.encode()),
        (b"x-swiftclaw-fallback", b"true" if served.fallback else b"false"),
        (b"x-swiftclaw-attempts", str(served.attempts).encode()),
    ]
    if served.fleet_skipped:  # models the fleet document took out of the chain (config refs)
        headers.append((b"x-swiftclaw-fleet-skipped", ", ".join(served.fleet_skipped).encode()))
    if served.affinity is not None:
        headers.append((b"x-swiftclaw-affinity", served.affinity.header.encode()))
    return headers


@dataclass
class ChatAnswer:
    """A chat request answered: a completion, or a stream whose first chunk is in hand.

    ``chunks`` yields the stream's chunks, then, if the provider fails after the first one,
    an :class:`ApiError` saying so; when it ends it records the request's metrics and
    settles its spend, and ``usage`` holds the stream's token counts by then. ``cleanup``
    must be called when the response is over (see :class:`StreamResult`).
    """

    route: Route
    served: Served
    admission: Admission
    extra: Headers
    completion: Completion | None = None
    chunks: AsyncIterator[dict[str, Any] | ApiError] | None = None
    usage: StreamUsage | None = None
    cleanup: Cleanup | None = None
    cache: str = "bypass"  # what the caches did (x-swiftclaw-cache)

    @property
    def tier(self) -> TierSpec:
        return self.route.tier

    @property
    def who(self) -> Identity:
        return self.admission.who

    def headers(self, request_id: str) -> Headers:
        return [
            *served_headers(request_id, self.tier.name, self.served),
            (CACHE_HEADER.encode(), self.cache.encode()),
            (b"x-swiftclaw-route", self.route.header.encode()),
            *self.admission.headers(),
            *self.extra,
        ]


async def chat(
    rt: Runtime,
    principal: Principal,
    request_id: str | None,
    body: bytes,
    cache_control: str | None = None,
) -> JsonResult | StreamResult:
    """Serve one chat completion for an authenticated ``principal``; raises
    :class:`ApiError` for anything a client sees. ``cache_control``: the request's
    ``Cache-Control`` header."""
    started = time.perf_counter()
    request_id = request_id or random_hex()
    try:
        payload = decode_json(body)
        request = parse_chat_request(payload)
        control = parse_cache_control(cache_control)
        answer = await answer_chat(rt, principal, request_id, request, payload, started, control)
    except ApiError as err:
        err.headers.setdefault(CACHE_HEADER, "bypass")
        raise
    headers = answer.headers(request_id)
    if answer.completion is not None:
        return JsonResult(200, orjson.dumps(answer.completion.body), headers, answer.who)
    assert answer.chunks is not None
    return StreamResult(headers, _sse(answer.chunks), answer.who, answer.cleanup)


async def answer_chat(
    rt: Runtime,
    principal: Principal,
    request_id: str,
    request: ChatRequest,
    payload: dict[str, Any],
    started: float,
    control: CacheControl | None = None,
) -> ChatAnswer:
    """Identify, route, fetch context, build the prompt, admit, look the answer up in the
    caches, else dispatch (and store the answer) a validated chat request: the one path
    every chat-shaped API (chat completions, Responses) takes. When every model fails, a
    similar cached answer is served (``stale-similar``) if there is one."""
    who = rt.spend.who(principal, request.user)
    route = rt.router.route(request)
    context = await rt.context.fetch(who)
    asked_for = request  # the client's own prompt, before context: what names its conversation
    prompt = build_prompt(rt.policy.agent, request, payload, context)
    conversation = (
        conversation_key(who, asked_for)
        if rt.policy.cache.prompt_caching != "off" and prompt.input_tokens >= CACHEABLE_TOKENS
        else None
    )
    request, payload = prompt.request, prompt.payload
    output = rt.spend.output_cap(request.output_limit)
    adm = await rt.spend.admit(who, request_id, route, prompt.input_tokens, output)
    # the cap reserved for (cut to what the budget has left) is the one the provider gets
    request, payload, keyed = with_output_cap(
        request, payload, adm.output, rt.spend.output_cap(None)
    )
    route = adm.route
    m = rt.metrics
    m.child(
        m.routing_decisions,
        route.tier.name,
        f"{route.downgraded.replace('-', '_')}_downgrade" if route.downgraded else route.reason,
    ).inc()
    extra: Headers = []
    if prompt.trimmed_tokens:
        m.trimmed_tokens.inc(prompt.trimmed_tokens)
        extra.append((b"x-swiftclaw-trimmed-tokens", str(prompt.trimmed_tokens).encode()))
    tier = route.tier
    deadline = Deadline(rt.policy.reliability.timeout_seconds)
    stream = request.stream
    lk = rt.cache.plan(who, tier, request, keyed, control or CacheControl())
    try:
        hit = await rt.cache.lookup(lk, deadline.remaining())
    except BaseException:
        await rt.spend.settle(adm, "none", 0.0, 0, 0)
        raise
    if hit is not None:
        return await _cached(rt, request, lk, hit, started, route, adm, extra)
    watch_for_hangup()  # the provider's answer may take seconds: a hang-up cancels the call
    # Attempts sent that gave no usage back (timed out, cut, or the client left first):
    # the provider may have done, and billed, the work, so each is charged its estimate.
    asked: list[Target] = []
    try:
        if not stream:
            completion, served = await rt.dispatcher.complete(
                tier, request, payload, deadline, asked, conversation
            )
        else:
            opened = await rt.dispatcher.open_stream(
                tier, request, payload, deadline, asked, conversation
            )
    except BaseException as err:
        if isinstance(err, ApiError | asyncio.CancelledError):
            _record_unserved(rt, tier.name, err, stream, started)
        unpaid = Unanswered.of(rt, tier, asked, prompt.input_tokens, adm.output)
        try:
            await asyncio.shield(rt.cache.finish(lk, None))
            if isinstance(err, ApiError) and err.code in DEGRADABLE:
                stale = await rt.cache.degrade(lk)
                if stale is not None:
                    log.warning("tier %s failed: served a similar cached answer", tier.name)
                    return await _cached(rt, request, lk, stale, started, route, adm, extra, unpaid)
        finally:  # a hang-up while the cache is told or searched must not leave it unpaid
            await rt.spend.settle(
                adm, unpaid.model, unpaid.cost, unpaid.tokens_in, unpaid.tokens_out
            )
        if isinstance(err, ApiError):
            err.headers.setdefault(CACHE_HEADER, lk.outcome)
        raise
    unpaid = Unanswered.of(rt, tier, asked, prompt.input_tokens, adm.output)
    if stream:
        m.child(m.ttft_seconds, tier.name).observe(time.perf_counter() - started)
        ids = (request_id, str(opened.first.get("id") or request_id))
        chunks = _chunks(rt, tier, opened, started, adm, prompt.input_tokens, ids, lk, unpaid)

        async def cleanup() -> None:
            if not adm.settled:
                await _aclose(opened.rest)
                tokens_in = prompt.input_tokens + unpaid.tokens_in
                tokens_out = generated_tokens(opened.first) + unpaid.tokens_out
                cost = unpaid.cost + request_cost(
                    rt, tier, opened.served, prompt.input_tokens, tokens_out - unpaid.tokens_out
                )
                model = opened.served.target.ref
                await rt.spend.settle(adm, model, cost, tokens_in, tokens_out, ids)
            await rt.cache.finish(lk, None)  # a stream that never ran is not an answer

        return ChatAnswer(
            route,
            opened.served,
            adm,
            extra,
            chunks=chunks,
            usage=opened.usage,
            cleanup=cleanup,
            cache=lk.outcome,
        )
    tokens_in, tokens_out = completion.prompt_tokens, completion.completion_tokens
    cached, written = completion.cached_input_tokens, completion.cache_write_tokens
    cost = request_cost(rt, tier, served, tokens_in, tokens_out, cached, written)
    _record_served(rt, tier.name, served, started, tokens_in, tokens_out, cost, cached, written)
    cost += unpaid.cost
    ids = (request_id, str(completion.body.get("id") or request_id))
    try:
        if lk.write or lk.flight is not None:  # an answer to store, or to hand to those waiting
            entry = CachedAnswer.from_completion(
                completion.body,
                served.target.ref,
                completion.prompt_tokens,
                completion.completion_tokens,
            )
            await rt.cache.finish(lk, entry)
    finally:  # a hang-up while the answer is stored must not leave the call unpaid
        await rt.spend.settle(
            adm,
            served.target.ref,
            cost,
            completion.prompt_tokens + unpaid.tokens_in,
            completion.completion_tokens + unpaid.tokens_out,
            ids,
            cached,
            written,
        )
    return ChatAnswer(route, served, adm, extra, completion=completion, cache=lk.outcome)


async def _cached(
    rt: Runtime,
    request: ChatRequest,
    lk: Lookup,
    answer: CachedAnswer,
    started: float,
    route: Route,
    adm: Admission,
    extra: Headers,
    unpaid: Unanswered | None = None,
) -> ChatAnswer:
    """A cached answer as the provider would have given it: a completion, or a stream of
    chunks of the same shape (with the usage chunk when asked for). It spends nothing:
    the request settles at zero, or at what its failed attempts asked (``unpaid``: a
    similar answer served when every model failed)."""
    served = Served(Target.parse(answer.model_ref), False, 0)
    outcome = "stale" if lk.outcome == "stale-similar" else "cached"
    elapsed = time.perf_counter() - started
    rt.metrics.record_request(
        lk.tier.name, answer.model_ref, outcome, request.stream, elapsed, 0, 0
    )
    u = unpaid or Unanswered()
    await rt.spend.settle(adm, answer.model_ref, u.cost, u.tokens_in, u.tokens_out)
    if not request.stream:
        completion = Completion(answer.completion(), answer.prompt_tokens, answer.completion_tokens)
        return ChatAnswer(route, served, adm, extra, completion=completion, cache=lk.outcome)
    rt.metrics.child(rt.metrics.ttft_seconds, lk.tier.name).observe(time.perf_counter() - started)
    usage = StreamUsage(answer.prompt_tokens, answer.completion_tokens)
    chunks = _replay(answer.chunks(request.wants_stream_usage))
    return ChatAnswer(route, served, adm, extra, chunks=chunks, usage=usage, cache=lk.outcome)


async def _replay(chunks: list[dict[str, Any]]) -> AsyncIterator[dict[str, Any] | ApiError]:
    for chunk in chunks:
        yield chunk


async def embeddings(
    rt: Runtime,
    principal: Principal,
    request_id: str | None,
    body: bytes,
    cache_control: str | None = None,
) -> JsonResult:
    """Serve ``POST /v1/embeddings`` (never cached: ``cache_control`` has nothing to
    control here) through the embeddings model's chain: the same
    retries, breakers, deadline, metrics (``tier="(embeddings)"``) and cost as chat."""
    started = time.perf_counter()
    request_id = request_id or random_hex()
    payload = decode_json(body)
    request = parse_embeddings_request(payload)
    spec, route = rt.policy.models.embeddings, rt.dispatcher.embeddings_route
    if spec is None or route is None:
        raise not_found(
            "This agent serves no embeddings: its manifest sets no spec.models.embeddings.",
            code="model_not_found",
            param="model",
        )
    resolve_embeddings_model(rt.policy, rt.name, request.model)
    if request.dimensions is None and spec.dimensions is not None:
        request = request.model_copy(update={"dimensions": spec.dimensions})
        payload = dict(payload, dimensions=spec.dimensions)
    deadline = Deadline(rt.policy.reliability.timeout_seconds)
    try:
        watch_for_hangup()
        result, served = await rt.dispatcher.embed(route, request, payload, deadline)
    except (ApiError, asyncio.CancelledError) as err:
        _record_unserved(rt, route.name, err, False, started)
        raise
    tokens = result.prompt_tokens
    cost = cost_usd(spec.input_per_1m, 0.0, tokens, 0)
    _record_served(rt, route.name, served, started, tokens, 0, cost)
    return JsonResult(
        200, orjson.dumps(result.body), served_headers(request_id, route.name, served)
    )


def _record_served(
    rt: Runtime,
    tier: str,
    served: Served,
    started: float,
    tokens_in: int,
    tokens_out: int,
    cost: float,
    cached: int = 0,
    written: int = 0,
) -> None:
    """The metrics of a request answered in full (not streamed)."""
    outcome = "fallback" if served.fallback else "ok"
    elapsed = time.perf_counter() - started
    rt.metrics.record_request(
        tier,
        served.target.ref,
        outcome,
        False,
        elapsed,
        tokens_in,
        tokens_out,
        cost,
        cached,
        written,
    )


def _record_unserved(
    rt: Runtime, tier: str, err: BaseException, stream: bool, started: float
) -> None:
    """The metrics of a request no model answered: an error, or the client gone first."""
    outcome = CLIENT_CLOSED if isinstance(err, asyncio.CancelledError) else "error"
    rt.metrics.record_request(tier, "none", outcome, stream, time.perf_counter() - started, 0, 0)


def request_cost(
    rt: Runtime,
    tier: TierSpec,
    served: Served,
    tokens_in: int,
    tokens_out: int,
    cached: int = 0,
    written: int = 0,
) -> float:
    """The provider's price of the usage it reported (``cached`` and ``written``: the
    input tokens read from and written to its prompt cache, parts of ``tokens_in``)."""
    return usage_cost(rt.policy, tier, served.target.ref, tokens_in, tokens_out, cached, written)


async def _sse(chunks: AsyncIterator[dict[str, Any] | ApiError]) -> AsyncIterator[bytes]:
    """Chat chunks as server-sent events, ending with ``[DONE]``."""
    try:
        async for chunk in chunks:
            yield encode_event(chunk.body() if isinstance(chunk, ApiError) else chunk)
        yield DONE
    finally:
        await _aclose(chunks)


async def _aclose(gen: AsyncIterator[Any]) -> None:
    aclose = getattr(gen, "aclose", None)
    if aclose is not None:
        await aclose()


async def _chunks(
    rt: Runtime,
    tier: TierSpec,
    stream: OpenStream,
    started: float,
    adm: Admission,
    input_estimate: int,
    ids: tuple[str, ...],
    lk: Lookup,
    unpaid: Unanswered,
) -> AsyncIterator[dict[str, Any] | ApiError]:
    """Forward an open stream; a failure after the first chunk ends it with an error.
    At the end, however it ends, the request is settled on the usage the provider
    reported; a stream cut before its usage arrived is charged the input estimate and the
    output received so far (counted from its chunks), with ``unpaid`` (the attempts that
    failed before it opened). A stream that ends cleanly is assembled and offered to the
    cache; any other is not."""
    m = rt.metrics
    model = stream.served.target.ref
    outcome = "fallback" if stream.served.fallback else "ok"
    ended = False
    assembler = StreamAssembler() if lk.write else None
    answer: CachedAnswer | None = None
    generated = generated_tokens(stream.first)
    try:
        if assembler is not None:
            assembler.add(stream.first)
        yield stream.first
        try:
            async for chunk in stream.rest:
                generated += generated_tokens(chunk)
                if assembler is not None:
                    assembler.add(chunk)
                yield chunk
        except UpstreamError as err:
            outcome = "error"
            assembler = None
            rt.dispatcher.record_stream_failure(stream.served.target, err)
            m.errors.labels("stream_interrupted").inc()
            yield ApiError(
                502,
                f"{model} failed after the stream started: {err.summary}",
                "server_error",
                "stream_interrupted",
            )
        if assembler is not None:
            usage = stream.usage
            answer = assembler.answer(model, usage.prompt_tokens, usage.completion_tokens)
        ended = True
    finally:
        if not ended:
            outcome = CLIENT_CLOSED  # closed before the end: the client went away
            answer = None
        await _aclose(stream.rest)
        usage = stream.usage
        tokens_in = usage.prompt_tokens or input_estimate
        # the cache's parts of the input only as the provider counted them
        cached = usage.cached_input_tokens if usage.prompt_tokens else 0
        written = usage.cache_write_tokens if usage.prompt_tokens else 0
        # the provider's count when it gave one at the end, else what was received
        tokens_out = usage.completion_tokens if ended else 0
        tokens_out = tokens_out or max(usage.completion_tokens, generated)
        cost = request_cost(rt, tier, stream.served, tokens_in, tokens_out, cached, written)
        m.record_request(
            tier.name,
            model,
            outcome,
            True,
            time.perf_counter() - started,
            usage.prompt_tokens,
            tokens_out,
            cost,
            cached,
            written,
        )
        await asyncio.shield(
            rt.spend.settle(
                adm,
                model,
                cost + unpaid.cost,
                tokens_in + unpaid.tokens_in,
                tokens_out + unpaid.tokens_out,
                ids,
                cached,
                written,
            )
        )
        await asyncio.shield(rt.cache.finish(lk, answer))
