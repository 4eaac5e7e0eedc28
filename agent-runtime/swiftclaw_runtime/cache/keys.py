"""What identifies a request to the caches, which requests may be cached, Cache-Control.

The exact key is a SHA-256 over everything that changes the answer: the tenant (two
tenants never share answers) and, unless ``cache.sharing`` is ``tenant``, the user (one
user is never served what another stored, nor learns what another asked), the agent,
the resolved tier with its model chain, and the request as it goes upstream (messages
with the agent's system prompt, tools, tool_choice, temperature, top_p, max tokens,
response_format, seed, stop, n and every other forwarded parameter), canonicalised
(sorted keys, numbers of the sampling parameters as floats). Left out: ``model``
(replaced by the resolved tier), ``stream`` and ``stream_options`` (how the answer is
delivered, not what it says), so a streamed request hits an answer cached from a plain
one and the other way round.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from ..config import ExactCacheSpec, TierSpec
from ..schemas import ChatRequest, message_text

KEY_VERSION = 1
NOT_IN_KEY = frozenset({"model", "stream", "stream_options"})
FLOAT_PARAMS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")


@dataclass(frozen=True)
class CacheControl:
    """The request's ``Cache-Control``: ``no-cache`` skips the lookup but stores the
    fresh answer; ``no-store`` neither looks up nor stores."""

    no_cache: bool = False
    no_store: bool = False


def parse_cache_control(value: str | None) -> CacheControl:
    if not value:
        return CacheControl()
    directives = {d.strip().split("=", 1)[0].lower() for d in value.split(",")}
    no_store = "no-store" in directives
    return CacheControl(no_cache=no_store or "no-cache" in directives, no_store=no_store)


def is_cacheable(spec: ExactCacheSpec, request: ChatRequest) -> bool:
    """Whether this request's answer may be replayed to an identical one (see
    :class:`~swiftclaw_runtime.config.ExactCacheSpec`)."""
    if spec.cacheable == "always":
        return True
    if request.seed is not None:
        return True
    return request.temperature is not None and request.temperature <= spec.max_temperature


def _digest(obj: Any) -> str:
    return hashlib.sha256(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _canonical(payload: dict[str, Any], leave_out: frozenset[str]) -> dict[str, Any]:
    out = {k: v for k, v in payload.items() if k not in leave_out}
    for name in FLOAT_PARAMS:
        value = out.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def tier_identity(tier: TierSpec) -> list[str]:
    """The tier's name and model chain: an answer is reused only within the same chain."""
    return [tier.name, tier.model, *tier.fallbacks]


def exact_key(
    tenant: str, user: str | None, agent: str, tier: TierSpec, payload: dict[str, Any]
) -> str:
    """The exact-cache key (hex) of a request as it is sent upstream; ``user`` None when
    the tenant's users share answers (the key is then the one before per-user keys)."""
    keyed: dict[str, Any] = {
        "v": KEY_VERSION,
        "tenant": tenant,
        "agent": agent,
        "tier": tier_identity(tier),
        "request": _canonical(payload, NOT_IN_KEY),
    }
    if user is not None:
        keyed["user"] = user
    return _digest(keyed)


@dataclass(frozen=True)
class Scope:
    """What a semantic lookup is confined to (hashes, so no escaping is needed)."""

    owner: str  # the tenant, or the tenant and the user when answers are per user
    agent: str
    prompt: str  # the system and developer messages
    tier: str
    params: str  # every parameter but the messages: sampling, max tokens, format, ...

    def tags(self) -> dict[str, str]:
        return {
            "owner": self.owner,
            "agent": self.agent,
            "prompt": self.prompt,
            "tier": self.tier,
            "params": self.params,
        }

    def digest(self) -> str:
        """The five fields in one value: the index filters on one TAG, not an
        intersection of five (each over every entry of the scope)."""
        return hashlib.sha256("|".join(self.tags().values()).encode()).hexdigest()[:32]


def _short(obj: Any) -> str:
    return _digest(obj)[:24]


def semantic_scope(
    tenant: str, user: str | None, agent: str, tier: TierSpec, payload: dict[str, Any]
) -> Scope:
    """``user`` None: the tenant's users share the scope (its digest is then the one
    before per-user scopes)."""
    messages = payload.get("messages") or []
    system = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") != "user"]
    return Scope(
        owner=_short(tenant if user is None else [tenant, user]),
        agent=_short(agent),
        prompt=_short(system),
        tier=_short(tier_identity(tier)),
        params=_short(_canonical(payload, NOT_IN_KEY | {"messages"})),
    )


def semantic_question(request: ChatRequest) -> str | None:
    """The question of a single-turn request without tools, else None.

    Only those are looked up by meaning: in a conversation the same last message means
    different things after different turns, and with tools the answer is an action on the
    caller's side whose arguments must be exact.
    """
    if request.tools or request.tool_choice not in (None, "none"):
        return None
    users = [m for m in request.messages if m.role == "user"]
    others = [m for m in request.messages if m.role not in ("user", "system", "developer")]
    if len(users) != 1 or others:
        return None
    content = users[0].content
    if isinstance(content, list) and any(p.type != "text" for p in content):
        return None  # an image or a file: the text alone does not say what is asked
    text = message_text(users[0]).strip()
    return text or None
