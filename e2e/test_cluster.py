"""The local control plane is a real one: its controllers act, and all of it stays on loopback."""

from __future__ import annotations

import json
import uuid

from .cluster import Cluster, is_loopback, pinned_versions, wait_for

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {ns}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
        - name: web
          image: registry.invalid/web:1
          resources: {{requests: {{cpu: 100m, memory: 64Mi}}}}
"""


def _ns() -> str:
    return "e2e-" + uuid.uuid4().hex[:8]


def test_server_reports_the_pinned_version(cluster: Cluster) -> None:
    info = json.loads(cluster.kubectl("get", "--raw", "/version"))
    if cluster.mode == "local":
        assert info["gitVersion"] == pinned_versions()["K8S_VERSION"]
        assert info["major"] == "1"
    assert info["gitVersion"].startswith("v1.")


def test_nodes_are_ready_with_loopback_pod_cidrs(cluster: Cluster) -> None:
    nodes = cluster.get("nodes")["items"]
    assert nodes, "the cluster has no nodes"
    for node in nodes:
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
        assert ready == "True", node["metadata"]["name"]
        if cluster.mode == "local":
            cidr = node["spec"]["podCIDR"]
            assert is_loopback(cidr.split("/")[0]), cidr


def test_deployment_gets_replicaset_and_running_loopback_pods_then_gc(cluster: Cluster) -> None:
    with cluster.namespace(_ns()) as ns:
        cluster.apply(DEPLOYMENT.format(ns=ns, replicas=3))
        deploy = cluster.get("deployment", "web", "-n", ns)

        rs = wait_for(
            "a ReplicaSet owned by the Deployment",
            lambda: [
                r
                for r in cluster.get("replicasets", "-n", ns)["items"]
                if any(
                    o["uid"] == deploy["metadata"]["uid"]
                    for o in r["metadata"].get("ownerReferences", [])
                )
            ],
        )
        assert len(rs) == 1

        def running() -> list[dict]:
            pods = cluster.get("pods", "-n", ns, "-l", "app=web")["items"]
            ok = [
                p
                for p in pods
                if p["status"].get("phase") == "Running" and p["status"].get("podIP")
            ]
            return ok if len(ok) == 3 else []

        pods = wait_for("3 Running pods", running)
        for pod in pods:
            assert pod["metadata"]["ownerReferences"][0]["uid"] == rs[0]["metadata"]["uid"]
            if cluster.mode == "local":
                assert pod["spec"]["nodeName"].startswith("kwok-node-")
                assert is_loopback(pod["status"]["podIP"]), pod["status"]["podIP"]

        wait_for(
            "the Deployment to be available",
            lambda: (
                cluster.get("deployment", "web", "-n", ns)["status"].get("availableReplicas") == 3
            ),
        )

        cluster.kubectl("delete", "deployment", "web", "-n", ns, "--wait=false")
        wait_for(
            "the garbage collector to remove ReplicaSet and Pods",
            lambda: (
                not cluster.get("replicasets", "-n", ns)["items"]
                and not cluster.get("pods", "-n", ns)["items"]
            ),
        )


def test_hpa_is_reconciled_without_a_metrics_server(cluster: Cluster) -> None:
    """No metrics server here: the HPA controller still enforces minReplicas and says why
    it cannot scale on CPU (ScalingActive=False, FailedGetResourceMetric)."""
    with cluster.namespace(_ns()) as ns:
        cluster.apply(DEPLOYMENT.format(ns=ns, replicas=1))
        cluster.apply(f"""
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {{name: web, namespace: {ns}}}
spec:
  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: web}}
  minReplicas: 2
  maxReplicas: 4
  metrics:
    - type: Resource
      resource: {{name: cpu, target: {{type: Utilization, averageUtilization: 50}}}}
""")
        wait_for(
            "the HPA controller to raise the Deployment to minReplicas",
            lambda: cluster.get("deployment", "web", "-n", ns)["spec"]["replicas"] == 2,
            timeout=90,
        )

        def conditions() -> dict[str, dict]:
            hpa = cluster.get("hpa", "web", "-n", ns)
            return {c["type"]: c for c in hpa["status"].get("conditions", [])}

        conds = wait_for(
            "HPA conditions", lambda: (c := conditions()).get("ScalingActive") and c, timeout=90
        )
        assert conds["AbleToScale"]["status"] == "True"
        if cluster.mode == "local":
            assert conds["ScalingActive"]["status"] == "False"
            assert conds["ScalingActive"]["reason"] == "FailedGetResourceMetric"


def test_nothing_in_the_cluster_points_off_loopback(cluster: Cluster) -> None:
    if cluster.mode != "local":
        return
    with cluster.namespace(_ns()) as ns:
        cluster.apply(DEPLOYMENT.format(ns=ns, replicas=2))
        wait_for(
            "2 pods with IPs",
            lambda: (
                len([p for p in cluster.get("pods", "-n", ns)["items"] if p["status"].get("podIP")])
                == 2
            ),
        )
        for pod in cluster.get("pods", "--all-namespaces")["items"]:
            for ip in [pod["status"].get("podIP"), pod["status"].get("hostIP")]:
                if ip:
                    assert is_loopback(ip), f"{pod['metadata']['name']}: {ip}"
        for svc in cluster.get("services", "--all-namespaces")["items"]:
            for ip in svc["spec"].get("clusterIPs", []):
                if ip != "None":
                    assert is_loopback(ip), f"service {svc['metadata']['name']}: {ip}"
        for node in cluster.get("nodes")["items"]:
            for addr in node["status"].get("addresses", []):
                if addr["type"].endswith("IP"):
                    assert is_loopback(addr["address"]), addr
