"""``POST /v1/responses``: parse, continue a stored conversation, answer through the chat
pipeline (:func:`pipeline.answer_chat`: the same routing, dispatcher, retries, breakers,
metrics and cost as chat), translate back, store."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from ..auth import Principal
from ..cache.keys import parse_cache_control
from ..errors import ApiError
from ..ids import random_hex
from ..pipeline import (
    ChatAnswer,
    JsonResult,
    StreamResult,
    answer_chat,
    decode_json,
)
from ..runtime import Runtime
from ..schemas import parse_chat_request
from .output import EventStream, incomplete_reason, new_id, output_of, response_object, usage
from .request import ResponsesCall, chat_param, parse_responses_request
from .store import over_bound, scope

log = logging.getLogger("swiftclaw.responses")


async def responses(
    rt: Runtime,
    principal: Principal,
    request_id: str | None,
    body: bytes,
    cache_control: str | None = None,
) -> JsonResult | StreamResult:
    started = time.perf_counter()
    request_id = request_id or random_hex()
    call = parse_responses_request(decode_json(body))
    # Whose conversations: this agent's, the caller's (the identity limits and budgets
    # count; with auth.userFromRequest, the request's end user within the key's tenant;
    # a 'user' that is not a string is refused with the chat request's 400 below).
    user = call.chat.get("user")
    who = rt.spend.who(principal, user if isinstance(user, str) else None)
    owner = scope(f"{rt.config.namespace}/{rt.name}", who)
    history = await _history(rt, owner, call)
    messages = [*history, *call.messages]
    if history and call.store and (over := over_bound(messages)) is not None:
        raise ApiError(
            400,
            f"The conversation of previous_response_id with this input is {over}: it could "
            "not be stored again. Start a new conversation (send the turns it needs as input).",
            "invalid_request_error",
            "conversation_too_long",
            "previous_response_id",
        )
    system = [{"role": "system", "content": call.instructions}] if call.instructions else []
    payload: dict[str, Any] = {
        "model": call.model,
        "messages": [*system, *messages],
        "stream": call.stream,
        **call.chat,
    }
    try:
        request = parse_chat_request(payload)
    except ApiError as err:
        err.param = chat_param(err.param)
        raise
    control = parse_cache_control(cache_control)
    answer = await answer_chat(rt, principal, request_id, request, payload, started, control)
    response_id = new_id("resp")
    headers = answer.headers(request_id)
    model = answer.served.target.model
    if answer.completion is not None:
        completion = answer.completion
        choice = completion.body["choices"][0]
        message = choice.get("message") or {}
        stored = call.store and await _store(
            rt, owner, response_id, [*messages, _assistant(message)]
        )
        reason = incomplete_reason(choice.get("finish_reason"))
        obj = response_object(
            response_id,
            model,
            call.echo,
            output_of(message),
            "incomplete" if reason else "completed",
            stored,
            usage(
                completion.prompt_tokens,
                completion.completion_tokens,
                completion.cached_input_tokens,
            ),
            incomplete=reason,
        )
        return JsonResult(200, orjson.dumps(obj), headers, answer.who)
    events = _events(rt, owner, call, answer, response_id, messages)
    return StreamResult(headers, events, answer.who, answer.cleanup)


async def _history(rt: Runtime, owner: str, call: ResponsesCall) -> list[dict[str, Any]]:
    """The conversation ``previous_response_id`` ended, from the caller's stored ones."""
    if call.previous_response_id is None:
        return []
    try:
        found = await rt.responses.get(owner, call.previous_response_id)
    except Exception:  # the store is down: say so rather than answer without the history
        log.exception("the response store failed on a read")
        rt.metrics.errors.labels("response_store").inc()
        raise ApiError(
            503,
            "The response store is unavailable; retry shortly.",
            "service_unavailable_error",
            "store_unavailable",
        ) from None
    if found is None:
        raise ApiError(
            404,
            f"Previous response with id '{call.previous_response_id}' not found (it was not "
            "stored, has expired, or is another user's).",
            "invalid_request_error",
            "previous_response_not_found",
            "previous_response_id",
        )
    messages: list[dict[str, Any]] = found["messages"]
    return messages


def _assistant(message: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
    if message.get("tool_calls"):
        out["tool_calls"] = message["tool_calls"]
    return out


async def _store(rt: Runtime, owner: str, response_id: str, messages: list[dict[str, Any]]) -> bool:
    """Keep the conversation for a next turn; False (and the response says ``store:
    false``) when the store fails or the conversation is past the bound, rather than
    failing an answer already paid for."""
    over = over_bound(messages)
    if over is not None:
        log.info("a conversation of %s was not stored", over)
        rt.metrics.errors.labels("response_store_bound").inc()
        return False
    try:
        await rt.responses.put(owner, response_id, {"messages": messages})
    except Exception:
        log.exception("the response store failed on a write")
        rt.metrics.errors.labels("response_store").inc()
        return False
    return True


async def _events(
    rt: Runtime,
    owner: str,
    call: ResponsesCall,
    answer: ChatAnswer,
    response_id: str,
    messages: list[dict[str, Any]],
) -> AsyncIterator[bytes]:
    chunks = answer.chunks
    assert chunks is not None and answer.usage is not None
    stream = EventStream(response_id, answer.served.target.model, call.echo, call.store)
    try:
        for e in stream.start():
            yield e
        async for chunk in chunks:
            if isinstance(chunk, ApiError):
                for e in stream.failed(chunk):
                    yield e
                return
            for e in stream.feed(chunk):
                yield e
        if call.store:
            stream.store = await _store(
                rt, owner, response_id, [*messages, stream.assistant_message]
            )
        used = usage(
            answer.usage.prompt_tokens,
            answer.usage.completion_tokens,
            answer.usage.cached_input_tokens,
        )
        for e in stream.completed(used):
            yield e
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
