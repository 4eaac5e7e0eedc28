"""One owner per field: with the autopilot on, its decision (status.autopilot.floor) is the
HPA's minReplicas on every reconcile, clamped to spec.scaling; the HPA keeps ``replicas``
(the Deployment leaves it out), and the HPA's own down window is 0 (one stabiliser)."""

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
        "status": {"autopilot": {"floor": floor}},
    }


@pytest.mark.parametrize(
    ("enabled", "floor", "min_replicas", "down_window"),
    [
        (True, 5, 5, 0),
        (True, 50, 8, 0),  # never past maxReplicas
        (True, 1, 2, 0),  # never under minReplicas
        (True, None, 2, 0),  # no decision yet
        (True, "5", 2, 0),  # a status not written by the operator: ignored
        (False, 5, 2, 300),  # off: the spec alone, the HPA's own window
    ],
)
def test_the_floor_is_the_hpa_min(
    enabled: bool, floor: Any, min_replicas: int, down_window: int
) -> None:
    hpa = build_hpa(agent_from(body(enabled, floor), Settings()))["spec"]
    assert hpa["minReplicas"] == min_replicas
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == down_window


def test_every_reconcile_writes_the_same_floor_and_never_replicas() -> None:
    agent = agent_from(body(True, 6), Settings())
    assert build_hpa(agent) == build_hpa(agent_from(body(True, 6), Settings()))
    deployment = build_deployment(agent, build_configmap(agent))
    assert "replicas" not in deployment["spec"]  # the HPA's field
