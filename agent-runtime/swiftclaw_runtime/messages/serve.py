"""``POST /v1/messages`` and ``/v1/messages/count_tokens``: parse, answer through the chat
pipeline (:func:`..pipeline.answer_chat`: the same identity, routing, limits, budgets,
caches, dispatcher with its retries, breakers and fallbacks, metrics and cost as chat),
translate back."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import orjson

from ..auth import Principal
from ..cache.keys import parse_cache_control
from ..errors import ApiError
from ..ids import random_hex
from ..pipeline import CACHE_HEADER, ChatAnswer, JsonResult, StreamResult, answer_chat, decode_json
from ..prompt import build_prompt
from ..runtime import Runtime
from ..schemas import ChatRequest, parse_chat_request
from .output import EventStream, message_body
from .request import MessagesCall, parse_messages_request

# count_tokens counts the whole conversation, before any trimming to agent.maxInputTokens.
UNTRIMMED = 1 << 62


def _chat(call: MessagesCall) -> ChatRequest:
    try:
        return parse_chat_request(call.payload)
    except ApiError as err:
        raise call.rename(err) from None


async def messages(
    rt: Runtime,
    principal: Principal,
    request_id: str | None,
    body: bytes,
    cache_control: str | None = None,
    betas: list[str] | None = None,
) -> JsonResult | StreamResult:
    started = time.perf_counter()
    request_id = request_id or random_hex()
    try:
        call = parse_messages_request(decode_json(body), betas)
        request = _chat(call)
        control = parse_cache_control(cache_control)
        try:
            answer = await answer_chat(
                rt, principal, request_id, request, call.payload, started, control
            )
        except ApiError as err:
            # (a parameter of a message is named as the prompt went upstream, with the
            # agent's system prompt and context first: only the others are renamed)
            if err.param is not None and not err.param.startswith("messages"):
                call.rename(err)
            raise
    except ApiError as err:
        err.headers.setdefault(CACHE_HEADER, "bypass")
        err.headers.setdefault("request-id", request_id)
        raise
    headers = [*answer.headers(request_id), (b"request-id", request_id.encode())]
    model = answer.served.target.model
    if answer.completion is not None:
        out = message_body(answer.completion, model, call.stop_sequences)
        return JsonResult(200, orjson.dumps(out), headers, answer.who)
    events = _events(answer, model, call.stop_sequences)
    return StreamResult(headers, events, answer.who, answer.cleanup)


async def _events(
    answer: ChatAnswer, model: str, stop_sequences: list[str] | None
) -> AsyncIterator[bytes]:
    chunks, usage = answer.chunks, answer.usage
    assert chunks is not None and usage is not None
    stream = EventStream(model, stop_sequences)
    started = False
    try:
        async for chunk in chunks:
            if isinstance(chunk, ApiError):
                for e in stream.failed(chunk):
                    yield e
                return
            if not started:
                started = True
                for e in stream.start(chunk, usage):
                    yield e
            for e in stream.feed(chunk):
                yield e
        for e in stream.completed(usage):
            yield e
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


async def count_tokens(
    rt: Runtime,
    principal: Principal,
    request_id: str | None,
    body: bytes,
    cache_control: str | None = None,
    betas: list[str] | None = None,
) -> JsonResult:
    """The input tokens of a request as the runtime estimates them for its limits and
    budgets (the agent's system prompt included, the whole conversation: before trimming),
    without calling a provider."""
    request_id = request_id or random_hex()
    call = parse_messages_request(decode_json(body), betas, counting=True)
    request = _chat(call)
    rt.router.route(request)  # a model this agent does not serve is a 404, as in messages
    agent = rt.policy.agent.model_copy(update={"max_input_tokens": UNTRIMMED})
    prompt = build_prompt(agent, request, call.payload)
    headers = [(b"request-id", request_id.encode())]
    return JsonResult(200, orjson.dumps({"input_tokens": prompt.input_tokens}), headers)
