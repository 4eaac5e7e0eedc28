"""Status from the Deployment and pods: conditions, words a person can act on, events."""

from __future__ import annotations

from typing import Any

from swiftclaw_operator.handlers import event_for
from swiftclaw_operator.status import compute_status, conditions_for, pod_problems, transitions

BODY = {"metadata": {"name": "agent", "namespace": "team", "uid": "u1", "generation": 3}}


def deployment(
    replicas: int,
    ready: int,
    updated: int | None = None,
    available: bool = True,
    progressing_reason: str = "NewReplicaSetAvailable",
) -> dict[str, Any]:
    return {
        "metadata": {"generation": 5},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": 5,
            "replicas": replicas,
            "readyReplicas": ready,
            "updatedReplicas": replicas if updated is None else updated,
            "conditions": [
                {"type": "Available", "status": "True" if available else "False"},
                {
                    "type": "Progressing",
                    "status": "True",
                    "reason": progressing_reason,
                    "message": "ReplicaSet agent-1 has timed out progressing.",
                },
            ],
        },
    }


def pod(waiting: str | None = None, ready: bool = False, unschedulable: bool = False) -> dict:
    status: dict[str, Any] = {"phase": "Pending" if not ready else "Running", "conditions": []}
    if ready:
        status["conditions"].append({"type": "Ready", "status": "True"})
    if waiting:
        status["containerStatuses"] = [{"state": {"waiting": {"reason": waiting}}}]
    if unschedulable:
        status["conditions"].append(
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}
        )
    return {"metadata": {"name": "p"}, "status": status}


def by_type(conds: list) -> dict[str, Any]:
    return {c.type: c for c in conds}


def test_image_pull_backoff_is_said_in_words() -> None:
    c = by_type(conditions_for(3, deployment(3, 0, available=False), [pod("ImagePullBackOff")] * 3))
    assert (c["Ready"].status, c["Ready"].reason) == ("False", "PodsNotReady")
    assert c["Ready"].message == "0/3 runtime pods ready: 3 in ImagePullBackOff"
    assert (c["Degraded"].status, c["Degraded"].reason) == ("True", "PodsFailing")


def test_mixed_problems_and_unschedulable() -> None:
    problems = pod_problems(
        [pod("CrashLoopBackOff"), pod(unschedulable=True), pod(ready=True), pod("CrashLoopBackOff")]
    )
    assert problems == {"CrashLoopBackOff": 2, "Unschedulable": 1}


def test_available_deployment_is_ready_and_not_degraded() -> None:
    c = by_type(conditions_for(3, deployment(2, 2), [pod(ready=True)] * 2))
    assert (c["Ready"].status, c["Ready"].message) == ("True", "2/2 runtime pods ready")
    assert (c["Progressing"].status, c["Progressing"].reason) == ("False", "RolloutComplete")
    assert c["Degraded"].status == "False"


def test_rollout_in_progress_and_stuck() -> None:
    c = by_type(conditions_for(3, deployment(3, 3, updated=1), [pod(ready=True)] * 3))
    assert (c["Progressing"].status, c["Progressing"].reason) == ("True", "RollingOut")
    stuck = by_type(
        conditions_for(
            3,
            deployment(3, 1, updated=1, progressing_reason="ProgressDeadlineExceeded"),
            [pod(ready=True)],
        )
    )
    assert stuck["Progressing"].reason == "ProgressDeadlineExceeded"
    assert (stuck["Degraded"].status, stuck["Degraded"].reason) == ("True", "RolloutStuck")


def test_missing_deployment() -> None:
    c = by_type(conditions_for(1, None, []))
    assert (c["Ready"].status, c["Ready"].reason) == ("False", "DeploymentMissing")


def test_status_keeps_transition_times_and_autopilot_conditions() -> None:
    first = compute_status(BODY, deployment(2, 2), [pod(ready=True)] * 2, "T1")
    assert first["observedGeneration"] == 3
    assert first["endpoint"] == "http://agent.team.svc/v1"
    assert all(
        c["lastTransitionTime"] == "T1" and c["observedGeneration"] == 3
        for c in first["conditions"]
    )
    autopilot = {
        "type": "FailoverActive",
        "status": "False",
        "reason": "AllPrimary",
        "message": "",
        "lastTransitionTime": "T0",
    }
    body = {**BODY, "status": {**first, "conditions": [*first["conditions"], autopilot]}}
    again = compute_status(body, deployment(2, 2), [pod(ready=True)] * 2, "T2")
    assert again == {
        **first,
        "conditions": sorted([*first["conditions"], autopilot], key=lambda c: c["type"]),
    }
    assert transitions(body["status"], again) == []  # nothing changed: no event, no write

    broken = compute_status(
        body, deployment(2, 0, available=False), [pod("ImagePullBackOff")] * 2, "T3"
    )
    ready = next(c for c in broken["conditions"] if c["type"] == "Ready")
    assert ready["lastTransitionTime"] == "T3"
    changed = {c["type"] for c in transitions(body["status"], broken)}
    assert changed == {"Ready", "Degraded"}
    event = event_for(
        {**BODY, "metadata": {**BODY["metadata"], "resourceVersion": "9"}}, ready, "T3"
    )
    assert event["type"] == "Warning" and event["reason"] == "PodsNotReady"
    assert event["involvedObject"]["kind"] == "AgentDeployment"
    assert "0/2 runtime pods ready: 2 in ImagePullBackOff" in event["message"]
