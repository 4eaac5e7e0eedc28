"""Conversation affinity: the steps of one conversation go to the model of its tier that
served it last, while that model is healthy, so that the provider's prompt cache (keyed by
the exact prefix, per model and provider) is hit on every step.

Only a prompt of at least :data:`CACHEABLE_TOKENS` (estimated) has affinity: no provider
caches a shorter one, so it goes by the tier's order (its model first, back to it as soon
as it is healthy again). A conversation is known by a hash of its tenant, its user and the
start of its prompt: the tools' names, the system and developer messages and the first
user message, which an agent resends unchanged on every step. Nothing the client sends
is kept but that 16-byte digest, in a bounded map (:data:`CAPACITY` conversations, least
recently used first out), per replica: a conversation the map forgot, or that reaches
another replica, starts again from the tier's model, as a new one does. A client that
churns the map only costs other conversations cache hits, never a wrong answer or price.

When the remembered model is passed over, the decision says why (``reason``):
``tier_changed`` (routing or a budget downgrade sent the step to another tier),
``circuit_open``, ``rate_limited`` (the provider is cooling down after a 429), ``failed``
(it was tried and failed), ``unsupported`` (it cannot express this step), ``fleet_excluded``
(the autopilot took it out of the tier on every pod). The outcome goes
to the ``x-swiftclaw-affinity`` header, the ``swiftclaw_affinity`` counter and, when
broken, the log.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

from ..schemas import ChatRequest, message_text
from ..spend.identity import Identity

CAPACITY = 50_000  # conversations remembered per replica (~10 MB)
# The shortest prompt any provider caches (OpenAI's, Anthropic's and Gemini Flash's minimum).
CACHEABLE_TOKENS = 1024
REASONS = (
    "tier_changed",
    "circuit_open",
    "rate_limited",
    "failed",
    "unsupported",
    "fleet_excluded",
)


def conversation_key(who: Identity, request: ChatRequest) -> bytes:
    """The digest that names ``request``'s conversation (see the module's docstring)."""
    h = hashlib.blake2b(digest_size=16)
    for part in (who.tenant, who.user):
        h.update(part.encode())
        h.update(b"\x00")
    for tool in request.tools or ():
        h.update(tool.function.name.encode())
        h.update(b"\x01")
    for m in request.messages:
        if m.role in ("system", "developer", "user"):
            h.update(m.role.encode())
            h.update(b"\x02")
            h.update(message_text(m).encode())
            h.update(b"\x03")
        if m.role == "user":
            break
    return h.digest()


@dataclass(frozen=True)
class Decision:
    """What affinity did for one request: ``new`` (nothing remembered), ``kept`` or
    ``broken`` (with its reason and the model it left)."""

    outcome: str
    reason: str = ""
    left: str = ""

    @property
    def header(self) -> str:
        return f"broken; reason={self.reason}" if self.outcome == "broken" else self.outcome


class Affinity:
    """The model that last served each conversation (bounded, least recently used out)."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self._last: OrderedDict[bytes, tuple[str, str]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._last)

    def recall(self, key: bytes) -> tuple[str, str] | None:
        """The tier and model (reference) that served the conversation last."""
        found = self._last.get(key)
        if found is not None:
            self._last.move_to_end(key)
        return found

    def remember(self, key: bytes, tier: str, ref: str) -> None:
        self._last[key] = (tier, ref)
        self._last.move_to_end(key)
        while len(self._last) > self.capacity:
            self._last.popitem(last=False)
