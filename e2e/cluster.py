"""A handle on the Kubernetes cluster the end-to-end tests run against.

``E2E_CLUSTER`` picks it: ``local`` (default) starts the control plane of ``e2e/cluster/``
(kwok nodes, no Docker), which ``make control-plane`` builds beforehand; ``kind`` creates a
kind cluster where Docker exists; ``existing`` uses the current kubeconfig as it is and
tears nothing down.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CLUSTER_DIR = REPO / "e2e" / "cluster"
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


def pinned_versions() -> dict[str, str]:
    out = {}
    for line in (CLUSTER_DIR / "versions.env").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def tools_bin(mode: str = "local") -> Path:
    """The folder of kubectl and helm (and, for ``local``, the control plane's binaries).

    Never builds: a cold build takes minutes, longer than a test's timeout, so ``make
    control-plane`` (a prerequisite of ``make test`` with ``E2E_CLUSTER=local``) does it.
    ``kind`` and ``existing`` fall back to the kubectl and helm on PATH.
    """
    proc = subprocess.run(
        [str(CLUSTER_DIR / "build-tools.sh"), "--check"], capture_output=True, text=True
    )
    if proc.returncode == 0:
        return Path(proc.stdout.strip().splitlines()[-1])
    if mode != "local":
        found = {name: shutil.which(name) for name in ("kubectl", "helm")}
        if all(found.values()):
            links = REPO / ".tmp" / "path-bin"
            links.mkdir(parents=True, exist_ok=True)
            for name, target in found.items():
                (links / name).unlink(missing_ok=True)
                (links / name).symlink_to(str(target))
            return links
        raise RuntimeError(f"{proc.stderr.strip()}\n(or put kubectl and helm on PATH)")
    raise RuntimeError(proc.stderr.strip())


@dataclass
class Cluster:
    mode: str
    kubeconfig: Path
    bin: Path

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{self.bin}:{os.environ.get('PATH', '')}",
        }

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        proc = subprocess.run(
            [str(self.bin / "kubectl"), *args],
            input=input,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout if proc.returncode == 0 else proc.stderr

    def get(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json"))

    def apply(self, manifest: str, *args: str) -> str:
        return self.kubectl("apply", "-f", "-", *args, input=manifest)

    @contextmanager
    def namespace(self, name: str) -> Iterator[str]:
        self.kubectl("create", "namespace", name)
        try:
            yield name
        finally:
            self.kubectl("delete", "namespace", name, "--wait=false", check=False)


def wait_for(
    what: str, probe: Callable[[], Any], timeout: float = 60.0, interval: float = 0.25
) -> Any:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def is_loopback(ip: str) -> bool:
    return ipaddress.ip_address(ip) in LOOPBACK


def start(mode: str) -> Cluster:
    bin_ = tools_bin(mode)
    if mode == "existing":
        kubeconfig = Path(os.environ.get("KUBECONFIG", str(Path.home() / ".kube" / "config")))
        return Cluster(mode, kubeconfig, bin_)
    if mode == "kind":
        kubeconfig = REPO / ".tmp" / "kind-kubeconfig"
        kubeconfig.parent.mkdir(exist_ok=True)
        subprocess.run(
            [
                "kind",
                "create",
                "cluster",
                "--name",
                "swiftclaw-e2e",
                "--kubeconfig",
                str(kubeconfig),
                "--wait",
                "120s",
            ],
            check=True,
        )
        return Cluster(mode, kubeconfig, bin_)
    out = subprocess.run(
        [str(CLUSTER_DIR / "up.sh")], check=True, capture_output=True, text=True
    ).stdout
    return Cluster(mode, Path(out.strip().splitlines()[-1]), bin_)


def stop(cluster: Cluster) -> None:
    if cluster.mode == "kind":
        subprocess.run(["kind", "delete", "cluster", "--name", "swiftclaw-e2e"], check=False)
    elif cluster.mode == "local":
        subprocess.run([str(CLUSTER_DIR / "down.sh")], check=False, capture_output=True)


def component_pids(cluster: Cluster) -> dict[int, str]:
    """The local control plane's processes (etcd, kube-*, kwok), by pid, from kwokctl's files."""
    if cluster.mode == "kind":
        return {}
    workdir = Path(os.environ.get("KWOK_WORKDIR", str(Path.home() / ".kwok")))
    name = os.environ.get("SWIFTCLAW_CLUSTER", "swiftclaw")
    out = {}
    for f in (workdir / "clusters" / name / "pids").glob("*.pid"):
        with contextlib.suppress(ValueError, OSError):
            out[int(f.read_text().strip())] = f.stem
    return out
