"""The local cluster with the example agent running, for ``make demo-cluster`` and
``make loadtest``: the parts the e2e tests use, put together and left running.

:func:`bring_up` starts the local control plane (``e2e/cluster/up.sh``), installs the chart
(its CRDs and the operator's RBAC; kwok's nodes run no container, so the operator runs as a
process with the chart's service account token, as ``e2e/test_rbac.py`` runs it), creates
a ``podrun-*`` namespace with the API keys Secret, and starts the *supervisor*: one process
of its own session (``python -m swiftclaw_devtools.cluster_fleet serve``) that owns
everything else and outlives the command:

- the pod runner (``e2e/podrunner.py``): the agent's pods as real runtime and Redis
  processes, its Service's cluster IP proxied to the ready pods;
- one simulated provider per provider of the example (``swiftclaw sim``);
- the operator (``e2e/operator.py``), autopilot on;
- Prometheus scraping the runtime pods as the operator's ServiceMonitor implies (a file of
  the ready pods' loopback addresses, rewritten as they come and go), with the operator's
  rendered rules, evaluated every 5 s; Alertmanager sending to a webhook receiver whose
  notifications go to ``received.json``;
- optional steady traffic through the Service.

Its pid and its children's are written to the cluster's work dir
(``$KWOK_WORKDIR/clusters/<name>/swiftclaw-demo/``); ``e2e/cluster/down.sh`` stops them by
pid before the control plane. SIGUSR1 restarts the primary provider on its port (the demo
kills it by pid). Everything listens on loopback.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .cluster_traffic import wait_until
from .processes import Proc, free_port, start_sim

if TYPE_CHECKING:
    from e2e.cluster import Cluster

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "agent-in-cluster.yaml"
CHART = REPO / "charts" / "swiftclaw"
NAMESPACE = "podrun-demo"
OPERATOR_NAMESPACE = "swiftclaw-system"
RELEASE = "swiftclaw"
PRIMARY = "openai"  # the provider of the default tier's model: the one the outage takes
SIM_LATENCY = ("--latency", "lognormal:300,0.3")
EVALUATION_INTERVAL = "5s"
SCRAPE_INTERVAL = "5s"
USERS_KEY_PREFIX = "sk-demo-user-"


def pid_dir() -> Path:
    """Where the demo's pids go: the local cluster's work dir, which down.sh reads."""
    workdir = Path(os.environ.get("KWOK_WORKDIR", str(Path.home() / ".kwok")))
    name = os.environ.get("SWIFTCLAW_CLUSTER", "swiftclaw")
    return workdir / "clusters" / name / "swiftclaw-demo"


class Phases:
    """Prints each phase with the seconds since the start, and keeps their durations."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.last = self.start
        self.done: list[tuple[str, float]] = []

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def say(self, text: str) -> None:
        print(f"[{self.elapsed():6.1f}s] {text}", flush=True)

    def end(self, name: str) -> None:
        now = time.monotonic()
        self.done.append((name, now - self.last))
        self.last = now
        self.say(f"{name}: done in {self.done[-1][1]:.1f}s")


# --- the demo's variant of the example (pure) ----------------------------------------


def demo_manifest(
    example: dict[str, Any], namespace: str, sim_ports: dict[str, int]
) -> dict[str, Any]:
    """The example agent as it runs here: in ``namespace``, each provider a simulator on
    loopback (``openai-compatible``, no key), the exact cache on managed Redis without
    backups (no S3 here) and without the semantic cache (its encoder would take a core of
    this machine's two), the autopilot on (every 5 s, failback after 30 s of clean traffic),
    and breakers open 150 s (the example's 60 s would half-open before
    SwiftClawCircuitBreakerOpen's ``for`` of 2 m). Everything else as the example says."""
    doc = copy.deepcopy(example)
    doc["metadata"]["namespace"] = namespace
    spec = doc["spec"]
    missing = {p["name"] for p in spec["providers"]} - set(sim_ports)
    if missing:
        raise ValueError(f"no simulator for providers {sorted(missing)}")
    spec["providers"] = [
        {
            "name": p["name"],
            "type": "openai-compatible",
            "baseURL": f"http://127.0.0.1:{sim_ports[p['name']]}/v1",
        }
        for p in spec["providers"]
    ]
    redis = {k: v for k, v in spec["cache"]["redis"].items() if k != "backup"}
    spec["cache"] = {**spec["cache"], "semantic": {"enabled": False}, "redis": redis}
    spec["reliability"]["circuitBreaker"]["openSeconds"] = 150
    spec["autopilot"] = {
        "enabled": True,
        "intervalSeconds": 5,
        "thresholds": {"healthySeconds": 30},
    }
    return doc


def user_keys(n: int) -> list[dict[str, str]]:
    """``n`` users of one tenant, one API key each (the keys Secret's document)."""
    return [
        {"key": f"{USERS_KEY_PREFIX}{i:04d}-0123456789", "tenant": "acme", "user": f"user-{i:04d}"}
        for i in range(n)
    ]


# --- the foreground side ---------------------------------------------------------------


@dataclass
class Fleet:
    """What :func:`bring_up` started, as the demo and the load test need it."""

    kubeconfig: Path
    bin: Path
    work: Path
    doc: dict[str, Any]
    keys: list[str]
    state: dict[str, Any]
    supervisor: subprocess.Popen[bytes] | None = None

    @property
    def namespace(self) -> str:
        return str(self.doc["metadata"]["namespace"])

    @property
    def name(self) -> str:
        return str(self.doc["metadata"]["name"])

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{self.bin}:{os.environ.get('PATH', '')}",
        }

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> str:
        proc = subprocess.run(
            [str(self.bin / "kubectl"), *args],
            env=self.env(),
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def agent(self) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(
            self.kubectl("get", "agentdeployment", self.name, "-n", self.namespace, "-o", "json")
        )
        return out

    def refresh(self) -> dict[str, Any]:
        self.state = json.loads((self.work / "state.json").read_text())
        return self.state

    def received(self) -> list[dict[str, Any]]:
        """The notifications the webhook receiver got, oldest first."""
        path = self.work / "received.json"
        return list(json.loads(path.read_text())) if path.exists() else []

    def traffic(self) -> dict[str, int]:
        """The background traffic's counts (answered ``ok``, ``failed``) so far."""
        path = self.work / "traffic.json"
        return dict(json.loads(path.read_text())) if path.exists() else {}

    def service(self) -> tuple[str, int]:
        svc = json.loads(
            self.kubectl("get", "service", self.name, "-n", self.namespace, "-o", "json")
        )
        return str(svc["spec"]["clusterIP"]), 80


def condition(body: dict[str, Any], type_: str) -> dict[str, Any]:
    for c in (body.get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return dict(c)
    return {}


def bring_up(
    work: Path, phases: Phases, traffic_rps: float, users: int, cluster: Cluster | None = None
) -> Fleet:
    """The cluster, the chart, the supervisor and the example agent Ready; see the module."""
    from e2e.cluster import start  # the repository's e2e helpers (run from its root)
    from e2e.operator import install_crd

    work.mkdir(parents=True, exist_ok=True)
    if cluster is None:
        phases.say("starting the local control plane (e2e/cluster/up.sh)")
        cluster = start("local")
        phases.end("control plane")

    subprocess.run(
        [
            str(cluster.bin / "helm"),
            "install",
            RELEASE,
            str(CHART),
            "-n",
            OPERATOR_NAMESPACE,
            "--create-namespace",
            "--wait=false",
        ],
        env=cluster.env,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    install_crd(cluster)  # the chart's copy, applied again: waits until it is established
    token = cluster.kubectl(
        "create", "token", f"{RELEASE}-operator", "-n", OPERATOR_NAMESPACE, "--duration=48h"
    ).strip()
    cfg = json.loads(cluster.kubectl("config", "view", "--raw", "--minify", "-o", "json"))
    cfg["users"] = [{"name": "operator", "user": {"token": token}}]
    cfg["contexts"][0]["context"]["user"] = "operator"
    sa_kubeconfig = work / "operator-kubeconfig"
    sa_kubeconfig.write_text(yaml.safe_dump(cfg))
    sa_kubeconfig.chmod(0o600)
    phases.end(f"chart installed (release {RELEASE} in {OPERATOR_NAMESPACE})")

    keys = user_keys(users)
    cluster.kubectl("create", "namespace", NAMESPACE)
    example = yaml.safe_load(EXAMPLE.read_text())
    secret = example["spec"]["auth"]["apiKeysSecretRef"]
    cluster.kubectl(
        "create",
        "secret",
        "generic",
        secret["name"],
        "-n",
        NAMESPACE,
        f"--from-file={secret['key']}=/dev/stdin",
        input=yaml.safe_dump({"keys": keys}),
    )
    ports = {p["name"]: free_port() for p in example["spec"]["providers"]}
    doc = demo_manifest(example, NAMESPACE, ports)
    (work / "agent.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    keys_file = work / "keys.json"
    keys_file.write_text(json.dumps([k["key"] for k in keys]))
    keys_file.chmod(0o600)

    (work / "state.json").unlink(missing_ok=True)
    log = open(work / "supervisor.log", "wb")  # noqa: SIM115 - the child owns it
    supervisor = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "swiftclaw_devtools.cluster_fleet",
            "serve",
            "--work",
            str(work),
            "--kubeconfig",
            str(cluster.kubeconfig),
            "--operator-kubeconfig",
            str(sa_kubeconfig),
            "--traffic-rps",
            str(traffic_rps),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
        env=cluster.env,
        start_new_session=True,  # outlives this command; down.sh stops it by pid
    )
    pids = pid_dir()
    pids.mkdir(parents=True, exist_ok=True)
    (pids / "supervisor.pid").write_text(str(supervisor.pid))

    def state() -> dict[str, Any] | None:
        if supervisor.poll() is not None:
            raise RuntimeError(f"the supervisor exited; see {work / 'supervisor.log'}")
        path = work / "state.json"
        return dict(json.loads(path.read_text())) if path.exists() else None

    got = wait_until("the supervisor's processes up", state, 240, 0.5)
    phases.end(
        "pod runner, simulated providers, operator, Prometheus, Alertmanager and receiver up"
    )
    fleet = Fleet(
        cluster.kubeconfig, cluster.bin, work, doc, [k["key"] for k in keys], dict(got), supervisor
    )
    fleet.kubectl("apply", "-f", str(work / "agent.yaml"))
    wait_until(
        "the agent Ready",
        lambda: condition(fleet.agent(), "Ready").get("status") == "True",
        240,
    )
    phases.end(f"agent {NAMESPACE}/{fleet.name} Ready (its pods run as processes)")
    return fleet


def stop_fleet(fleet: Fleet) -> None:
    """What :func:`bring_up` started, on a cluster it did not start (which stays up): the
    agent's namespace first, while the pod runner still runs to end its pods (as a kubelet
    would: without it they would stay, and the namespace with them), then the supervisor by
    pid (it stops its children), the chart and its namespace. The agent goes first, while
    the operator runs to remove its finalizer."""

    def gone(kind: str) -> bool:
        return not fleet.kubectl("get", kind, "-n", NAMESPACE, "-o", "name", check=False)

    fleet.kubectl(
        "delete", "agentdeployment", fleet.name, "-n", NAMESPACE, "--wait=false", check=False
    )
    fleet.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)
    with contextlib.suppress(TimeoutError):
        wait_until("the agent deleted", lambda: gone("agentdeployments"), 90)
        wait_until(f"the pods of {NAMESPACE} ended", lambda: gone("pods"), 90)
    if fleet.supervisor is not None:
        fleet.supervisor.terminate()
        try:
            fleet.supervisor.wait(60)
        except subprocess.TimeoutExpired:
            fleet.supervisor.kill()
            fleet.supervisor.wait(10)
    (pid_dir() / "supervisor.pid").unlink(missing_ok=True)
    subprocess.run(
        [str(fleet.bin / "helm"), "uninstall", RELEASE, "-n", OPERATOR_NAMESPACE],
        env=fleet.env(),
        check=False,
        capture_output=True,
        timeout=120,
    )
    fleet.kubectl("delete", "namespace", OPERATOR_NAMESPACE, "--wait=false", check=False)


def stop_cluster() -> None:
    """``make cluster-down``'s script: the supervisor (by pid), then the control plane."""
    subprocess.run([str(REPO / "e2e" / "cluster" / "down.sh")], check=False)


# --- the supervisor ---------------------------------------------------------------------


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=1))
    os.replace(tmp, path)


def _targets(api: Any, namespace: str, name: str) -> list[dict[str, Any]]:
    """The ready runtime pods as Prometheus file_sd targets, labelled as a ServiceMonitor's
    targets are (``namespace``, ``service``: the operator's rules select on them)."""
    from e2e.kubeapi import pod_ready

    from swiftclaw_runtime.contract import METRICS_PORT

    query = f"app.kubernetes.io/instance={name},app.kubernetes.io/component=runtime"
    pods = api.get(f"/api/v1/namespaces/{namespace}/pods", labelSelector=query)["items"]
    ips = sorted(
        p["status"]["podIP"]
        for p in pods
        if pod_ready(p)
        and (p.get("status") or {}).get("podIP")
        and not p["metadata"].get("deletionTimestamp")
    )
    if not ips:
        return []
    return [
        {
            "targets": [f"{ip}:{METRICS_PORT}" for ip in ips],
            "labels": {"namespace": namespace, "service": name},
        }
    ]


def _every(seconds: float, stop: threading.Event, what: Callable[[], None]) -> threading.Thread:
    def loop() -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):  # a failed round is retried next time
                what()
            stop.wait(seconds)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return t


@contextlib.contextmanager
def _sims(work: Path, ports: dict[str, int]) -> Iterator[dict[str, Proc]]:
    sims = {
        name: start_sim(port, *SIM_LATENCY, "--seed", str(i), log_path=work / f"sim-{name}.log")
        for i, (name, port) in enumerate(ports.items())
    }
    try:
        yield sims
    finally:
        for p in sims.values():
            p.stop()


def serve(args: argparse.Namespace) -> int:
    """The supervisor: starts everything, writes ``state.json``, runs until SIGTERM."""
    from e2e.cluster import Cluster, tools_bin
    from e2e.kubeapi import KubeAPI
    from e2e.operator import Operator
    from e2e.podrunner import PodRunner
    from tests.monitoring import (
        Webhook,
        alertmanager,
        prometheus,
        rule_file,
        scrape_config,
    )

    from swiftclaw_operator.resources import Agent, Settings
    from swiftclaw_runtime.config import AgentDeploymentSpec

    from .cluster_traffic import Traffic

    work = Path(args.work)
    doc = yaml.safe_load((work / "agent.yaml").read_text())
    ns, name = doc["metadata"]["namespace"], doc["metadata"]["name"]
    ports = {
        p["name"]: int(p["baseURL"].rsplit(":", 1)[1].split("/")[0])
        for p in doc["spec"]["providers"]
    }
    stop = threading.Event()
    restart = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGUSR1, lambda *_: restart.set())
    pids = pid_dir()
    pids.mkdir(parents=True, exist_ok=True)

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    settings = Settings(
        monitoring_available=True, runbook_base_url=values["operator"]["runbookBaseURL"]
    )
    agent = Agent(name, ns, "demo", AgentDeploymentSpec.model_validate(doc["spec"]), settings)
    job = scrape_config(agent, "unused", interval=SCRAPE_INTERVAL)
    targets_file = work / "targets.json"
    _write_json(targets_file, [])
    del job["static_configs"]
    job["file_sd_configs"] = [{"files": [str(targets_file)], "refresh_interval": "5s"}]

    api = KubeAPI(Path(args.kubeconfig))
    runner = PodRunner(api, work / "podrun", work / "logs" / "pods").start()
    op_cluster = Cluster("local", Path(args.operator_kubeconfig), tools_bin())
    operator = Operator(
        op_cluster,
        work,
        env={
            "SWIFTCLAW_STANDALONE": "0",
            "SWIFTCLAW_PEERING": f"{RELEASE}-operator",
            "SWIFTCLAW_DRIFT_SECONDS": "10",
        },
    )
    traffic: Traffic | None = None
    try:
        with (
            _sims(work, ports) as sims,
            Webhook() as hook,
            alertmanager(work / "alertmanager", hook.url) as am,
            prometheus(
                work / "prometheus",
                [job],
                rule_file(agent),
                am.url,
                evaluation_interval=EVALUATION_INTERVAL,
            ) as prom,
        ):
            operator.start()
            assert operator.proc is not None
            procs = {
                "prometheus": prom.proc.pid,
                "alertmanager": am.pid,
                "operator": operator.proc.pid,
                **{f"sim-{n}": p.pid for n, p in sims.items()},
            }
            for what, pid in procs.items():
                (pids / f"{what}.pid").write_text(str(pid))
            _every(2, stop, lambda: _write_json(targets_file, _targets(api, ns, name)))
            _every(1, stop, lambda: _write_json(work / "received.json", list(hook.received)))
            _every(2, stop, lambda: _write_json(pids / "pods.json", sorted(runner.pids)))

            def counts() -> None:
                if traffic is not None:
                    _write_json(work / "traffic.json", {"ok": traffic.ok, "failed": traffic.failed})

            _every(1, stop, counts)

            def state() -> dict[str, Any]:
                return {
                    "supervisor": os.getpid(),
                    "sims": {n: {"pid": p.pid, "url": p.url} for n, p in sims.items()},
                    "primary": PRIMARY,
                    "operator": {"pid": procs["operator"], "log": str(operator.log_dir)},
                    "prometheus": prom.url,
                    "alertmanager": am.url,
                    "receiver": hook.url,
                    "traffic_rps": args.traffic_rps,
                }

            _write_json(work / "state.json", state())
            while not stop.wait(0.5):
                if restart.is_set():
                    restart.clear()
                    old = sims[PRIMARY]
                    old.stop()  # reaped (the demo killed it)
                    sims[PRIMARY] = start_sim(
                        ports[PRIMARY], *SIM_LATENCY, log_path=work / f"sim-{PRIMARY}.log"
                    )
                    (pids / f"sim-{PRIMARY}.pid").write_text(str(sims[PRIMARY].pid))
                    _write_json(work / "state.json", state())
                if traffic is None and args.traffic_rps > 0:
                    svc = api.get(f"/api/v1/namespaces/{ns}/services/{name}")
                    ready = _targets(api, ns, name)
                    if svc and ready:
                        keys = json.loads((work / "keys.json").read_text())
                        traffic = Traffic(
                            svc["spec"]["clusterIP"],
                            80,
                            f"{name}.{ns}.svc",
                            keys,
                            args.traffic_rps,
                            keep=False,
                        ).start()
    finally:
        if traffic is not None:
            traffic.stop()
        operator.stop()
        runner.stop()
        for f in pids.glob("*"):
            if f.name != "supervisor.pid":
                f.unlink(missing_ok=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m swiftclaw_devtools.cluster_fleet")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="the supervisor (started by bring_up)")
    s.add_argument("--work", required=True)
    s.add_argument("--kubeconfig", required=True)
    s.add_argument("--operator-kubeconfig", required=True)
    s.add_argument("--traffic-rps", type=float, default=0.0)
    args = parser.parse_args(argv)
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
