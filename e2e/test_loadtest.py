"""``make loadtest`` end to end at a small scale, on the session's cluster: the chart, the
example agent's pods as processes, Prometheus (so it needs ``make monitoring``: run by
``make test-monitoring``), open-loop traffic through the Service with an outage of the
primary provider in the middle third, and the report. Then everything it started is gone."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest

from swiftclaw_devtools import loadtest
from swiftclaw_devtools.cluster_fleet import NAMESPACE, OPERATOR_NAMESPACE

from .cluster import Cluster, wait_for

pytestmark = pytest.mark.monitoring


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.timeout(300)
def test_loadtest_runs_through_the_cluster_and_reports(cluster: Cluster, tmp_path: Path) -> None:
    if cluster.mode != "local":
        pytest.fail("the load test runs the pods under e2e/podrunner.py on the local cluster")
    results = tmp_path / "results"
    args = argparse.Namespace(
        duration=30.0,
        multiplier=2.0,
        work=str(tmp_path / "work"),
        results=str(results),
        keep_cluster=False,
    )
    code = loadtest.run(args, cluster=cluster)
    summary = json.loads((results / "summary.json").read_text())
    assert code == 0 and summary["passed"] is True, summary["errors"]
    # 2 x 1.67 requests/s for 30 s, sent on schedule whatever the answers took
    assert summary["target_rps"] == pytest.approx(3.33, abs=0.01)
    assert 95 <= summary["requests"] <= 101
    assert summary["failed"] == 0 and summary["p95_ms"] > 0
    assert summary["replicas_min"] >= 2  # the example's minReplicas, read from the Deployment
    assert summary["spend_usd_end"] > 0  # status.live, from the operator
    assert (results / "loadtest.png").stat().st_size > 10_000
    assert "loadtest.png" in (results / "report.html").read_text()

    state = json.loads((tmp_path / "work" / "state.json").read_text())
    pids = [
        state["supervisor"],
        state["operator"]["pid"],
        *(s["pid"] for s in state["sims"].values()),
    ]
    assert not [p for p in pids if alive(p)], "the load test left processes running"
    left = cluster.kubectl("get", "all,agentdeployments,pvc", "-n", NAMESPACE, check=False)
    wait_for(
        f"the demo's namespaces gone (left in {NAMESPACE}: {left})",
        lambda: (
            not {NAMESPACE, OPERATOR_NAMESPACE}
            & set(
                cluster.kubectl("get", "namespaces", "-o", "name").replace("namespace/", "").split()
            )
        ),
        timeout=120,
    )
    assert os.path.exists(cluster.kubeconfig)  # the session's cluster stays up
