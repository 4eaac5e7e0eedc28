"""Anthropic's features on the chat request, and what each kind of provider does with them.

The Messages API in front (:mod:`swiftclaw_runtime.messages`) turns a request into one
chat request; what Anthropic has and chat lacks travels on it as these extensions
(declared in :mod:`..schemas`, so they are checked and bounded like the rest):

- ``cache_control`` on a content part, a tool, a tool call or a tool message;
- ``thinking_blocks`` of an assistant message (verbatim, signatures intact);
- ``is_error`` of a tool message;
- ``thinking``, ``context_management``, ``top_k`` and ``anthropic_beta`` (the
  ``anthropic-beta`` header's betas).

Anthropic's translation (:mod:`.translate_anthropic`) sends every one as it came. The
others: Gemini's translation drops the breakpoints, the thinking blocks, ``is_error``
and the betas, and refuses ``thinking``, ``top_k`` and ``context_management`` (but one
that only clears thinking blocks, which it does not get: dropped) (:mod:`.params`). For
OpenAI-shaped providers, :func:`for_openai` drops the thinking blocks, ``is_error`` and
the betas (an Anthropic signature means nothing elsewhere) and refuses ``thinking`` (no
OpenAI-shaped API takes Anthropic's switch: it would be ignored) and ``context_management``
as Gemini does; OpenAI's own API
(``type: openai``) also loses the breakpoints (it caches prefixes by itself and refuses
unknown fields) and refuses ``top_k``, while an OpenAI-compatible server gets those two
as sent (vLLM reads ``top_k``; some gateways read ``cache_control``).
"""

from __future__ import annotations

from typing import Any

from ..schemas import ChatRequest
from .base import Unsupported

# dropped for every provider but Anthropic (on messages, and at the top; ``thinking`` and
# ``context_management`` once found to ask for nothing the provider would do)
ANTHROPIC_ONLY = ("thinking_blocks", "is_error")
TOP_LEVEL = frozenset({"anthropic_beta", "thinking", "context_management"})


def _anthropic_only(request: ChatRequest) -> bool:
    return bool(request.anthropic_beta) or any(
        m.thinking_blocks is not None or m.is_error is not None for m in request.messages
    )


def _marked(request: ChatRequest) -> bool:
    """Whether a breakpoint is anywhere in the request."""
    if any(t.cache_control is not None for t in request.tools or ()):
        return True
    for m in request.messages:
        if m.cache_control is not None:
            return True
        if any(c.cache_control is not None for c in m.tool_calls or ()):
            return True
        if isinstance(m.content, list) and any(p.cache_control is not None for p in m.content):
            return True
    return False


def for_openai(request: ChatRequest, payload: dict[str, Any], provider_type: str) -> dict[str, Any]:
    """The request's JSON as an OpenAI-shaped provider of ``provider_type`` gets it (the
    same object when nothing is to change); raises :class:`Unsupported` for what OpenAI's
    own API cannot express."""
    openai = provider_type == "openai"
    if request.thinking is not None and request.thinking.type != "disabled":
        raise Unsupported(
            "OpenAI-shaped APIs have no equivalent of Anthropic's 'thinking'", "thinking"
        )
    if openai and request.top_k is not None:
        raise Unsupported("OpenAI has no equivalent of 'top_k'", "top_k")
    edits = request.context_management
    if edits is not None and not edits.only_clears_thinking:
        raise Unsupported(
            "OpenAI-shaped APIs have no equivalent of Anthropic's 'context_management'",
            "context_management",
        )
    strip_marks = openai and _marked(request)
    if not (_anthropic_only(request) or strip_marks or TOP_LEVEL.intersection(payload)):
        return payload
    out = {k: v for k, v in payload.items() if k not in TOP_LEVEL}
    drop = (*ANTHROPIC_ONLY, "cache_control") if strip_marks else ANTHROPIC_ONLY
    out["messages"] = [_without(m, drop, strip_marks) for m in payload["messages"]]
    if strip_marks and isinstance(payload.get("tools"), list):
        out["tools"] = [_without(t, ("cache_control",), False) for t in payload["tools"]]
    return out


def _without(obj: Any, keys: tuple[str, ...], parts: bool) -> Any:
    """A message (or tool) without ``keys``; ``parts``: its content parts and tool calls
    without their breakpoints too."""
    if not isinstance(obj, dict):
        return obj
    out = {k: v for k, v in obj.items() if k not in keys}
    if parts:
        for field in ("content", "tool_calls"):
            if isinstance(out.get(field), list):
                out[field] = [_without(p, ("cache_control",), False) for p in out[field]]
    return out
