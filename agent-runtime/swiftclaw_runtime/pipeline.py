"""The request path of ``POST /v1/chat/completions``, transport aside.

auth -> parse -> route -> prompt build -> dispatch (retries, breakers, fallbacks) ->
record -> respond. Caching, complexity routing, rate limits and budgets slot in between
these steps in a later version.

Streams: headers are sent only when the first chunk is in hand, so any failure before
that falls back transparently. If a provider fails after that, the stream ends with one
``data: {"error": {...}}`` event in OpenAI's error shape, then ``data: [DONE]`` (the
official SDKs raise ``APIError`` on such an event).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from .auth import Principal
from .config import TierSpec
from .costs import cost_usd, prices
from .dispatch import OpenStream, Served
from .embeddings import parse_embeddings_request
from .errors import ApiError, invalid_request, not_found
from .providers import Completion, StreamUsage, UpstreamError
from .resilience import Deadline
from .routing import resolve_embeddings_model, resolve_tier
from .runtime import Runtime
from .schemas import ChatRequest, Message, message_text, parse_chat_request
from .sse import DONE, encode_event
from .tokens import estimate_message_tokens

Headers = list[tuple[bytes, bytes]]
# The outcome of a request whose client hung up first (nginx's 499).
CLIENT_CLOSED = "client_closed"


@dataclass
class JsonResult:
    status: int
    body: bytes
    headers: Headers = field(default_factory=list)


@dataclass
class StreamResult:
    headers: Headers
    events: AsyncIterator[bytes]


def decode_json(body: bytes) -> Any:
    if not body:
        raise invalid_request("The request body is empty; send a JSON object.", code="invalid_json")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise invalid_request(
            f"We could not parse the JSON body of your request: {err}.", code="invalid_json"
        ) from None


def build_prompt(
    rt: Runtime, request: ChatRequest, payload: dict[str, Any]
) -> tuple[ChatRequest, dict[str, Any]]:
    """Prepend the agent's system prompt, enforce its input budget and cap its output."""
    agent = rt.policy.agent
    if agent.system_prompt:
        system = Message(role="system", content=agent.system_prompt)
        request = request.model_copy(update={"messages": [system, *request.messages]})
        payload = dict(
            payload,
            messages=[{"role": "system", "content": agent.system_prompt}, *payload["messages"]],
        )
    estimated = estimate_message_tokens([message_text(m) for m in request.messages])
    if estimated > agent.max_input_tokens:
        raise invalid_request(
            f"The messages hold about {estimated} tokens; this agent accepts at most "
            f"{agent.max_input_tokens} (spec.agent.maxInputTokens).",
            param="messages",
            code="context_length_exceeded",
        )
    cap = agent.max_output_tokens
    if cap is not None and (request.output_limit is None or request.output_limit > cap):
        request = request.model_copy(update={"max_tokens": cap, "max_completion_tokens": None})
        payload = {k: v for k, v in payload.items() if k != "max_completion_tokens"}
        payload["max_tokens"] = cap
    return request, payload


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
    an :class:`ApiError` saying so; it records the request's metrics when it ends, and
    ``usage`` holds the stream's token counts by then.
    """

    tier: TierSpec
    served: Served
    completion: Completion | None = None
    chunks: AsyncIterator[dict[str, Any] | ApiError] | None = None
    usage: StreamUsage | None = None


async def chat(
    rt: Runtime, principal: Principal, request_id: str | None, body: bytes
) -> JsonResult | StreamResult:
    """Serve one chat completion for an authenticated ``principal``; raises
    :class:`ApiError` for anything a client sees."""
    started = time.perf_counter()
    request_id = request_id or uuid.uuid4().hex
    payload = decode_json(body)
    request = parse_chat_request(payload)
    answer = await answer_chat(rt, request, payload, started)
    headers = served_headers(request_id, answer.tier.name, answer.served)
    if answer.completion is not None:
        return JsonResult(200, orjson.dumps(answer.completion.body), headers)
    assert answer.chunks is not None
    return StreamResult(headers, _sse(answer.chunks))


async def answer_chat(
    rt: Runtime, request: ChatRequest, payload: dict[str, Any], started: float
) -> ChatAnswer:
    """Route, build the prompt and dispatch a validated chat request: the one path every
    chat-shaped API (chat completions, Responses) takes."""
    tier = resolve_tier(rt.policy, rt.name, request.model)
    request, payload = build_prompt(rt, request, payload)
    deadline = Deadline(rt.policy.reliability.timeout_seconds)
    m = rt.metrics
    stream = request.stream
    try:
        if not stream:
            completion, served = await rt.dispatcher.complete(tier, request, payload, deadline)
        else:
            opened = await rt.dispatcher.open_stream(tier, request, payload, deadline)
    except ApiError:
        m.record_request(tier.name, "none", "error", stream, time.perf_counter() - started, 0, 0)
        raise
    except asyncio.CancelledError:
        elapsed = time.perf_counter() - started
        m.record_request(tier.name, "none", CLIENT_CLOSED, stream, elapsed, 0, 0)
        raise
    if stream:
        m.ttft_seconds.labels(tier.name).observe(time.perf_counter() - started)
        chunks = _chunks(rt, tier, opened, started)
        return ChatAnswer(tier, opened.served, chunks=chunks, usage=opened.usage)
    m.record_request(
        tier.name,
        served.target.ref,
        "fallback" if served.fallback else "ok",
        False,
        time.perf_counter() - started,
        completion.prompt_tokens,
        completion.completion_tokens,
        request_cost(rt, tier, served, completion.prompt_tokens, completion.completion_tokens),
    )
    return ChatAnswer(tier, served, completion=completion)


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
    rt: Runtime, tier: TierSpec, stream: OpenStream, started: float
) -> AsyncIterator[dict[str, Any] | ApiError]:
    """Forward an open stream; a failure after the first chunk ends it with an error."""
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
        m.record_request(
            tier.name,
            model,
            outcome,
            True,
            time.perf_counter() - started,
            usage.prompt_tokens,
            usage.completion_tokens,
            request_cost(rt, tier, stream.served, usage.prompt_tokens, usage.completion_tokens),
        )
