"""Which models to take out of their tiers' chains on every pod (pure), from passive signals.

A model is failing fleet-wide when its breaker is open on at least half of the ready pods,
or when its calls failed at ``error_rate`` or more, with at least ``min_calls`` calls, in
two intervals in a row. Out it goes from every chain it is in (never a chain's last model:
a tier keeps something to try), for a hold that depends on why: a key or billing failure
(401/403) keeps it out far longer than timeouts, a 429 for its ``Retry-After``; whatever
the cause, a model is never let back while a pod still waits out its provider's
``Retry-After`` (the pods export the wait left: :attr:`Interval.retry_after`). When the
hold ends the pods try it again (the exclusion's ``until`` passes); a failure then takes it
out again for twice the hold, in the same episode; ``healthy_seconds`` of clean traffic (no
open breaker, errors under half the threshold: hysteresis) ends the episode.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from swiftclaw_runtime.config.fleet import FailoverCause, ModelExclusion

from .aggregate import OPEN, Interval

FAILURES = frozenset({"connect", "timeout", "rate_limited", "server", "auth", "protocol"})
CAUSE_OF = {"auth": "auth", "rate_limited": "rate-limited", "timeout": "timeout"}
MAX_BACKOFF = 8  # a re-failing model's hold grows to at most 8x


@dataclass(frozen=True)
class FailoverSpec:
    error_rate: float = 0.5
    min_calls: int = 20
    healthy_seconds: float = 120.0
    holds: Mapping[str, float] = field(
        default_factory=lambda: {
            "auth": 1800.0,
            "billing": 3600.0,
            "rate-limited": 60.0,  # when no Retry-After is known
            "timeout": 60.0,
            "breaker-open": 60.0,
            "error-rate": 60.0,
        }
    )


@dataclass(frozen=True)
class ModelState:
    streak: int = 0  # intervals in a row over the error threshold
    out_since: float | None = None  # the episode's start
    until: float = 0.0
    cause: FailoverCause = "error-rate"
    backoff: int = 1
    healthy_since: float | None = None


@dataclass(frozen=True)
class FailoverResult:
    models: dict[str, ModelState]
    exclusions: list[ModelExclusion]
    started: list[tuple[str, FailoverCause, str]]  # model, cause, message
    ended: list[str]


def _signals(
    model: str, iv: Interval, spec: FailoverSpec
) -> tuple[bool, bool, float | None, FailoverCause, str]:
    """(over the error threshold now, breaker open on half the pods, error rate, cause, why)."""
    states = iv.breakers.get(model, [])
    opened = sum(1 for s in states if s == OPEN)
    breaker = iv.pods > 0 and opened > 0 and 2 * opened >= iv.pods
    calls: dict[str, float] = {}
    for (provider, name, outcome), n in iv.upstream_calls.items():
        if f"{provider}/{name}" == model:
            calls[outcome] = calls.get(outcome, 0.0) + n
    total = sum(calls.values())
    failed = {k: v for k, v in calls.items() if k in FAILURES}
    errors = sum(failed.values())
    rate = errors / total if total else None
    over = total >= spec.min_calls and rate is not None and rate >= spec.error_rate
    cause: FailoverCause = "breaker-open" if breaker else "error-rate"
    if failed:
        top = max(failed, key=lambda k: failed[k])
        cause = CAUSE_OF.get(top, cause)  # type: ignore[assignment]
    why = f"breaker open on {opened} of {iv.pods} ready pods" if breaker else ""
    if rate is not None and total:
        why = (why + "; " if why else "") + f"{errors:.0f} of {total:.0f} calls failed"
    return over, breaker, rate, cause, why


def decide(
    tiers: Mapping[str, list[str]],
    iv: Interval,
    previous: Mapping[str, ModelState],
    spec: FailoverSpec,
    now: float,
) -> FailoverResult:
    """One interval's failover decisions for every model in ``tiers`` (tier -> its chain)."""
    models: dict[str, ModelState] = {}
    started: list[tuple[str, FailoverCause, str]] = []
    ended: list[str] = []
    for model in sorted({m for chain in tiers.values() for m in chain}):
        st = previous.get(model, ModelState())
        over, breaker, rate, cause, why = _signals(model, iv, spec)
        streak = st.streak + 1 if over else 0
        failing = breaker or streak >= 2
        # evidence of health is real calls answered (a trickle, or the pods' half-open
        # probes), with no breaker open and errors under half the threshold (hysteresis)
        opened = any(s == OPEN for s in iv.breakers.get(model, []))
        healthy = rate is not None and not opened and rate < spec.error_rate / 2
        unhealthy = opened or (rate is not None and rate >= spec.error_rate / 2)
        st = replace(st, streak=streak)

        wait = iv.retry_after_of(model)

        def hold(c: FailoverCause, backoff: int, wait: float | None = wait) -> float:
            """Out for the cause's hold (a 429's own Retry-After, when a pod saw one), and
            never less than the Retry-After a pod still waits out."""
            base = wait if c == "rate-limited" and wait else spec.holds[c]
            return max(base * backoff, wait or 0.0)

        if st.out_since is None:
            if failing:
                st = ModelState(streak, now, now + hold(cause, 1), cause, 1, None)
                started.append((model, cause, why))
        elif now < st.until:
            if wait:  # held out, nothing to learn; a longer Retry-After since extends it
                st = replace(st, until=max(st.until, now + wait))
        elif failing:  # tried again and failed again: out for longer, same episode
            backoff = min(st.backoff * 2, MAX_BACKOFF)
            st = replace(
                st,
                until=now + hold(cause, backoff),
                cause=cause,
                backoff=backoff,
                healthy_since=None,
            )
        elif healthy:
            since = st.healthy_since if st.healthy_since is not None else now
            if now - since >= spec.healthy_seconds:
                st = ModelState(streak)
                ended.append(model)
            else:
                st = replace(st, healthy_since=since)
        elif unhealthy:
            st = replace(st, healthy_since=None)  # the healthy window starts again
        if st != ModelState():
            models[model] = st
    return FailoverResult(models, exclusions(tiers, models, now), started, ended)


def exclusions(
    tiers: Mapping[str, list[str]], models: Mapping[str, ModelState], now: float
) -> list[ModelExclusion]:
    """The document's entries: each held-out model in each chain it is in, while its hold
    lasts, keeping at least the chain's first model that is not out (or its last one)."""
    out: list[ModelExclusion] = []
    for tier, chain in sorted(tiers.items()):
        held = [
            m for m in chain if (s := models.get(m)) and s.out_since is not None and s.until > now
        ]
        if len(held) == len(chain):
            held = held[:-1]  # never an empty chain: the last model stays to be tried
        for m in held:
            s = models[m]
            assert s.out_since is not None
            out.append(
                ModelExclusion(tier=tier, model=m, cause=s.cause, since=s.out_since, until=s.until)
            )
    return out
