"""Anthropic Messages API, translated to and from OpenAI's chat shape (text content)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from ..schemas import ChatRequest, message_text
from ..sse import EventReader
from .base import Call, Completion, StreamUsage, UpstreamError
from .http import HttpClient, HttpProvider
from .shapes import chunk_body, completion_body, completion_id, usage_chunk

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def to_anthropic(model: str, request: ChatRequest, stream: bool) -> dict[str, Any]:
    """OpenAI chat request -> Messages API request; system turns go to ``system``."""
    if request.tools:
        raise UpstreamError("client", "tool calls are not translated for Anthropic providers yet")
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    for m in request.messages:
        text = message_text(m)
        if m.role in ("system", "developer"):
            system.append(text)
            continue
        role = "assistant" if m.role == "assistant" else "user"
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"] += "\n\n" + text
        else:
            messages.append({"role": role, "content": text})
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": request.output_limit or DEFAULT_MAX_TOKENS,
        "stream": stream,
    }
    if system:
        body["system"] = "\n\n".join(system)
    if request.temperature is not None:
        body["temperature"] = min(request.temperature, 1.0)
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.stop is not None:
        body["stop_sequences"] = [request.stop] if isinstance(request.stop, str) else request.stop
    return body


def from_anthropic(data: dict[str, Any], model: str) -> Completion:
    content = data.get("content")
    if not isinstance(content, list):
        raise UpstreamError("protocol", "response has no 'content'")
    text = "".join(
        b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text"
    )
    usage = data.get("usage") or {}
    prompt, completion = int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)
    body = completion_body(
        str(data.get("id") or completion_id()),
        str(data.get("model") or model),
        text,
        FINISH.get(str(data.get("stop_reason")), "stop"),
        prompt,
        completion,
    )
    return Completion(body, prompt, completion)


class AnthropicProvider(HttpProvider):
    def __init__(self, name: str, base_url: str, api_key: str | None, max_connections: int) -> None:
        self.name = name
        self.type = "anthropic"
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if api_key:
            headers["x-api-key"] = api_key
        self.http = HttpClient(base_url, headers, max_connections)

    async def complete(self, call: Call) -> Completion:
        model, request = call.model, call.request
        data = await self.http.post_json("/messages", to_anthropic(model, request, False))
        return from_anthropic(data, model)

    async def stream(
        self, call: Call, usage: StreamUsage, idle_timeout: float
    ) -> AsyncIterator[dict[str, Any]]:
        model, request = call.model, call.request
        body = to_anthropic(model, request, True)
        id_, created, finish = completion_id(), int(time.time()), "stop"
        async with self.http.post("/messages", body) as resp:
            events = EventReader(resp, idle_timeout)
            stopped = False
            while not stopped and (batch := await events.next_batch()) is not None:
                for data in batch:
                    try:
                        event = orjson.loads(data)
                    except orjson.JSONDecodeError:
                        raise UpstreamError("protocol", "stream event is not JSON") from None
                    kind = event.get("type") if isinstance(event, dict) else None
                    if kind == "message_start":
                        msg = event.get("message") or {}
                        id_ = str(msg.get("id") or id_)
                        usage.prompt_tokens = int((msg.get("usage") or {}).get("input_tokens") or 0)
                        yield chunk_body(id_, model, created, {"role": "assistant", "content": ""})
                    elif kind == "content_block_delta":
                        delta = event.get("delta") or {}
                        if delta.get("type") == "text_delta":
                            text = delta.get("text", "")
                            yield chunk_body(id_, model, created, {"content": text})
                    elif kind == "message_delta":
                        stop = (event.get("delta") or {}).get("stop_reason")
                        finish = FINISH.get(str(stop), "stop")
                        out = (event.get("usage") or {}).get("output_tokens")
                        if out is not None:
                            usage.completion_tokens = int(out)
                    elif kind == "error":
                        err = event.get("error") or {}
                        raise UpstreamError("server", f"error in stream: {err.get('message')}")
                    elif kind == "message_stop":
                        stopped = True
                        break
            if stopped:
                await resp.drain()  # the rest of the body, so the connection is reused
        yield chunk_body(id_, model, created, {}, finish)
        if request.wants_stream_usage:
            yield usage_chunk(id_, model, created, usage.prompt_tokens, usage.completion_tokens)
