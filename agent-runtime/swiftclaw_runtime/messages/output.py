"""A chat answer as a Messages API ``message``, or as its stream of events.

Content blocks in Anthropic's order: the thinking blocks (verbatim), the text, then one
``tool_use`` block per tool call (the call's id, its arguments as the ``input`` object).
``stop_reason`` from the finish reason (:func:`..providers.translate_anthropic.stop_reason`).
Streams: ``message_start``, ``ping``, then per block ``content_block_start``, its deltas
(``text_delta``, ``input_json_delta``, ``thinking_delta``/``signature_delta``) and
``content_block_stop``, then ``message_delta`` (``stop_reason``, ``stop_sequence`` and the
usage) and ``message_stop``; a provider that breaks off after the first event ends the
stream with an ``error`` event, as Anthropic's own streams do.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..errors import ApiError
from ..ids import random_hex
from ..providers import Completion, StreamUsage
from ..providers.translate_anthropic import stop_reason
from .errors import anthropic_error


def message_id(upstream: Any) -> str:
    """Anthropic's id when the provider was Anthropic, else one of the same form."""
    if isinstance(upstream, str) and upstream.startswith("msg_") and len(upstream) <= 128:
        return upstream
    return f"msg_{random_hex()}"


def cache_tokens(usage: Completion | StreamUsage) -> tuple[int, int]:
    """The prompt tokens the provider read from its prompt cache and wrote to it, from the
    runtime's usage of a call (both parts of its prompt tokens, whatever the provider's
    shape: see :mod:`swiftclaw_runtime.providers.usage`); 0 and 0 on a cached answer."""
    return usage.cached_input_tokens, usage.cache_write_tokens


def usage_block(
    prompt_tokens: int, completion_tokens: int, cached: tuple[int, int]
) -> dict[str, Any]:
    """Anthropic's usage: ``input_tokens`` counts only the uncached input (the chat usage's
    prompt tokens include the cached ones)."""
    read, written = cached
    return {
        "input_tokens": max(0, prompt_tokens - read - written),
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": read,
        "output_tokens": completion_tokens,
    }


def _input(arguments: Any) -> dict[str, Any]:
    """A tool call's arguments as the ``input`` object (a model that wrote something else
    gets it under ``arguments``, rather than losing it)."""
    if not isinstance(arguments, str) or not arguments.strip():
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        value = None
    return value if isinstance(value, dict) else {"arguments": arguments}


def message_body(
    completion: Completion, model: str, stop_sequences: list[str] | None
) -> dict[str, Any]:
    body = completion.body
    choice = body["choices"][0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = list(message.get("thinking_blocks") or [])
    text = message.get("content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": str(call.get("id")),
                "name": str(fn.get("name")),
                "input": _input(fn.get("arguments")),
            }
        )
    reason = stop_reason(choice.get("finish_reason"), choice.get("stop_reason"), stop_sequences)
    return {
        "id": message_id(body.get("id")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": choice.get("stop_reason") if reason == "stop_sequence" else None,
        "usage": usage_block(
            completion.prompt_tokens, completion.completion_tokens, cache_tokens(completion)
        ),
    }


def event(kind: str, **fields: Any) -> bytes:
    return (
        b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **fields}) + b"\n\n"
    )


class EventStream:
    """Chat chunks in, Messages events out."""

    def __init__(self, model: str, stop_sequences: list[str] | None) -> None:
        self.model = model
        self.stop_sequences = stop_sequences
        self.index = -1  # of the open block
        self.open: tuple[str, int] | None = None  # its kind and its chat index
        self.finish: str | None = None
        self.matched: Any = None

    def start(self, first: dict[str, Any], usage: StreamUsage) -> list[bytes]:
        message: dict[str, Any] = {
            "id": message_id(first.get("id")),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage_block(usage.prompt_tokens, 0, cache_tokens(usage)),
        }
        return [event("message_start", message=message), event("ping")]

    def feed(self, chunk: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        for choice in chunk.get("choices") or []:
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
                self.matched = choice.get("stop_reason")
            delta = choice.get("delta") or {}
            for piece in delta.get("thinking_blocks") or []:
                out += self._thinking(piece)
            if isinstance(delta.get("content"), str) and delta["content"]:
                out += self._open("text", 0, {"type": "text", "text": ""})
                out.append(self._delta({"type": "text_delta", "text": delta["content"]}))
            for frag in delta.get("tool_calls") or []:
                out += self._call(frag)
        return out

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return event("content_block_delta", index=self.index, delta=delta)

    def _open(self, kind: str, n: int, block: dict[str, Any]) -> list[bytes]:
        """Open a block of ``kind`` (chat index ``n``) unless it is the open one."""
        if self.open == (kind, n):
            return []
        out = self._close()
        self.index += 1
        self.open = (kind, n)
        return [*out, event("content_block_start", index=self.index, content_block=block)]

    def _close(self) -> list[bytes]:
        if self.open is None:
            return []
        self.open = None
        return [event("content_block_stop", index=self.index)]

    def _thinking(self, piece: dict[str, Any]) -> list[bytes]:
        n = int(piece.get("index") or 0)
        if piece.get("type") == "redacted_thinking":
            block = {"type": "redacted_thinking", "data": piece.get("data")}
            return self._open("redacted", n, block)
        out = self._open("thinking", n, {"type": "thinking", "thinking": "", "signature": ""})
        if piece.get("thinking"):
            out.append(self._delta({"type": "thinking_delta", "thinking": piece["thinking"]}))
        if piece.get("signature"):
            out.append(self._delta({"type": "signature_delta", "signature": piece["signature"]}))
        return out

    def _call(self, frag: dict[str, Any]) -> list[bytes]:
        n = int(frag.get("index") or 0)
        fn = frag.get("function") or {}
        block = {
            "type": "tool_use",
            "id": str(frag.get("id")),
            "name": str(fn.get("name")),
            "input": {},
        }
        out = self._open("tool", n, block)
        piece = fn.get("arguments")
        if isinstance(piece, str) and piece:
            out.append(self._delta({"type": "input_json_delta", "partial_json": piece}))
        return out

    def completed(self, usage: StreamUsage) -> list[bytes]:
        reason = stop_reason(self.finish, self.matched, self.stop_sequences)
        delta = {
            "stop_reason": reason,
            "stop_sequence": self.matched if reason == "stop_sequence" else None,
        }
        used = usage_block(usage.prompt_tokens, usage.completion_tokens, cache_tokens(usage))
        return [
            *self._close(),
            event("message_delta", delta=delta, usage=used),
            event("message_stop"),
        ]

    def failed(self, err: ApiError) -> list[bytes]:
        return [*self._close(), event("error", error=anthropic_error(err))]
