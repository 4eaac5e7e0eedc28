"""The operator as a real process against the test cluster, with its metrics readable."""

from __future__ import annotations

import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from swiftclaw_devtools.processes import Proc, free_port, start, wait_http
from swiftclaw_operator.resources import child_kinds

from .cluster import REPO, Cluster, wait_for

CRD = REPO / "crds" / "agentdeployments.swiftclaw.dev.yaml"
EXAMPLE = REPO / "examples" / "agent-in-cluster.yaml"


def install_crd(cluster: Cluster, crd: Path = CRD) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))

    # Polled rather than `kubectl wait`, which fails while the new CRD has no status yet.
    def established() -> bool:
        crd = cluster.get("crd", "agentdeployments.swiftclaw.dev")
        return any(
            c["type"] == "Established" and c["status"] == "True"
            for c in (crd.get("status") or {}).get("conditions") or []
        )

    wait_for("the AgentDeployment CRD established", established, 60)


@dataclass
class Operator:
    cluster: Cluster
    log_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: Proc | None = None
    starts: int = 0

    def start(self, **env: str) -> Operator:
        port, live = free_port(), free_port()
        self.starts += 1
        log = self.log_dir / f"operator-{self.starts}.log"
        full_env = {
            **self.cluster.env,
            "SWIFTCLAW_STANDALONE": "1",
            "SWIFTCLAW_LOG_FORMAT": "plain",
            "SWIFTCLAW_METRICS_PORT": str(port),
            "SWIFTCLAW_LIVENESS_PORT": str(live),
            **self.env,
            **env,
        }
        self.proc = start(
            [sys.executable, "-m", "swiftclaw_operator"],
            port,
            "/metrics",
            log,
            full_env,
            timeout=30,
        )
        wait_http(f"http://127.0.0.1:{live}/healthz", 30, self.proc.popen)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc = None

    def metrics(self) -> dict[str, float]:
        """Current samples of the operator's counters, by full sample name with labels."""
        assert self.proc is not None
        with urllib.request.urlopen(f"{self.proc.url}/metrics", timeout=5) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            if line.startswith("swiftclaw_operator_") and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def counter(self, prefix: str) -> float:
        return sum(v for k, v in self.metrics().items() if k.startswith(prefix))

    def log(self) -> str:
        return self.proc.log() if self.proc else ""


def example(name: str, **spec_overrides: Any) -> dict[str, Any]:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["metadata"] = {"name": name}
    doc["spec"].update(spec_overrides)
    return dict(doc)


def children(cluster: Cluster, ns: str, name: str) -> dict[str, dict[str, Any]]:
    """Every object in ``ns`` labelled as one of the agent's children, by "Kind/name"."""
    kinds = ",".join(
        f"{k.plural}.{k.group}".rstrip(".") for k in child_kinds() if k.requires is None
    )
    items = cluster.get(
        kinds,
        "-n",
        ns,
        "-l",
        f"app.kubernetes.io/instance={name},app.kubernetes.io/managed-by=swiftclaw-operator",
    )["items"]
    return {f"{i['kind']}/{i['metadata']['name']}": i for i in items}


def write_marker(obj: dict[str, Any]) -> tuple[Any, ...]:
    """What changes when the operator writes an object, and only then.

    resourceVersion also moves when a controller writes the object's status (HPA, PDB,
    Deployment), so for objects with a status the marker is their generation plus the
    time of the operator's own managed-fields entry.
    """
    meta = obj["metadata"]
    ours = [
        m.get("time")
        for m in meta.get("managedFields", [])
        if m.get("manager") == "swiftclaw-operator" and m.get("operation") == "Apply"
    ]
    if "status" in obj and obj["kind"] not in ("Service", "PersistentVolumeClaim"):
        return (meta.get("generation"), tuple(ours))
    return (meta["resourceVersion"],)


def condition(body: dict[str, Any], type_: str) -> dict[str, Any]:
    for c in (body.get("status") or {}).get("conditions", []):
        if c["type"] == type_:
            return dict(c)
    return {}


def wait_condition(
    cluster: Cluster,
    ns: str,
    name: str,
    type_: str,
    status: str,
    reason: str | None = None,
    timeout: float = 60,
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        body = cluster.get("agentdeployment", name, "-n", ns)
        c = condition(body, type_)
        if c.get("status") == status and (reason is None or c.get("reason") == reason):
            return dict(body)
        return None

    return dict(wait_for(f"{type_}={status} on {ns}/{name}", probe, timeout))


def events(cluster: Cluster, ns: str, name: str) -> list[dict[str, Any]]:
    items = cluster.get(
        "events",
        "-n",
        ns,
        "--field-selector",
        f"involvedObject.kind=AgentDeployment,involvedObject.name={name}",
    )["items"]
    return list(items)


def api_requests(op: Operator) -> float:
    return op.counter("swiftclaw_operator_api_requests_total")


def failed_calls(op: Operator) -> dict[str, float]:
    """The operator's API requests that failed (a 404 on a read is an answer, not counted)
    and those answered 401 (then retried with renewed credentials)."""
    out = {
        k: v for k, v in op.metrics().items() if k.startswith("swiftclaw_operator_api_errors_total")
    }
    reauths = op.counter("swiftclaw_operator_api_reauths_total")
    if reauths:
        out["swiftclaw_operator_api_reauths_total"] = reauths
    return out
