"""Episodes (pure): a condition that holds over many intervals starts once and ends once.

Each notification (webhook, Warning Event) is sent at an episode's start and end, not per
interval. At most :data:`MAX_ACTIVE` episodes are open per agent (their keys come from the
agent's own config: tiers, models), so the map stays bounded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

MAX_ACTIVE = 64

Key = tuple[str, str]  # (kind, subject): ("FleetFailover", "sim/fast"), ("MetricsStale", "")


@dataclass(frozen=True)
class Change:
    key: Key
    started: bool  # False: ended
    since: float
    message: str


def track(
    active: Mapping[Key, float], now_true: Mapping[Key, str], now: float
) -> tuple[dict[Key, float], list[Change]]:
    """The open episodes after this interval (key -> start) and the starts and ends."""
    out: dict[Key, float] = {}
    changes: list[Change] = []
    for key, since in active.items():
        if key in now_true:
            out[key] = since
        else:
            changes.append(Change(key, False, since, f"ended after {now - since:.0f}s"))
    for key, message in sorted(now_true.items()):
        if key not in out and len(out) < MAX_ACTIVE:
            out[key] = now
            changes.append(Change(key, True, now, message))
    return out, changes
