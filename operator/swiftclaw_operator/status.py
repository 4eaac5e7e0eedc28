"""The AgentDeployment's status, computed from its children and the last reconcile (pure).

One function writes Ready, Progressing and Degraded, so they never disagree. They cover
every child: the runtime Deployment and its pods, the managed Redis StatefulSet and its
pods, the backup CronJob's last run, the HPA; and a reconcile that failed (a name clash,
an immutable field) shows as Degraded with its reason. Messages say what is wrong in
words a platform engineer can act on ("0/3 runtime pods ready: 3 in ImagePullBackOff").
FailoverActive and BudgetExceeded belong to the autopilot.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .failures import Failure, shows_degraded

OWN_CONDITIONS = ("Ready", "Progressing", "Degraded")


@dataclass(frozen=True)
class Cond:
    type: str
    status: str
    reason: str
    message: str


@dataclass(frozen=True)
class RedisInstance:
    """One managed Redis instance: its role ("cache", "state"), StatefulSet and pods."""

    role: str
    statefulset: dict[str, Any] | None
    pods: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Children:
    """What the status is computed from, as read from the API server."""

    deployment: dict[str, Any] | None
    pods: list[dict[str, Any]] = field(default_factory=list)  # the runtime's
    # The managed Redis's instances (none when the spec does not ask for one).
    redis: tuple[RedisInstance, ...] = ()
    backup: dict[str, Any] | None = None  # the backup CronJob (None: no backups)
    hpa: dict[str, Any] | None = None


@dataclass(frozen=True)
class ReconcileFailure:
    """The last reconcile failed: why, and how many times in a row."""

    failure: Failure
    attempts: int


def _deployment_condition(deployment: dict[str, Any], type_: str) -> dict[str, Any]:
    for c in deployment.get("status", {}).get("conditions", []) or []:
        if c.get("type") == type_:
            return dict(c)
    return {}


FAILING_EXCLUDES = ("ContainerCreating", "PodInitializing", "Pending", "Running")


def failing(problems: Counter[str]) -> Counter[str]:
    """Reasons that will not pass by themselves (not just starting)."""
    return Counter({r: n for r, n in problems.items() if r not in FAILING_EXCLUDES})


def redis_state(redis: RedisInstance) -> tuple[str, str] | None:
    """("Starting" | "Failing", message) while a managed Redis instance is not ready; None
    when it is."""
    what = f"Redis {redis.role}"
    sts = redis.statefulset
    if sts is None:
        return ("Starting", f"the {what} StatefulSet does not exist yet")
    desired = sts.get("spec", {}).get("replicas", 1)
    ready = sts.get("status", {}).get("readyReplicas", 0) or 0
    if ready >= desired:
        return None
    problems = pod_problems(redis.pods)
    counts = f"{ready}/{desired} {what} pods ready"
    # A Redis pod waits for its volume to be bound (a provisioner, WaitForFirstConsumer):
    # until then it is Unschedulable, which is progress here, not failure.
    broken = Counter({r: n for r, n in failing(problems).items() if r != "Unschedulable"})
    if broken:
        return ("Failing", f"{counts}: {describe(broken)}")
    return ("Starting", f"{counts}: {describe(problems)}" if problems else counts)


def backup_problem(cronjob: dict[str, Any] | None) -> str | None:
    """Why the last backup run did not succeed, or None (succeeded, running, or none yet).

    A run scheduled after the last success and no longer active has failed: the CronJob
    controller moves ``lastSuccessfulTime`` only when a Job completes. (RFC 3339 times in
    UTC compare as strings.)"""
    if cronjob is None:
        return None
    st = cronjob.get("status") or {}
    scheduled = st.get("lastScheduleTime")
    succeeded = st.get("lastSuccessfulTime")
    if not scheduled or st.get("active"):
        return None
    if succeeded and succeeded >= scheduled:
        return None
    return (
        f"the backup run scheduled at {scheduled} did not succeed; "
        f"last success: {succeeded or 'never'}"
    )


def hpa_problem(hpa: dict[str, Any] | None) -> tuple[bool, str] | None:
    """(blocking, message) when the HPA cannot scale (AbleToScale=False: blocking) or
    scaling is inactive (ScalingActive=False, e.g. no metrics yet: reported, not Degraded)."""
    if hpa is None:
        return None
    conds = {c.get("type"): c for c in (hpa.get("status") or {}).get("conditions", []) or []}
    able = conds.get("AbleToScale", {})
    if able.get("status") == "False":
        return (True, f"the HPA cannot scale ({able.get('reason')}): {able.get('message', '')}")
    active = conds.get("ScalingActive", {})
    if active.get("status") == "False":
        return (
            False,
            f"autoscaling inactive ({active.get('reason')}): {active.get('message', '')}",
        )
    return None


def pod_problems(pods: list[dict[str, Any]]) -> Counter[str]:
    """Why pods are not ready: container waiting reasons, failed scheduling, termination."""
    reasons: Counter[str] = Counter()
    for pod in pods:
        if pod.get("metadata", {}).get("deletionTimestamp"):
            continue
        status = pod.get("status", {})
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions", []) or []
        )
        if ready:
            continue
        reason = None
        for cs in status.get("containerStatuses", []) or []:
            state = cs.get("state", {})
            if "waiting" in state and state["waiting"].get("reason"):
                reason = state["waiting"]["reason"]
                break
            if "terminated" in state:
                reason = state["terminated"].get("reason") or "Terminated"
                break
        if reason is None:
            for c in status.get("conditions", []) or []:
                if c.get("type") == "PodScheduled" and c.get("status") == "False":
                    reason = c.get("reason") or "Unschedulable"
        reasons[reason or status.get("phase") or "Pending"] += 1
    return reasons


def describe(problems: Counter[str]) -> str:
    return ", ".join(f"{n} in {reason}" for reason, n in problems.most_common())


def conditions_for(
    generation: int, deployment: dict[str, Any] | None, pods: list[dict[str, Any]]
) -> list[Cond]:
    if deployment is None:
        return [
            Cond(
                "Ready", "False", "DeploymentMissing", "the runtime Deployment does not exist yet"
            ),
            Cond("Progressing", "True", "Creating", "creating the runtime Deployment"),
            Cond("Degraded", "False", "Creating", "nothing has failed"),
        ]
    st = deployment.get("status", {})
    desired = deployment.get("spec", {}).get("replicas", 1)
    ready = st.get("readyReplicas", 0) or 0
    updated = st.get("updatedReplicas", 0) or 0
    available = _deployment_condition(deployment, "Available").get("status") == "True"
    progressing = _deployment_condition(deployment, "Progressing")
    current = (st.get("observedGeneration", 0) or 0) >= deployment["metadata"].get("generation", 0)
    problems = pod_problems(pods)
    counts = f"{ready}/{desired} runtime pods ready"
    detail = f"{counts}: {describe(problems)}" if problems else counts

    if available and ready > 0:
        ready_c = Cond("Ready", "True", "Available", detail)
    elif problems:
        ready_c = Cond("Ready", "False", "PodsNotReady", detail)
    else:
        ready_c = Cond("Ready", "False", "Unavailable", detail)

    if progressing.get("reason") == "ProgressDeadlineExceeded":
        prog = Cond(
            "Progressing",
            "False",
            "ProgressDeadlineExceeded",
            f"the rollout is stuck: {progressing.get('message', '')}",
        )
    elif not current or updated < desired or (st.get("replicas", 0) or 0) > updated:
        prog = Cond("Progressing", "True", "RollingOut", f"{updated}/{desired} pods updated")
    else:
        prog = Cond("Progressing", "False", "RolloutComplete", f"{updated}/{desired} pods updated")

    if prog.reason == "ProgressDeadlineExceeded":
        degraded = Cond("Degraded", "True", "RolloutStuck", detail)
    elif failing(problems):
        degraded = Cond(
            "Degraded", "True", "PodsFailing", f"{counts}: {describe(failing(problems))}"
        )
    elif available and ready < desired and prog.status != "True":
        degraded = Cond("Degraded", "True", "BelowDesiredReplicas", detail)
    else:
        degraded = Cond("Degraded", "False", "AsExpected", detail)
    return [ready_c, prog, degraded]


def agent_conditions(
    generation: int, kids: Children, failed: ReconcileFailure | None = None
) -> list[Cond]:
    """The runtime's conditions, amended by the other children and the last reconcile.

    Degraded takes the first of: a failed reconcile, the runtime's own trouble, Redis
    failing, the HPA unable to scale, the last backup failed."""
    ready, prog, degraded = conditions_for(generation, kids.deployment, kids.pods)
    notes: list[str] = []
    redis = [state for r in kids.redis if (state := redis_state(r)) is not None]
    hpa = hpa_problem(kids.hpa)
    backup = backup_problem(kids.backup)
    notes += [message for _, message in redis]
    starting = [message for kind, message in redis if kind == "Starting"]
    broken = [message for kind, message in redis if kind == "Failing"]
    if starting and prog.status == "False" and kids.deployment is not None:
        prog = Cond("Progressing", "True", "RedisStarting", "; ".join(starting))
    if hpa is not None:
        notes.append(hpa[1])
    if backup is not None:
        notes.append(backup)
    if notes:
        ready = Cond(ready.type, ready.status, ready.reason, "; ".join([ready.message, *notes]))
    if failed is not None and shows_degraded(failed.failure, failed.attempts):
        f = failed.failure
        kind = "failed" if f.permanent else f"failed {failed.attempts} times"
        degraded = Cond("Degraded", "True", f.reason, f"reconcile {kind}: {f.message}")
    elif degraded.status == "True":
        pass
    elif broken:
        degraded = Cond("Degraded", "True", "RedisFailing", "; ".join(broken))
    elif hpa is not None and hpa[0]:
        degraded = Cond("Degraded", "True", "AutoscalingFailed", hpa[1])
    elif backup is not None:
        degraded = Cond("Degraded", "True", "BackupFailed", backup)
    return [ready, prog, degraded]


def merge_conditions(
    previous: list[dict[str, Any]], new: list[Cond], generation: int, now: str
) -> list[dict[str, Any]]:
    """New conditions keep their lastTransitionTime unless their status changed;
    conditions other controllers own (the autopilot's) are kept as they are."""
    old = {c["type"]: c for c in previous}
    out = [c for c in previous if c["type"] not in OWN_CONDITIONS]
    for c in new:
        before = old.get(c.type)
        since = before["lastTransitionTime"] if before and before["status"] == c.status else now
        out.append(
            {
                "type": c.type,
                "status": c.status,
                "reason": c.reason,
                "message": c.message,
                "lastTransitionTime": since,
                "observedGeneration": generation,
            }
        )
    return sorted(out, key=lambda c: c["type"])


def compute_status(
    body: dict[str, Any], kids: Children, now: str, failed: ReconcileFailure | None = None
) -> dict[str, Any]:
    """The whole status the operator writes (everything but the autopilot's figures)."""
    meta = body["metadata"]
    generation = int(meta.get("generation", 1))
    previous = dict(body.get("status") or {})
    st = (kids.deployment or {}).get("status", {})
    conditions = merge_conditions(
        previous.get("conditions", []) or [],
        agent_conditions(generation, kids, failed),
        generation,
        now,
    )
    out: dict[str, Any] = {
        "observedGeneration": generation,
        "conditions": conditions,
        "replicas": st.get("replicas", 0) or 0,
        "readyReplicas": st.get("readyReplicas", 0) or 0,
        "updatedReplicas": st.get("updatedReplicas", 0) or 0,
        "endpoint": f"http://{meta['name']}.{meta['namespace']}.svc/v1",
    }
    for kept in ("live", "autopilot"):  # the autopilot's own (autopilot/loop.py)
        if previous.get(kept):
            out[kept] = previous[kept]
    return out


def status_changed(previous: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    return (previous or {}) != new


# Where a new agent starts: not Ready, Progressing, not Degraded. A condition the status
# does not have yet counts as in this state (with no reason): a new agent coming up makes
# no Event until something happens (it turns Ready, or Degraded).
STARTING = {"Ready": "False", "Progressing": "True", "Degraded": "False"}


def _states(status: dict[str, Any] | None) -> dict[str, tuple[str, str | None]]:
    held = {c["type"]: c for c in (status or {}).get("conditions", []) or []}
    return {
        t: (held[t]["status"], held[t]["reason"]) if t in held else (s, None)
        for t, s in STARTING.items()
    }


def trouble(type_: str, status: str) -> bool:
    """Does a condition in this status report trouble (a Warning Event)?"""
    return (type_ == "Ready" and status == "False") or (type_ == "Degraded" and status == "True")


def transitions(previous: dict[str, Any] | None, new: dict[str, Any]) -> list[dict[str, Any]]:
    """The conditions whose change is an Event: each whose status flipped (Ready, Degraded,
    Progressing: a rollout started or ended); and, while Degraded, each reporting trouble
    whose reason changed or when Degraded itself moved (turned True, or another failure),
    so that the Events say what broke and what it does to the agent (Ready=False).

    Reasons that move while nothing is wrong (the runtime's pods Pending, then not ready,
    then ready; Progressing from RollingOut to RedisStarting) make no Event: the status
    says them, and bring-up would post one per step."""
    old, now = _states(previous), _states(new)
    degraded = now["Degraded"][0] == "True"
    moved = old["Degraded"] != now["Degraded"]
    out = []
    for c in new["conditions"]:
        t = c["type"]
        if t not in STARTING:
            continue
        flipped = old[t][0] != now[t][0]
        news = moved or old[t][1] != now[t][1]
        if flipped or (degraded and trouble(t, now[t][0]) and news):
            out.append(c)
    return out


def urgent(previous: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """Is this change written at once (it makes an Event, or says that a new spec was
    seen)? Any other change (words, counts, reasons while all is well) may wait and be
    joined by the next ones: one status write for several."""
    seen = (previous or {}).get("observedGeneration")
    return bool(transitions(previous, new)) or seen not in (None, new.get("observedGeneration"))
