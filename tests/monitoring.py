"""Real Prometheus, promtool and Alertmanager for the alert and dashboard tests.

The binaries come from ``make monitoring`` (``e2e/cluster/build-tools.sh --monitoring``,
cached in ~/.cache/swiftclaw); nothing here builds them (a cold build takes half an hour).
Every process listens on a free port of 127.0.0.1 and is stopped by pid.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from swiftclaw_devtools.processes import Proc, free_port, start
from swiftclaw_operator.resources import Agent, Settings
from swiftclaw_operator.resources.monitoring import build_prometheus_rule, build_service_monitor
from swiftclaw_runtime.config import AgentDeploymentSpec

REPO = Path(__file__).resolve().parent.parent
BUILD_TOOLS = REPO / "e2e" / "cluster" / "build-tools.sh"
SETTINGS = Settings(monitoring_available=True, runbook_base_url="https://runbooks.example/rb")


def monitoring_bin(name: str) -> Path:
    """The built ``prometheus``, ``promtool`` or ``alertmanager`` (``make monitoring``)."""
    proc = subprocess.run(
        [str(BUILD_TOOLS), "--check-monitoring"], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip())
    return Path(proc.stdout.strip().splitlines()[-1]) / name


def example_agent(path: str = "examples/agent-in-cluster.yaml") -> Agent:
    """An example manifest as the operator sees it, with monitoring available."""
    return agent_of(yaml.safe_load((REPO / path).read_text()))


def agent_of(doc: dict[str, Any]) -> Agent:
    """An AgentDeployment document as the operator sees it, with monitoring available."""
    meta = doc["metadata"]
    spec = AgentDeploymentSpec.model_validate(doc["spec"])
    return Agent(meta["name"], meta["namespace"], "uid-1", spec, SETTINGS)


def rule_file(agent: Agent) -> dict[str, Any]:
    """The rule groups of the operator's PrometheusRule: what Prometheus loads from it."""
    return {"groups": build_prometheus_rule(agent)["spec"]["groups"]}


def scrape_config(agent: Agent, target: str, interval: str | None = None) -> dict[str, Any]:
    """The scrape job the operator's ServiceMonitor implies for one pod: its path, its
    interval (or a shorter one for a test), and the ``namespace`` and ``service`` labels
    the Prometheus operator puts on every target of a ServiceMonitor (the rules select on
    them)."""
    endpoint = build_service_monitor(agent)["spec"]["endpoints"][0]
    return {
        "job_name": f"serviceMonitor/{agent.namespace}/{agent.name}/0",
        "metrics_path": endpoint["path"],
        "scrape_interval": interval or endpoint["interval"],
        "static_configs": [
            {
                "targets": [target],
                "labels": {"namespace": agent.namespace, "service": agent.name},
            }
        ],
    }


class Webhook:
    """A real HTTP receiver on 127.0.0.1 that keeps every notification POSTed to it."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        lock = threading.Lock()
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with lock:
                    received.append(json.loads(body))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Webhook:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def alerts(self, name: str) -> list[dict[str, Any]]:
        """Every alert called ``name`` in the notifications so far, in order."""
        return [
            a
            for n in list(self.received)
            for a in n["alerts"]
            if a["labels"].get("alertname") == name
        ]


@dataclass
class Prometheus:
    proc: Proc

    @property
    def url(self) -> str:
        return self.proc.url

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>``; returns the parsed body even on a 4xx (a bad query)."""
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as err:
            return json.loads(err.read())

    def query(self, expr: str) -> Any:
        return self.api("query", query=expr)

    def alerts(self) -> list[dict[str, Any]]:
        return list(self.api("alerts")["data"]["alerts"])


def until(what: str, check: Callable[[], Any], timeout: float) -> Any:
    """Wait for ``check`` to return something truthy, polling; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(1)
    raise AssertionError(f"not within {timeout:.0f}s: {what}")


def ready(url: str, timeout: float = 120.0) -> None:
    """Wait until ``url`` answers 200 (``start`` waits for any answer; both say 503 while
    they load)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:  # 503 (HTTPError) or not answering yet
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready in {timeout:.0f}s")


@contextmanager
def prometheus(
    folder: Path,
    scrape: list[dict[str, Any]],
    rules: dict[str, Any] | None = None,
    alertmanager_url: str | None = None,
    evaluation_interval: str = "1m",
) -> Iterator[Prometheus]:
    """A real Prometheus on 127.0.0.1 with these scrape jobs, rules and Alertmanager."""
    folder.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {
        "global": {"evaluation_interval": evaluation_interval},
        "scrape_configs": scrape,
    }
    if rules is not None:
        (folder / "rules.yaml").write_text(yaml.safe_dump(rules))
        config["rule_files"] = [str(folder / "rules.yaml")]
    if alertmanager_url is not None:
        host = urllib.parse.urlsplit(alertmanager_url).netloc
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [host]}]}]}
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    argv = [
        str(monitoring_bin("prometheus")),
        f"--config.file={folder / 'prometheus.yml'}",
        f"--storage.tsdb.path={folder / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    proc = start(argv, port, "/-/ready", folder / "prometheus.log", timeout=120)
    try:
        ready(f"{proc.url}/-/ready")
        yield Prometheus(proc)
    finally:
        proc.stop()


@contextmanager
def alertmanager(folder: Path, webhook_url: str) -> Iterator[Proc]:
    """A real Alertmanager on 127.0.0.1 sending every alert to one webhook; short waits so
    that a test sees the first notification and the resolution within seconds."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "route": {
            "receiver": "webhook",
            "group_by": ["alertname", "agent"],
            "group_wait": "1s",
            "group_interval": "2s",
            "repeat_interval": "4h",
        },
        "receivers": [
            {"name": "webhook", "webhook_configs": [{"url": webhook_url, "send_resolved": True}]}
        ],
    }
    (folder / "alertmanager.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    argv = [
        str(monitoring_bin("alertmanager")),
        f"--config.file={folder / 'alertmanager.yml'}",
        f"--storage.path={folder / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",  # one instance: no gossip port
        "--log.level=warn",
    ]
    proc = start(argv, port, "/-/ready", folder / "alertmanager.log", timeout=120)
    try:
        ready(f"{proc.url}/-/ready")
        yield proc
    finally:
        proc.stop()
