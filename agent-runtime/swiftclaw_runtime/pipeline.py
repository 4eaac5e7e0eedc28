"""The request path of ``POST /v1/chat/completions``, transport aside.

auth (in app) -> parse -> identity (tenant, user) -> route (explicit tier or complexity
class) -> context sources (in parallel) -> prompt build (system prompt, context, history
trimmed to maxInputTokens) -> admit (rate limits, then the budget's reservation: may
downgrade the tier or refuse) -> dispatch (retries, breakers, fallbacks) -> settle
(tokens, budget, usage) and record -> respond. Each step is one call here; what it does
lives in its own package (routing/, prompt/, spend/, dispatch).

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
from .errors import ApiError, invalid_request
from .prompt import build_prompt
from .providers import UpstreamError
from .resilience import Deadline
from .routing import Route
from .runtime import Runtime
from .schemas import ChatRequest, parse_chat_request
from .spend import Admission, Identity
from .spend.costs import cost_usd, prices
from .sse import DONE, encode_event

Headers = list[tuple[bytes, bytes]]
# The outcome of a request whose client hung up first (nginx's 499).
CLIENT_CLOSED = "client_closed"


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
    cleanup: Callable[[], Awaitable[None]] | None = None


def decode_json(body: bytes) -> Any:
    if not body:
        raise invalid_request("The request body is empty; send a JSON object.", code="invalid_json")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise invalid_request(
            f"We could not parse the JSON body of your request: {err}.", code="invalid_json"
        ) from None


def _served_headers(request_id: str, route: Route, served: Served, adm: Admission) -> Headers:
    return [
        (b"x-request-id", request_id.encode()),
        (b"x-swiftclaw-tier", route.tier.name.encode()),
        (b"x-swiftclaw-model", served.target.ref.encode()),
        (b"x-swiftclaw-fallback", b"true" if served.fallback else b"false"),
        (b"x-swiftclaw-attempts", str(served.attempts).encode()),
        (b"x-swiftclaw-route", route.header.encode()),
        *adm.headers(),
    ]


async def chat(
    rt: Runtime,
    principal: Principal,
    request_id: str | None,
    body: bytes,
    log_fields: dict[str, str] | None = None,
) -> JsonResult | StreamResult:
    """Serve one chat completion for an authenticated ``principal``; raises
    :class:`ApiError` for anything a client sees. ``log_fields`` receives the tenant and
    user as soon as they are known, for the access log."""
    started = time.perf_counter()
    request_id = request_id or uuid.uuid4().hex
    payload = decode_json(body)
    request = parse_chat_request(payload)
    who = rt.spend.who(principal, request.user)
    if log_fields is not None:
        log_fields.update(tenant=who.tenant, user=who.user)
    route = rt.router.route(request)
    context = await rt.context.fetch(who)
    prompt = build_prompt(rt.policy.agent, request, payload, context)
    if prompt.trimmed_tokens:
        rt.metrics.trimmed_tokens.inc(prompt.trimmed_tokens)
    request, payload = prompt.request, prompt.payload
    output = rt.spend.output_cap(request.output_limit)
    adm = await rt.spend.admit(who, request_id, route, prompt.input_tokens, output)
    route = adm.route
    rt.metrics.routing_decisions.labels(
        route.tier.name, "budget_downgrade" if route.downgraded else route.reason
    ).inc()
    extra: Headers = []
    if prompt.trimmed_tokens:
        extra.append((b"x-swiftclaw-trimmed-tokens", str(prompt.trimmed_tokens).encode()))
    try:
        return await _serve(
            rt, request_id, route, adm, request, payload, prompt.input_tokens, extra, started
        )
    except BaseException:
        await asyncio.shield(rt.spend.settle(adm, "none", 0.0, 0, 0))
        raise


async def _serve(
    rt: Runtime,
    request_id: str,
    route: Route,
    adm: Admission,
    request: ChatRequest,
    payload: dict[str, Any],
    input_estimate: int,
    extra: Headers,
    started: float,
) -> JsonResult | StreamResult:
    tier = route.tier
    deadline = Deadline(rt.policy.reliability.timeout_seconds)
    m = rt.metrics
    if not request.stream:
        try:
            completion, served = await rt.dispatcher.complete(tier, request, payload, deadline)
        except ApiError:
            m.record_request(tier.name, "none", "error", False, time.perf_counter() - started, 0, 0)
            raise
        except asyncio.CancelledError:
            m.record_request(
                tier.name, "none", CLIENT_CLOSED, False, time.perf_counter() - started, 0, 0
            )
            raise
        cost = request_cost(
            rt, tier, served, completion.prompt_tokens, completion.completion_tokens
        )
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
            adm,
            served.target.ref,
            cost,
            completion.prompt_tokens,
            completion.completion_tokens,
            ids,
        )
        headers = _served_headers(request_id, route, served, adm) + extra
        return JsonResult(200, orjson.dumps(completion.body), headers, adm.who)
    try:
        stream = await rt.dispatcher.open_stream(tier, request, payload, deadline)
    except ApiError:
        m.record_request(tier.name, "none", "error", True, time.perf_counter() - started, 0, 0)
        raise
    except asyncio.CancelledError:
        m.record_request(
            tier.name, "none", CLIENT_CLOSED, True, time.perf_counter() - started, 0, 0
        )
        raise
    m.ttft_seconds.labels(tier.name).observe(time.perf_counter() - started)
    headers = _served_headers(request_id, route, stream.served, adm) + extra
    ids = (request_id, str(stream.first.get("id") or request_id))
    events = _relay(rt, tier, stream, started, adm, input_estimate, ids)

    async def cleanup() -> None:
        if not adm.settled:
            await _aclose(stream.rest)
            cost = request_cost(rt, tier, stream.served, input_estimate, 0)
            await rt.spend.settle(adm, stream.served.target.ref, cost, input_estimate, 0, ids)

    return StreamResult(headers, events, adm.who, cleanup)


async def _aclose(gen: AsyncIterator[Any]) -> None:
    aclose = getattr(gen, "aclose", None)
    if aclose is not None:
        await aclose()


def request_cost(
    rt: Runtime, tier: TierSpec, served: Served, tokens_in: int, tokens_out: int
) -> float:
    price_in, price_out = prices(rt.policy, tier, served.target.ref)
    return cost_usd(price_in, price_out, tokens_in, tokens_out)


async def _relay(
    rt: Runtime,
    tier: TierSpec,
    stream: OpenStream,
    started: float,
    adm: Admission,
    input_estimate: int,
    ids: tuple[str, ...],
) -> AsyncIterator[bytes]:
    """Forward an open stream; a failure after the first chunk ends it with an error event.
    At the end, however it ends, the request is settled on the usage the provider
    reported; a stream cut before its usage arrived is charged the input estimate and the
    output counted so far."""
    m = rt.metrics
    model = stream.served.target.ref
    outcome = "fallback" if stream.served.fallback else "ok"
    ended = False
    try:
        yield encode_event(stream.first)
        try:
            async for chunk in stream.rest:
                yield encode_event(chunk)
        except UpstreamError as err:
            outcome = "error"
            rt.dispatcher.record_stream_failure(stream.served.target, err)
            m.errors.labels("stream_interrupted").inc()
            yield encode_event(
                ApiError(
                    502,
                    f"{model} failed after the stream started: {err}",
                    "server_error",
                    "stream_interrupted",
                ).body()
            )
        yield DONE
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
