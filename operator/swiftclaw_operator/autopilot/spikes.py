"""Cost spikes (pure): the last window's spend against what is usual for that time.

The baseline is the same window of earlier days (up to 7) where there is history, else
the trailing mean rate of the history before the window. A spike is the window's spend
at ``ratio`` times the baseline or more, and at least ``min_usd`` over it; it ends when
the spend falls under 3/4 of that ratio (hysteresis). Memory per agent is bounded: one
bucket per ``window`` for 8 days, twelve per window for the last two windows, the latter
with the spend by tier and tenant (the runtime exports at most 51 tenants) for the
report of what drives a spike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

DAYS = 7
FINE = 12  # fine buckets per window
END_FACTOR = 0.75
DAY = 86_400.0


@dataclass(frozen=True)
class SpikeSpec:
    ratio: float = 2.0
    min_usd: float = 1.0
    window: float = 3600.0


@dataclass(frozen=True)
class Fine:
    start: float
    usd: float
    tiers: Mapping[str, float] = field(default_factory=dict)
    tenants: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SpendHistory:
    coarse: Mapping[int, float] = field(default_factory=dict)  # window index -> USD
    fine: tuple[Fine, ...] = ()
    first: float | None = None  # when recording began
    spiking: bool = False


@dataclass(frozen=True)
class Verdict:
    spike: bool
    started: bool
    ended: bool
    last_usd: float
    baseline_usd: float | None
    basis: str  # same-window-of-earlier-days | trailing-mean | none
    tiers: list[tuple[str, float]]
    tenants: list[tuple[str, float]]
    history: SpendHistory

    def message(self) -> str:
        base = "none" if self.baseline_usd is None else f"${self.baseline_usd:.2f}"
        top = ", ".join(f"{k} ${v:.2f}" for k, v in self.tiers[:3]) or "-"
        who = ", ".join(f"{k} ${v:.2f}" for k, v in self.tenants[:3]) or "-"
        return (
            f"${self.last_usd:.2f} in the last window against {base} ({self.basis}); "
            f"tiers: {top}; tenants: {who}; users: not exported per user (unbounded)"
        )


def _add(m: Mapping[str, float], extra: Mapping[str, float]) -> dict[str, float]:
    out = dict(m)
    for k, v in extra.items():
        out[k] = out.get(k, 0.0) + v
    return out


def record(
    h: SpendHistory,
    spec: SpikeSpec,
    now: float,
    usd: float,
    tiers: Mapping[str, float] | None = None,
    tenants: Mapping[str, float] | None = None,
) -> SpendHistory:
    """Add one interval's spend (ending at ``now``)."""
    step = spec.window / FINE
    start = math.floor(now / step) * step
    fine = list(h.fine)
    if fine and fine[-1].start == start:
        last = fine[-1]
        fine[-1] = Fine(
            start, last.usd + usd, _add(last.tiers, tiers or {}), _add(last.tenants, tenants or {})
        )
    else:
        fine.append(Fine(start, usd, dict(tiers or {}), dict(tenants or {})))
    fine = [f for f in fine if f.start > now - 2 * spec.window]
    index = math.floor(now / spec.window)
    coarse = {k: v for k, v in h.coarse.items() if k > index - (DAYS + 1) * DAY / spec.window}
    coarse[index] = coarse.get(index, 0.0) + usd
    first = h.first if h.first is not None else now - 0.0
    return SpendHistory(coarse, tuple(fine), first, h.spiking)


def _spent(coarse: Mapping[int, float], start: float, end: float, window: float) -> float | None:
    """The spend in [start, end) from the coarse buckets, by overlap; None if not recorded."""
    total, seen = 0.0, False
    for index in range(math.floor(start / window), math.floor((end - 1e-9) / window) + 1):
        if index not in coarse:
            continue
        seen = True
        lo, hi = max(start, index * window), min(end, (index + 1) * window)
        total += coarse[index] * max(0.0, hi - lo) / window
    return total if seen else None


def detect(h: SpendHistory, spec: SpikeSpec, now: float) -> Verdict:
    """Whether the last window is a spike, and whether one started or ended now."""
    recent = [f for f in h.fine if f.start > now - spec.window]
    last = sum(f.usd for f in recent)
    baseline: float | None = None
    basis = "none"
    first = h.first if h.first is not None else now
    earlier = [
        v
        for k in range(1, DAYS + 1)
        if first <= now - k * DAY - spec.window
        and (v := _spent(h.coarse, now - k * DAY - spec.window, now - k * DAY, spec.window))
        is not None
    ]
    if earlier:
        baseline, basis = sum(earlier) / len(earlier), "same-window-of-earlier-days"
    else:
        before = now - spec.window - first
        if before >= spec.window:  # at least one whole window of history before this one
            spent = _spent(h.coarse, first, now - spec.window, spec.window) or 0.0
            baseline, basis = spent * spec.window / before, "trailing-mean"
    spike = h.spiking
    if baseline is not None:
        if h.spiking:
            spike = last >= END_FACTOR * spec.ratio * baseline and last - baseline >= spec.min_usd
        else:
            spike = last >= spec.ratio * baseline and last - baseline >= spec.min_usd
    tiers: dict[str, float] = {}
    tenants: dict[str, float] = {}
    for f in recent:
        tiers = _add(tiers, f.tiers)
        tenants = _add(tenants, f.tenants)
    return Verdict(
        spike,
        spike and not h.spiking,
        h.spiking and not spike,
        last,
        baseline,
        basis,
        sorted(tiers.items(), key=lambda kv: -kv[1]),
        sorted(tenants.items(), key=lambda kv: -kv[1]),
        SpendHistory(h.coarse, h.fine, h.first, spike),
    )
