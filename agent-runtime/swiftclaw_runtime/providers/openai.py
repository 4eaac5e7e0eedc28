"""OpenAI and OpenAI-compatible APIs (vLLM, Ollama, LM Studio, ...): a near pass-through."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from ..sse import EventReader
from .base import Call, Completion, EmbedCall, Embeddings, StreamUsage, UpstreamError, stream_event
from .extensions import for_openai
from .http import HttpClient, HttpProvider
from .params import set_output_cap
from .usage import count, openai_prompt


class OpenAIProvider(HttpProvider):
    def __init__(
        self, name: str, type_: str, base_url: str, api_key: str | None, max_connections: int
    ) -> None:
        self.name = name
        self.type = type_
        self.http = HttpClient(base_url, self.headers_for(api_key), max_connections)
        # The field the output cap goes in when the client named none.
        self.cap_field = "max_completion_tokens" if type_ == "openai" else "max_tokens"

    def headers_for(self, api_key: str | None) -> dict[str, str]:
        return {"authorization": f"Bearer {api_key}"} if api_key else {}

    def prepare(self, call: Call) -> Call:
        payload = for_openai(call.request, call.payload, self.type)
        return call if payload is call.payload else replace(call, payload=payload)

    async def complete(self, call: Call) -> Completion:
        body = dict(call.payload, model=call.model, stream=False)
        body.pop("stream_options", None)
        set_output_cap(body, call.request, self.cap_field)
        data = await self.http.post_json("/chat/completions", body)
        if not isinstance(data.get("choices"), list):
            raise UpstreamError("protocol", "response has no 'choices'")
        usage = data.get("usage") or {}
        prompt = openai_prompt(usage)
        return Completion(
            data, prompt.prompt, count(usage, "completion_tokens"), prompt.cached, prompt.written
        )

    def prepare_embeddings(self, call: EmbedCall) -> EmbedCall:
        return call  # the client's JSON as it is, with the upstream model's name

    async def embed(self, call: EmbedCall) -> Embeddings:
        data = await self.http.post_json("/embeddings", dict(call.payload, model=call.model))
        if not isinstance(data.get("data"), list):
            raise UpstreamError("protocol", "response has no 'data'")
        usage = data.get("usage") or {}
        return Embeddings(data, int(usage.get("prompt_tokens") or 0))

    async def stream(
        self, call: Call, usage: StreamUsage, idle_timeout: float
    ) -> AsyncIterator[dict[str, Any]]:
        model, request = call.model, call.request
        # Always ask for usage so tokens can be counted; the client only sees the usage
        # chunk if it asked for it.
        body = dict(call.payload, model=model, stream=True, stream_options={"include_usage": True})
        set_output_cap(body, call.request, self.cap_field)
        async with self.http.post("/chat/completions", body) as resp:
            events = EventReader(resp, idle_timeout)
            while (batch := await events.next_batch()) is not None:
                for data in batch:
                    if data == b"[DONE]":
                        await resp.drain()  # the rest of the body, so the connection is reused
                        return
                    chunk = _stream_chunk(data, usage, request.wants_stream_usage)
                    if chunk is not None:
                        yield chunk


def _stream_chunk(data: bytes, usage: StreamUsage, wants_usage: bool) -> dict[str, Any] | None:
    """One upstream event as the client gets it (None: nothing to forward); counts usage."""
    chunk = stream_event(data)
    if "error" in chunk:
        err = chunk["error"]
        msg = err.get("message") if isinstance(err, dict) else str(err)
        raise UpstreamError("server", f"error in stream: {msg}")
    u = chunk.get("usage")
    if isinstance(u, dict):
        prompt = openai_prompt(u)
        usage.prompt_tokens = prompt.prompt
        usage.cached_input_tokens = prompt.cached
        usage.completion_tokens = count(u, "completion_tokens")
        if not wants_usage:
            if not chunk.get("choices"):
                return None
            chunk = {k: v for k, v in chunk.items() if k != "usage"}
    return chunk
