"""Shadow mode: the precision of semantic hits measured on the agent's own traffic.

In ``shadow`` mode a would-be semantic hit is not served: the request goes upstream and
the fresh answer is compared with the cached one (:func:`answers_agree`: the cosine of
the two answers' embeddings, then the verifier's decisive checks on the answers, numbers,
units and negation). Per tier the book counts the semantic lookups, the would-be hits and
how many of those agreed: the estimated precision of serving them and the hit rate it
would have had. In ``serve`` mode a tier serves by meaning only while the last
``minSamples`` checks (at least :data:`MIN_WINDOW`) agree at ``requirePrecision`` or
better; one would-be hit in :data:`AUDIT_EVERY` is still checked instead of served, so a
drop is seen, and the tier goes back to shadow until the measure recovers.

State is bounded: one entry per tier of the agent's configuration (never a client value),
each with a window of at most ``max(minSamples, MIN_WINDOW)`` booleans.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from . import verify

AUDIT_EVERY = 10  # serving, one would-be hit in this many is checked instead of served
MIN_WINDOW = 100
# Two answers agree when their embeddings are at least this close and the verifier's
# decisive checks find no difference (answers to one question at temperature 0 score
# 0.9-1.0; to different questions, rarely above 0.8).
AGREE_COSINE = 0.85
Decision = Literal["serve", "shadow"]


def answers_agree(similarity: float, fresh: str, cached: str) -> bool:
    """Whether the cached answer would have served the question as the fresh one did."""
    if " ".join(fresh.split()) == " ".join(cached.split()):
        return True
    if similarity < AGREE_COSINE:
        return False
    a, b = verify.facts(fresh[:2000]), verify.facts(cached[:2000])
    return (
        sorted(a.numbers) == sorted(b.numbers) and a.units == b.units and (a.negated == b.negated)
    )


@dataclass
class TierBook:
    window: deque[bool]
    lookups: int = 0
    would_hits: int = 0
    agreed: int = 0
    disagreed: int = 0
    served: int = 0
    _since_audit: int = field(default=0, repr=False)

    def precision(self) -> float | None:
        checked = self.agreed + self.disagreed
        return self.agreed / checked if checked else None

    def recent(self) -> float | None:
        return sum(self.window) / len(self.window) if self.window else None


class ShadowBook:
    def __init__(
        self,
        mode: str,
        require_precision: float | None,
        min_samples: int,
        tiers: list[str],
    ) -> None:
        self.mode = mode
        self.require = require_precision
        self.min_samples = min_samples
        size = max(min_samples, MIN_WINDOW)
        self.tiers = {name: TierBook(deque(maxlen=size)) for name in tiers}

    def book(self, tier: str) -> TierBook | None:
        return self.tiers.get(tier)

    def looked_up(self, tier: str) -> None:
        b = self.tiers.get(tier)
        if b is not None:
            b.lookups += 1

    def serving(self, tier: str) -> bool:
        """Whether the tier serves by meaning now (before the audit sampling)."""
        if self.mode != "serve":
            return False
        if self.require is None:
            return True
        b = self.tiers.get(tier)
        if b is None or len(b.window) < self.min_samples:
            return False
        recent = b.recent()
        return recent is not None and recent >= self.require

    def decide(self, tier: str) -> Decision:
        """A would-be hit in ``tier``: serve it, or check it against a fresh answer."""
        b = self.tiers.get(tier)
        if b is not None:
            b.would_hits += 1
        if not self.serving(tier):
            return "shadow"
        if self.require is not None and b is not None:
            b._since_audit += 1
            if b._since_audit >= AUDIT_EVERY:
                b._since_audit = 0
                return "shadow"
        if b is not None:
            b.served += 1
        return "serve"

    def record(self, tier: str, agrees: bool) -> None:
        b = self.tiers.get(tier)
        if b is None:
            return
        b.window.append(agrees)
        if agrees:
            b.agreed += 1
        else:
            b.disagreed += 1

    def report(self) -> dict[str, object]:
        """Per tier, what ``/v1/usage`` shows: estimated precision and would-be hit rate."""
        tiers: dict[str, object] = {}
        for name, b in self.tiers.items():
            tiers[name] = {
                "serving": self.serving(name),
                "lookups": b.lookups,
                "wouldBeHits": b.would_hits,
                "wouldBeHitRate": b.would_hits / b.lookups if b.lookups else None,
                "served": b.served,
                "checked": b.agreed + b.disagreed,
                "agreed": b.agreed,
                "estimatedPrecision": b.precision(),
                "recentPrecision": b.recent(),
            }
        return {
            "mode": self.mode,
            "requirePrecision": self.require,
            "minSamples": self.min_samples,
            "tiers": tiers,
        }
