"""The operator's cluster access as real installs have it: a kubeconfig whose credentials
come from an exec plugin, and a pod's service-account token that the kubelet rotates.

Every token is a real ServiceAccount token bound to a Secret, so deleting the Secret
revokes it: a client still holding an old token after a renewal would get 401s.
"""

from __future__ import annotations

import base64
import itertools
import os
import ssl
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from .cluster import Cluster, wait_for
from .operator import Operator, example, failed_calls, install_crd, wait_condition

SA = "swiftclaw-operator"

# The exec plugin: mints a fresh token bound to a new Secret, revokes the previous one by
# deleting its Secret, and says the credential expires in EXPIRES seconds.
PLUGIN = """\
import datetime, json, os, subprocess, sys
from pathlib import Path

runs = Path(os.environ["RUNS_FILE"])
n = len(runs.read_text().splitlines()) + 1 if runs.exists() else 1
kubectl = [os.environ["KUBECTL"], "--kubeconfig", os.environ["ADMIN_KUBECONFIG"],
           "-n", os.environ["SA_NAMESPACE"]]
subprocess.run([*kubectl, "create", "secret", "generic", f"exec-{n}"], check=True,
               capture_output=True)
token = subprocess.run(
    [*kubectl, "create", "token", os.environ["SA_NAME"], "--duration=10m",
     "--bound-object-kind=Secret", f"--bound-object-name=exec-{n}"],
    check=True, capture_output=True, text=True).stdout.strip()
if n > 1:
    subprocess.run([*kubectl, "delete", "secret", f"exec-{n - 1}", "--wait=false"],
                   check=True, capture_output=True)
with runs.open("a") as f:
    f.write(f"{n}\\n")
expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(
    seconds=int(os.environ["EXPIRES"]))
print(json.dumps({
    "apiVersion": "client.authentication.k8s.io/v1",
    "kind": "ExecCredential",
    "status": {"token": token,
               "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ")},
}))
"""


@pytest.fixture(scope="module")
def sa_ns(cluster: Cluster) -> Iterator[str]:
    """A namespace with the operator's ServiceAccount (bound to cluster-admin: this test is
    about authentication; what the operator may do is the chart's RBAC, tested apart)."""
    install_crd(cluster)
    with cluster.namespace("auth-" + uuid.uuid4().hex[:8]) as ns:
        cluster.kubectl("create", "serviceaccount", SA, "-n", ns)
        binding = f"{ns}-operator"
        cluster.kubectl(
            "create",
            "clusterrolebinding",
            binding,
            "--clusterrole=cluster-admin",
            f"--serviceaccount={ns}:{SA}",
        )
        try:
            yield ns
        finally:
            cluster.kubectl("delete", "clusterrolebinding", binding, check=False)


def operator_env(ns: str) -> dict[str, str]:
    """Drift checks every 2 s (calls all along); only this test's namespace."""
    return {"SWIFTCLAW_DRIFT_SECONDS": "2", "SWIFTCLAW_NAMESPACES": ns}


def server_and_ca(cluster: Cluster) -> tuple[str, str]:
    """The current context's API server and CA (the file may hold older clusters too)."""
    cfg = yaml.safe_load(cluster.kubeconfig.read_text())
    context = next(x for x in cfg["contexts"] if x["name"] == cfg["current-context"])
    c = next(x for x in cfg["clusters"] if x["name"] == context["context"]["cluster"])["cluster"]
    ca = c.get("certificate-authority-data")
    if ca is None:
        return c["server"], Path(c["certificate-authority"]).read_text()
    return c["server"], base64.b64decode(ca).decode()


def bound_token(cluster: Cluster, ns: str, secret: str) -> str:
    cluster.kubectl("create", "secret", "generic", secret, "-n", ns)
    return cluster.kubectl(
        "create",
        "token",
        SA,
        "-n",
        ns,
        "--duration=10m",
        "--bound-object-kind=Secret",
        f"--bound-object-name={secret}",
    ).strip()


def answer_to(server: str, ca: str, token: str) -> int:
    """The API server's HTTP status for a request with ``token`` (401: not authenticated)."""
    ctx = ssl.create_default_context(cadata=ca)
    req = urllib.request.Request(f"{server}/api", headers={"authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def apply_agent(cluster: Cluster, ns: str, name: str, **spec: object) -> None:
    doc = example(name, **spec)
    doc["metadata"]["namespace"] = ns
    cluster.apply(yaml.safe_dump(doc))


def assert_reconciled(cluster: Cluster, ns: str, name: str) -> None:
    wait_condition(cluster, ns, name, "Ready", "True", "Available", timeout=60)


def test_exec_plugin_credentials_are_renewed_before_they_expire(
    cluster: Cluster, sa_ns: str, tmp_path: Path
) -> None:
    server, ca = server_and_ca(cluster)
    (tmp_path / "ca.crt").write_text(ca)
    plugin = tmp_path / "plugin.py"
    plugin.write_text(PLUGIN)
    runs = tmp_path / "runs"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {
                            "server": server,
                            "certificate-authority-data": base64.b64encode(ca.encode()).decode(),
                        },
                    }
                ],
                "users": [
                    {
                        "name": "u",
                        "user": {
                            "exec": {
                                "apiVersion": "client.authentication.k8s.io/v1",
                                "command": sys.executable,
                                "args": [str(plugin)],
                                "interactiveMode": "Never",
                                "env": [
                                    {"name": "RUNS_FILE", "value": str(runs)},
                                    {"name": "KUBECTL", "value": str(cluster.bin / "kubectl")},
                                    {"name": "ADMIN_KUBECONFIG", "value": str(cluster.kubeconfig)},
                                    {"name": "SA_NAMESPACE", "value": sa_ns},
                                    {"name": "SA_NAME", "value": SA},
                                    {"name": "EXPIRES", "value": "15"},
                                ],
                            }
                        },
                    }
                ],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    op = Operator(cluster, tmp_path, env=operator_env(sa_ns))
    op.start(KUBECONFIG=str(kubeconfig))
    try:
        apply_agent(cluster, sa_ns, "exec-a")
        assert_reconciled(cluster, sa_ns, "exec-a")
        # Work through three renewals (each revokes the token before it), with calls all along.
        # The operator calls the API server only when it has something to do (it reads its
        # children from watch caches; an idle drift check makes no call, and a credential is
        # renewed when a call needs it): a spec change every 5 s gives it calls to make.
        turn = itertools.count()

        def renewed_under_work(n: int) -> bool:
            if len(runs.read_text().splitlines()) >= n:
                return True
            apply_agent(
                cluster,
                sa_ns,
                "exec-a",
                scaling={"minReplicas": 1, "maxReplicas": 4 + next(turn) % 2},
            )
            return False

        wait_for("3 exec-plugin runs", lambda: renewed_under_work(3), 180, 5)
        apply_agent(cluster, sa_ns, "exec-a", scaling={"minReplicas": 1, "maxReplicas": 3})
        apply_agent(cluster, sa_ns, "exec-b")
        assert_reconciled(cluster, sa_ns, "exec-b")
        wait_for(
            "the spec change applied",
            lambda: cluster.get("hpa", "exec-a", "-n", sa_ns)["spec"]["maxReplicas"] == 3,
            90,
        )
        wait_for("4 exec-plugin runs", lambda: renewed_under_work(4), 90, 5)
        apply_agent(cluster, sa_ns, "exec-a", scaling={"minReplicas": 1, "maxReplicas": 3})
        wait_for(
            "a call with the latest credential",
            lambda: cluster.get("hpa", "exec-a", "-n", sa_ns)["spec"]["maxReplicas"] == 3,
            90,
        )
        assert failed_calls(op) == {}, op.log()[-4000:]
        assert op.counter('swiftclaw_operator_reconciles_total{result="ok"') > 0
        assert op.counter("swiftclaw_operator_reconciles_total") == op.counter(
            'swiftclaw_operator_reconciles_total{result="ok"'
        )
    finally:
        op.stop()


def test_in_cluster_token_rotation(cluster: Cluster, sa_ns: str, tmp_path: Path) -> None:
    server, ca = server_and_ca(cluster)
    url = urlparse(server)
    sa_dir = tmp_path / "serviceaccount"
    sa_dir.mkdir()
    (sa_dir / "ca.crt").write_text(ca)
    (sa_dir / "namespace").write_text(sa_ns)

    def rotate(secret: str) -> str:
        # As the kubelet does: the new file is written aside and renamed over the old one.
        new = sa_dir / ".token.new"
        token = bound_token(cluster, sa_ns, secret)
        new.write_text(token)
        os.replace(new, sa_dir / "token")
        return token

    tokens = {1: rotate("pod-token-1")}
    op = Operator(cluster, tmp_path, env=operator_env(sa_ns))
    op.start(
        KUBECONFIG="",
        KUBERNETES_SERVICE_HOST=str(url.hostname),
        KUBERNETES_SERVICE_PORT=str(url.port),
        SWIFTCLAW_SERVICE_ACCOUNT_DIR=str(sa_dir),
    )
    try:
        apply_agent(cluster, sa_ns, "pod-a")
        assert_reconciled(cluster, sa_ns, "pod-a")
        for n in (2, 3):
            tokens[n] = rotate(f"pod-token-{n}")
            cluster.kubectl("delete", "secret", f"pod-token-{n - 1}", "-n", sa_ns)
            wait_for(
                f"token {n - 1} revoked",
                lambda n=n: answer_to(server, ca, tokens[n - 1]) == 401,  # type: ignore[misc]
                10,
            )
            assert answer_to(server, ca, tokens[n]) == 200
            time.sleep(3)  # drift checks run with the new token
        # After the rotations: a spec change and a new agent, both through kopf's watch.
        apply_agent(cluster, sa_ns, "pod-a", scaling={"minReplicas": 1, "maxReplicas": 3})
        apply_agent(cluster, sa_ns, "pod-b")
        assert_reconciled(cluster, sa_ns, "pod-b")
        wait_for(
            "the spec change applied",
            lambda: cluster.get("hpa", "pod-a", "-n", sa_ns)["spec"]["maxReplicas"] == 3,
            30,
        )
        time.sleep(3)
        assert failed_calls(op) == {}, op.log()[-4000:]
        assert op.counter("swiftclaw_operator_reconciles_total") == op.counter(
            'swiftclaw_operator_reconciles_total{result="ok"'
        )
    finally:
        op.stop()
