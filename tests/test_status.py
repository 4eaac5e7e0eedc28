"""Status from every child and the last reconcile: conditions, words a person can act on,
events; what a failed reconcile means and when it is tried again."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from swiftclaw_operator.api import AgentDeploymentSpec
from swiftclaw_operator.failures import Failure, NameClash, classify, retry_delay
from swiftclaw_operator.handlers import event_for
from swiftclaw_operator.kube import KubeError
from swiftclaw_operator.status import (
    Children,
    ReconcileFailure,
    RedisInstance,
    agent_conditions,
    backup_problem,
    compute_status,
    conditions_for,
    hpa_problem,
    pod_problems,
    redis_state,
    transitions,
    urgent,
)

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
    first = compute_status(BODY, Children(deployment(2, 2), [pod(ready=True)] * 2), "T1")
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
    again = compute_status(body, Children(deployment(2, 2), [pod(ready=True)] * 2), "T2")
    assert again == {
        **first,
        "conditions": sorted([*first["conditions"], autopilot], key=lambda c: c["type"]),
    }
    assert transitions(body["status"], again) == []  # nothing changed: no event, no write

    broken = compute_status(
        body, Children(deployment(2, 0, available=False), [pod("ImagePullBackOff")] * 2), "T3"
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


# --- the other children ---------------------------------------------------------------------


def sts(replicas: int, ready: int) -> dict[str, Any]:
    return {"spec": {"replicas": replicas}, "status": {"readyReplicas": ready}}


def cronjob(scheduled: str | None, succeeded: str | None, active: bool = False) -> dict:
    status: dict[str, Any] = {}
    if scheduled:
        status["lastScheduleTime"] = scheduled
    if succeeded:
        status["lastSuccessfulTime"] = succeeded
    if active:
        status["active"] = [{"name": "job-1"}]
    return {"status": status}


def hpa(able: str = "True", active: str = "True", reason: str = "") -> dict[str, Any]:
    return {
        "status": {
            "conditions": [
                {"type": "AbleToScale", "status": able, "reason": reason, "message": "m"},
                {"type": "ScalingActive", "status": active, "reason": reason, "message": "m"},
            ]
        }
    }


HEALTHY = dict(deployment=deployment(2, 2), pods=[pod(ready=True)] * 2)


def redis(
    cache_sts: dict | None, state_sts: dict | None, cache: tuple = (), state: tuple = ()
) -> tuple[RedisInstance, ...]:
    return (
        RedisInstance("cache", cache_sts, list(cache)),
        RedisInstance("state", state_sts, list(state)),
    )


def test_redis_failing_pods_make_the_agent_degraded() -> None:
    assert redis_state(RedisInstance("state", sts(1, 1))) is None
    assert redis_state(RedisInstance("cache", None)) == (
        "Starting",
        "the Redis cache StatefulSet does not exist yet",
    )
    kids = Children(**HEALTHY, redis=redis(sts(1, 1), sts(1, 0), state=(pod("CrashLoopBackOff"),)))
    c = by_type(agent_conditions(3, kids))
    assert (c["Degraded"].status, c["Degraded"].reason) == ("True", "RedisFailing")
    assert c["Degraded"].message == "0/1 Redis state pods ready: 1 in CrashLoopBackOff"
    assert "0/1 Redis state pods ready" in c["Ready"].message


def test_redis_starting_is_progress_not_degradation() -> None:
    # The state instance waits for its volume (Unschedulable until bound): progress.
    kids = Children(
        **HEALTHY,
        redis=redis(sts(1, 0), sts(1, 0), cache=(pod(),), state=(pod(unschedulable=True),)),
    )
    c = by_type(agent_conditions(3, kids))
    assert (c["Progressing"].status, c["Progressing"].reason) == ("True", "RedisStarting")
    assert c["Progressing"].message == (
        "0/1 Redis cache pods ready: 1 in Pending; 0/1 Redis state pods ready: 1 in Unschedulable"
    )
    assert c["Degraded"].status == "False"
    # Not managed: no Redis is nobody's concern.
    assert by_type(agent_conditions(3, Children(**HEALTHY)))["Progressing"].status == "False"


def test_backup_last_run() -> None:
    assert backup_problem(None) is None
    assert backup_problem(cronjob(None, None)) is None  # never ran yet
    assert backup_problem(cronjob("2026-01-02T03:00:00Z", "2026-01-02T03:00:09Z")) is None
    assert backup_problem(cronjob("2026-01-02T03:00:00Z", None, active=True)) is None
    failed = backup_problem(cronjob("2026-01-02T03:00:00Z", "2026-01-01T03:00:07Z"))
    assert failed is not None and "last success: 2026-01-01T03:00:07Z" in failed
    kids = Children(
        **HEALTHY, redis=redis(sts(1, 1), sts(1, 1)), backup=cronjob("2026-01-02T03:00:00Z", None)
    )
    c = by_type(agent_conditions(3, kids))
    assert (c["Degraded"].status, c["Degraded"].reason) == ("True", "BackupFailed")
    assert "last success: never" in c["Degraded"].message


def test_hpa_unable_to_scale_is_degraded_inactive_is_reported() -> None:
    assert hpa_problem(hpa()) is None
    c = by_type(
        agent_conditions(3, Children(**HEALTHY, hpa=hpa(able="False", reason="FailedGetScale")))
    )
    assert (c["Degraded"].status, c["Degraded"].reason) == ("True", "AutoscalingFailed")
    c = by_type(
        agent_conditions(
            3, Children(**HEALTHY, hpa=hpa(active="False", reason="FailedGetResourceMetric"))
        )
    )
    assert c["Degraded"].status == "False"
    assert "autoscaling inactive (FailedGetResourceMetric)" in c["Ready"].message


# --- failed reconciles ----------------------------------------------------------------------


def test_permanent_failure_is_degraded_with_its_reason_and_one_event() -> None:
    clash = ReconcileFailure(classify(NameClash("ConfigMap/agent-config exists")), attempts=1)
    kids = Children(None)
    first = compute_status(BODY, kids, "T1", clash)
    degraded = next(c for c in first["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "NameClash")
    assert "ConfigMap/agent-config exists" in degraded["message"]
    # The same failure again: no transition, so no second Event.
    again = ReconcileFailure(clash.failure, attempts=4)
    second = compute_status({**BODY, "status": first}, kids, "T2", again)
    assert [c["type"] for c in transitions(first, second)] == []


def test_transient_failure_shows_only_when_it_persists() -> None:
    down = classify(KubeError(503, "etcdserver: leader changed", "ServiceUnavailable"))
    assert not down.permanent and down.reason == "ApiUnavailable"
    kids = Children(**HEALTHY)
    once = by_type(agent_conditions(3, kids, ReconcileFailure(down, 1)))
    assert once["Degraded"].status == "False"
    thrice = by_type(agent_conditions(3, kids, ReconcileFailure(down, 3)))
    assert (thrice["Degraded"].status, thrice["Degraded"].reason) == ("True", "ApiUnavailable")


@pytest.mark.parametrize(
    ("err", "permanent", "reason"),
    [
        (KubeError(409, 'configmaps "x" already exists', "AlreadyExists"), True, "AlreadyExists"),
        (
            KubeError(
                422,
                'StatefulSet.apps "a-redis" is invalid: spec: Forbidden: updates to '
                "statefulset spec for fields other than 'replicas', ... are forbidden",
                "Invalid",
            ),
            True,
            "ImmutableField",
        ),
        (
            KubeError(422, "spec.selector: Invalid value: field is immutable", "Invalid"),
            True,
            "ImmutableField",
        ),
        (KubeError(422, "spec.replicas: Invalid value: -1", "Invalid"), True, "Invalid"),
        (KubeError(403, "forbidden", "Forbidden"), True, "Forbidden"),
        (KubeError(429, "slow down", "TooManyRequests"), False, "ApiUnavailable"),
        (KubeError(500, "boom", "InternalError"), False, "ApiUnavailable"),
        (KubeError(0, "connection refused"), False, "ApiUnreachable"),
        (TimeoutError(), False, "ApiUnreachable"),
        (KeyError("x"), True, "InternalError"),
    ],
)
def test_classify(err: BaseException, permanent: bool, reason: str) -> None:
    f = classify(err)
    assert (f.permanent, f.reason) == (permanent, reason)


def test_invalid_spec_is_permanent() -> None:
    with pytest.raises(ValidationError) as info:
        AgentDeploymentSpec.model_validate({"scaling": {"minReplicas": -1}})
    assert classify(info.value) == Failure(
        True, "InvalidSpec", f"the spec cannot be built: {info.value}"
    )


def test_retry_delay_doubles_up_to_the_cap() -> None:
    assert [retry_delay(n, 5, 300) for n in range(1, 9)] == [5, 10, 20, 40, 80, 160, 300, 300]
    assert retry_delay(1, 1, 8) == 1 and retry_delay(10, 1, 8) == 8


# --- which changes are Events, which are written at once -----------------------------------


def test_a_new_agent_coming_up_makes_no_event_until_it_is_ready() -> None:
    first = compute_status(BODY, Children(None), "T1")
    assert transitions(None, first) == [] and not urgent(None, first)
    starting = compute_status(
        {**BODY, "status": first}, Children(deployment(2, 0, 0, False), [pod()] * 2), "T2"
    )
    # Ready's reason moved (DeploymentMissing, then PodsNotReady), Progressing's too: words.
    assert transitions(first, starting) == [] and not urgent(first, starting)
    ready = compute_status(
        {**BODY, "status": starting}, Children(deployment(2, 2), [pod(ready=True)] * 2), "T3"
    )
    assert {c["reason"] for c in transitions(starting, ready)} == {"Available", "RolloutComplete"}
    assert urgent(starting, ready)


def test_turning_degraded_says_what_broke_and_what_it_does() -> None:
    # Pods pending (not yet found unschedulable): Ready=False PodsNotReady, nothing failed.
    pending = compute_status(BODY, Children(deployment(1, 0, 0, False), [pod()]), "T1")
    ready = next(c for c in pending["conditions"] if c["type"] == "Ready")
    assert (ready["reason"], transitions(None, pending)) == ("PodsNotReady", [])
    stuck = Children(deployment(1, 0, 0, False), [pod(unschedulable=True)])
    broken = compute_status({**BODY, "status": pending}, stuck, "T2")
    # Ready's reason did not move; it is announced with the failure that keeps it False.
    assert {(c["type"], c["reason"]) for c in transitions(pending, broken)} == {
        ("Degraded", "PodsFailing"),
        ("Ready", "PodsNotReady"),
    }
    # Another failure while Degraded: an Event; the same one again: none.
    clash = ReconcileFailure(classify(NameClash("ConfigMap/agent-config exists")), attempts=1)
    worse = compute_status({**BODY, "status": broken}, stuck, "T3", clash)
    assert ("Degraded", "NameClash") in {
        (c["type"], c["reason"]) for c in transitions(broken, worse)
    }
    assert transitions(worse, compute_status({**BODY, "status": worse}, stuck, "T4", clash)) == []


def test_a_new_generation_seen_is_written_at_once() -> None:
    kids = Children(deployment(2, 2), [pod(ready=True)] * 2)
    before = compute_status(BODY, kids, "T1")
    body = {**BODY, "metadata": {**BODY["metadata"], "generation": 4}, "status": before}
    after = compute_status(body, kids, "T2")
    assert transitions(before, after) == [] and urgent(before, after)
