"""kopf wiring: thin handlers that call the pure builders, the reconciler and the status.

No finalizer: every child lives in the cluster and carries an owner reference, so the
garbage collector removes them with the AgentDeployment; nothing outside the cluster
needs cleaning up. (kopf adds a finalizer only for deletion handlers; there are none.)

A failed reconcile is never handed back to kopf: it is classified (:mod:`.failures`),
shown in the status (Degraded with the reason; the status change makes one Event) and
retried by this module after an exponential back-off. kopf would retry on a fixed
delay and post an Event per attempt.

Reconciles and status refreshes read the children and the agents from the watch-fed
:class:`~.cache.ChildCache`, filled before any handler runs (startup waits for it); a
change to a child the status looks at schedules a refresh of its agent's status, written
at once when it makes an Event (:func:`.status.urgent`), else together with the changes
that follow within STATUS_SETTLE_SECONDS.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import kopf
from pydantic import ValidationError

from .api import API_GROUP, API_VERSION, KIND, PLURAL
from .autopilot import loop as autopilot_loop
from .autopilot.loop import Shared
from .autopilot.scraper import Reader
from .cache import KOPF_DIFFBASE_KEY, ChildCache
from .failures import classify, retry_delay
from .kube import Auth, Kube
from .locks import KeyedLocks
from .metrics import (
    ERRORS,
    RECONCILE_SECONDS,
    RECONCILES,
    RETRY_DELAY,
    STATUS_UNWRITTEN,
    serve_metrics,
)
from .reconcile import agent_from, reconcile
from .resources import Settings, child_kinds, redis
from .resources.common import MANAGED_BY
from .resources.registry import (
    AGENT,
    CRONJOB,
    DEPLOYMENT,
    HPA,
    MONITORING_API,
    POD,
    STATEFULSET,
)
from .settings import OperatorConfig
from .status import (
    Children,
    ReconcileFailure,
    RedisInstance,
    compute_status,
    status_changed,
    transitions,
    trouble,
    urgent,
)

log = logging.getLogger("swiftclaw.operator")

# Child events within this long of the first make one status refresh (a pod's start is
# several events in a second or two: one patch, not one per event).
STATUS_DEBOUNCE_SECONDS = 1.0
# A status change that makes no Event (words, counts, a reason while all is well) waits up
# to this long, joined by every later one: bring-up moves them every few seconds (pods
# pending, starting, ready; the Redis instances; the HPA's first reading), one write for
# all of them. A change that makes an Event (Ready, Degraded) is written at once.
STATUS_SETTLE_SECONDS = 20.0
# Status refreshes under way at once: a burst of a thousand agents queues here (at most
# one refresh waiting per agent), not in a thousand concurrent requests in front of the
# watches' events.
STATUS_CONCURRENCY = 16
AGENT_API = f"{API_GROUP}/{API_VERSION}"
# The children whose changes move an agent's status.
STATUS_KINDS = frozenset(k.kind for k in (DEPLOYMENT, POD, STATEFULSET, HPA, CRONJOB))
INSTANCE = "app.kubernetes.io/instance"

Key = tuple[str, str]  # (namespace, name)


@dataclass
class Memo:
    """The operator's state, kept in kopf's memo: settings, the API client, pending work.

    kopf hands each handler a shallow copy, so the containers are shared; ``kube`` and
    ``settings`` are set once by :func:`startup`, before any resource handler runs."""

    config: OperatorConfig
    kube: Kube = field(init=False)
    cache: ChildCache = field(init=False)
    settings: Settings = field(init=False)
    status_slots: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(STATUS_CONCURRENCY)
    )
    # Coalesced status refreshes, by agent, and when each is due (the loop's clock).
    pending: dict[Key, asyncio.Task[None]] = field(default_factory=dict)
    due: dict[Key, float] = field(default_factory=dict)
    # Agents whose status has changed in ways not written yet (none urgent), since when.
    unwritten: dict[Key, float] = field(default_factory=dict)
    # Scheduled retries of failed reconciles, and the failures, by agent (with the
    # generation they failed at: a spec change starts the back-off again).
    retries: dict[Key, asyncio.Task[None]] = field(default_factory=dict)
    failures: dict[Key, tuple[int, ReconcileFailure]] = field(default_factory=dict)
    # One reconcile of an agent at a time (kopf's handlers and this module's retries), and
    # one status refresh: two refreshes that overlap would both read the old status and
    # both post the Event of one transition.
    reconciling: KeyedLocks[Key] = field(default_factory=KeyedLocks)
    refreshing: KeyedLocks[Key] = field(default_factory=KeyedLocks)
    # The token kopf was last given (login handlers run with this memo, not a copy).
    kopf_token: str | None = None
    # Every background task (refreshes, retries), so that cleanup can end them first.
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    # What the agents' autopilot loops share (autopilot/loop.py); set by startup.
    autopilot: Shared | None = None

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task


# --- activities ---------------------------------------------------------------------------


async def startup(settings: kopf.OperatorSettings, memo: Memo, **_: Any) -> None:
    config = memo.config
    # kopf's bookkeeping in annotations under our own prefix, no status.kopf.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=API_GROUP, key=KOPF_DIFFBASE_KEY
    )
    # kopf's own Events for what goes wrong in it; ours say what happens to the agent.
    settings.posting.enabled = True
    settings.posting.level = logging.WARNING
    settings.peering.name = config.peering
    settings.peering.mandatory = False
    settings.peering.lifetime = config.peering_lifetime
    settings.watching.server_timeout = 300
    settings.queueing.worker_limit = config.workers
    memo.kube = Kube(await Auth.load(config.service_account_dir))
    monitoring = await memo.kube.has_group_version(MONITORING_API)
    memo.settings = config.builder_settings(monitoring_available=monitoring)
    memo.autopilot = Shared(Reader(), config.runbook_base_url, config.alert_webhook_file)
    kinds = [k for k in child_kinds() if k.requires is None or monitoring] + [POD]
    memo.cache = ChildCache(memo.kube, kinds, config.namespaces, unlabelled=[AGENT])
    memo.cache.listeners.append(lambda kind, ns, agent: child_changed(memo, kind, ns, agent))
    memo.cache.start()
    await memo.cache.wait_synced()  # kopf starts the resource handlers after this
    if config.metrics_port:
        serve_metrics(config.metrics_port)
    log.info(
        "operator started; Prometheus operator CRDs %s",
        "found" if monitoring else "absent: no ServiceMonitor/PrometheusRule",
    )


async def login(memo: Memo, **_: Any) -> kopf.ConnectionInfo:
    """kopf's watches use the operator's credentials, renewed when kopf asks again (at
    ``expiration`` for exec-plugin tokens, or after a 401)."""
    auth = memo.kube.auth
    await auth.refresh()
    if memo.kopf_token is not None and auth.login().token == memo.kopf_token:
        # kopf asks again (a 401) for what it has: renew now, whatever the expiry says.
        await auth.refresh(force=True)
    c = auth.login()
    memo.kopf_token = c.token
    return kopf.ConnectionInfo(
        server=c.server,
        ca_path=c.ca_path,
        certificate_path=c.cert_path,
        private_key_path=c.key_path,
        scheme=c.scheme,
        token=c.token,
        insecure=c.insecure,
        expiration=c.expiration,
    )


async def cleanup(memo: Memo, **_: Any) -> None:
    tasks = list(memo.tasks)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if memo.autopilot is not None:
        await memo.autopilot.reader.close()
    await memo.cache.stop()
    await memo.kube.close()


# --- reconciles -----------------------------------------------------------------------------


def _key(body: dict[str, Any]) -> Key:
    return (body["metadata"]["namespace"], body["metadata"]["name"])


async def _reconcile(memo: Memo, body: dict[str, Any], trigger: str, prune: bool) -> None:
    if body["metadata"].get("deletionTimestamp"):
        return  # being deleted: the garbage collector takes the children
    key = _key(body)
    pending = memo.retries.pop(key, None)
    if pending is not None:
        pending.cancel()  # this attempt replaces the scheduled one
    async with memo.reconciling.hold(key):
        await _reconcile_locked(memo, key, body, trigger, prune)


async def _reconcile_locked(
    memo: Memo, key: Key, body: dict[str, Any], trigger: str, prune: bool
) -> None:
    started = time.perf_counter()
    try:
        agent = agent_from(body, memo.settings)
        outcome = await reconcile(
            memo.kube,
            memo.cache,
            agent,
            prune=prune,
            step_delay=memo.config.reconcile_step_delay,
        )
    except Exception as err:
        _failed(memo, key, int(body["metadata"].get("generation", 0)), trigger, err)
        schedule_status(memo, *key)
        return
    memo.failures.pop(key, None)
    RECONCILES.labels(trigger, "ok").inc()
    RECONCILE_SECONDS.labels(trigger).observe(time.perf_counter() - started)
    if outcome.written or outcome.deleted:
        log.info(
            "%s/%s %s: wrote %s; deleted %s",
            agent.namespace,
            agent.name,
            trigger,
            ", ".join(outcome.written) or "nothing",
            ", ".join(outcome.deleted) or "nothing",
        )
    schedule_status(memo, *key)


def _failed(memo: Memo, key: Key, generation: int, trigger: str, err: BaseException) -> None:
    """Record a failed reconcile and schedule its retry after the back-off."""
    failure = classify(err)
    before = memo.failures.get(key)
    attempts = before[1].attempts + 1 if before and before[0] == generation else 1
    memo.failures[key] = (generation, ReconcileFailure(failure, attempts))
    kind = "permanent" if failure.permanent else "transient"
    delay = retry_delay(attempts, memo.config.retry_base_seconds, memo.config.retry_max_seconds)
    RECONCILES.labels(trigger, kind).inc()
    ERRORS.labels(failure.reason).inc()
    RETRY_DELAY.labels(kind).observe(delay)
    if failure.reason == "InternalError":
        log.error("%s/%s reconcile failed", *key, exc_info=err)
    log.warning(
        "%s/%s %s failed (%s %s, attempt %d): %s; retrying in %.0fs",
        *key,
        trigger,
        kind,
        failure.reason,
        attempts,
        failure.message,
        delay,
    )
    memo.retries[key] = memo.spawn(_retry_later(memo, key, delay))


async def _retry_later(memo: Memo, key: Key, delay: float) -> None:
    await asyncio.sleep(delay)
    memo.retries.pop(key, None)  # from here on, a new attempt may schedule the next one
    # The spec is read under the lock: a handler that ran meanwhile may have applied a newer one.
    async with memo.reconciling.hold(key):
        body = memo.cache.get(KIND, *key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            memo.failures.pop(key, None)
            return
        await _reconcile_locked(memo, key, body, "retry", prune=True)


async def on_create(body: kopf.Body, memo: Memo, **_: Any) -> None:
    await _reconcile(memo, dict(body), "create", prune=False)


async def on_update(body: kopf.Body, memo: Memo, **_: Any) -> None:
    await _reconcile(memo, dict(body), "update", prune=True)


async def on_resume(body: kopf.Body, memo: Memo, **_: Any) -> None:
    await _reconcile(memo, dict(body), "resume", prune=True)


async def drift_check(body: kopf.Body, memo: Memo, **_: Any) -> None:
    """Repair drift, refresh the status (the CronJob's last run, the HPA). A failed agent
    waits for its back-off instead."""
    key = _key(dict(body))
    # Failed: its retries own it (one may be under way, out of ``retries`` while it runs;
    # a drift reconcile then would be an attempt outside the back-off).
    if key in memo.retries or key in memo.failures:
        schedule_status(memo, *key)
        return
    await _reconcile(memo, dict(body), "drift", prune=False)


# --- status: recomputed whenever a child Deployment or pod changes, and on each drift check --


def child_changed(memo: Memo, kind: str, namespace: str, name: str | None) -> None:
    """The cache saw a child of agent ``name`` change (or go): its status may have moved."""
    if name and kind in STATUS_KINDS:
        schedule_status(memo, namespace, name)


def schedule_status(memo: Memo, namespace: str, name: str, delay: float | None = None) -> None:
    """Coalesce bursts of child events into one status refresh per agent: a refresh asked
    for joins the pending one, or replaces it if it would come sooner (a settling status
    waits long; a child event comes in after the debounce)."""
    key = (namespace, name)
    wait = STATUS_DEBOUNCE_SECONDS if delay is None else delay
    due = asyncio.get_running_loop().time() + wait
    pending = memo.pending.get(key)
    if pending is not None:
        if memo.due.get(key, 0.0) <= due:
            return
        pending.cancel()  # still waiting (a refresh under way is no longer pending)
    memo.due[key] = due
    memo.pending[key] = memo.spawn(_refresh_later(memo, key, wait))


async def _refresh_later(memo: Memo, key: Key, delay: float) -> None:
    """One refresh, which every event of the agent joins until it has a slot: a queue of
    at most one waiting refresh per agent, however many events come meanwhile."""
    me = asyncio.current_task()
    try:
        await asyncio.sleep(delay)
        async with memo.status_slots:
            # From here on, a new event schedules a new refresh (this one may read too early).
            _done_pending(memo, key, me)
            async with memo.refreshing.hold(key):
                await refresh_status(memo, *key)
    except Exception:
        ERRORS.labels("status").inc()
        log.exception("status refresh of %s/%s failed", *key)
    finally:
        _done_pending(memo, key, me)


def _done_pending(memo: Memo, key: Key, task: asyncio.Task[Any] | None) -> None:
    if memo.pending.get(key) is task:
        del memo.pending[key]
        memo.due.pop(key, None)


def _written(memo: Memo, key: Key) -> None:
    """The agent's status says all there is (written, unchanged, or the agent is gone)."""
    if memo.unwritten.pop(key, None) is not None:
        STATUS_UNWRITTEN.set(len(memo.unwritten))


def read_children(cache: ChildCache, body: dict[str, Any], settings: Settings) -> Children:
    """Every child the status looks at, from the cache."""
    namespace, name = _key(body)
    deployment = cache.get(DEPLOYMENT.kind, namespace, name)
    pods = cache.list(POD.kind, namespace, {INSTANCE: name})
    by_component: dict[str, list[dict[str, Any]]] = {}
    for pod in pods:
        component = (pod["metadata"].get("labels") or {}).get("app.kubernetes.io/component", "")
        by_component.setdefault(component, []).append(pod)
    hpa = cache.get(HPA.kind, namespace, name)
    runtime_pods = by_component.get("runtime", [])
    try:
        agent = agent_from(body, settings)
    except ValidationError:
        return Children(deployment, runtime_pods, hpa=hpa)
    if agent.spec.cache.redis.mode != "managed":
        return Children(deployment, runtime_pods, hpa=hpa)
    instances = tuple(
        RedisInstance(
            role,
            cache.get(STATEFULSET.kind, namespace, redis.instance_name(agent, role)),
            by_component.get(redis.component(role), []),
        )
        for role in redis.ROLES
    )
    backup = None
    if agent.spec.cache.redis.backup is not None:
        backup = cache.get(CRONJOB.kind, namespace, redis.backup_name(agent))
    return Children(deployment, runtime_pods, redis=instances, backup=backup, hpa=hpa)


async def refresh_status(memo: Memo, namespace: str, name: str) -> None:
    """Write the status if it changed: at once when the change is urgent (an Event, a new
    generation seen), else once the first unwritten change has waited
    STATUS_SETTLE_SECONDS (the write then says everything up to now: one patch, whatever
    number of child events led here). The agent as the patch returned it goes into the
    cache at once."""
    key = (namespace, name)
    body = memo.cache.get(KIND, namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        _written(memo, key)
        return
    kids = read_children(memo.cache, body, memo.settings)
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    failed = memo.failures.get(key)
    new = compute_status(body, kids, now, failed[1] if failed else None)
    previous = body.get("status")
    if not status_changed(previous, new):
        _written(memo, key)
        return
    if not urgent(previous, new):
        clock = asyncio.get_running_loop().time()
        since = memo.unwritten.setdefault(key, clock)
        STATUS_UNWRITTEN.set(len(memo.unwritten))
        if clock - since < STATUS_SETTLE_SECONDS:
            schedule_status(memo, namespace, name, since + STATUS_SETTLE_SECONDS - clock)
            return
    memo.cache.put(await memo.kube.patch_status(AGENT_API, KIND, namespace, name, new))
    _written(memo, key)
    for cond in transitions(previous, new):
        await memo.kube.create_event(event_for(body, cond, now))


def event_for(body: dict[str, Any], cond: dict[str, Any], now: str) -> dict[str, Any]:
    meta = body["metadata"]
    bad = trouble(cond["type"], cond["status"])
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": AGENT_API,
            "kind": KIND,
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": "Warning" if bad else "Normal",
        "reason": cond["reason"],
        "message": f"{cond['type']}={cond['status']}: {cond['message']}",
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "source": {"component": MANAGED_BY},
        "reportingComponent": MANAGED_BY,
    }


# --- registration ---------------------------------------------------------------------------


def registry(config: OperatorConfig) -> kopf.OperatorRegistry:
    """Every handler, on a registry of its own (the drift interval comes from ``config``)."""
    reg = kopf.OperatorRegistry()
    kopf.on.startup(registry=reg)(startup)
    kopf.on.login(registry=reg)(login)
    kopf.on.cleanup(registry=reg)(cleanup)
    kopf.on.create(API_GROUP, API_VERSION, PLURAL, registry=reg)(on_create)
    kopf.on.update(API_GROUP, API_VERSION, PLURAL, field="spec", registry=reg)(on_update)
    kopf.on.resume(API_GROUP, API_VERSION, PLURAL, registry=reg)(on_resume)
    drift = config.drift_seconds
    kopf.timer(
        API_GROUP,
        API_VERSION,
        PLURAL,
        interval=drift,
        initial_delay=drift,
        idle=drift,
        registry=reg,
    )(drift_check)
    kopf.daemon(
        API_GROUP,
        API_VERSION,
        PLURAL,
        id="autopilot",
        when=autopilot_loop.enabled,
        cancellation_timeout=5.0,
        registry=reg,
    )(autopilot_loop.run)
    return reg
