"""The request path of ``POST /v1/chat/completions``, transport aside.

auth -> parse -> route -> prompt build -> exact cache -> semantic cache -> dispatch
(retries, breakers, fallbacks) -> store the answer -> degrade (a similar cached answer
when every model failed) -> record -> respond. Complexity routing, rate limits and
budgets slot in between these steps in a later version.

Every chat response carries ``x-swiftclaw-cache``: ``exact``, ``semantic``,
``stale-similar``, ``miss`` or ``bypass`` (see :mod:`.cache`).

Streams: headers are sent only when the first chunk is in hand, so any failure before
that falls back transparently. If a provider fails after that, the stream ends with one
``data: {"error": {...}}`` event in OpenAI's error shape, then ``data: [DONE]`` (the
official SDKs raise ``APIError`` on such an event).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from .auth import Principal
from .cache import Lookup
from .cache.entry import CachedAnswer, StreamAssembler
from .cache.keys import parse_cache_control
from .config import TierSpec
from .costs import cost_usd, prices
from .dispatch import OpenStream, Served
from .errors import ApiError, invalid_request
from .providers import UpstreamError
from .resilience import Deadline
from .routing import resolve_tier
from .runtime import Runtime
from .schemas import ChatRequest, Message, message_text, parse_chat_request
from .sse import DONE, encode_event
from .tokens import estimate_message_tokens

log = logging.getLogger("swiftclaw.pipeline")

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


CACHE_HEADER = "x-swiftclaw-cache"
# Errors from the dispatcher after which a similar cached answer is served instead.
DEGRADABLE = frozenset({"upstream_unavailable", "upstream_timeout"})


def _served_headers(request_id: str, tier: str, served: Served, lk: Lookup) -> Headers:
    return [
        (b"x-request-id", request_id.encode()),
        (b"x-swiftclaw-tier", tier.encode()),
        (b"x-swiftclaw-model", served.target.ref.encode()),
        (b"x-swiftclaw-fallback", b"true" if served.fallback else b"false"),
        (b"x-swiftclaw-attempts", str(served.attempts).encode()),
        (CACHE_HEADER.encode(), lk.outcome.encode()),
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
    request_id = request_id or uuid.uuid4().hex
    outcome = "bypass"
    try:
        payload = decode_json(body)
        request = parse_chat_request(payload)
        tier = resolve_tier(rt.policy, rt.name, request.model)
        request, payload = build_prompt(rt, request, payload)
        deadline = Deadline(rt.policy.reliability.timeout_seconds)
        lk = rt.cache.plan(principal, tier, request, payload, parse_cache_control(cache_control))
        hit = await rt.cache.lookup(lk, deadline.remaining())
        outcome = lk.outcome
        if hit is not None:
            return _replay(rt, request_id, request, lk, hit, started)
        try:
            return await _call(rt, request_id, tier, request, payload, deadline, lk, started)
        except ApiError as err:
            await rt.cache.finish(lk, None)
            if err.code in DEGRADABLE:
                stale = await rt.cache.degrade(lk)
                outcome = lk.outcome
                if stale is not None:
                    log.warning("tier %s failed: served a similar cached answer", tier.name)
                    return _replay(rt, request_id, request, lk, stale, started)
            raise
        except BaseException:
            await rt.cache.finish(lk, None)
            raise
    except ApiError as err:
        err.headers.setdefault(CACHE_HEADER, outcome)
        raise


async def _call(
    rt: Runtime,
    request_id: str,
    tier: TierSpec,
    request: ChatRequest,
    payload: dict[str, Any],
    deadline: Deadline,
    lk: Lookup,
    started: float,
) -> JsonResult | StreamResult:
    """Call the tier's models; a clean answer goes to the cache."""
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
        await rt.cache.finish(
            lk,
            CachedAnswer.from_completion(
                completion.body,
                served.target.ref,
                completion.prompt_tokens,
                completion.completion_tokens,
            ),
        )
        return JsonResult(
            200, orjson.dumps(completion.body), _served_headers(request_id, tier.name, served, lk)
        )
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
    headers = _served_headers(request_id, tier.name, stream.served, lk)
    return StreamResult(headers, _relay(rt, tier, stream, started, lk))


def _replay(
    rt: Runtime,
    request_id: str,
    request: ChatRequest,
    lk: Lookup,
    answer: CachedAnswer,
    started: float,
) -> JsonResult | StreamResult:
    """A cached answer, as JSON or as a stream of chunks like a provider's."""
    headers: Headers = [
        (b"x-request-id", request_id.encode()),
        (b"x-swiftclaw-tier", lk.tier.name.encode()),
        (b"x-swiftclaw-model", answer.model_ref.encode()),
        (b"x-swiftclaw-fallback", b"false"),
        (b"x-swiftclaw-attempts", b"0"),
        (CACHE_HEADER.encode(), lk.outcome.encode()),
    ]
    outcome = "stale" if lk.outcome == "stale-similar" else "cached"
    rt.metrics.record_request(
        lk.tier.name, answer.model_ref, outcome, request.stream, time.perf_counter() - started, 0, 0
    )
    if not request.stream:
        return JsonResult(200, orjson.dumps(answer.completion()), headers)
    rt.metrics.ttft_seconds.labels(lk.tier.name).observe(time.perf_counter() - started)
    return StreamResult(headers, _replay_events(answer.chunks(request.wants_stream_usage)))


async def _replay_events(chunks: list[dict[str, Any]]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield encode_event(chunk)
    yield DONE


def request_cost(
    rt: Runtime, tier: TierSpec, served: Served, tokens_in: int, tokens_out: int
) -> float:
    price_in, price_out = prices(rt.policy, tier, served.target.ref)
    return cost_usd(price_in, price_out, tokens_in, tokens_out)


async def _relay(
    rt: Runtime, tier: TierSpec, stream: OpenStream, started: float, lk: Lookup
) -> AsyncIterator[bytes]:
    """Forward an open stream; a failure after the first chunk ends it with an error event.
    A stream that ends cleanly is assembled and offered to the cache; any other is not."""
    m = rt.metrics
    model = stream.served.target.ref
    outcome = "fallback" if stream.served.fallback else "ok"
    ended = False
    assembler = StreamAssembler() if lk.write else None
    answer: CachedAnswer | None = None
    try:
        if assembler is not None:
            assembler.add(stream.first)
        yield encode_event(stream.first)
        try:
            async for chunk in stream.rest:
                if assembler is not None:
                    assembler.add(chunk)
                yield encode_event(chunk)
        except UpstreamError as err:
            outcome = "error"
            assembler = None
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
        if assembler is not None:
            usage = stream.usage
            answer = assembler.answer(model, usage.prompt_tokens, usage.completion_tokens)
        yield DONE
        ended = True
    finally:
        if not ended:
            outcome = CLIENT_CLOSED  # closed before the end: the client went away
            answer = None
        aclose = getattr(stream.rest, "aclose", None)
        if aclose is not None:
            await aclose()
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
        await rt.cache.finish(lk, answer)
