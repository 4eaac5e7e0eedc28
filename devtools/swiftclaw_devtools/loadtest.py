"""``make loadtest``: ten times the example's expected peak through the local cluster.

The cluster comes up as for ``make demo-cluster`` (:func:`.cluster_fleet.bring_up`: the
chart, the example agent's pods as real processes, autopilot on, simulated providers,
Prometheus; loopback only). Then open-loop traffic at ``--multiplier`` (10) times the
example's expected peak (:func:`.loadtest_figures.expected_peak_rps`, 1.67 requests/s:
see that module for how it follows from the manifest) runs for ``--duration`` seconds
through the agent's Service, and the primary provider is down for the middle third (killed
by pid, then restarted). Every 5 s the run samples the agent's status (status.live: spend,
cache hit rate; status.autopilot.recent: the decisions) and its Deployment's replicas.

It writes ``report.html`` with ``loadtest.png`` (request rate, latency p50/p95/p99 as the
client measured them, error rate, replicas, spend, cache hit rate; the autopilot's
decisions and the outage marked) and ``summary.json`` to ``--results``, stops the cluster
(unless ``--keep-cluster``), and exits 1 when the success rate is under the SLO
(100 - the example's ``slo.errorRatePercent``, or 99.9 % without one).
"""

from __future__ import annotations

import argparse
import datetime
import html
import json
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .cluster_fleet import (
    EXAMPLE,
    REPO,
    Fleet,
    Phases,
    bring_up,
    condition,
    stop_cluster,
    stop_fleet,
)
from .cluster_traffic import Traffic, wait_until
from .loadtest_figures import (
    Window,
    budgeted_users,
    expected_peak_rps,
    success_target_percent,
    summarize,
    windows,
)

if TYPE_CHECKING:
    from e2e.cluster import Cluster

SAMPLE_SECONDS = 5.0


@dataclass
class Sample:
    """The cluster's side at one moment, ``at`` seconds into the run."""

    at: float
    replicas: int | None
    ready: int | None
    cost_usd: float | None
    cache_hit_rate: float | None
    live_rps: float | None
    live_p95_ms: float | None
    failover: bool


def parse_time(stamp: str) -> float:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def sample(fleet: Fleet, at: float) -> tuple[Sample, list[dict[str, Any]]]:
    body = fleet.agent()
    status = body.get("status") or {}
    live = status.get("live") or {}
    dep = json.loads(
        fleet.kubectl("get", "deployment", fleet.name, "-n", fleet.namespace, "-o", "json")
    )
    s = Sample(
        at=at,
        replicas=(dep.get("spec") or {}).get("replicas"),
        ready=(dep.get("status") or {}).get("readyReplicas", 0),
        cost_usd=live.get("costTodayUSD"),
        cache_hit_rate=live.get("cacheHitRate"),
        live_rps=live.get("requestsPerSecond"),
        live_p95_ms=live.get("p95Ms"),
        failover=condition(body, "FailoverActive").get("status") == "True",
    )
    return s, list((status.get("autopilot") or {}).get("recent") or [])


def plot(
    path: Path,
    wins: list[Window],
    samples: list[Sample],
    decisions: list[dict[str, Any]],
    outage: tuple[float, float],
    rate: float,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 2, figsize=(13, 10), sharex=True)
    t = [w.start for w in wins]
    st = [s.at for s in samples]
    ax = axes[0][0]
    ax.plot(t, [w.rate for w in wins], label="sent (client)")
    ax.plot(st, [s.live_rps for s in samples], label="served (status.live)", alpha=0.7)
    ax.axhline(rate, color="grey", ls=":", label=f"target {rate:.1f}/s")
    ax.set_title("request rate (requests/s)")
    ax = axes[0][1]
    for q, values in (
        ("p50", [w.p50_ms for w in wins]),
        ("p95", [w.p95_ms for w in wins]),
        ("p99", [w.p99_ms for w in wins]),
    ):
        ax.plot(t, values, label=q)
    ax.set_title("latency, client-measured (ms)")
    ax = axes[1][0]
    ax.plot(t, [100 * w.error_rate for w in wins], color="tab:red")
    ax.set_title("error rate (%)")
    ax.set_ylim(bottom=0, top=max(1.0, *(100 * w.error_rate * 1.1 for w in wins)))
    ax = axes[1][1]
    ax.step(st, [s.replicas for s in samples], where="post", label="Deployment replicas")
    ax.step(st, [s.ready for s in samples], where="post", label="ready", alpha=0.7)
    ax.set_title("replicas")
    most = max([s.replicas or 0 for s in samples] + [1])
    ax.set_ylim(0, most + 1)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax = axes[2][0]
    ax.plot(st, [s.cost_usd for s in samples], color="tab:green")
    ax.set_title("spend today (USD, status.live)")
    ax = axes[2][1]
    ax.plot(t, [100 * w.cache_hit_rate for w in wins], label="exact hits (client)")
    ax.plot(
        st,
        [None if s.cache_hit_rate is None else 100 * s.cache_hit_rate for s in samples],
        label="status.live",
        alpha=0.7,
    )
    ax.set_title("cache hit rate (%)")
    ax.set_ylim(0, 100)
    for row in axes:
        for ax in row:
            ax.axvspan(*outage, color="tab:red", alpha=0.08)
            for d in decisions:
                ax.axvline(d["at"], color="tab:purple", ls="--", lw=0.8)
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, loc="upper left")
    top = axes[0][0]
    for d in decisions:
        top.annotate(
            d["decision"],
            (d["at"], 1.0),
            xycoords=("data", "axes fraction"),
            rotation=90,
            fontsize=7,
            va="top",
            color="tab:purple",
        )
    for ax in axes[2]:
        ax.set_xlabel("seconds (shaded: provider outage; dashed: autopilot decisions)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def report_html(summary: dict[str, Any], decisions: list[dict[str, Any]]) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in summary.items()
        if not isinstance(v, (list, dict))
    )
    decided = "".join(
        f"<tr><td>{d['at']:.0f}s</td><td>{html.escape(d['decision'])}</td>"
        f"<td>{html.escape(d['message'])}</td></tr>"
        for d in decisions
    )
    verdict = "PASSED" if summary["passed"] else "FAILED"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>SwiftClaw load test</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}td,th{{padding:2px 8px;
text-align:left}}</style></head><body>
<h1>SwiftClaw load test: {verdict}</h1>
<p>{html.escape(summary["load"])}</p>
<img src="loadtest.png" alt="load test plots" style="width:100%">
<h2>Summary</h2><table>{rows}</table>
<h2>Autopilot decisions</h2><table>{decided or "<tr><td>none</td></tr>"}</table>
</body></html>
"""


def run(args: argparse.Namespace, cluster: Cluster | None = None) -> int:
    """The load test; on ``cluster`` when given (a test's), which it leaves up."""
    spec = yaml.safe_load(EXAMPLE.read_text())["spec"]
    users = budgeted_users(spec)
    peak = expected_peak_rps(spec)
    rate = args.multiplier * peak
    target = success_target_percent(spec)
    phases = Phases()
    fleet = bring_up(Path(args.work), phases, traffic_rps=0, users=users, cluster=cluster)
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    host, port = fleet.service()
    least = int(fleet.doc["spec"]["scaling"]["minReplicas"])
    wait_until(
        f"{least} ready runtime pods (minReplicas)",
        lambda: int((fleet.agent().get("status") or {}).get("readyReplicas") or 0) >= least,
        180,
    )
    phases.end(f"{least} runtime pods ready (the example's minReplicas)")
    outage = (args.duration / 3, 2 * args.duration / 3)
    load = (
        f"{args.multiplier:g} x the example's expected peak of {peak:.2f} requests/s "
        f"({users} budgeted users, one message a minute each) = {rate:.1f} requests/s "
        f"for {args.duration:.0f} s through Service {fleet.name}.{fleet.namespace}; provider "
        f"{fleet.state['primary']!r} down from {outage[0]:.0f} s to {outage[1]:.0f} s"
    )
    phases.say(f"load: {load}")
    traffic = Traffic(host, port, f"{fleet.name}.{fleet.namespace}.svc", fleet.keys, rate)
    wall_start = time.time()
    traffic.start()
    samples: list[Sample] = []
    recent: dict[tuple[str, str], dict[str, Any]] = {}
    stop = threading.Event()

    def sampler() -> None:
        while not stop.is_set():
            try:
                s, decided = sample(fleet, time.monotonic() - traffic.started)
            except Exception as err:  # a missed sample is a gap in the plot
                print(f"  (sample failed: {err})", flush=True)
            else:
                samples.append(s)
                for d in decided:
                    recent[(d["time"], d["decision"])] = d
            stop.wait(SAMPLE_SECONDS)

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    primary = fleet.state["primary"]
    pid = int(fleet.state["sims"][primary]["pid"])
    try:
        time.sleep(outage[0])
        phases.say(f"outage: killing provider {primary!r} (pid {pid})")
        os.kill(pid, signal.SIGKILL)
        time.sleep(outage[1] - outage[0])
        phases.say(f"recovery: restarting provider {primary!r}")
        os.kill(int(fleet.state["supervisor"]), signal.SIGUSR1)
        time.sleep(max(0.0, args.duration - (time.monotonic() - traffic.started)))
    finally:
        traffic.stop()
        stop.set()
        thread.join(30)
    phases.end(f"load ({traffic.ok} answered, {traffic.failed} failed)")

    decisions = sorted(
        (
            {
                "at": parse_time(d["time"]) - wall_start,
                "decision": d["decision"],
                "message": d["message"],
            }
            for d in recent.values()
            if parse_time(d["time"]) >= wall_start - 1
        ),
        key=lambda d: float(d["at"]),
    )
    wins = windows(traffic.outcomes, SAMPLE_SECONDS, args.duration)
    figures = summarize(traffic.outcomes, args.duration, target, SAMPLE_SECONDS)
    replicas = [s.replicas for s in samples if s.replicas is not None]
    summary: dict[str, Any] = {
        "load": load,
        "expected_peak_rps": round(peak, 3),
        "multiplier": args.multiplier,
        "target_rps": round(rate, 2),
        "duration_s": args.duration,
        "outage_s": list(outage),
        **figures,
        "replicas_min": min(replicas) if replicas else None,
        "replicas_max": max(replicas) if replicas else None,
        "spend_usd_end": next(
            (s.cost_usd for s in reversed(samples) if s.cost_usd is not None), None
        ),
        "errors": traffic.errors[:10],
        "replicas_over_time": [(round(s.at), s.replicas, s.ready) for s in samples],
        "decisions": decisions,
        "windows": [asdict(w) for w in wins],
    }
    plot(results / "loadtest.png", wins, samples, decisions, outage, rate)
    (results / "summary.json").write_text(json.dumps(summary, indent=1))
    (results / "report.html").write_text(report_html(summary, decisions))
    phases.end(f"report in {results}")
    print(
        f"\nrequests {figures['requests']}, success {figures['success_percent']}% "
        f"(SLO {target}%), peak {figures['peak_rps']} req/s, p50/p95/p99 "
        f"{figures['p50_ms']}/{figures['p95_ms']}/{figures['p99_ms']} ms, replicas "
        f"{summary['replicas_min']}..{summary['replicas_max']}, spend "
        f"{summary['spend_usd_end']} USD, cache hits {figures['cache_hit_percent']}%"
    )
    for d in decisions:
        print(f"  {d['at']:6.0f}s  {d['decision']:16} {d['message']}")
    if cluster is not None:
        stop_fleet(fleet)
    elif args.keep_cluster:
        print("the cluster is left up: make cluster-down stops it")
    else:
        stop_cluster()
        phases.end("cluster down")
    if not figures["passed"]:
        print(f"FAILED: success rate {figures['success_percent']}% under the SLO's {target}%")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m swiftclaw_devtools.loadtest")
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of load")
    parser.add_argument("--multiplier", type=float, default=10.0, help="x the expected peak")
    parser.add_argument("--work", default=str(REPO / ".tmp" / "loadtest"))
    parser.add_argument("--results", default=str(REPO / "bench" / "results" / "loadtest"))
    parser.add_argument("--keep-cluster", action="store_true", help="leave the cluster up")
    args = parser.parse_args(argv)
    if args.duration < 30:
        parser.error("--duration must be at least 30 s (an outage in the middle third)")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
