"""The Google Gemini generateContent provider; the translation is in :mod:`.translate_gemini`."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from ..embeddings import decode_vector, embeddings_body
from ..sse import EventReader
from ..tokens import estimate_tokens
from .base import (
    Call,
    Completion,
    EmbedCall,
    Embeddings,
    StreamUsage,
    Unsupported,
    UpstreamError,
    prepared,
    stream_event,
)
from .http import HttpClient, HttpProvider
from .shapes import chunk_body, completion_id, usage_chunk
from .translate_gemini import GeminiAnswer, from_gemini, to_gemini
from .usage import count, gemini_prompt


class GeminiProvider(HttpProvider):
    def __init__(self, name: str, base_url: str, api_key: str | None, max_connections: int) -> None:
        self.name = name
        self.type = "gemini"
        self.http = HttpClient(base_url, self.headers_for(api_key), max_connections)

    def headers_for(self, api_key: str | None) -> dict[str, str]:
        return {"x-goog-api-key": api_key} if api_key else {}

    def prepare(self, call: Call) -> Call:
        return replace(call, upstream=to_gemini(call.request))

    async def complete(self, call: Call) -> Completion:
        path = f"/models/{call.model}:generateContent"
        data = await self.http.post_json(path, prepared(call))
        return from_gemini(data, call.model, call.request)

    def prepare_embeddings(self, call: EmbedCall) -> EmbedCall:
        """``batchEmbedContents``: one request per input, text only."""
        request = call.request
        extra = {k for k, v in (request.model_extra or {}).items() if v is not None}
        if request.user or extra:
            param = "user" if request.user else sorted(extra)[0]
            raise Unsupported(f"Gemini has no equivalent of {param!r}", param)
        if request.tokens:
            raise Unsupported("Gemini embeds text, not token ids", "input")
        one: dict[str, Any] = {"model": f"models/{call.model}"}
        if request.dimensions is not None:
            one["outputDimensionality"] = request.dimensions
        requests = [dict(one, content={"parts": [{"text": t}]}) for t in request.inputs]
        return replace(call, upstream={"requests": requests})

    async def embed(self, call: EmbedCall) -> Embeddings:
        path = f"/models/{call.model}:batchEmbedContents"
        data = await self.http.post_json(path, prepared(call))
        found = data.get("embeddings")
        if not isinstance(found, list) or len(found) != len(call.request.inputs):
            raise UpstreamError("protocol", "response has no 'embeddings' for every input")
        try:
            vectors = [decode_vector((e or {}).get("values")) for e in found]
        except (ValueError, TypeError, AttributeError):
            raise UpstreamError("protocol", "an embedding is not a list of numbers") from None
        tokens = sum(estimate_tokens(str(t)) for t in call.request.inputs)
        return Embeddings(
            embeddings_body(vectors, call.model, call.request.encoding_format, tokens), tokens
        )

    async def stream(
        self, call: Call, usage: StreamUsage, idle_timeout: float
    ) -> AsyncIterator[dict[str, Any]]:
        model, request = call.model, call.request
        id_, created = completion_id(), int(time.time())
        answer = GeminiAnswer(request)
        path = f"/models/{model}:streamGenerateContent"
        async with self.http.post(path, prepared(call), params={"alt": "sse"}) as resp:
            first = True
            events = EventReader(resp, idle_timeout)
            while (batch := await events.next_batch()) is not None:
                for data in batch:
                    event = stream_event(data)
                    if "error" in event:
                        raise UpstreamError("server", f"error in stream: {event['error']}")
                    meta = event.get("usageMetadata")
                    if isinstance(meta, dict):
                        prompt = gemini_prompt(meta)
                        usage.prompt_tokens = prompt.prompt or usage.prompt_tokens
                        usage.cached_input_tokens = prompt.cached or usage.cached_input_tokens
                        usage.completion_tokens = (
                            count(meta, "candidatesTokenCount") or usage.completion_tokens
                        )
                    deltas = answer.feed(event)
                    if first:
                        head = deltas[0] if deltas else {"content": ""}
                        deltas = [{"role": "assistant", **head}, *deltas[1:]]
                        first = False
                    logprobs = answer.logprobs if answer.logprobs else None
                    for delta in deltas:
                        if delta.get("content") != "" or "role" in delta:
                            yield chunk_body(id_, model, created, delta, logprobs=logprobs)
                            logprobs = None  # an event's logprobs go with its first chunk
        yield chunk_body(id_, model, created, {}, answer.finish_reason)
        if request.wants_stream_usage:
            yield usage_chunk(
                id_,
                model,
                created,
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.cached_input_tokens,
            )
