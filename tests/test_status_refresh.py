"""Status refreshes of one agent never overlap: two that did would both read the old
status and both post the Event of one transition (seen as two ImmutableField Events on a
loaded machine). The interleaving is forced here with an API client that holds the first
refresh's status write until a second refresh has been scheduled and has waited its
debounce; both read the agent from the operator's cache, which the write updates."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from swiftclaw_operator import handlers
from swiftclaw_operator.cache import ChildCache
from swiftclaw_operator.failures import NameClash, classify
from swiftclaw_operator.handlers import Memo, schedule_status
from swiftclaw_operator.locks import KeyedLocks
from swiftclaw_operator.resources import child_kinds
from swiftclaw_operator.resources.registry import AGENT, POD
from swiftclaw_operator.settings import OperatorConfig
from swiftclaw_operator.status import ReconcileFailure

KEY = ("team", "agent")
BODY: dict[str, Any] = {
    "apiVersion": "swiftclaw.dev/v1alpha1",
    "kind": "AgentDeployment",
    "metadata": {
        "name": "agent",
        "namespace": "team",
        "uid": "u1",
        "generation": 1,
        "resourceVersion": "1",
    },
    "spec": {},
}


class SlowKube:
    """The API server's side of a status refresh: the first status write waits for
    ``release``, and each returns the agent as written."""

    def __init__(self) -> None:
        self.body = copy.deepcopy(BODY)
        self.events: list[dict[str, Any]] = []
        self.status_writes = 0
        self.first_write = asyncio.Event()
        self.release = asyncio.Event()

    async def patch_status(self, *args: Any) -> dict[str, Any]:
        self.status_writes += 1
        if self.status_writes == 1:
            self.first_write.set()
            await self.release.wait()
        self.body["status"] = copy.deepcopy(args[-1])
        rv = int(self.body["metadata"]["resourceVersion"]) + 1
        self.body["metadata"]["resourceVersion"] = str(rv)
        return copy.deepcopy(self.body)

    async def create_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)


async def test_overlapping_refreshes_post_one_event_per_transition(monkeypatch: Any) -> None:
    monkeypatch.setattr(handlers, "STATUS_DEBOUNCE_SECONDS", 0.0)
    memo = Memo(OperatorConfig())
    kube = SlowKube()
    memo.kube = kube  # type: ignore[assignment]
    # Never started: it holds what the test puts in it (the agent, no children).
    memo.cache = ChildCache(memo.kube, [*child_kinds(), POD], unlabelled=[AGENT])
    memo.cache.put(copy.deepcopy(BODY))
    memo.settings = memo.config.builder_settings(monitoring_available=False)
    memo.failures[KEY] = (1, ReconcileFailure(classify(NameClash("ConfigMap/x exists")), 1))

    schedule_status(memo, *KEY)
    await asyncio.wait_for(kube.first_write.wait(), 10)
    schedule_status(memo, *KEY)  # a retry's refresh, while the first one is writing
    second = memo.pending[KEY]
    await asyncio.sleep(0)  # let the second one pass its debounce and reach the lock
    kube.release.set()
    await asyncio.wait_for(asyncio.gather(*memo.tasks, return_exceptions=True), 10)
    await asyncio.wait_for(second, 10)

    assert kube.status_writes == 1  # the second refresh read the first one's status
    reasons = [e["reason"] for e in kube.events]
    assert reasons.count("NameClash") == 1, reasons
    assert len(memo.refreshing) == 0  # the lock table keeps no agent it is not working on


async def test_keyed_locks_serialise_one_key_and_forget_it_when_done() -> None:
    locks: KeyedLocks[str] = KeyedLocks()
    order: list[str] = []

    async def work(key: str, tag: str, hold: asyncio.Event | None = None) -> None:
        async with locks.hold(key):
            order.append(tag + "+")
            if hold is not None:
                await hold.wait()
            order.append(tag + "-")

    gate = asyncio.Event()
    first = asyncio.create_task(work("a", "a1", gate))
    await asyncio.sleep(0)
    waiting = asyncio.create_task(work("a", "a2"))
    other = asyncio.create_task(work("b", "b1"))
    await other  # another key is not held up
    assert order == ["a1+", "b1+", "b1-"] and len(locks) == 1
    gate.set()
    await asyncio.gather(first, waiting)
    assert order[3:] == ["a1-", "a2+", "a2-"]
    assert len(locks) == 0
    for i in range(1000):  # a thousand agents come and go: nothing is kept
        async with locks.hold(f"agent-{i}"):
            pass
    assert len(locks) == 0


async def test_events_while_every_slot_is_taken_queue_one_refresh_per_agent(
    monkeypatch: Any,
) -> None:
    """A burst (a thousand agents' pods starting) fills every status slot; the events that
    keep coming for an agent join its one waiting refresh instead of queueing more."""
    monkeypatch.setattr(handlers, "STATUS_DEBOUNCE_SECONDS", 0.01)
    monkeypatch.setattr(handlers, "STATUS_SETTLE_SECONDS", 0.0)  # the first status, at once
    memo = Memo(OperatorConfig())
    kube = SlowKube()
    memo.kube = kube  # type: ignore[assignment]
    memo.cache = ChildCache(memo.kube, [*child_kinds(), POD], unlabelled=[AGENT])
    memo.cache.put(copy.deepcopy(BODY))
    memo.settings = memo.config.builder_settings(monitoring_available=False)
    for _ in range(handlers.STATUS_CONCURRENCY):
        await memo.status_slots.acquire()  # every slot busy with other agents
    for _ in range(200):
        schedule_status(memo, *KEY)
        await asyncio.sleep(0.005)  # events keep coming, past the debounce
    assert len(memo.tasks) == 1, len(memo.tasks)
    kube.release.set()
    for _ in range(handlers.STATUS_CONCURRENCY):
        memo.status_slots.release()
    await asyncio.wait_for(asyncio.gather(*memo.tasks), 10)
    assert kube.status_writes == 1 and not memo.pending
