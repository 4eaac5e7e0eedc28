"""One owner per field: with the autopilot on, its decision (status.autopilot.replicas) is
the HPA's minReplicas and maxReplicas on every reconcile, clamped to spec.scaling; the HPA
controller keeps ``replicas`` (the Deployment leaves it out) and follows its bounds both
ways; the HPA's own down window is 0 (one stabiliser)."""

from __future__ import annotations

from typing import Any

import pytest

from swiftclaw_operator.reconcile import agent_from
from swiftclaw_operator.resources import Settings
from swiftclaw_operator.resources.runtime import build_configmap, build_deployment, build_hpa


def body(enabled: bool, floor: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "agent", "namespace": "team", "uid": "u1"},
        "spec": {
            "providers": [{"name": "sim", "type": "openai", "baseURL": "http://127.0.0.1:1"}],
            "models": {"tiers": [{"name": "chat", "model": "sim/fast"}]},
            "scaling": {"minReplicas": 2, "maxReplicas": 8},
            "autopilot": {"enabled": enabled},
        },
        "status": {"autopilot": {"replicas": floor}},
    }


@pytest.mark.parametrize(
    ("enabled", "floor", "bounds", "down_window"),
    [
        (True, 5, (5, 5), 0),
        (True, 50, (8, 8), 0),  # never past spec.scaling.maxReplicas
        (True, 1, (2, 2), 0),  # never under minReplicas
        (True, None, (2, 8), 0),  # no decision yet: the spec's bounds
        (True, "5", (2, 8), 0),  # a status not written by the operator: ignored
        (False, 5, (2, 8), 300),  # off: the spec alone, the HPA's own window
    ],
)
def test_the_decision_is_the_hpa_bounds(
    enabled: bool, floor: Any, bounds: tuple[int, int], down_window: int
) -> None:
    hpa = build_hpa(agent_from(body(enabled, floor), Settings()))["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == bounds
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == down_window


def test_every_reconcile_writes_the_same_floor_and_never_replicas() -> None:
    agent = agent_from(body(True, 6), Settings())
    assert build_hpa(agent) == build_hpa(agent_from(body(True, 6), Settings()))
    deployment = build_deployment(agent, build_configmap(agent))
    assert "replicas" not in deployment["spec"]  # the HPA's field
