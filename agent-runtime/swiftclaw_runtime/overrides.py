"""The fleet document (:mod:`.config.fleet`) as this pod applies it.

Pure parts: reading and validating the file (:func:`parse_fleet`), whether a document
replaces the one applied (:func:`supersedes`), and :class:`FleetView`, what the document
means for this agent's chains and budget at a given time. :class:`Fleet` holds the view
in force; the dispatcher and the spend control read it on every request, the reloader
(:mod:`.reload`) replaces it when the file changes.

- An exclusion applies to the (tier, model) it names while ``until`` is ahead; entries
  naming a tier this agent lacks, or a model not in that tier's chain, are ignored (and
  counted in :attr:`FleetView.ignored`), so the metrics' labels are bounded by the config.
- When every model of a chain is excluded the exclusions of that chain are not applied
  (the models are tried in order, as when every breaker is open): the document widens
  what a pod knows, it never leaves a tier with nothing to try.
- A document whose ``generation`` is below the one applied is ignored; a bad file keeps
  the document applied; a file that is gone means no overrides (the operator's ConfigMap
  was deleted, or was never made: the mount is optional).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from pydantic import ValidationError

from .config import AgentPolicy
from .config.fleet import FleetOverrides, ModelExclusion
from .contract import FLEET_FILE_ENV, FLEET_PATH

# The largest fleet file read: 256 exclusions of a few hundred bytes each fit many times.
MAX_FLEET_BYTES = 1024 * 1024
BUDGET_STATES = ("normal", "downgrade", "exceeded")
Clock = Callable[[], float]


class FleetFileError(ValueError):
    """The fleet file cannot be applied; the message says why without quoting it."""


def fleet_path(environ: Mapping[str, str] = os.environ) -> Path:
    """``$SWIFTCLAW_FLEET_FILE``, else where the operator mounts ``<agent>-fleet``."""
    return Path(environ.get(FLEET_FILE_ENV) or FLEET_PATH)


def parse_fleet(raw: bytes) -> FleetOverrides:
    """A fleet document from the file's bytes (JSON), or :class:`FleetFileError` naming
    what is wrong: the size, the JSON error's position, the fields that fail validation."""
    if len(raw) > MAX_FLEET_BYTES:
        raise FleetFileError(f"it is {len(raw)} bytes, over the {MAX_FLEET_BYTES} read")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise FleetFileError(f"it is not JSON ({err.msg} at position {err.pos})") from None
    try:
        return FleetOverrides.model_validate(data)
    except ValidationError as err:
        where = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(document)'}: {e['type']}"
            for e in err.errors()[:5]
        )
        raise FleetFileError(f"it is not a fleet document ({where})") from None


def supersedes(new: FleetOverrides, applied: FleetOverrides | None) -> bool:
    """Whether ``new`` replaces the document applied: the operator only raises the
    generation, so a lower one is an older document (a stale copy) and is ignored."""
    return applied is None or new.generation >= applied.generation


@dataclass(frozen=True)
class FleetView:
    """What one document means for this agent: per tier, the models taken out of its
    chain (with the entry that did it), and the budget state with its end."""

    generation: int = 0
    excluded: Mapping[str, Mapping[str, ModelExclusion]] = field(default_factory=dict)
    budget_state: str = "normal"
    budget_until: float = 0.0
    ignored: int = 0  # entries naming a tier or model this agent does not have

    @classmethod
    def of(cls, doc: FleetOverrides, policy: AgentPolicy) -> FleetView:
        chains = {t.name: [t.model, *t.fallbacks] for t in policy.models.tiers}
        excluded: dict[str, dict[str, ModelExclusion]] = {}
        ignored = 0
        for entry in doc.excluded:
            if entry.model not in chains.get(entry.tier, ()):
                ignored += 1
                continue
            kept = excluded.setdefault(entry.tier, {}).get(entry.model)
            if kept is None or entry.until > kept.until:  # the longest of duplicates
                excluded[entry.tier][entry.model] = entry
        return cls(doc.generation, excluded, doc.budget.state, doc.budget.until, ignored)

    def skipped(self, tier: str, chain: list[str], now: float) -> dict[str, ModelExclusion]:
        """The models of ``tier``'s ``chain`` to skip now (none when that would be all)."""
        entries = self.excluded.get(tier)
        if not entries:
            return {}
        out = {ref: e for ref, e in entries.items() if e.until > now}
        if len(out) >= len(set(chain)):
            return {}
        return out

    def active(self, now: float) -> list[ModelExclusion]:
        """The exclusions in force now, in a stable order (for metrics and status)."""
        return sorted(
            (e for entries in self.excluded.values() for e in entries.values() if e.until > now),
            key=lambda e: (e.tier, e.model),
        )

    def budget(self, now: float) -> str:
        """``normal``, ``downgrade`` or ``exceeded``: the state while ``until`` (0: no
        end) is ahead, else normal."""
        if self.budget_until and self.budget_until <= now:
            return "normal"
        return self.budget_state

    def describe(self, now: float) -> dict[str, object]:
        """What the pod applies, for ``/health`` and ``/v1/usage``."""
        return {
            "generation": self.generation,
            "budget": self.budget(now),
            "excluded": [
                {"tier": e.tier, "model": e.model, "cause": e.cause, "until": e.until}
                for e in self.active(now)
            ],
        }


class Fleet:
    """The fleet view in force in this process, and the document it came from."""

    def __init__(self, policy: AgentPolicy, clock: Clock = time.time) -> None:
        self.policy = policy
        self.clock = clock
        self.doc: FleetOverrides | None = None
        self.view = FleetView()

    def apply(self, doc: FleetOverrides | None) -> bool:
        """Put ``doc`` in force (None: the file is gone, no overrides). False when it is
        older than the one applied and so ignored."""
        if doc is None:
            self.doc, self.view = None, FleetView()
            return True
        if not supersedes(doc, self.doc):
            return False
        self.doc, self.view = doc, FleetView.of(doc, self.policy)
        return True

    def skipped(self, tier: str, chain: list[str]) -> dict[str, ModelExclusion]:
        view = self.view
        if not view.excluded:  # the common case: nothing to look at, no clock read
            return {}
        return view.skipped(tier, chain, self.clock())

    def budget(self) -> str:
        view = self.view
        if view.budget_state == "normal":
            return "normal"
        return view.budget(self.clock())

    def describe(self) -> dict[str, object]:
        return self.view.describe(self.clock())
