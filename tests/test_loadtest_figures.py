"""The load test's pure parts: the expected peak from the manifest, the windows over time,
the summary and the SLO verdict; and the demo's variant of the example manifest."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from swiftclaw_devtools.cluster_fleet import demo_manifest, user_keys
from swiftclaw_devtools.loadtest_figures import (
    DEFAULT_SUCCESS_PERCENT,
    Outcome,
    budgeted_users,
    expected_peak_rps,
    success_target_percent,
    summarize,
    windows,
)
from swiftclaw_runtime.config import AgentDeploymentSpec

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "agent-in-cluster.yaml"


def example() -> dict:  # type: ignore[type-arg]
    return dict(yaml.safe_load(EXAMPLE.read_text()))


def test_the_examples_expected_peak_follows_from_its_budget_and_rate_limit() -> None:
    spec = example()["spec"]
    assert budgeted_users(spec) == 100  # 500 USD a day / 5 USD per user
    assert expected_peak_rps(spec) == pytest.approx(100 / 60)
    # a user's limit under one a minute caps the peak
    capped = {**spec, "rateLimits": {"perUser": {"requestsPerMinute": 0.5}}}
    assert expected_peak_rps(capped) == pytest.approx(50 / 60)
    with pytest.raises(ValueError, match="perUserDailyUSD"):
        budgeted_users({"budget": {"dailyUSD": 10}})


def test_success_target_is_the_slo_or_three_nines() -> None:
    assert success_target_percent(example()["spec"]) == 99.0  # errorRatePercent: 1
    assert success_target_percent({}) == DEFAULT_SUCCESS_PERCENT == 99.9
    assert success_target_percent({"slo": {"errorRatePercent": 0}}) == 100.0


def test_windows_split_by_send_time_with_percentiles_of_successes_only() -> None:
    outcomes = [
        Outcome(0.5 + i / 10, 100.0 + i, True, "exact" if i < 2 else "miss") for i in range(10)
    ]
    outcomes += [Outcome(5.5, 9999.0, False), Outcome(7.0, 50.0, True)]
    outcomes.append(Outcome(30.0, 1.0, True))  # after the duration: not counted
    w = windows(outcomes, 5.0, 10.0)
    assert [x.requests for x in w] == [10, 2]
    assert w[0].rate == 2.0 and w[0].error_rate == 0.0 and w[0].cache_hit_rate == 0.2
    assert w[0].p50_ms == 105.0 and w[0].p99_ms == 109.0  # nearest rank
    assert w[1].error_rate == 0.5 and w[1].p95_ms == 50.0  # the failure's latency left out
    empty = windows([], 5.0, 12.0)
    assert len(empty) == 3 and empty[2].p95_ms is None and empty[2].error_rate == 0.0
    with pytest.raises(ValueError):
        windows([], 0.0, 10.0)


def test_summary_verdict_against_the_target() -> None:
    ok = [Outcome(i / 100, 10.0, True) for i in range(999)]
    one_bad = [*ok, Outcome(5.0, 10.0, False)]  # 99.9 % exactly
    s = summarize(one_bad, 10.0, 99.9)
    assert s["requests"] == 1000 and s["failed"] == 1
    assert s["success_percent"] == 99.9 and s["passed"] is True
    two_bad = [*one_bad, Outcome(6.0, 10.0, False)]
    assert summarize(two_bad, 10.0, 99.9)["passed"] is False
    assert s["peak_rps"] == s["mean_rps"] == 100.0
    nothing = summarize([], 10.0, 99.0)
    assert nothing["passed"] is False and nothing["p95_ms"] is None


def test_demo_manifest_points_every_provider_at_a_simulator_and_validates() -> None:
    doc = demo_manifest(example(), "podrun-x", {"openai": 1001, "anthropic": 1002, "local": 1003})
    spec = doc["spec"]
    assert doc["metadata"] == {"name": "support-agent", "namespace": "podrun-x"}
    assert {p["name"]: p["baseURL"] for p in spec["providers"]} == {
        "openai": "http://127.0.0.1:1001/v1",
        "anthropic": "http://127.0.0.1:1002/v1",
        "local": "http://127.0.0.1:1003/v1",
    }
    assert all("apiKeySecretRef" not in p for p in spec["providers"])
    assert "backup" not in spec["cache"]["redis"] and spec["cache"]["redis"]["mode"] == "managed"
    assert spec["autopilot"]["enabled"] is True
    assert spec["models"] == example()["spec"]["models"]  # the example's tiers and routing
    AgentDeploymentSpec.model_validate(spec)
    with pytest.raises(ValueError, match="local"):
        demo_manifest(example(), "podrun-x", {"openai": 1, "anthropic": 2})
    keys = user_keys(3)
    assert len({k["key"] for k in keys}) == 3 and keys[2]["user"] == "user-0002"
