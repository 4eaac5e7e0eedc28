"""One agent's autopilot intervals end to end without I/O (``loop.evaluate``): reads that
fail keep every replica and end nothing, then clear; a model failing on the fleet lands in
the pods' fleet document; a projected budget excess downgrades the fleet; status figures
are absent, never zero, when they cannot be trusted."""

from __future__ import annotations

import dataclasses
from typing import Any

from swiftclaw_operator.autopilot import staleness
from swiftclaw_operator.autopilot.exposition import STARTED, PodSample, parse
from swiftclaw_operator.autopilot.loop import AgentState, conditions, evaluate, live_figures
from swiftclaw_operator.reconcile import agent_from
from swiftclaw_operator.resources import Settings
from swiftclaw_operator.resources.common import Agent
from swiftclaw_runtime.metrics import Metrics

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def agent(**spec: Any) -> Agent:
    body = {
        "metadata": {"name": "agent", "namespace": "team", "uid": "u1"},
        "spec": {
            "providers": [
                {"name": "sim", "type": "openai", "baseURL": "http://127.0.0.1:1"},
                {"name": "backup", "type": "openai", "baseURL": "http://127.0.0.1:2"},
            ],
            "models": {
                "tiers": [{"name": "chat", "model": "sim/fast", "fallbacks": ["backup/slow"]}]
            },
            "scaling": {"minReplicas": 2, "maxReplicas": 20, "targetConcurrency": 4},
            "autopilot": {"enabled": True, "intervalSeconds": 10},
            **spec,
        },
    }
    return agent_from(body, Settings())


def read(pods: dict[str, Metrics], at: float) -> dict[str, PodSample]:
    out = {}
    for name, m in pods.items():
        s = parse(name, at, m.render().decode())
        out[name] = dataclasses.replace(s, series={**s.series, (STARTED, ()): 1000.0})
    return out


def test_blocked_reads_hold_replicas_and_clear() -> None:
    """Six pods on target all along; reads blocked for five intervals. A short down window
    (20 s) would let a missing read, taken as zero, scale down within the gap."""
    a = agent(
        scaling={
            "minReplicas": 2,
            "maxReplicas": 20,
            "targetConcurrency": 4,
            "scaleDownWindowSeconds": 20,
        }
    )
    st = AgentState()
    pods = {f"p{i}": Metrics() for i in range(6)}
    floors, stale_changes = [], []
    now = T0
    for i in range(30):
        blocked = 10 <= i < 15  # five intervals without a read
        for m in pods.values():  # 4 in flight at 0.2 s: 20 requests a second each
            m.in_flight.set(4)
            for _ in range(200):
                m.record_request("chat", "sim/fast", "ok", False, 0.2, 1, 1)
        samples = {} if blocked else read(pods, now)
        out = evaluate(a, st, samples, 6, 0, 6, now)
        assert out.fresh is not None
        if out.replicas is not None:
            floors.append(out.replicas)
        stale_changes += [(i, c.started) for c in out.changes if c.key[0] == "MetricsStale"]
        if blocked and i >= 12:
            assert out.fresh.stale
            conds = {c["type"]: c["status"] for c in conditions(st, out.fresh, "t", {})}
            assert conds["MetricsStale"] == "True"
        now += 10
    # stale from the third blocked interval, once; cleared by the first read after
    assert stale_changes == [(12, True), (15, False)]
    assert set(floors) == {6}  # no scale-down, during the gap or after


def test_stale_figures_are_held_then_absent() -> None:
    a = agent()
    st = AgentState()
    pods = {"p0": Metrics(), "p1": Metrics()}
    now = T0
    for _ in range(3):
        for m in pods.values():
            m.record_request("chat", "sim/fast", "ok", False, 0.2, 1, 1)
        evaluate(a, st, read(pods, now), 2, 0, 2, now)
        now += 10
    held = staleness.assess(now + 30, st.read_at, 10, 300, 0, 2)
    gone = staleness.assess(now + 400, st.read_at, 10, 300, 0, 2)
    assert live_figures(st, held, 0)["p95Ms"] > 0
    figures = live_figures(st, gone, 0)
    assert "p95Ms" not in figures and "requestsPerSecond" not in figures  # absent, not zero


def test_a_failing_model_goes_into_the_fleet_document() -> None:
    a = agent()
    st = AgentState()
    pods = {f"p{i}": Metrics() for i in range(4)}
    now = T0
    docs = []
    for i in range(4):
        for j, m in enumerate(pods.values()):
            if i >= 1:
                m.breaker_state.labels("sim", "fast").set(1 if j < 2 else 0)
        out = evaluate(a, st, read(pods, now), 4, 0, 4, now)
        assert out.fleet is not None
        docs.append([(e.tier, e.model, e.cause) for e in out.fleet.excluded])
        now += 10
    assert docs[0] == [] and docs[2] == [("chat", "sim/fast", "breaker-open")]
    fresh = staleness.assess(now, now, 10, 300, 4, 4)
    cond = {c["type"]: c for c in conditions(st, fresh, "t", {"chat": ["sim/fast", "backup/slow"]})}
    assert cond["FailoverActive"]["status"] == "True"
    # the tier, the model and the cause
    assert cond["FailoverActive"]["message"].startswith("sim/fast out of tier chat (breaker-open)")


def test_a_429_wave_keeps_the_model_out_for_the_pods_retry_after() -> None:
    """Every call to sim/fast is a 429 and the pods wait out a Retry-After of 600 s: the
    fleet document keeps it out for that long, not the class's default 60 s."""
    a = agent()
    st = AgentState()
    pods = {f"p{i}": Metrics() for i in range(2)}
    for m in pods.values():
        m.track_retry_after("sim", lambda: 600.0)
    now = T0
    for _ in range(3):
        for m in pods.values():
            for _ in range(20):
                m.record_upstream("sim", "fast", "rate_limited", 0.01)
        out = evaluate(a, st, read(pods, now), 2, 0, 2, now)
        now += 10
    assert out.fleet is not None
    [ex] = out.fleet.excluded
    assert (ex.model, ex.cause) == ("sim/fast", "rate-limited")
    assert ex.until - ex.since >= 600


def test_loop_lag_scales_out_and_is_shown() -> None:
    """Two pods under target in flight, but their event loops run 200 ms late (4x the
    50 ms default): the gateway's own backlog, a scale-up, and loopLagMs in status.live."""
    a = agent()
    st = AgentState()
    pods = {f"p{i}": Metrics() for i in range(2)}
    now = T0
    for _ in range(3):
        for m in pods.values():
            m.in_flight.set(1)
            for _ in range(20):
                m.record_request("chat", "sim/fast", "ok", False, 0.2, 1, 1)
                m.loop_lag.observe(0.2)
        out = evaluate(a, st, read(pods, now), 2, 0, 2, now)
        now += 10
    assert out.scale is not None and out.scale.reason == "ScaleUp", out.scale
    assert "loop-lag" in out.scale.message and out.replicas == 6
    assert out.fresh is not None
    assert live_figures(st, out.fresh, 2)["loopLagMs"] == 200.0


def test_a_read_with_nothing_newer_is_no_interval() -> None:
    """Figures taken at their source's time (Prometheus scrapes every 30 s, the autopilot
    reads every 10 s): a read no newer than the last is no interval, never a quiet one, and
    the next newer read spans the whole time since."""
    a = agent()
    st = AgentState()
    pods = {"p0": Metrics(), "p1": Metrics()}
    evaluate(a, st, read(pods, T0), 2, 0, 2, T0)
    for m in pods.values():
        for _ in range(300):
            m.record_request("chat", "sim/fast", "ok", False, 0.2, 1, 1)
    scraped = read(pods, T0 + 30)
    rates = []
    for step in range(1, 7):  # the operator at +10, +20, ... sees Prometheus's scrape at +30
        out = evaluate(a, st, scraped if step >= 3 else read(pods, T0), 2, 0, 2, T0 + 10 * step)
        rates.append(None if st.last is None else st.last.requests_per_second)
        if step > 3:
            assert out.scale is None  # nothing new: nothing decided
    assert rates == [None, None, 20.0, 20.0, 20.0, 20.0]  # 600 requests over 30 s, once


def test_projected_excess_downgrades_the_fleet() -> None:
    a = agent(budget={"dailyUSD": 100, "onProjectedExceed": "downgrade"})
    st = AgentState()
    pods = {"p0": Metrics(), "p1": Metrics()}
    now = T0
    states = []
    for i in range(5):
        for m in pods.values():
            m.budget_used.labels("daily").set(0.1 + 0.01 * i)  # +$1 a minute... every 10 s
        out = evaluate(a, st, read(pods, now), 2, 0, 2, now)
        assert out.fleet is not None
        states.append(out.fleet.budget.state)
        now += 10
    assert states[0] == "normal" and states[-1] == "downgrade"
    assert live_figures(st, staleness.assess(now, now, 10, 300, 2, 2), 2)["costTodayUSD"] == 14.0


def test_budget_thresholds_are_episodes_each_started_once() -> None:
    a = agent(budget={"dailyUSD": 100, "alertAtPercent": 50, "onProjectedExceed": "downgrade"})
    st = AgentState()
    pods = {"p0": Metrics()}
    now = T0
    started: list[str] = []
    for i in range(12):  # $40 -> $106: the alert, the downgrade, then exceeded
        pods["p0"].budget_used.labels("daily").set(0.40 + 0.06 * i)
        out = evaluate(a, st, read(pods, now), 1, 0, 1, now)
        started += [c.key[0] for c in out.changes if c.started]
        now += 10
    assert sorted(started) == ["BudgetAlert", "BudgetDowngrade", "BudgetExceeded"]  # once each
    cond = {
        c["type"]: c for c in conditions(st, staleness.assess(now, now, 10, 300, 1, 1), "t", {})
    }
    assert cond["BudgetExceeded"]["status"] == "True"
    assert "overshoot $6.00" in cond["BudgetExceeded"]["message"]


def test_conditions_keep_their_transition_time_and_others_conditions() -> None:
    from swiftclaw_operator.autopilot.loop import merge

    ready = {"type": "Ready", "status": "True", "reason": "Available", "lastTransitionTime": "t0"}
    stale = {"type": "MetricsStale", "status": "False", "reason": "Fresh", "message": "m"}
    first = merge([ready], [stale], "t1")
    assert first == [
        {**stale, "lastTransitionTime": "t1"},
        ready,  # the status refresh's own, untouched
    ]
    same = merge(first, [{**stale, "message": "other"}], "t2")
    assert same[0]["lastTransitionTime"] == "t1"  # no transition: the time stays
    flipped = merge(first, [{**stale, "status": "True", "reason": "ScrapeFailed"}], "t3")
    assert flipped[0]["lastTransitionTime"] == "t3"
