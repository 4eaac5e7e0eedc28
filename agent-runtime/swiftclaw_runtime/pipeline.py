"""The request path of ``POST /v1/chat/completions`` (and of Responses, which shares it),
transport aside.

auth (in app) -> parse -> identity (tenant, user) -> route (explicit tier or complexity
class) -> context sources (in parallel) -> prompt build (system prompt, context, history
trimmed to maxInputTokens) -> admit (rate limits, then the budget's reservation: may
downgrade the tier or refuse) -> dispatch (retries, breakers, fallbacks) -> settle
(tokens, budget, usage) and record -> respond. Each step is one call in
:func:`answer_chat`; what it does lives in its own package (routing/, prompt/, spend/,
dispatch).

Every chat response carries the route (``x-swiftclaw-route``), OpenAI's
``x-ratelimit-*`` headers when limits are set, ``x-swiftclaw-budget`` when a budget was
found spent, and ``x-swiftclaw-trimmed-tokens`` when older turns were dropped.

Streams: headers are sent only when the first chunk is in hand, so any failure before
that falls back transparently. If a provider fails after that, the stream ends with one
``data: {"error": {...}}`` event in OpenAI's error shape, then ``data: [DONE]`` (the
official SDKs raise ``APIError`` on such an event).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from .auth import Principal
from .config import TierSpec
from .dispatch import OpenStream, Served
from .embeddings import parse_embeddings_request
from .errors import ApiError, invalid_request, not_found
from .prompt import build_prompt
from .providers import Completion, StreamUsage, UpstreamError
from .resilience import Deadline
from .routing import Route, resolve_embeddings_model
from .runtime import Runtime
from .schemas import ChatRequest, parse_chat_request
from .spend import Admission, Identity
from .spend.costs import cost_usd, prices
from .sse import DONE, encode_event

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


def served_headers(request_id: str, tier: str, served: Served) -> Headers:
    return [
        (b"x-request-id", request_id.encode()),
        (b"x-swiftclaw-tier", tier.encode()),
        (b"x-swiftclaw-model", served.target.ref.encode()),
        (b"x-swiftclaw-fallback", b"true" if served.fallback else b"false"),
        (b"x-swiftclaw-attempts", str(served.attempts).encode()),
    ]


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

    @property
    def tier(self) -> TierSpec:
        return self.route.tier

    @property
    def who(self) -> Identity:
        return self.admission.who

    def headers(self, request_id: str) -> Headers:
        return [
            *served_headers(request_id, self.tier.name, self.served),
            (b"x-swiftclaw-route", self.route.header.encode()),
            *self.admission.headers(),
            *self.extra,
        ]


async def chat(
    rt: Runtime,
    principal: Principal,
    request_id: str | None,
    body: bytes,
) -> JsonResult | StreamResult:
    """Serve one chat completion for an authenticated ``principal``; raises
    :class:`ApiError` for anything a client sees."""
    started = time.perf_counter()
    request_id = request_id or uuid.uuid4().hex
    payload = decode_json(body)
    request = parse_chat_request(payload)
    answer = await answer_chat(rt, principal, request_id, request, payload, started)
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
) -> ChatAnswer:
    """Identify, route, fetch context, build the prompt, admit and dispatch a validated chat
    request: the one path every chat-shaped API (chat completions, Responses) takes."""
    who = rt.spend.who(principal, request.user)
    route = rt.router.route(request)
    context = await rt.context.fetch(who)
    prompt = build_prompt(rt.policy.agent, request, payload, context)
    request, payload = prompt.request, prompt.payload
    output = rt.spend.output_cap(request.output_limit)
    adm = await rt.spend.admit(who, request_id, route, prompt.input_tokens, output)
    route = adm.route
    m = rt.metrics
    m.routing_decisions.labels(
        route.tier.name, "budget_downgrade" if route.downgraded else route.reason
    ).inc()
    extra: Headers = []
    if prompt.trimmed_tokens:
        m.trimmed_tokens.inc(prompt.trimmed_tokens)
        extra.append((b"x-swiftclaw-trimmed-tokens", str(prompt.trimmed_tokens).encode()))
    tier = route.tier
    deadline = Deadline(rt.policy.reliability.timeout_seconds)
    stream = request.stream
    try:
        if not stream:
            completion, served = await rt.dispatcher.complete(tier, request, payload, deadline)
        else:
            opened = await rt.dispatcher.open_stream(tier, request, payload, deadline)
    except BaseException as err:
        elapsed = time.perf_counter() - started
        outcome = CLIENT_CLOSED if isinstance(err, asyncio.CancelledError) else "error"
        if isinstance(err, ApiError | asyncio.CancelledError):
            m.record_request(tier.name, "none", outcome, stream, elapsed, 0, 0)
        await asyncio.shield(rt.spend.settle(adm, "none", 0.0, 0, 0))  # nothing was served
        raise
    if stream:
        m.ttft_seconds.labels(tier.name).observe(time.perf_counter() - started)
        ids = (request_id, str(opened.first.get("id") or request_id))
        chunks = _chunks(rt, tier, opened, started, adm, prompt.input_tokens, ids)

        async def cleanup() -> None:
            if not adm.settled:
                await _aclose(opened.rest)
                tokens_in = prompt.input_tokens
                cost = request_cost(rt, tier, opened.served, tokens_in, 0)
                await rt.spend.settle(adm, opened.served.target.ref, cost, tokens_in, 0, ids)

        return ChatAnswer(
            route, opened.served, adm, extra, chunks=chunks, usage=opened.usage, cleanup=cleanup
        )
    cost = request_cost(rt, tier, served, completion.prompt_tokens, completion.completion_tokens)
    m.record_request(
        tier.name,
        served.target.ref,
        "fallback" if served.fallback else "ok",
        False,
        time.perf_counter() - started,
        completion.prompt_tokens,
        completion.completion_tokens,
        cost,
    )
    ids = (request_id, str(completion.body.get("id") or request_id))
    await rt.spend.settle(
        adm, served.target.ref, cost, completion.prompt_tokens, completion.completion_tokens, ids
    )
    return ChatAnswer(route, served, adm, extra, completion=completion)


async def embeddings(
    rt: Runtime, principal: Principal, request_id: str | None, body: bytes
) -> JsonResult:
    """Serve ``POST /v1/embeddings`` through the embeddings model's chain: the same
    retries, breakers, deadline, metrics (``tier="(embeddings)"``) and cost as chat."""
    started = time.perf_counter()
    request_id = request_id or uuid.uuid4().hex
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
    m = rt.metrics
    try:
        result, served = await rt.dispatcher.embed(route, request, payload, deadline)
    except ApiError:
        m.record_request(route.name, "none", "error", False, time.perf_counter() - started, 0, 0)
        raise
    except asyncio.CancelledError:
        elapsed = time.perf_counter() - started
        m.record_request(route.name, "none", CLIENT_CLOSED, False, elapsed, 0, 0)
        raise
    tokens = result.prompt_tokens
    m.record_request(
        route.name,
        served.target.ref,
        "fallback" if served.fallback else "ok",
        False,
        time.perf_counter() - started,
        tokens,
        0,
        cost_usd(spec.input_per_1m, 0.0, tokens, 0),
    )
    return JsonResult(
        200, orjson.dumps(result.body), served_headers(request_id, route.name, served)
    )


def request_cost(
    rt: Runtime, tier: TierSpec, served: Served, tokens_in: int, tokens_out: int
) -> float:
    price_in, price_out = prices(rt.policy, tier, served.target.ref)
    return cost_usd(price_in, price_out, tokens_in, tokens_out)


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
) -> AsyncIterator[dict[str, Any] | ApiError]:
    """Forward an open stream; a failure after the first chunk ends it with an error.
    At the end, however it ends, the request is settled on the usage the provider
    reported; a stream cut before its usage arrived is charged the input estimate and the
    output counted so far."""
    m = rt.metrics
    model = stream.served.target.ref
    outcome = "fallback" if stream.served.fallback else "ok"
    ended = False
    try:
        yield stream.first
        try:
            async for chunk in stream.rest:
                yield chunk
        except UpstreamError as err:
            outcome = "error"
            rt.dispatcher.record_stream_failure(stream.served.target, err)
            m.errors.labels("stream_interrupted").inc()
            yield ApiError(
                502,
                f"{model} failed after the stream started: {err.summary}",
                "server_error",
                "stream_interrupted",
            )
        ended = True
    finally:
        if not ended:
            outcome = CLIENT_CLOSED  # closed before the end: the client went away
        await _aclose(stream.rest)
        usage = stream.usage
        tokens_in = usage.prompt_tokens or input_estimate
        cost = request_cost(rt, tier, stream.served, tokens_in, usage.completion_tokens)
        m.record_request(
            tier.name,
            model,
            outcome,
            True,
            time.perf_counter() - started,
            usage.prompt_tokens,
            usage.completion_tokens,
            cost,
        )
        await asyncio.shield(
            rt.spend.settle(adm, model, cost, tokens_in, usage.completion_tokens, ids)
        )
