"""OpenAI chat parameters on APIs that are not OpenAI's: each is translated or refused.

A parameter a translation neither expresses nor refuses would be accepted and ignored:
a client asking for a ``seed`` or a ``logit_bias`` would get an answer made without it
and no word of it. So every top-level parameter of a request is either one the
translations handle (:data:`COMMON`, or the provider's own ``translated`` set), or at
its default value (which asks for nothing), or refused with :class:`Unsupported` naming
it, so that another model of the chain serves the request, else the client gets a 400.
The same holds for the fields of a message.

The output cap is never left to the provider's default: the cap the budget reserved for
is the one sent (:func:`with_output_cap`, :func:`set_output_cap`), so that no model
writes more than was paid for.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..schemas import ChatRequest, ContextManagement, ThinkingConfig
from .base import Unsupported

# Handled by both translations (sampling, limits, tools, JSON answers, streaming).
COMMON = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "n",
        "stop",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
    }
)
# Values that ask for nothing beyond the default: accepted by every provider.
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "presence_penalty": (0, 0.0),
    "frequency_penalty": (0, 0.0),
    "logprobs": (False,),
    "top_logprobs": (0,),
    "store": (False,),
    "modalities": (["text"],),
}
# A message's Anthropic extensions (see :mod:`.extensions`) are taken by every translation:
# the Anthropic one sends them, the others drop them, as the README's matrix says.
MESSAGE_FIELDS = frozenset(
    {"role", "content", "tool_calls", "tool_call_id"}
    | {"thinking_blocks", "is_error", "cache_control"}
)
# Request parameters every translation takes and only Anthropic's uses (a header's betas).
DROPPED = frozenset({"anthropic_beta"})


def _neutral(key: str, value: Any) -> bool:
    if value is None or value == {} or value == []:
        return True
    if isinstance(value, ThinkingConfig):
        return value.type == "disabled"
    if isinstance(value, ContextManagement):  # (no thinking reaches other providers)
        return value.only_clears_thinking
    return any(value == v and type(value) is type(v) for v in _NEUTRAL.get(key, ()))


def refuse_untranslated(request: ChatRequest, translated: Iterable[str], provider: str) -> None:
    """Raise :class:`Unsupported` for the first parameter of ``request`` (or of one of its
    messages) that ``provider`` cannot express."""
    handled = COMMON.union(translated, DROPPED)
    sent = {k: getattr(request, k) for k in request.model_fields_set}
    sent.update(request.model_extra or {})
    for key, value in sent.items():
        if key not in handled and not _neutral(key, value):
            raise Unsupported(f"{provider} has no equivalent of {key!r}", key)
    for i, m in enumerate(request.messages):
        fields = {k: getattr(m, k) for k in m.model_fields_set}
        fields.update(m.model_extra or {})
        for key, value in fields.items():
            if key not in MESSAGE_FIELDS and not _neutral(key, value):
                raise Unsupported(
                    f"{provider} has no equivalent of a message's {key!r}", f"messages[{i}].{key}"
                )


OUTPUT_FIELDS = ("max_completion_tokens", "max_tokens")


def with_output_cap(
    request: ChatRequest, payload: dict[str, Any], cap: int, default: int
) -> tuple[ChatRequest, dict[str, Any], dict[str, Any]]:
    """The request and its JSON asking for at most ``cap`` output tokens, and the JSON
    that keys the caches. Each of OpenAI's two fields the client named carries the cap
    (so an OpenAI-compatible provider gets the one its client chose); when it named
    neither, the request carries it and each adapter sends it in its own field
    (:func:`set_output_cap`). The cache key shows a cap below ``default`` (cut by the
    budget): a shorter answer must not be served for a full one."""
    named = [f for f in OUTPUT_FIELDS if payload.get(f) is not None]
    update = {f: min(int(payload[f]), cap) for f in named} or {"max_tokens": cap}
    if any(getattr(request, f) != v for f, v in update.items()):
        request = request.model_copy(update=update)
    if named:
        payload = dict(payload, **update)
    keyed = payload if named or cap >= default else dict(payload, max_tokens=cap)
    return request, payload, keyed


def set_output_cap(body: dict[str, Any], request: ChatRequest, field: str) -> dict[str, Any]:
    """An OpenAI-shaped body with the request's output cap: in the field(s) the client
    named, else in ``field`` (``max_completion_tokens`` for OpenAI, whose reasoning
    models refuse ``max_tokens``; ``max_tokens`` for the compatible servers)."""
    cap = request.output_limit
    if cap is None:
        return body
    named = [f for f in OUTPUT_FIELDS if body.get(f) is not None]
    for f in named or [field]:
        body[f] = cap
    return body
