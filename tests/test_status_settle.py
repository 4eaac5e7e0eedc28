"""Status writes during bring-up: the changes that make no Event (a new agent's first
status, its pods pending, then starting) wait and are joined by the next ones; the change
that makes one (Ready, Degraded, a rollout's end) is written at once and says everything
up to then. So an agent coming up is one status write and its Events, not one per step
(issue 24: a thousand agents' first reconciles within 20 API requests each)."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from swiftclaw_operator import handlers
from swiftclaw_operator.cache import ChildCache
from swiftclaw_operator.failures import NameClash, classify
from swiftclaw_operator.handlers import Memo, schedule_status
from swiftclaw_operator.resources import child_kinds
from swiftclaw_operator.resources.registry import AGENT, POD
from swiftclaw_operator.settings import OperatorConfig
from swiftclaw_operator.status import ReconcileFailure

from .test_status import deployment, pod
from .test_status_refresh import BODY, KEY, SlowKube

LABELS = {"app.kubernetes.io/instance": "agent", "app.kubernetes.io/component": "runtime"}


def memo_with(kube: SlowKube) -> Memo:
    memo = Memo(OperatorConfig())
    memo.kube = kube  # type: ignore[assignment]
    # Never started: it holds what the test puts in it.
    memo.cache = ChildCache(memo.kube, [*child_kinds(), POD], unlabelled=[AGENT])
    memo.cache.put(copy.deepcopy(BODY))
    memo.settings = memo.config.builder_settings(monitoring_available=False)
    kube.release.set()  # no write is held up here
    return memo


def runtime(replicas: int, ready: int, updated: int, rv: int) -> dict[str, Any]:
    d = deployment(replicas, ready, updated, available=ready > 0)
    d.update(apiVersion="apps/v1", kind="Deployment")
    d["metadata"] = {
        "name": "agent",
        "namespace": "team",
        "generation": 5,
        "resourceVersion": str(rv),
        "labels": dict(LABELS),
    }
    return d


def runtime_pod(n: int, rv: int, **state: Any) -> dict[str, Any]:
    p = pod(**state)
    p.update(apiVersion="v1", kind="Pod")
    p["metadata"] = {
        "name": f"agent-{n}",
        "namespace": "team",
        "resourceVersion": str(rv),
        "labels": dict(LABELS),
    }
    return p


async def until(what: str, probe: Any, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not probe():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def refreshed(memo: Memo) -> None:
    """Schedule a refresh (a child event) and wait until it has decided."""
    decided = asyncio.Event()
    real = handlers.refresh_status

    async def spy(*args: Any) -> None:
        try:
            await real(*args)
        finally:
            decided.set()

    handlers.refresh_status = spy  # type: ignore[assignment]
    try:
        schedule_status(memo, *KEY)
        await asyncio.wait_for(decided.wait(), 30)
    finally:
        handlers.refresh_status = real  # type: ignore[assignment]


async def test_bring_up_is_one_status_write(monkeypatch: Any) -> None:
    monkeypatch.setattr(handlers, "STATUS_DEBOUNCE_SECONDS", 0.0)
    monkeypatch.setattr(handlers, "STATUS_SETTLE_SECONDS", 3600.0)  # never, in this test
    kube = SlowKube()
    memo = memo_with(kube)

    # Created: no Deployment yet, then one with its pods pending, then starting.
    await refreshed(memo)
    memo.cache.put(runtime(2, 0, 0, 10))
    await refreshed(memo)
    memo.cache.put(runtime_pod(0, 11))
    memo.cache.put(runtime_pod(1, 12, waiting="ContainerCreating"))
    await refreshed(memo)
    memo.cache.put(runtime_pod(0, 13, ready=True))
    await refreshed(memo)
    assert kube.status_writes == 0 and kube.events == []
    assert KEY in memo.unwritten and KEY in memo.pending  # a write is due, later

    # Ready: written at once, with everything up to now; its Events (the rollout ended too).
    memo.cache.put(runtime(2, 2, 2, 14))
    memo.cache.put(runtime_pod(1, 15, ready=True))
    await refreshed(memo)
    assert kube.status_writes == 1
    assert sorted((e["reason"], e["type"]) for e in kube.events) == [
        ("Available", "Normal"),
        ("RolloutComplete", "Normal"),
    ]
    written = kube.body["status"]
    assert (written["readyReplicas"], written["observedGeneration"]) == (2, 1)
    ready = next(c for c in written["conditions"] if c["type"] == "Ready")
    assert ready["message"] == "2/2 runtime pods ready"
    assert memo.unwritten == {}
    await until("no wake-up left", lambda: not memo.pending and not memo.tasks)


async def test_a_change_that_waits_is_written_when_its_time_is_up(monkeypatch: Any) -> None:
    monkeypatch.setattr(handlers, "STATUS_DEBOUNCE_SECONDS", 0.0)
    monkeypatch.setattr(handlers, "STATUS_SETTLE_SECONDS", 0.2)
    kube = SlowKube()
    memo = memo_with(kube)
    schedule_status(memo, *KEY)  # a new agent's first status: nothing to announce
    await until("the first status", lambda: kube.status_writes == 1)
    assert kube.events == [] and memo.unwritten == {}
    ready = next(c for c in kube.body["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "DeploymentMissing")


async def test_a_failure_is_written_at_once_with_its_event(monkeypatch: Any) -> None:
    monkeypatch.setattr(handlers, "STATUS_DEBOUNCE_SECONDS", 0.0)
    monkeypatch.setattr(handlers, "STATUS_SETTLE_SECONDS", 3600.0)
    kube = SlowKube()
    memo = memo_with(kube)
    await refreshed(memo)
    assert kube.status_writes == 0 and KEY in memo.unwritten
    memo.failures[KEY] = (1, ReconcileFailure(classify(NameClash("ConfigMap/x exists")), 1))
    await refreshed(memo)  # comes before the wake-up an hour away, which it replaces
    assert kube.status_writes == 1
    assert sorted((e["reason"], e["type"]) for e in kube.events) == [
        ("DeploymentMissing", "Warning"),  # what the failure does to the agent
        ("NameClash", "Warning"),
    ]
    await until("no wake-up left", lambda: not memo.pending and not memo.tasks)
