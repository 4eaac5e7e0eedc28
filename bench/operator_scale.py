"""AgentDeployments (200 by default) applied at once on the local control plane.

Measures the time until every one is Ready, the operator's peak RSS (VmHWM), the
Kubernetes API requests the operator made per reconcile: for the first reconcile
(create) and for a reconcile with nothing to change (resume after a restart), and the
API server's own request rate over each phase (its ``apiserver_request_total``, every
client's: the operator, kopf, the controllers, kwok, this script's polling).

    python -m bench.operator_scale [--count 200] [--nodes N]

The local cluster gets ``--nodes`` fake nodes (110 pods each); by default
``$SWIFTCLAW_NODES``, or one per 25 agents (8 for 200, 40 for 1,000).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

import yaml
from e2e.cluster import start, stop
from e2e.operator import CRD, EXAMPLE, REPO, Operator, example, install_crd

RESULTS = Path(__file__).resolve().parent / "results"
RECONCILES = "swiftclaw_operator_reconciles_total"
AGENTS_PER_NODE = 25
OUTCOMES = ("swiftclaw_operator_reconciles_total", "swiftclaw_operator_errors_total")


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


def apiserver_requests(cluster) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """The API server's ``apiserver_request_total``, summed by verb (its own /metrics)."""
    out: dict[str, float] = {}
    for line in cluster.kubectl("get", "--raw", "/metrics").splitlines():
        if line.startswith("apiserver_request_total{"):
            labels, _, value = line.rpartition(" ")
            verb = re.search(r'verb="([^"]*)"', labels)
            key = verb.group(1) if verb else "?"
            out[key] = out.get(key, 0.0) + float(value)
    return out


def request_rate(before: dict[str, float], after: dict[str, float], seconds: float) -> dict:
    """Requests per second over a phase, in all and by verb."""
    verbs = {
        v: round((after.get(v, 0.0) - before.get(v, 0.0)) / seconds, 1)
        for v in sorted(after)
        if after.get(v, 0.0) > before.get(v, 0.0)
    }
    total = (sum(after.values()) - sum(before.values())) / seconds
    return {"per_second": round(total, 1), "seconds": round(seconds, 1), "by_verb": verbs}


def ready_count(cluster, ns: str) -> int:  # type: ignore[no-untyped-def]
    items = cluster.get("agentdeployments", "-n", ns)["items"]
    return sum(
        1
        for i in items
        for c in (i.get("status") or {}).get("conditions", [])
        if c["type"] == "Ready" and c["status"] == "True"
    )


def tree_env(tree: Path | None) -> dict[str, str]:
    """The operator's environment for ``--tree``: its packages first on the path."""
    if tree is None:
        return {}
    return {"PYTHONPATH": f"{tree / 'operator'}:{tree / 'agent-runtime'}"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument(
        "--nodes",
        type=int,
        default=int(os.environ.get("SWIFTCLAW_NODES") or 0),
        help="fake nodes (default: $SWIFTCLAW_NODES, else one per 25 agents)",
    )
    ap.add_argument(
        "--tree",
        type=Path,
        help="another checkout (e.g. a worktree of an older commit) whose operator, CRD and "
        "example are measured, with this driver: side by side with this tree's",
    )
    args = ap.parse_args()
    nodes = args.nodes or max(3, math.ceil(args.count / AGENTS_PER_NODE))
    os.environ["SWIFTCLAW_NODES"] = str(nodes)
    cluster = start("local")
    try:
        install_crd(cluster, CRD if args.tree is None else args.tree / CRD.relative_to(REPO))
        ns = "scale"
        cluster.kubectl("create", "namespace", ns)
        with tempfile.TemporaryDirectory() as tmp:
            op = Operator(cluster, Path(tmp), env=tree_env(args.tree)).start()
            docs = []
            for i in range(args.count):
                doc = example(f"agent-{i:03d}")
                if args.tree is not None:
                    theirs = yaml.safe_load((args.tree / EXAMPLE.relative_to(REPO)).read_text())
                    doc = {**theirs, "metadata": doc["metadata"]}
                doc["metadata"]["namespace"] = ns
                docs.append(doc)
            manifest = Path(tmp) / "agents.yaml"
            manifest.write_text(yaml.safe_dump_all(docs))
            assert op.proc is not None
            server_before = apiserver_requests(cluster)
            started = time.monotonic()
            # Not cluster.kubectl (2 minutes at most): 1,000 agents on a loaded machine take
            # longer than that to apply.
            subprocess.run(
                [str(cluster.bin / "kubectl"), "apply", "--server-side", "-f", str(manifest)],
                env=cluster.env,
                check=True,
                capture_output=True,
                timeout=args.timeout,
            )
            applied = time.monotonic() - started
            peak = 0.0
            while (n := ready_count(cluster, ns)) < args.count:
                peak = max(peak, peak_rss_mib(op.proc.pid))
                if time.monotonic() - started > args.timeout:
                    raise TimeoutError(f"only {n}/{args.count} Ready after {args.timeout:.0f}s")
                time.sleep(1)
            all_ready = time.monotonic() - started
            create_rate = request_rate(server_before, apiserver_requests(cluster), all_ready)
            # Ready needs the runtime's Deployment only: a reconcile that failed (and is
            # retried after its back-off) may not have made every child yet. The resume
            # below is "nothing to change" only once every agent's first reconcile is done.
            while (
                op.counter('swiftclaw_operator_reconciles_total{result="ok",trigger="create"}')
                + op.counter('swiftclaw_operator_reconciles_total{result="ok",trigger="retry"}')
                < args.count
            ):
                peak = max(peak, peak_rss_mib(op.proc.pid))
                if time.monotonic() - started > args.timeout:
                    raise TimeoutError("the first reconciles did not all succeed in time")
                time.sleep(1)
            all_reconciled = time.monotonic() - started
            # ... and once the statuses have caught up (no status write for 10 s, none
            # waiting to be written: a change that makes no Event waits up to 20 s).
            writes_seen, quiet_since = -1.0, time.monotonic()
            while time.monotonic() - quiet_since < 10:
                now = op.counter('swiftclaw_operator_api_requests_total{kind="AgentDeployment"')
                if now != writes_seen or op.counter("swiftclaw_operator_status_unwritten"):
                    writes_seen, quiet_since = now, time.monotonic()
                if time.monotonic() - started > args.timeout:
                    raise TimeoutError("the statuses did not settle in time")
                peak = max(peak, peak_rss_mib(op.proc.pid))
                time.sleep(1)
            peak = max(peak, peak_rss_mib(op.proc.pid))
            create_requests = op.counter("swiftclaw_operator_api_requests_total")
            create_by_verb = {
                k.partition("{")[2].rstrip("}"): v
                for k, v in op.metrics().items()
                if k.startswith("swiftclaw_operator_api_requests_total")
            }
            creates = op.counter(
                'swiftclaw_operator_reconciles_total{result="ok",trigger="create"}'
            )
            writes = op.counter("swiftclaw_operator_child_writes_total")
            outcomes = {
                k.removeprefix("swiftclaw_operator_"): v
                for k, v in op.metrics().items()
                if k.startswith(OUTCOMES)
            }
            failures = [line[:300] for line in op.log().splitlines() if " failed (" in line][:10]

            op.stop()  # restart: every agent is resumed with nothing to change
            server_before = apiserver_requests(cluster)
            resumed = time.monotonic()
            op.start()
            assert op.proc is not None
            while op.counter(
                'swiftclaw_operator_reconciles_total{result="ok",trigger="resume"}'
            ) < (args.count):
                if time.monotonic() - resumed > args.timeout:
                    raise TimeoutError(f"the resume took more than {args.timeout:.0f}s")
                time.sleep(0.5)
            time.sleep(2)
            resume_seconds = time.monotonic() - resumed
            resume_rate = request_rate(server_before, apiserver_requests(cluster), resume_seconds)
            resume_peak = peak_rss_mib(op.proc.pid)
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
        "nodes": nodes,
        "apply_seconds": round(applied, 2),
        "all_ready_seconds": round(all_ready, 1),
        "all_reconciled_seconds": round(all_reconciled, 1),
        "operator_peak_rss_mib": round(peak, 1),
        "operator_peak_rss_mib_resumed": round(resume_peak, 1),
        "apiserver_requests": {"apply_to_all_ready": create_rate, "resume": resume_rate},
        "control_plane_peak_rss_mib": control_plane,
        "create": {
            "reconciles": creates,
            "api_requests": create_requests,
            "api_requests_per_agent": round(create_requests / args.count, 1),
            "child_writes": writes,
            "by_verb_and_kind": create_by_verb,
            "reconciles_and_errors": outcomes,
            "first_failures": failures,
        },
        "resume_no_change": {
            "api_requests": resume_requests,
            "api_requests_per_reconcile": round(resume_requests / args.count, 1),
            "seconds": round(resume_seconds, 1),
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
