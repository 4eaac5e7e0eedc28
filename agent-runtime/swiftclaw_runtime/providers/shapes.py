"""Builders for OpenAI's response shapes, shared by the translating adapters and the simulator."""

from __future__ import annotations

import time
from typing import Any

from ..ids import random_hex


def completion_id() -> str:
    return "chatcmpl-" + random_hex(12)


def tool_call(id_: str, name: str, arguments: str) -> dict[str, Any]:
    """One entry of an assistant message's ``tool_calls``."""
    return {"id": id_, "type": "function", "function": {"name": name, "arguments": arguments}}


def tool_call_delta(
    index: int, id_: str | None = None, name: str | None = None, arguments: str = ""
) -> dict[str, Any]:
    """A stream delta carrying (a piece of) tool call ``index``: the first piece of a call
    has its id and name, the others only more of its arguments."""
    entry: dict[str, Any] = {"index": index}
    function: dict[str, Any] = {"arguments": arguments}
    if id_ is not None:
        entry.update(id=id_, type="function")
    if name is not None:
        function["name"] = name
    entry["function"] = function
    return {"tool_calls": [entry]}


def completion_body(
    id_: str,
    model: str,
    text: str | None,
    finish_reason: str | None,
    prompt_tokens: int,
    completion_tokens: int,
    created: int | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
    logprobs: list[dict[str, Any]] | None = None,
    cached_tokens: int = 0,
    cache_write_tokens: int = 0,
) -> dict[str, Any]:
    """A ``chat.completion``; with ``tool_calls`` and no text its content is null, as
    OpenAI's own. ``logprobs``: the entries of ``logprobs.content``, when asked for."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": None if tool_calls and not text else text,
        "refusal": None,
    }
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": id_,
        "object": "chat.completion",
        "created": created if created is not None else int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": _logprobs(logprobs),
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage_block(prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens),
    }


def chunk_body(
    id_: str,
    model: str,
    created: int,
    delta: dict[str, Any],
    finish_reason: str | None = None,
    logprobs: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    choice = {
        "index": 0,
        "delta": delta,
        "logprobs": _logprobs(logprobs),
        "finish_reason": finish_reason,
    }
    return {
        "id": id_,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [choice],
    }


def _logprobs(content: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    return None if content is None else {"content": content, "refusal": None}


def usage_block(
    prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0, cache_write_tokens: int = 0
) -> dict[str, Any]:
    """OpenAI's ``usage``: the prompt's cached tokens (a part of ``prompt_tokens``) in
    ``prompt_tokens_details.cached_tokens``, as OpenAI reports them; tokens written to a
    provider's prompt cache (Anthropic's cache writes, also a part of ``prompt_tokens``) in
    ``prompt_tokens_details.cache_write_tokens`` when there are any (OpenAI has no field)."""
    details: dict[str, int] = {"cached_tokens": cached_tokens}
    if cache_write_tokens:
        details["cache_write_tokens"] = cache_write_tokens
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": details,
    }


def usage_chunk(
    id_: str,
    model: str,
    created: int,
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int = 0,
    cache_write_tokens: int = 0,
) -> dict[str, Any]:
    return {
        "id": id_,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
        "usage": usage_block(prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens),
    }
