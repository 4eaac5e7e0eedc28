"""``make demo-cluster``: the operator, the fleet and the autopilot acting together.

On the local cluster (:mod:`.cluster_fleet`: control plane, chart, the example agent's pods
as real processes, simulated providers, Prometheus with the operator's rules, Alertmanager
and a webhook receiver; all on loopback), with steady traffic through the agent's Service,
the primary provider is killed by pid, then restarted. The command prints what a user
would look at: ``kubectl get agentdeployments`` (P95 and Cost filled), the Events, the
FailoverActive condition going True (fleet failover) and back (failback), and the alert
as the receiver got it, fired and resolved. It leaves the cluster up, with the commands
to explore it, and ``make cluster-down`` stops everything it started.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from .cluster_fleet import REPO, Fleet, Phases, bring_up, condition
from .cluster_traffic import wait_until

ALERT = "SwiftClawCircuitBreakerOpen"


def alerts(received: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """Every alert called ``name`` in the receiver's notifications, in order."""
    return [a for n in received for a in n["alerts"] if a["labels"].get("alertname") == name]


def show_alert(a: dict[str, Any]) -> str:
    labels = ", ".join(f"{k}={v}" for k, v in sorted(a["labels"].items()))
    ends = f" endsAt={a['endsAt']}" if a["status"] == "resolved" else ""
    return (
        f"  {a['status'].upper():8} {{{labels}}} startsAt={a['startsAt']}{ends}\n"
        f"           {a['annotations'].get('summary', '')}\n"
        f"           runbook: {a['annotations'].get('runbook_url', '')}"
    )


def with_condition(fleet: Fleet, type_: str, status: str) -> dict[str, Any] | None:
    """The agent when its condition ``type_`` has ``status``, else None."""
    body = fleet.agent()
    return body if condition(body, type_).get("status") == status else None


def show(fleet: Fleet, title: str, *args: str) -> None:
    print(f"\n$ kubectl {' '.join(args)}    # {title}")
    print(fleet.kubectl(*args, check=False).rstrip())


def events(fleet: Fleet) -> None:
    show(
        fleet,
        "the agent's Events",
        "get",
        "events",
        "-n",
        fleet.namespace,
        "--field-selector",
        f"involvedObject.kind=AgentDeployment,involvedObject.name={fleet.name}",
        "--sort-by=.lastTimestamp",
    )


def explore(fleet: Fleet) -> None:
    kc = fleet.kubeconfig
    print(
        f"""
The cluster is still up, with the traffic, the autopilot and Prometheus running:

  export KUBECONFIG={kc}
  export PATH={fleet.bin}:$PATH
  kubectl get agentdeployments -A
  kubectl get pods,svc,hpa,configmaps -n {fleet.namespace}
  kubectl get events -n {fleet.namespace} --sort-by=.lastTimestamp
  kubectl get agentdeployment {fleet.name} -n {fleet.namespace} -o jsonpath='{{.status.live}}'
  Prometheus:   {fleet.state["prometheus"]}   (e.g. /api/v1/query?query=swiftclaw_requests_total)
  Alertmanager: {fleet.state["alertmanager"]}
  logs:         {fleet.work}/ (supervisor.log, operator-1.log, logs/pods/, sim-*.log)

Stop it all (traffic, Prometheus, Alertmanager, simulators, operator, pods, control plane):

  make cluster-down
"""
    )


def run(args: argparse.Namespace) -> int:
    phases = Phases()
    fleet = bring_up(Path(args.work), phases, traffic_rps=args.rps, users=args.users)
    ns, name = fleet.namespace, fleet.name

    phases.say(f"traffic: {args.rps:g} requests/s through Service {name}.{ns}, {args.users} users")
    wait_until(
        "status.live with P95 and cost",
        lambda: (
            (live := (fleet.agent().get("status") or {}).get("live") or {}).get("p95Ms")
            and live.get("costTodayUSD") is not None
        ),
        180,
    )
    phases.end("live figures in status (the operator read the pods)")
    least = int(fleet.doc["spec"]["scaling"]["minReplicas"])
    wait_until(
        f"{least} ready runtime pods (minReplicas)",
        lambda: int((fleet.agent().get("status") or {}).get("readyReplicas") or 0) >= least,
        180,
    )
    phases.end(f"{least} runtime pods ready (the example's minReplicas)")
    show(fleet, "P95 and Cost filled by the autopilot", "get", "agentdeployments", "-A")

    primary = fleet.state["primary"]
    pid = int(fleet.state["sims"][primary]["pid"])
    phases.say(f"outage: killing provider {primary!r} (pid {pid}) with SIGKILL")
    os.kill(pid, signal.SIGKILL)
    body = wait_until(
        "FailoverActive=True", lambda: with_condition(fleet, "FailoverActive", "True"), 180
    )
    phases.end("failover")
    c = condition(body, "FailoverActive")
    print(f"  FailoverActive={c['status']} reason={c['reason']}: {c['message']}")
    events(fleet)

    phases.say(f"waiting for {ALERT} (its `for` is 2m) to reach the receiver")
    wait_until(
        f"{ALERT} firing at the receiver",
        lambda: [a for a in alerts(fleet.received(), ALERT) if a["status"] == "firing"],
        420,
        2,
    )
    phases.end("alert fired and delivered")
    for a in alerts(fleet.received(), ALERT):
        print(show_alert(a))

    phases.say(f"recovery: restarting provider {primary!r} on its port")
    os.kill(int(fleet.state["supervisor"]), signal.SIGUSR1)
    wait_until(
        "the provider restarted",
        lambda: fleet.refresh()["sims"][primary]["pid"] != pid,
        60,
    )
    wait_until(
        f"{ALERT} resolved at the receiver",
        lambda: [a for a in alerts(fleet.received(), ALERT) if a["status"] == "resolved"],
        420,
        2,
    )
    phases.end("alert resolved and delivered")
    body = wait_until(
        "FailoverActive=False (failback)",
        lambda: with_condition(fleet, "FailoverActive", "False"),
        420,
        2,
    )
    phases.end("failback")
    c = condition(body, "FailoverActive")
    print(f"  FailoverActive={c['status']} reason={c['reason']}: {c['message']}")

    print("\n=== What a user looks at ===")
    sent = fleet.traffic()
    print(
        f"\nTraffic through the Service so far: {sent.get('ok', 0)} answered, "
        f"{sent.get('failed', 0)} failed (the pods' fallbacks carried the outage)"
    )
    show(fleet, "the fleet", "get", "agentdeployments", "-A")
    events(fleet)
    recent = ((fleet.agent().get("status") or {}).get("autopilot") or {}).get("recent") or []
    print("\nstatus.autopilot.recent (newest first):")
    for r in recent[:10]:
        print(f"  {r['time']}  {r['decision']:16} {r['message']}")
    print("\nThe alert as the receiver got it (Prometheus -> Alertmanager -> webhook):")
    for a in alerts(fleet.received(), ALERT):
        print(show_alert(a))
    others = {
        a["labels"].get("alertname")
        for n in fleet.received()
        for a in n["alerts"]
        if a["labels"].get("alertname") != ALERT
    }
    if others:
        print(f"  (other alerts received: {', '.join(sorted(others))})")
    print("\nPhases:")
    for what, seconds in phases.done:
        print(f"  {seconds:7.1f}s  {what}")
    print(f"  {phases.elapsed():7.1f}s  in all")
    explore(fleet)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m swiftclaw_devtools.demo_cluster")
    parser.add_argument("--work", default=str(REPO / ".tmp" / "demo-cluster"))
    parser.add_argument("--rps", type=float, default=4.0, help="steady traffic (requests/s)")
    parser.add_argument("--users", type=int, default=100, help="users (one API key each)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        return run(args)
    except BaseException:
        print(
            f"\ndemo-cluster failed after {time.monotonic() - started:.0f}s; logs in "
            f"{args.work}; the cluster is left up for a look: make cluster-down stops it",
            file=sys.stderr,
        )
        raise


if __name__ == "__main__":
    sys.exit(main())
