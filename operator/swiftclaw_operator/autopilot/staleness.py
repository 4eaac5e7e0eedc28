"""Whether the last read of the fleet can be trusted, and what to show when it cannot.

A read is *complete* when at least half of the ready pods answered: fewer would read a
fleet's load as lower than it is (a missing pod is not an idle one). With no complete
read for two intervals the figures are *stale* (the ``MetricsStale`` condition): the last
complete values are held for at most ``hold_seconds`` and then dropped (shown absent),
never read as zero; decisions that would lower anything wait (KEDA scales down on an
empty query: kedacore/keda #965, #3064).
"""

from __future__ import annotations

from dataclasses import dataclass

STALE_AFTER_INTERVALS = 2


@dataclass(frozen=True)
class Freshness:
    stale: bool
    complete: bool  # this read saw at least half of the ready pods
    hold: bool  # the last complete figures are still shown
    reason: str  # Fresh, Partial, ScrapeFailed, NoReadyPods
    message: str


def complete(answered: int, ready: int) -> bool:
    return ready > 0 and 2 * answered >= ready


def assess(
    now: float,
    last_complete_at: float | None,
    interval_seconds: float,
    hold_seconds: float,
    answered: int,
    ready: int,
) -> Freshness:
    """``last_complete_at`` is the time of the last complete read, this one included."""
    whole = complete(answered, ready)
    if whole:
        reason = "Fresh" if answered == ready else "Partial"
        return Freshness(False, True, False, reason, f"{answered} of {ready} ready pods read")
    age = None if last_complete_at is None else now - last_complete_at
    stale = age is None or age > STALE_AFTER_INTERVALS * interval_seconds
    reason = "NoReadyPods" if ready == 0 else "ScrapeFailed"
    held = age is not None and age <= hold_seconds
    since = "never" if age is None else f"{age:.0f}s ago"
    message = f"{answered} of {ready} ready pods read; last complete read {since}" + (
        "; its figures are held" if stale and held else ""
    )
    return Freshness(stale, False, held, reason, message)
