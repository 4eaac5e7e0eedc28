"""kopf wiring: thin handlers that call the pure builders, the reconciler and the status.

No finalizer: every child lives in the cluster and carries an owner reference, so the
garbage collector removes them with the AgentDeployment; nothing outside the cluster
needs cleaning up. (kopf adds a finalizer only for deletion handlers; there are none.)
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import time
from typing import Any

import kopf

from .api import API_GROUP, API_VERSION, KIND, PLURAL
from .kube import Credentials, Kube
from .metrics import ERRORS, RECONCILE_SECONDS, RECONCILES, serve_metrics
from .reconcile import agent_from, reconcile
from .resources import Settings
from .resources.common import MANAGED_BY
from .resources.registry import DEPLOYMENT, MONITORING_API, POD
from .status import compute_status, status_changed, transitions

log = logging.getLogger("swiftclaw.operator")

DRIFT_SECONDS = float(os.environ.get("SWIFTCLAW_DRIFT_SECONDS", "300"))
STATUS_DEBOUNCE_SECONDS = 0.3
MANAGED = {"app.kubernetes.io/managed-by": MANAGED_BY}


class State:
    """Process-wide: the API client, settings, and pending status refreshes."""

    kube: Kube
    settings: Settings
    pending: dict[tuple[str, str], asyncio.Task[None]]


STATE = State()


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    c = Credentials.load()
    return kopf.ConnectionInfo(
        server=c.server,
        ca_path=c.ca_path,
        certificate_path=c.cert_path,
        private_key_path=c.key_path,
        token=c.token,
        insecure=c.insecure,
    )


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    # kopf's bookkeeping in annotations under our own prefix; no kopf events, no status.kopf.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=API_GROUP, key="last-handled-configuration"
    )
    settings.posting.enabled = False
    settings.peering.name = os.environ.get("SWIFTCLAW_PEERING", "swiftclaw")
    settings.peering.mandatory = False
    settings.peering.lifetime = int(os.environ.get("SWIFTCLAW_PEERING_LIFETIME", "60"))
    settings.watching.server_timeout = 300
    settings.batching.worker_limit = int(os.environ.get("SWIFTCLAW_WORKERS", "64"))
    STATE.kube = Kube(Credentials.load())
    monitoring = await STATE.kube.has_group_version(MONITORING_API)
    STATE.settings = Settings.from_env(monitoring_available=monitoring)
    STATE.pending = {}
    port = int(os.environ.get("SWIFTCLAW_METRICS_PORT", "0") or 0)
    if port:
        serve_metrics(port)
    log.info(
        "operator started; Prometheus operator CRDs %s",
        "found" if monitoring else "absent: no ServiceMonitor/PrometheusRule",
    )


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    await STATE.kube.close()


async def _reconcile(body: kopf.Body, trigger: str, prune: bool = False) -> None:
    if body.metadata.get("deletionTimestamp"):
        return  # being deleted: the garbage collector takes the children
    started = time.perf_counter()
    try:
        agent = agent_from(dict(body), STATE.settings)
        outcome = await reconcile(STATE.kube, agent, prune=prune)
    except Exception as err:
        RECONCILES.labels(trigger, "error").inc()
        ERRORS.labels(type(err).__name__).inc()
        raise kopf.TemporaryError(f"reconcile failed: {err}", delay=10) from err
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
    schedule_status(agent.namespace, agent.name)


@kopf.on.create(API_GROUP, API_VERSION, PLURAL)
async def on_create(body: kopf.Body, **_: Any) -> None:
    await _reconcile(body, "create")


@kopf.on.update(API_GROUP, API_VERSION, PLURAL, field="spec")
async def on_update(body: kopf.Body, **_: Any) -> None:
    await _reconcile(body, "update", prune=True)


@kopf.on.resume(API_GROUP, API_VERSION, PLURAL)
async def on_resume(body: kopf.Body, **_: Any) -> None:
    await _reconcile(body, "resume", prune=True)


@kopf.timer(
    API_GROUP,
    API_VERSION,
    PLURAL,
    interval=DRIFT_SECONDS,
    initial_delay=DRIFT_SECONDS,
    idle=DRIFT_SECONDS,
)
async def drift_check(body: kopf.Body, **_: Any) -> None:
    await _reconcile(body, "drift")


# --- status: recomputed whenever the runtime Deployment or its pods change --------------


def _owner_name(meta: kopf.Meta) -> str | None:
    return (meta.get("labels") or {}).get("app.kubernetes.io/instance")


@kopf.on.event(DEPLOYMENT.group, DEPLOYMENT.version, DEPLOYMENT.plural, labels=MANAGED)
async def deployment_changed(meta: kopf.Meta, namespace: str | None, **_: Any) -> None:
    name = _owner_name(meta)
    if name and namespace:
        schedule_status(namespace, name)


@kopf.on.event(
    POD.group, POD.version, POD.plural, labels={**MANAGED, "app.kubernetes.io/component": "runtime"}
)
async def pod_changed(meta: kopf.Meta, namespace: str | None, **_: Any) -> None:
    name = _owner_name(meta)
    if name and namespace:
        schedule_status(namespace, name)


def schedule_status(namespace: str, name: str) -> None:
    """Coalesce bursts of child events into one status refresh per agent."""
    key = (namespace, name)
    if key in STATE.pending:
        return
    STATE.pending[key] = asyncio.get_running_loop().create_task(_refresh_later(key))


async def _refresh_later(key: tuple[str, str]) -> None:
    try:
        await asyncio.sleep(STATUS_DEBOUNCE_SECONDS)
    finally:
        # From here on, a new event schedules a new refresh (this one may read too early).
        STATE.pending.pop(key, None)
    try:
        await refresh_status(*key)
    except Exception:
        ERRORS.labels("status").inc()
        log.exception("status refresh of %s/%s failed", *key)


async def refresh_status(namespace: str, name: str) -> None:
    kube = STATE.kube
    body = await kube.get(f"{API_GROUP}/{API_VERSION}", KIND, namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return
    deployment = await kube.get("apps/v1", "Deployment", namespace, name)
    pods = await kube.list(
        "v1",
        "Pod",
        namespace,
        f"app.kubernetes.io/instance={name},app.kubernetes.io/component=runtime,"
        f"app.kubernetes.io/managed-by={MANAGED_BY}",
    )
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    new = compute_status(body, deployment, pods, now)
    previous = body.get("status")
    if not status_changed(previous, new):
        return
    await kube.patch_status(f"{API_GROUP}/{API_VERSION}", KIND, namespace, name, new)
    for cond in transitions(previous, new):
        await kube.create_event(event_for(body, cond, now))


def event_for(body: dict[str, Any], cond: dict[str, Any], now: str) -> dict[str, Any]:
    meta = body["metadata"]
    bad = (cond["type"] == "Ready" and cond["status"] == "False") or (
        cond["type"] == "Degraded" and cond["status"] == "True"
    )
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
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
