"""The Helm chart lints, renders, installs, and grants the operator least privilege."""

from __future__ import annotations

import json
import subprocess
import uuid

import yaml

from .cluster import REPO, Cluster, pinned_versions, wait_for

CHART = REPO / "charts" / "swiftclaw"


def helm(cluster: Cluster, *args: str) -> str:
    proc = subprocess.run(
        [str(cluster.bin / "helm"), *args],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def can_i(cluster: Cluster, sa: str, verb: str, resource: str, ns: str | None = "default") -> bool:
    """``kubectl auth can-i`` as ``sa`` in ``ns`` (None: in every namespace at once)."""
    scope = ["-n", ns] if ns else ["--all-namespaces"]
    proc = subprocess.run(
        [str(cluster.bin / "kubectl"), "auth", "can-i", verb, resource, *scope, f"--as={sa}"],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    answer = proc.stdout.strip()
    assert answer in ("yes", "no"), proc.stderr  # an error is neither
    return answer == "yes"


def test_chart_lints_and_renders(cluster: Cluster) -> None:
    helm(cluster, "lint", str(CHART))
    version = pinned_versions()["K8S_VERSION"].lstrip("v")
    docs = [
        d
        for d in yaml.safe_load_all(
            helm(cluster, "template", "sc", str(CHART), "--kube-version", version)
        )
        if d
    ]
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == [
        "ClusterKopfPeering",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
        "Service",
        "ServiceAccount",
    ]
    dashboard = next(d for d in docs if d["kind"] == "ConfigMap")  # for Grafana's sidecar
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads(dashboard["data"]["swiftclaw.json"])
    assert shipped == json.loads((CHART / "dashboards" / "swiftclaw.json").read_text())
    dep = next(d for d in docs if d["kind"] == "Deployment")
    assert dep["spec"]["replicas"] == 2
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["SWIFTCLAW_STANDALONE"] == "0" and env["SWIFTCLAW_PEERING"] == "sc-operator"
    single = [
        d
        for d in yaml.safe_load_all(
            helm(
                cluster,
                "template",
                "sc",
                str(CHART),
                "--kube-version",
                version,
                "--set",
                "replicaCount=1",
            )
        )
        if d
    ]
    assert "ClusterKopfPeering" not in {d["kind"] for d in single}


def test_chart_installs_with_least_privilege(cluster: Cluster) -> None:
    ns = "sc-" + uuid.uuid4().hex[:6]
    release = "sc" + uuid.uuid4().hex[:4]
    helm(cluster, "install", release, str(CHART), "-n", ns, "--create-namespace", "--wait=false")
    try:
        wait_for(
            "the operator Deployment",
            lambda: (
                cluster.get("deployment", f"{release}-operator", "-n", ns)
                .get("status", {})
                .get("availableReplicas")
                == 2
            ),
            timeout=90,
        )
        assert cluster.get("crd", "agentdeployments.swiftclaw.dev")["spec"]["names"]["kind"] == (
            "AgentDeployment"
        )
        sa = f"system:serviceaccount:{ns}:{release}-operator"
        for verb, resource in [
            ("patch", "deployments.apps"),
            ("create", "configmaps"),
            ("patch", "agentdeployments.swiftclaw.dev/status"),
            ("create", "events"),
            ("watch", "pods"),
            ("delete", "statefulsets.apps"),
            ("create", "secrets"),  # the managed Redis's password, never read back
        ]:
            assert can_i(cluster, sa, verb, resource), (verb, resource)
        for verb, resource in [
            ("get", "secrets"),
            ("list", "secrets"),
            ("patch", "secrets"),
            ("delete", "namespaces"),
            ("delete", "deployments.apps"),
            ("create", "pods"),
            ("delete", "agentdeployments.swiftclaw.dev"),
            ("create", "clusterroles.rbac.authorization.k8s.io"),
        ]:
            assert not can_i(cluster, sa, verb, resource), (verb, resource)
    finally:
        helm(cluster, "uninstall", release, "-n", ns)
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
