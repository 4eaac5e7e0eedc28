"""Anthropic prompt-cache breakpoints placed for the client (``cache.promptCaching``).

Anthropic caches a prompt's prefix only up to the blocks marked ``cache_control`` (at most
:data:`MAX_BREAKPOINTS` of them): an agent that speaks OpenAI's API cannot mark any, so
without help every step of its loop pays full price for the prefix it resends. With
``auto`` (the default), a request that carries no ``cache_control`` of its own gets one on
each part of its stable prefix: the last tool, the system prompt, and the conversation up
to its last turn (the last block of the turn before it). The next step of the loop repeats
that prefix, so Anthropic reads it from its cache (at its cache-read price) and writes only
what was added since. A request that marks its own breakpoints keeps them, untouched.
``manual`` and ``off`` place none; the client's own pass through either way (``off``
also turns conversation affinity off: see :mod:`..routing.affinity`).

A prefix shorter than the model's minimum (1024 tokens for most Claude models) is not
cached by Anthropic, and not charged for the breakpoint either, so they are placed
whatever the length.
"""

from __future__ import annotations

from typing import Any, Literal

PromptCaching = Literal["auto", "manual", "off"]
EPHEMERAL: dict[str, str] = {"type": "ephemeral"}
MAX_BREAKPOINTS = 4


def _blocks(content: Any) -> list[Any]:
    return content if isinstance(content, list) else []


def count_breakpoints(body: dict[str, Any]) -> int:
    """The ``cache_control`` marks of a request (tools, system blocks, message blocks):
    Anthropic refuses more than :data:`MAX_BREAKPOINTS`."""
    n = sum(1 for t in _blocks(body.get("tools")) if isinstance(t, dict) and "cache_control" in t)
    n += sum(1 for b in _blocks(body.get("system")) if isinstance(b, dict) and "cache_control" in b)
    for msg in _blocks(body.get("messages")):
        content = msg.get("content") if isinstance(msg, dict) else None
        n += sum(1 for b in _blocks(content) if isinstance(b, dict) and "cache_control" in b)
    return n


def has_breakpoints(body: dict[str, Any]) -> bool:
    """Whether the request marks any ``cache_control`` of its own."""
    return count_breakpoints(body) > 0


def _mark_last(content: Any) -> Any:
    """``content`` (a string or a list of blocks) with ``cache_control`` on its last block,
    or None when it has no block to mark."""
    if isinstance(content, str):
        return (
            [{"type": "text", "text": content, "cache_control": dict(EPHEMERAL)}]
            if content
            else None
        )
    if isinstance(content, list) and content and isinstance(content[-1], dict):
        return [*content[:-1], {**content[-1], "cache_control": dict(EPHEMERAL)}]
    return None


def place_breakpoints(body: dict[str, Any], mode: PromptCaching) -> dict[str, Any]:
    """``body`` (a Messages API request) with the breakpoints ``mode`` places: a new dict,
    the blocks it marks copied, the rest shared."""
    if mode != "auto" or has_breakpoints(body):
        return body
    out = dict(body)
    placed = 0
    tools = body.get("tools")
    if isinstance(tools, list) and tools and isinstance(tools[-1], dict):
        out["tools"] = [*tools[:-1], {**tools[-1], "cache_control": dict(EPHEMERAL)}]
        placed += 1
    system = _mark_last(body.get("system"))
    if system is not None:
        out["system"] = system
        placed += 1
    messages = body.get("messages")
    if placed < MAX_BREAKPOINTS and isinstance(messages, list) and len(messages) >= 2:
        before_last = messages[-2]
        content = _mark_last(before_last.get("content")) if isinstance(before_last, dict) else None
        if content is not None:
            out["messages"] = [*messages[:-2], {**before_last, "content": content}, messages[-1]]
    return out
