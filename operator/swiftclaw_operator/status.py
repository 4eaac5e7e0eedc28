"""The AgentDeployment's status, computed from its Deployment and pods (a pure function).

One function writes Ready, Progressing and Degraded, so they never disagree. Messages
say what is wrong in words a platform engineer can act on ("0/3 runtime pods ready:
3 in ImagePullBackOff"). FailoverActive and BudgetExceeded belong to the autopilot.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

OWN_CONDITIONS = ("Ready", "Progressing", "Degraded")


@dataclass(frozen=True)
class Cond:
    type: str
    status: str
    reason: str
    message: str


def _deployment_condition(deployment: dict[str, Any], type_: str) -> dict[str, Any]:
    for c in deployment.get("status", {}).get("conditions", []) or []:
        if c.get("type") == type_:
            return dict(c)
    return {}


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

    failing = {
        r: n
        for r, n in problems.items()
        if r not in ("ContainerCreating", "PodInitializing", "Pending", "Running")
    }
    if prog.reason == "ProgressDeadlineExceeded":
        degraded = Cond("Degraded", "True", "RolloutStuck", detail)
    elif failing:
        degraded = Cond(
            "Degraded", "True", "PodsFailing", f"{counts}: {describe(Counter(failing))}"
        )
    elif available and ready < desired and prog.status != "True":
        degraded = Cond("Degraded", "True", "BelowDesiredReplicas", detail)
    else:
        degraded = Cond("Degraded", "False", "AsExpected", detail)
    return [ready_c, prog, degraded]


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
    body: dict[str, Any], deployment: dict[str, Any] | None, pods: list[dict[str, Any]], now: str
) -> dict[str, Any]:
    """The whole status the operator writes (everything but the autopilot's figures)."""
    meta = body["metadata"]
    generation = int(meta.get("generation", 1))
    previous = dict(body.get("status") or {})
    st = (deployment or {}).get("status", {})
    conditions = merge_conditions(
        previous.get("conditions", []) or [],
        conditions_for(generation, deployment, pods),
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
    if previous.get("live"):
        out["live"] = previous["live"]
    return out


def status_changed(previous: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    return (previous or {}) != new


def transitions(previous: dict[str, Any] | None, new: dict[str, Any]) -> list[dict[str, Any]]:
    """Conditions whose status or reason changed: each becomes an Event."""
    old = {c["type"]: c for c in (previous or {}).get("conditions", []) or []}
    return [
        c
        for c in new["conditions"]
        if c["type"] in OWN_CONDITIONS
        and (old.get(c["type"], {}).get("status"), old.get(c["type"], {}).get("reason"))
        != (c["status"], c["reason"])
    ]
