"""Google Gemini generateContent, translated to and from OpenAI's chat shape (text content)."""

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

FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
}


def to_gemini(request: ChatRequest) -> dict[str, Any]:
    """OpenAI chat request -> generateContent request; system turns go to systemInstruction."""
    if request.tools:
        raise UpstreamError("client", "tool calls are not translated for Gemini providers yet")
    system: list[str] = []
    contents: list[dict[str, Any]] = []
    for m in request.messages:
        text = message_text(m)
        if m.role in ("system", "developer"):
            system.append(text)
            continue
        role = "model" if m.role == "assistant" else "user"
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].append({"text": text})
        else:
            contents.append({"role": role, "parts": [{"text": text}]})
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
    config: dict[str, Any] = {}
    if request.temperature is not None:
        config["temperature"] = request.temperature
    if request.top_p is not None:
        config["topP"] = request.top_p
    if request.output_limit is not None:
        config["maxOutputTokens"] = request.output_limit
    if request.stop is not None:
        config["stopSequences"] = [request.stop] if isinstance(request.stop, str) else request.stop
    if config:
        body["generationConfig"] = config
    return body


def _candidate(data: dict[str, Any]) -> tuple[str, str | None]:
    candidates = data.get("candidates")
    if not isinstance(candidates, list) or not candidates:
        feedback = data.get("promptFeedback") or {}
        if feedback.get("blockReason"):
            return "", "content_filter"
        raise UpstreamError("protocol", "response has no 'candidates'")
    cand = candidates[0]
    parts = (cand.get("content") or {}).get("parts") or []
    text = "".join(p.get("text", "") for p in parts if isinstance(p, dict))
    reason = cand.get("finishReason")
    return text, (FINISH.get(reason, "stop") if reason else None)


def from_gemini(data: dict[str, Any], model: str) -> Completion:
    text, finish = _candidate(data)
    meta = data.get("usageMetadata") or {}
    prompt = int(meta.get("promptTokenCount") or 0)
    completion = int(meta.get("candidatesTokenCount") or 0)
    body = completion_body(completion_id(), model, text, finish or "stop", prompt, completion)
    return Completion(body, prompt, completion)


class GeminiProvider(HttpProvider):
    def __init__(self, name: str, base_url: str, api_key: str | None, max_connections: int) -> None:
        self.name = name
        self.type = "gemini"
        headers = {"x-goog-api-key": api_key} if api_key else {}
        self.http = HttpClient(base_url, headers, max_connections)

    async def complete(self, call: Call) -> Completion:
        model, request = call.model, call.request
        data = await self.http.post_json(f"/models/{model}:generateContent", to_gemini(request))
        return from_gemini(data, model)

    async def stream(
        self, call: Call, usage: StreamUsage, idle_timeout: float
    ) -> AsyncIterator[dict[str, Any]]:
        model, request = call.model, call.request
        id_, created, finish = completion_id(), int(time.time()), "stop"
        path = f"/models/{model}:streamGenerateContent"
        async with self.http.post(path, to_gemini(request), params={"alt": "sse"}) as resp:
            first = True
            events = EventReader(resp, idle_timeout)
            while (batch := await events.next_batch()) is not None:
                for data in batch:
                    try:
                        event = orjson.loads(data)
                    except orjson.JSONDecodeError:
                        raise UpstreamError("protocol", "stream event is not JSON") from None
                    if not isinstance(event, dict):
                        raise UpstreamError("protocol", "stream event is not a JSON object")
                    if "error" in event:
                        raise UpstreamError("server", f"error in stream: {event['error']}")
                    text, reason = _candidate(event)
                    meta = event.get("usageMetadata") or {}
                    usage.prompt_tokens = int(meta.get("promptTokenCount") or usage.prompt_tokens)
                    usage.completion_tokens = int(
                        meta.get("candidatesTokenCount") or usage.completion_tokens
                    )
                    delta: dict[str, Any] = {"content": text}
                    if first:
                        delta["role"] = "assistant"
                        first = False
                    if text or "role" in delta:
                        yield chunk_body(id_, model, created, delta)
                    if reason:
                        finish = reason
        yield chunk_body(id_, model, created, {}, finish)
        if request.wants_stream_usage:
            yield usage_chunk(id_, model, created, usage.prompt_tokens, usage.completion_tokens)
