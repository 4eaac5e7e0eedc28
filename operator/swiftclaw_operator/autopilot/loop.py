"""The autopilot's loop: one kopf daemon per AgentDeployment with ``spec.autopilot.enabled``.

Every ``intervalSeconds`` it lists the agent's ready runtime pods (:func:`runtime_pods`,
the one place that lists them), reads them (:mod:`.scraper`; or their series in Prometheus
when ``prometheusURL`` is set: :mod:`.promapi`), runs the pure decisions and
writes what changed: the HPA's bounds (through the status, so that every reconcile
writes the same ``minReplicas`` = ``maxReplicas``: see ``resources.runtime.build_hpa``),
the ``<agent>-fleet`` ConfigMap the pods re-read (the failover and budget overrides),
the status (``live``, ``autopilot``, its conditions), one Event per decision, the webhook
once per episode start and end, and the operator's metrics.

State lives in the daemon's coroutine (lost on an operator restart: the fleet document's
generation is read back from the ConfigMap, and the scale-down window starts again, so a
restart never scales down early).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import kopf
import orjson
from pydantic import ValidationError

from swiftclaw_runtime import contract
from swiftclaw_runtime.config.fleet import BudgetOverride, FleetOverrides

from ..api import API, KIND
from ..metrics import (
    AUTOPILOT_DECISIONS,
    AUTOPILOT_READS,
    AUTOPILOT_STEP_SECONDS,
    AUTOPILOT_WEBHOOK,
    ERRORS,
)
from ..reconcile import agent_from, owned
from ..resources.common import MANAGED_BY, Agent, metadata, with_spec_hash
from ..resources.registry import CONFIGMAP, POD
from ..resources.runtime import COMPONENT, build_hpa
from . import budget, episodes, failover, promapi, recent, scale, spikes, staleness, webhook
from .aggregate import Interval, interval
from .exposition import PodSample
from .scraper import Reader, pod_target

if TYPE_CHECKING:
    from ..handlers import Memo

log = logging.getLogger("swiftclaw.operator.autopilot")

DEFAULT_TARGET_IN_FLIGHT = 32  # per pod, without spec.scaling.targetConcurrency
AUTOPILOT_CONDITIONS = ("MetricsStale", "FailoverActive", "BudgetExceeded", "CostSpike")


def fleet_name(agent_name: str) -> str:
    return f"{agent_name}-fleet"


@dataclass
class AgentState:
    """What one agent's loop remembers between intervals (all bounded)."""

    samples: dict[str, PodSample] = field(default_factory=dict)
    sampled_at: float | None = None
    read_at: float | None = None  # the last complete read
    last: Interval | None = None
    scale_history: scale.ScaleHistory = field(default_factory=scale.ScaleHistory)
    models: dict[str, failover.ModelState] = field(default_factory=dict)
    budget_state: budget.BudgetState = field(default_factory=budget.BudgetState)
    budget_result: budget.BudgetResult | None = None
    spend: spikes.SpendHistory = field(default_factory=spikes.SpendHistory)
    spike: spikes.Verdict | None = None
    episodes: dict[episodes.Key, float] = field(default_factory=dict)
    fleet: tuple[int, str] | None = None  # (generation, content) last written
    spent_today: tuple[str, float] = ("", 0.0)  # counters' sum since midnight (no daily cap)


@dataclass
class Shared:
    """What every agent's loop shares: the reader (one HTTP session) and settings."""

    reader: Reader
    runbook_base: str
    webhook_file: Path | None
    clock: Any = time.time


# --- the pods ------------------------------------------------------------------------------


def _ready(pod: dict[str, Any]) -> bool:
    if pod["metadata"].get("deletionTimestamp"):
        return False
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


async def runtime_pods(memo: Memo, namespace: str, name: str) -> tuple[list[dict[str, Any]], int]:
    """The agent's ready runtime pods, and how many are pending (not yet running), from the
    operator's watch cache (no API request)."""
    pods = memo.cache.list(
        POD.kind,
        namespace,
        {
            "app.kubernetes.io/instance": name,
            "app.kubernetes.io/managed-by": MANAGED_BY,
            "app.kubernetes.io/component": COMPONENT,
        },
    )
    pending = sum(
        1
        for p in pods
        if (p.get("status") or {}).get("phase") == "Pending"
        and not p["metadata"].get("deletionTimestamp")
    )
    return [p for p in pods if _ready(p)], pending


# --- the decisions of one interval (pure) ----------------------------------------------------


@dataclass
class Outcome:
    """What one step decided: the writes and the reports."""

    replicas: int | None = None
    scale: scale.ScaleDecision | None = None
    fleet: FleetOverrides | None = None
    changes: list[episodes.Change] = field(default_factory=list)
    one_offs: list[tuple[str, str, bool]] = field(default_factory=list)  # reason, msg, warning
    fresh: staleness.Freshness | None = None


def tiers_of(agent: Agent) -> dict[str, list[str]]:
    return {t.name: [t.model, *t.fallbacks] for t in agent.spec.models.tiers}


def budget_plan(agent: Agent) -> budget.BudgetPlan:
    b = agent.spec.budget
    return budget.BudgetPlan(
        b.daily_usd,
        b.monthly_usd,
        b.time_zone,
        b.alert_at_percent,
        b.on_projected_exceed,
        float(b.min_downgrade_seconds),
    )


def evaluate(
    agent: Agent,
    state: AgentState,
    samples: dict[str, PodSample],
    ready: int,
    pending: int,
    current: int,
    now: float,
) -> Outcome:
    """Every decision of one interval from this read; updates ``state``."""
    ap = agent.spec.autopilot
    th = ap.thresholds
    out = Outcome()
    whole = staleness.complete(len(samples), ready)
    if whole:
        state.read_at = now
    fresh = staleness.assess(
        now, state.read_at, ap.interval_seconds, th.stale_hold_seconds, len(samples), ready
    )
    out.fresh = fresh
    iv: Interval | None = None
    # the interval ends when its newest figures were taken (a pod read now; Prometheus's
    # last scrape): a read with nothing newer than the last one is no interval, not a quiet one
    taken = max((sample.at for sample in samples.values()), default=now)
    if whole and (state.sampled_at is None or taken > state.sampled_at):
        if state.sampled_at is not None:
            iv = interval(state.samples, samples, state.sampled_at, taken)
            state.last = iv
        state.samples, state.sampled_at = samples, taken

    # scale: on the gateway's own work; holds while stale
    scaling = agent.spec.scaling
    sspec = scale.ScaleSpec(
        scaling.min_replicas,
        scaling.max_replicas,
        float(scaling.target_concurrency or DEFAULT_TARGET_IN_FLIGHT),
        float(scaling.scale_down_window_seconds),
        added_latency_target_ms=float(th.added_latency_ms),
        loop_lag_target_ms=float(th.loop_lag_ms),
    )
    if iv is not None or fresh.stale:
        sig = scale.ScaleSignals(
            ready=ready,
            pending=pending,
            current=current,
            in_flight_per_pod=iv.in_flight_per_pod if iv else 0.0,
            rate_per_pod=iv.requests_per_second / iv.pods if iv and iv.pods else None,
            mean_latency_s=iv.mean_latency_s if iv else None,
            cpu_per_pod=iv.cpu_per_pod if iv else None,
            added_latency_ms=iv.added_latency_ms if iv else None,
            loop_lag_ms=iv.loop_lag_ms if iv else None,
            stale=fresh.stale,
            complete=whole,
        )
        d = scale.decide(sspec, sig, state.scale_history, now)
        state.scale_history = d.history
        out.scale, out.replicas = d, d.desired
        if d.desired != current:
            out.one_offs.append((d.reason, d.message, False))

    now_true: dict[episodes.Key, str] = {}
    if iv is not None:
        fo = failover.decide(
            tiers_of(agent),
            iv,
            state.models,
            failover.FailoverSpec(
                error_rate=th.failover_error_rate_percent / 100,
                min_calls=th.failover_min_calls,
                healthy_seconds=float(th.healthy_seconds),
            ),
            now,
        )
        state.models = fo.models
        why = {m: (c, w) for m, c, w in fo.started}
        for model, st in fo.models.items():
            if st.out_since is not None:
                cause, detail = why.get(model, (st.cause, "still out"))
                now_true[("FleetFailover", model)] = f"{model} out ({cause}): {detail}"
        if iv.budget_used:
            r = budget.decide(budget_plan(agent), iv.budget_used, state.budget_state, now)
            if r is not None:
                # r.alerts' moments are the starts of the episodes below (alert, projected,
                # downgrade, exceeded): each reported once when it starts and once it ends
                state.budget_state, state.budget_result = r.state, r
        r = state.budget_result
        if r is not None:
            figures = f"${r.spent:.2f} of ${r.cap:.2f} {r.scope}, projected ${r.projected:.2f}"
            if r.state.alerted:  # until the period rolls over
                pct = agent.spec.budget.alert_at_percent
                now_true[("BudgetAlert", r.scope)] = f"{figures} (alertAtPercent {pct})"
            if r.state.state == "downgrade":
                now_true[("BudgetDowngrade", r.scope)] = f"{figures}: cheaper tiers fleet-wide"
            if r.state.state == "exceeded":
                now_true[("BudgetExceeded", r.scope)] = (
                    f"{figures}; overshoot ${r.spent - r.cap:.2f}: onExceeded in force"
                )
            if r.projected > r.cap and agent.spec.budget.on_projected_exceed == "alert":
                now_true[("BudgetProjected", r.scope)] = figures
        cs = agent.spec.alerts.cost_spike
        spec_ = spikes.SpikeSpec(ratio=cs.ratio, min_usd=cs.min_usd)
        by_tier: dict[str, float] = {}
        for (tier, _), usd in iv.cost.items():
            by_tier[tier] = by_tier.get(tier, 0.0) + usd
        state.spend = spikes.record(state.spend, spec_, now, iv.spend_usd, by_tier, iv.tenant_cost)
        verdict = spikes.detect(state.spend, spec_, now)
        state.spend, state.spike = verdict.history, verdict
        if verdict.spike:
            now_true[("CostSpike", "")] = verdict.message()
        day = datetime.datetime.fromtimestamp(now, datetime.UTC).date().isoformat()
        spent_day, spent = state.spent_today
        state.spent_today = (day, (spent if spent_day == day else 0.0) + iv.spend_usd)
        slo = agent.spec.slo
        p95 = iv.quantile_ms(0.95)
        if p95 is not None and p95 > slo.p95_latency_ms:
            now_true[("LatencyAboveSLO", "")] = f"p95 {p95:.0f} ms above {slo.p95_latency_ms} ms"
        rate = iv.success_rate
        if rate is not None and (1 - rate) * 100 > slo.error_rate_percent:
            now_true[("ErrorRateHigh", "")] = (
                f"{(1 - rate) * 100:.1f} % errors above {slo.error_rate_percent} %"
            )
        if out.scale is not None and out.scale.reason == "ProviderBound":
            now_true[("ProviderBound", "")] = out.scale.message
    else:
        # nothing new learnt: open episodes stay open (never ended by missing data)
        now_true = {k: "" for k in state.episodes if k[0] != "MetricsStale"}
    if fresh.stale:
        now_true[("MetricsStale", "")] = fresh.message
    state.episodes, out.changes = episodes.track(state.episodes, now_true, now)

    exclusions = failover.exclusions(tiers_of(agent), state.models, now)
    b = state.budget_result
    override = BudgetOverride()
    if b is not None and b.state.state != "normal":
        override = BudgetOverride(state=b.state.state, until=b.until)
    out.fleet = FleetOverrides(generation=0, excluded=exclusions, budget=override)
    return out


# --- status ----------------------------------------------------------------------------------


def _now_iso(now: float) -> str:
    return datetime.datetime.fromtimestamp(now, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def live_figures(state: AgentState, fresh: staleness.Freshness, pods: int) -> dict[str, Any]:
    """``status.live``: the last complete interval's figures, while they may be shown."""
    iv = state.last
    out: dict[str, Any] = {"podsRead": pods}
    if state.read_at is not None:
        out["readAt"] = _now_iso(state.read_at)
    b = state.budget_result
    if b is not None and b.scope == "daily":
        out["costTodayUSD"] = round(b.spent, 4)  # the ledger's
    elif state.spent_today[0]:
        out["costTodayUSD"] = round(state.spent_today[1], 4)
    if b is not None:
        out["burnUSDPerHour"] = round(b.burn_per_hour, 4)
        out["projectedUSD"] = round(b.projected, 4)
    if iv is None or (fresh.stale and not fresh.hold):
        return out  # absent, never zero
    figures: dict[str, Any] = {
        "p50Ms": iv.quantile_ms(0.5),
        "p95Ms": iv.quantile_ms(0.95),
        "p99Ms": iv.quantile_ms(0.99),
        "successRate": iv.success_rate,
        "cacheHitRate": iv.cache_hit_rate,
        "requestsPerSecond": iv.requests_per_second,
        "inFlight": iv.in_flight,
        "addedLatencyMs": iv.added_latency_ms,
        "cpuPerPod": iv.cpu_per_pod,
        "loopLagMs": iv.loop_lag_ms,
        "activeUsers": iv.active_users,
    }
    out.update({k: round(v, 4) for k, v in figures.items() if v is not None})
    out["routingMix"] = {k: round(v, 4) for k, v in list(iv.routing_mix.items())[:64]}
    opened = {m: sum(1 for s in v if s == 1.0) for m, v in iv.breakers.items()}
    out["breakersOpen"] = {m: n for m, n in sorted(opened.items())[:256] if n}
    return out


def conditions(
    state: AgentState, fresh: staleness.Freshness, now: str, tiers: dict[str, list[str]]
) -> list[dict[str, Any]]:
    """The autopilot's conditions, without lastTransitionTime's bookkeeping; ``tiers``
    (tier -> its chain) names the tiers a failed-over model is out of."""
    out = []
    out.append(
        ("MetricsStale", fresh.stale, fresh.reason if fresh.stale else "Fresh", fresh.message)
    )
    failing = [(k[1], m) for k, m in state.episodes.items() if k[0] == "FleetFailover"]
    exclusions = [
        f"{m} out of tier {', '.join(t for t, chain in sorted(tiers.items()) if m in chain)}"
        f" ({s.cause}) until {_now_iso(s.until)}"
        for m, s in sorted(state.models.items())
        if s.out_since is not None
    ]
    out.append(
        (
            "FailoverActive",
            bool(failing),
            "FleetFailover" if failing else "NoFailover",
            "; ".join(exclusions) or "every model in its tiers' chains",
        )
    )
    b = state.budget_result
    exceeded = b is not None and b.state.state == "exceeded"
    out.append(
        (
            "BudgetExceeded",
            exceeded,
            "BudgetExceeded" if exceeded else "WithinBudget",
            (
                f"${b.spent:.2f} of ${b.cap:.2f} {b.scope} spent (overshoot "
                f"${max(0.0, b.spent - b.cap):.2f}); projected ${b.projected:.2f}"
            )
            if b is not None
            else "no budget cap, or no spend read yet",
        )
    )
    v = state.spike
    out.append(
        (
            "CostSpike",
            bool(v and v.spike),
            "CostSpike" if v and v.spike else "NoSpike",
            v.message() if v else "no spend read yet",
        )
    )
    return [
        {"type": t, "status": "True" if on else "False", "reason": r, "message": m[:2000]}
        for t, on, r, m in out
    ]


def merge(
    previous: list[dict[str, Any]], mine: list[dict[str, Any]], now: str
) -> list[dict[str, Any]]:
    old = {c["type"]: c for c in previous}
    out = [c for c in previous if c["type"] not in AUTOPILOT_CONDITIONS]
    for c in mine:
        before = old.get(c["type"])
        since = before["lastTransitionTime"] if before and before["status"] == c["status"] else now
        out.append({**c, "lastTransitionTime": since})
    return sorted(out, key=lambda c: c["type"])


def event(
    body: dict[str, Any], reason: str, message: str, warning: bool, now: str
) -> dict[str, Any]:
    meta = body["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": API,
            "kind": KIND,
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
        },
        "type": "Warning" if warning else "Normal",
        "reason": reason,
        "message": message[:1000],
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "source": {"component": f"{MANAGED_BY}-autopilot"},
        "reportingComponent": MANAGED_BY,
    }


# --- one step (I/O) -------------------------------------------------------------------------


async def load_fleet(memo: Memo, agent: Agent) -> tuple[int, str] | None:
    """The fleet document last written (its generation only grows, across restarts too);
    raises when a ConfigMap of that name is not this agent's."""
    live = memo.cache.get(CONFIGMAP.kind, agent.namespace, fleet_name(agent.name))
    if live is None:
        return None
    if not owned(live, agent.uid):
        raise RuntimeError(f"ConfigMap {fleet_name(agent.name)} exists and is not this agent's")
    text = (live.get("data") or {}).get(contract.FLEET_FILE, "")
    try:
        doc = FleetOverrides.model_validate_json(text)
    except ValidationError:
        return (0, "")
    return doc.generation, _content(doc)


def _content(doc: FleetOverrides) -> str:
    return orjson.dumps(
        doc.model_dump(mode="json", exclude={"generation"}), option=orjson.OPT_SORT_KEYS
    ).decode()


def fleet_configmap(agent: Agent, doc: FleetOverrides) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(agent, fleet_name(agent.name), COMPONENT),
        "data": {contract.FLEET_FILE: doc.model_dump_json(by_alias=True)},
    }


async def step(shared: Shared, memo: Memo, namespace: str, name: str, state: AgentState) -> float:
    """One interval of one agent; returns the interval to wait."""
    started = time.perf_counter()
    kube = memo.kube
    body = memo.cache.get(KIND, namespace, name)  # the watch cache's copy: no API request
    if body is None or body["metadata"].get("deletionTimestamp"):
        return 10.0
    try:
        agent = agent_from(body, memo.settings)
    except ValidationError:
        return 10.0
    interval_s = float(agent.spec.autopilot.interval_seconds)
    if not agent.spec.autopilot.enabled:
        return interval_s
    if state.fleet is None:
        state.fleet = await load_fleet(memo, agent) or (0, "")
    ready, pending = await runtime_pods(memo, namespace, name)
    prometheus_url = agent.spec.autopilot.prometheus_url
    if prometheus_url:
        pods = [str(p["metadata"].get("name", "")) for p in ready]
        samples, failed = await promapi.read(shared.reader, prometheus_url, namespace, pods)
    else:
        targets = [t for p in ready if (t := pod_target(p)) is not None]
        samples, failed = await shared.reader.read(targets)
    AUTOPILOT_READS.labels("ok").inc(len(samples))
    AUTOPILOT_READS.labels("failed").inc(len(failed))
    now = float(shared.clock())
    status = body.get("status") or {}
    decided = (status.get("autopilot") or {}).get("replicas")
    # its own last decision (the HPA follows it within a sync), else the Deployment's count
    current = (
        decided if isinstance(decided, int) else int(status.get("replicas") or 0) or len(ready)
    )
    out = evaluate(agent, state, samples, len(ready), pending, current, now)
    stamp = _now_iso(now)

    # the fleet document first: it is what the pods act on
    assert out.fleet is not None
    generation, content = state.fleet
    if _content(out.fleet) != content:
        doc = out.fleet.model_copy(update={"generation": generation + 1})
        memo.cache.put(await kube.apply(fleet_configmap(agent, doc)))
        state.fleet = (generation + 1, _content(doc))

    lines = []
    for reason, message, _warning in out.one_offs:
        AUTOPILOT_DECISIONS.labels(reason, "once").inc()
        lines.append(recent.entry(now, reason, message))
    for c in out.changes:
        AUTOPILOT_DECISIONS.labels(c.key[0], "start" if c.started else "end").inc()
        what = f"{c.key[0]}{' ' + c.key[1] if c.key[1] else ''}"
        lines.append(
            recent.entry(now, c.key[0] if c.started else f"{c.key[0]}Ended", f"{what}: {c.message}")
        )

    async with memo.refreshing.hold((namespace, name)):
        fresh_body = memo.cache.get(KIND, namespace, name) or body
        previous = dict(fresh_body.get("status") or {})
        before_ap = previous.get("autopilot") or {}
        assert out.fresh is not None
        ap_status: dict[str, Any] = {
            "replicas": out.replicas if out.replicas is not None else before_ap.get("replicas"),
            "reason": out.scale.reason if out.scale else before_ap.get("reason"),
            "message": out.scale.message if out.scale else before_ap.get("message"),
            "recent": recent.push(list(before_ap.get("recent") or []), lines),
        }
        new = {
            "live": live_figures(state, out.fresh, len(samples)),
            "autopilot": ap_status,
            "conditions": merge(
                previous.get("conditions") or [],
                conditions(state, out.fresh, stamp, tiers_of(agent)),
                stamp,
            ),
        }
        if any(previous.get(k) != v for k, v in new.items()):
            memo.cache.put(await kube.patch_status(API, KIND, namespace, name, new))
        if ap_status["replicas"] != before_ap.get("replicas") and ap_status["replicas"] is not None:
            fresh_body = {**fresh_body, "status": {**previous, **new}}
            hpa = build_hpa(agent_from(fresh_body, memo.settings))
            memo.cache.put(await kube.apply(with_spec_hash(hpa)))

    for reason, message, warning in out.one_offs:
        await kube.create_event(event(body, reason, message, warning, stamp))
    for c in out.changes:
        reason = c.key[0] if c.started else f"{c.key[0]}Ended"
        await kube.create_event(
            event(body, reason, f"{c.key[1] or name}: {c.message}", c.started, stamp)
        )
    if out.changes and shared.webhook_file is not None:
        await notify(shared, namespace, name, out.changes)
    AUTOPILOT_STEP_SECONDS.observe(time.perf_counter() - started)
    return interval_s


async def notify(shared: Shared, namespace: str, name: str, changes: list[episodes.Change]) -> None:
    assert shared.webhook_file is not None
    try:
        url = shared.webhook_file.read_text().strip()
    except OSError as err:
        log.warning("alert webhook file unreadable: %s", type(err).__name__)
        return
    session = shared.reader.session()
    for c in changes:
        ok = await webhook.send(
            session, url, webhook.message(name, namespace, c, shared.runbook_base)
        )
        AUTOPILOT_WEBHOOK.labels("sent" if ok else "failed").inc()


# --- the daemon -------------------------------------------------------------------------------


async def run(
    namespace: str | None, name: str | None, memo: Memo, stopped: kopf.DaemonStopped, **_: Any
) -> None:
    """kopf daemon: the agent's autopilot until it is deleted or the operator stops."""
    assert namespace and name
    shared = memo.autopilot
    assert shared is not None
    state = AgentState()
    while not stopped:
        try:
            wait = await step(shared, memo, namespace, name, state)
        except asyncio.CancelledError:
            raise
        except Exception:
            ERRORS.labels("autopilot").inc()
            log.exception("autopilot step of %s/%s failed", namespace, name)
            wait = 10.0
        await stopped.wait(wait)


def enabled(spec: kopf.Spec, **_: Any) -> bool:
    """kopf's filter: a daemon runs only while the agent has the autopilot on."""
    return bool((spec.get("autopilot") or {}).get("enabled"))
