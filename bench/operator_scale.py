"""200 AgentDeployments applied at once on the local control plane.

Measures the time until every one is Ready, the operator's peak RSS (VmHWM), and the
Kubernetes API requests the operator made per reconcile: for the first reconcile
(create) and for a reconcile with nothing to change (resume after a restart).

    python -m bench.operator_scale [--count 200]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import time
from pathlib import Path

import yaml
from e2e.cluster import start, stop
from e2e.operator import Operator, example, install_crd

RESULTS = Path(__file__).resolve().parent / "results"
RECONCILES = "swiftclaw_operator_reconciles_total"


def peak_rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+)", status)
    return int(match.group(1)) / 1024 if match else 0.0


def component_peak_rss_mib(name: str) -> float:
    """Peak RSS of a control-plane component started by kwokctl (its pid file)."""
    workdir = Path(os.environ.get("KWOK_WORKDIR", str(Path.home() / ".kwok")))
    cluster = os.environ.get("SWIFTCLAW_CLUSTER", "swiftclaw")
    pid_file = workdir / "clusters" / cluster / "pids" / f"{name}.pid"
    return peak_rss_mib(int(pid_file.read_text())) if pid_file.exists() else 0.0


def ready_count(cluster, ns: str) -> int:  # type: ignore[no-untyped-def]
    items = cluster.get("agentdeployments", "-n", ns)["items"]
    return sum(
        1
        for i in items
        for c in (i.get("status") or {}).get("conditions", [])
        if c["type"] == "Ready" and c["status"] == "True"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--timeout", type=float, default=900)
    args = ap.parse_args()
    cluster = start("local")
    try:
        install_crd(cluster)
        ns = "scale"
        cluster.kubectl("create", "namespace", ns)
        with tempfile.TemporaryDirectory() as tmp:
            op = Operator(cluster, Path(tmp)).start()
            docs = []
            for i in range(args.count):
                doc = example(f"agent-{i:03d}")
                doc["metadata"]["namespace"] = ns
                docs.append(doc)
            manifest = Path(tmp) / "agents.yaml"
            manifest.write_text(yaml.safe_dump_all(docs))
            assert op.proc is not None
            started = time.monotonic()
            cluster.kubectl("apply", "--server-side", "-f", str(manifest))
            applied = time.monotonic() - started
            peak = 0.0
            while (n := ready_count(cluster, ns)) < args.count:
                peak = max(peak, peak_rss_mib(op.proc.pid))
                if time.monotonic() - started > args.timeout:
                    raise TimeoutError(f"only {n}/{args.count} Ready after {args.timeout:.0f}s")
                time.sleep(1)
            all_ready = time.monotonic() - started
            peak = max(peak, peak_rss_mib(op.proc.pid))
            create_requests = op.counter("swiftclaw_operator_api_requests_total")
            creates = op.counter(
                'swiftclaw_operator_reconciles_total{result="ok",trigger="create"}'
            )
            writes = op.counter("swiftclaw_operator_child_writes_total")

            op.stop()  # restart: every agent is resumed with nothing to change
            op.start()
            while op.counter(
                'swiftclaw_operator_reconciles_total{result="ok",trigger="resume"}'
            ) < (args.count):
                time.sleep(0.5)
            time.sleep(2)
            resume_requests = op.counter("swiftclaw_operator_api_requests_total")
            resume_writes = op.counter("swiftclaw_operator_child_writes_total")
            control_plane = {
                name: round(component_peak_rss_mib(name), 1)
                for name in ("kube-apiserver", "etcd", "kube-controller-manager")
            }
            by_verb = {
                k: v
                for k, v in op.metrics().items()
                if k.startswith("swiftclaw_operator_api_requests_total")
            }
            op.stop()
    finally:
        stop(cluster)
    result = {
        "agents": args.count,
        "apply_seconds": round(applied, 2),
        "all_ready_seconds": round(all_ready, 1),
        "operator_peak_rss_mib": round(peak, 1),
        "control_plane_peak_rss_mib": control_plane,
        "create": {
            "reconciles": creates,
            "api_requests": create_requests,
            "api_requests_per_agent": round(create_requests / args.count, 1),
            "child_writes": writes,
        },
        "resume_no_change": {
            "api_requests": resume_requests,
            "api_requests_per_reconcile": round(resume_requests / args.count, 1),
            "child_writes": resume_writes,
            "by_verb_and_kind": by_verb,
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"operator-scale-{stamp}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
