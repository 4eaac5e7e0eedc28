"""The operator's alert rules, checked and unit-tested by promtool (the real Prometheus
rule engine) with synthetic series: every alert fires when it should, stays quiet when it
should not, and waits its ``for`` before firing.

The rules are those the operator renders for the in-cluster example (every alert on:
managed Redis with backups, a daily budget), written to a tmp dir as Prometheus loads them.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from swiftclaw_operator.resources.redis import backup_name

from .monitoring import example_agent, monitoring_bin, rule_file

# Needs Prometheus and Alertmanager (make monitoring, which make test runs first).
pytestmark = pytest.mark.monitoring

AGENT = example_agent()
SEL = f'namespace="{AGENT.namespace}",service="{AGENT.name}"'
JOB = f'namespace="{AGENT.namespace}",cronjob="{backup_name(AGENT)}"'
RULES = {r["alert"]: r for g in rule_file(AGENT)["groups"] for r in g["rules"]}


def fired(alert: str, **labels: str) -> list[dict[str, Any]]:
    """What promtool expects when ``alert`` fires: its labels and its annotations."""
    rule = RULES[alert]
    return [
        {
            "exp_labels": {**rule["labels"], **labels},
            "exp_annotations": rule["annotations"],
        }
    ]


def series(name: str, labels: str, values: str) -> dict[str, str]:
    return {"series": f"{name}{{{labels}}}", "values": values}


def bucket(le: str, values: str) -> dict[str, str]:
    return series("swiftclaw_request_duration_seconds_bucket", f'{SEL},le="{le}"', values)


# For each alert: (input series, [(eval_time, expected alerts)]) cases. One case shows the
# alert pending within its `for` and firing after it; another stays quiet.
CASES: dict[str, list[tuple[str, list[dict[str, str]], list[tuple[str, list[Any]]]]]] = {
    "SwiftClawLatencyAboveSLO": [
        (  # every request between 1 and 2.5 s: p95 about 2.4 s, above the 2 s SLO from 1m
            "slow",
            [bucket("1", "0x30"), bucket("2.5", "0+10x30"), bucket("+Inf", "0+10x30")],
            [("9m", []), ("15m", fired("SwiftClawLatencyAboveSLO"))],
        ),
        (  # every request under 1 s
            "fast",
            [bucket("1", "0+10x30"), bucket("2.5", "0+10x30"), bucket("+Inf", "0+10x30")],
            [("15m", []), ("30m", [])],
        ),
    ],
    "SwiftClawErrorRateHigh": [
        (  # 5 errors per 100 successes from 1m to 20m, then none: fires after 5m, resolves
            "failing",
            [
                series("swiftclaw_requests_total", f'{SEL},tier="medium",outcome="ok"', "0+100x40"),
                series(
                    "swiftclaw_requests_total",
                    f'{SEL},tier="medium",outcome="error"',
                    "0+5x20 100x20",
                ),
            ],
            [("4m", []), ("7m", fired("SwiftClawErrorRateHigh")), ("35m", [])],
        ),
        (  # 0.5 errors per 100: under the 1% SLO
            "healthy",
            [
                series("swiftclaw_requests_total", f'{SEL},tier="medium",outcome="ok"', "0+100x40"),
                series(
                    "swiftclaw_requests_total", f'{SEL},tier="medium",outcome="error"', "0+0.5x40"
                ),
            ],
            [("10m", []), ("30m", [])],
        ),
    ],
    "SwiftClawCostSpike": [
        (  # a steady day at 1 USD/min, then 10 USD/min: fires 30m after the hour rate
            # passes twice the day's
            "spike",
            [series("swiftclaw_cost_usd_total", f'{SEL},tier="medium"', "0+1x1440 1440+10x180")],
            [("24h", []), ("24h20m", []), ("26h", fired("SwiftClawCostSpike"))],
        ),
        (  # steady from the agent's first minute: not a spike, in its first day (when the
            # day's rate covers only part of the window) nor after
            "steady",
            [series("swiftclaw_cost_usd_total", f'{SEL},tier="medium"', "0+1x1620")],
            [("2h", []), ("12h", []), ("24h", []), ("27h", [])],
        ),
    ],
    "SwiftClawCircuitBreakerOpen": [
        (  # open from 5m to 15m, then closed
            "open",
            [
                series(
                    "swiftclaw_circuit_breaker_state",
                    f'{SEL},pod="a",provider="openai",model="gpt-4o-mini"',
                    "0x4 1x10 0x10",
                )
            ],
            [
                ("6m", []),
                (
                    "8m",
                    fired("SwiftClawCircuitBreakerOpen", provider="openai", model="gpt-4o-mini"),
                ),
                ("20m", []),
            ],
        ),
        (  # half-open (2) is a probe, not an outage
            "half-open",
            [
                series(
                    "swiftclaw_circuit_breaker_state",
                    f'{SEL},pod="a",provider="openai",model="gpt-4o-mini"',
                    "2x20",
                )
            ],
            [("10m", [])],
        ),
    ],
    "SwiftClawRedisBackupFailed": [
        (  # the last run (t=1000) has not succeeded; the last success was t=500
            "failed",
            [
                series("kube_cronjob_status_last_schedule_time", JOB, "1000x100"),
                series("kube_cronjob_status_last_successful_time", JOB, "500x100"),
            ],
            [("50m", []), ("70m", fired("SwiftClawRedisBackupFailed"))],
        ),
        (  # never succeeded
            "never",
            [series("kube_cronjob_status_last_schedule_time", JOB, "1000x100")],
            [("50m", []), ("70m", fired("SwiftClawRedisBackupFailed"))],
        ),
        (  # the last run succeeded
            "succeeded",
            [
                series("kube_cronjob_status_last_schedule_time", JOB, "1000x100"),
                series("kube_cronjob_status_last_successful_time", JOB, "1000x100"),
            ],
            [("90m", [])],
        ),
    ],
    "SwiftClawBudgetAlert": [
        (  # 10 USD/min: past 80% of the 500 USD day (400) after 40 min; `for` is 0
            "spending",
            [series("swiftclaw_cost_usd_total", f'{SEL},tier="medium"', "0+10x100")],
            [("30m", []), ("50m", fired("SwiftClawBudgetAlert"))],
        ),
        (
            "frugal",
            [series("swiftclaw_cost_usd_total", f'{SEL},tier="medium"', "0+1x100")],
            [("90m", [])],
        ),
    ],
}


@pytest.fixture(scope="module")
def rules_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rules") / "rules.yaml"
    path.write_text(yaml.safe_dump(rule_file(AGENT)))
    return path


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(monitoring_bin("promtool")), *args], capture_output=True, text=True, timeout=300
    )


def test_promtool_checks_the_rendered_rules(rules_path: Path) -> None:
    out = promtool("check", "rules", str(rules_path))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{len(RULES)} rules found" in out.stdout


def test_every_alert_the_operator_renders_has_cases() -> None:
    assert set(RULES) == set(CASES)
    assert len(RULES) == 6  # the example turns every alert on


@pytest.mark.parametrize(
    ("alert", "case"),
    [(a, c[0]) for a, cases in CASES.items() for c in cases],
)
def test_promtool_unit_tests(alert: str, case: str, rules_path: Path) -> None:
    _, inputs, evals = next(c for c in CASES[alert] if c[0] == case)
    doc = {
        "rule_files": [str(rules_path)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "name": f"{alert}/{case}",
                "interval": "1m",
                "input_series": inputs,
                "alert_rule_test": [
                    {"eval_time": t, "alertname": alert, "exp_alerts": exp} for t, exp in evals
                ],
            }
        ],
    }
    path = rules_path.parent / f"test-{alert}-{case}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    out = promtool("test", "rules", str(path))
    assert out.returncode == 0, out.stdout + out.stderr
