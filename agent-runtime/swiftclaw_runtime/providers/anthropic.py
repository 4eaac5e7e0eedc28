"""The Anthropic Messages API provider; the translation is in :mod:`.translate_anthropic`."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from ..sse import EventReader
from .base import Call, Completion, StreamUsage, prepared, stream_event
from .breakpoints import PromptCaching, place_breakpoints
from .http import HttpClient, HttpProvider
from .shapes import chunk_body, usage_chunk
from .translate_anthropic import AnthropicStream, from_anthropic, to_anthropic

ANTHROPIC_VERSION = "2023-06-01"


class AnthropicProvider(HttpProvider):
    def __init__(
        self,
        name: str,
        base_url: str,
        api_key: str | None,
        max_connections: int,
        prompt_caching: PromptCaching = "auto",
    ) -> None:
        self.name = name
        self.type = "anthropic"
        self.prompt_caching: PromptCaching = prompt_caching
        self.http = HttpClient(base_url, self.headers_for(api_key), max_connections)

    def headers_for(self, api_key: str | None) -> dict[str, str]:
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if api_key:
            headers["x-api-key"] = api_key
        return headers

    def prepare(self, call: Call) -> Call:
        body = to_anthropic(call.model, call.request, call.request.stream)
        return replace(call, upstream=place_breakpoints(body, self.prompt_caching))

    async def complete(self, call: Call) -> Completion:
        body = dict(prepared(call), stream=False)
        data = await self.http.post_json("/messages", body, headers=_betas(call))
        return from_anthropic(data, call.model)

    async def stream(
        self, call: Call, usage: StreamUsage, idle_timeout: float
    ) -> AsyncIterator[dict[str, Any]]:
        model, request = call.model, call.request
        created = int(time.time())
        translate = AnthropicStream()
        body = dict(prepared(call), stream=True)
        async with self.http.post("/messages", body, headers=_betas(call)) as resp:
            events = EventReader(resp, idle_timeout)
            while not translate.stopped and (batch := await events.next_batch()) is not None:
                for data in batch:
                    event = stream_event(data)
                    deltas = translate.feed(event)
                    # known before the chunks (message_start), so a Messages stream has them
                    usage.prompt_tokens = translate.prompt.prompt
                    usage.cached_input_tokens = translate.prompt.cached
                    usage.cache_write_tokens = translate.prompt.written
                    usage.completion_tokens = translate.completion_tokens
                    for delta in deltas:
                        yield chunk_body(translate.id, model, created, delta)
                    if translate.stopped:
                        break
            if translate.stopped:
                await resp.drain()  # the rest of the body, so the connection is reused
        last = chunk_body(translate.id, model, created, {}, translate.finish)
        if translate.matched is not None:
            last["choices"][0]["stop_reason"] = translate.matched
        yield last
        if request.wants_stream_usage:
            yield usage_chunk(
                translate.id,
                model,
                created,
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.cached_input_tokens,
                usage.cache_write_tokens,
            )


def _betas(call: Call) -> list[tuple[bytes, bytes]] | None:
    """The request's ``anthropic-beta`` header (its betas, checked by the schema)."""
    betas = call.request.anthropic_beta
    return [(b"anthropic-beta", ",".join(betas).encode())] if betas else None
