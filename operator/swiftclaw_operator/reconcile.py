"""Bringing an AgentDeployment's children to their desired state with server-side apply.

A child is written only when it must be: when its desired content changed (the
``swiftclaw.dev/spec-hash`` annotation differs) or when it drifted (someone changed a
field the operator sets). Children are read from the watch-fed cache (:mod:`.cache`), so
an unchanged spec costs no request at all. A child the cache lacks is created (a POST,
which fails on a taken name where an apply would take the object over); only then is the
name's holder read from the API server, to say whose it is.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from .api import AgentDeploymentSpec
from .cache import ChildCache
from .failures import NameClash, UnsupportedSpec
from .kube import FIELD_MANAGER, Kube, KubeError
from .metrics import CHILD_WRITES
from .resources import Agent, Settings, build_children, create_only_children, redis, registry
from .resources.common import SPEC_HASH
from .resources.registry import POD, STATEFULSET
from .resources.runtime import created_as

log = logging.getLogger("swiftclaw.reconcile")


def contains(live: Any, desired: Any) -> bool:
    """Does ``live`` hold everything ``desired`` sets? (Extra fields in ``live`` are fine:
    defaults, status, other managers' fields.)"""
    if isinstance(desired, dict):
        # An empty map or list that is absent live is no drift: the API server drops them.
        return isinstance(live, dict) and all(
            contains(live[k], v) if k in live else v in ({}, []) for k, v in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(live) == len(desired)
            and all(contains(a, b) for a, b in zip(live, desired, strict=True))
        )
    if isinstance(desired, (int, float)) and isinstance(live, (int, float)):
        return float(desired) == float(live)
    return bool(live == desired)


def needs_apply(desired: dict[str, Any], live: dict[str, Any] | None) -> str | None:
    """Why a child must be written, or None when it is as desired."""
    if live is None:
        return "missing"
    want = desired["metadata"]["annotations"][SPEC_HASH]
    have = (live.get("metadata", {}).get("annotations") or {}).get(SPEC_HASH)
    if have != want:
        return "changed"
    for key in ("metadata", "spec", "data"):
        if key in desired and not contains(live.get(key), desired[key]):
            return "drifted"
    return None


def created_not_applied(live: dict[str, Any]) -> bool:
    """Did the operator create ``live`` (an Update entry) and never apply it since?"""
    ours = {
        m.get("operation")
        for m in live.get("metadata", {}).get("managedFields") or []
        if m.get("manager") == FIELD_MANAGER and not m.get("subresource")
    }
    return "Update" in ours and "Apply" not in ours


MISSING_CONFIG = "CreateContainerConfigError"


def password_secret_wanted(
    agent: Agent, state: dict[str, Any] | None, pods: list[dict[str, Any]]
) -> bool:
    """Must the create-only password Secret be created (again)?

    The operator cannot read Secrets; it creates this one in the reconcile that creates
    the managed Redis, before the state StatefulSet. So: when the agent's state
    StatefulSet is not (yet) in the cache, or when a pod of the agent cannot start for
    want of its configuration (someone deleted the Secret)."""
    if agent.spec.cache.redis.mode != "managed":
        return False
    if state is None or not owned(state, agent.uid):
        return True
    return any(
        (cs.get("state", {}).get("waiting") or {}).get("reason") == MISSING_CONFIG
        for pod in pods
        for cs in (pod.get("status") or {}).get("containerStatuses") or []
    )


def unwanted_children(agent: Agent) -> list[tuple[str, str, str]]:
    """(apiVersion, kind, name) of optional children the spec no longer asks for."""
    out = []
    for child in registry.unwanted_children(agent):
        m = child.build(agent)
        out.append((m["apiVersion"], m["kind"], m["metadata"]["name"]))
    return out


@dataclass
class Outcome:
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    seconds: float = 0.0


def agent_from(body: dict[str, Any], settings: Settings) -> Agent:
    meta = body["metadata"]
    spec = AgentDeploymentSpec.model_validate(body.get("spec") or {})
    decided = ((body.get("status") or {}).get("autopilot") or {}).get("replicas")
    if not spec.autopilot.enabled or not isinstance(decided, int):
        decided = None
    return Agent(meta["name"], meta["namespace"], meta["uid"], spec, settings, decided)


def unsupported(agent: Agent) -> str | None:
    """What a valid spec asks for that this cluster cannot do (the children are built
    without it, and the agent shows Degraded with this message), or None."""
    if (
        agent.spec.scaling.target_concurrency is not None
        and not agent.settings.custom_metrics
        and not agent.spec.autopilot.enabled  # the autopilot reads in flight from the pods
    ):
        return (
            "spec.scaling.targetConcurrency needs a custom metrics adapter serving"
            " swiftclaw_requests_in_flight (then set operator.customMetrics in the chart);"
            " the HPA scales on CPU only until then, or remove the field"
        )
    return None


async def reconcile(
    kube: Kube, cache: ChildCache, agent: Agent, prune: bool = False, step_delay: float = 0.0
) -> Outcome:
    """Apply what changed or drifted; with ``prune``, delete children no longer wanted.

    ``step_delay`` pauses after each write (fault injection for tests)."""
    started = time.perf_counter()
    out = Outcome()
    ns = agent.namespace
    # Created before the pods that read it and never read back; the password is random,
    # used only if this creates it (a 409: it exists).
    state = cache.get(STATEFULSET.kind, ns, redis.instance_name(agent, "state"))
    pods = cache.list(POD.kind, ns, {"app.kubernetes.io/instance": agent.name})
    if password_secret_wanted(agent, state, pods):
        for desired in create_only_children(agent, secrets.token_hex(32)):
            if await kube.create(desired):
                CHILD_WRITES.labels(desired["kind"]).inc()
                out.written.append(f"{desired['kind']}/{desired['metadata']['name']} (created)")
    for desired in build_children(agent):
        meta = desired["metadata"]
        kind = desired["kind"]
        ref = f"{kind}/{meta['name']}"
        live = cache.get(kind, ns, meta["name"])
        if live is None:
            made = await kube.create_child(created_as(agent, desired))
            if made is not None:
                cache.put(made)
                CHILD_WRITES.labels(kind).inc()
                out.written.append(f"{ref} (created)")
                if step_delay:
                    await asyncio.sleep(step_delay)
                continue
            # The name is taken by an object the cache does not hold: whose is it?
            live = await kube.get(desired["apiVersion"], kind, ns, meta["name"])
            if live is None:
                raise KubeError(409, f"{ref} was created and deleted meanwhile; trying again")
        if not owned(live, agent.uid):
            raise NameClash(
                f"{ref} exists and is not owned by AgentDeployment {agent.name} (it has no "
                "controller owner reference to this agent's uid; labels do not make it "
                "ours): rename it or delete it"
            )
        reason = needs_apply(desired, live)
        if reason is None:
            out.unchanged.append(ref)
            continue
        if created_not_applied(live):
            await kube.adopt_for_apply(desired["apiVersion"], kind, ns, meta["name"])
        cache.put(await kube.apply(desired))
        CHILD_WRITES.labels(kind).inc()
        out.written.append(f"{ref} ({reason})")
        if step_delay:
            await asyncio.sleep(step_delay)
    if prune:
        for api_version, kind, name in unwanted_children(agent):
            live = cache.get(kind, ns, name)
            if live is None:
                continue
            if not owned(live, agent.uid):
                log.warning(
                    "%s/%s is not this agent's (no owner reference): left alone", kind, name
                )
                continue
            await kube.delete(api_version, kind, ns, name)
            cache.forget(kind, ns, name)
            out.deleted.append(f"{kind}/{name}")
    out.seconds = time.perf_counter() - started
    problem = unsupported(agent)
    if problem is not None:  # everything else is in place; Degraded says what is not
        raise UnsupportedSpec(problem)
    return out


def owned(live: dict[str, Any], uid: str) -> bool:
    """Is ``live`` the agent's with this ``uid``: its controller owner reference names it?
    Labels are not enough: anyone who can create an object can label it ours, and an
    object the operator applied over or pruned by its labels would be taken from them."""
    owners = live.get("metadata", {}).get("ownerReferences") or []
    return any(o.get("uid") == uid and o.get("controller") is True for o in owners)
