"""Two operator replicas with kopf peering: one acts, and the other takes over when it dies."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import yaml

from .cluster import REPO, Cluster, wait_for
from .operator import Operator, children, example, install_crd

PEERING_CRDS = REPO / "charts" / "swiftclaw" / "crds" / "kopf-peering.yaml"


def wrote(op: Operator, agent: str) -> bool:
    """Did this replica write the agent's children? (As a create, or a resume after a pause.)"""
    return any(line.startswith(f"{agent} ") and "wrote" in line for line in op.log().splitlines())


def test_one_replica_acts_and_the_other_takes_over(cluster: Cluster, tmp_path: Path) -> None:
    install_crd(cluster)
    cluster.kubectl("apply", "--server-side", "-f", str(PEERING_CRDS))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/clusterkopfpeerings.kopf.dev"
    )
    peering = "e2e-" + uuid.uuid4().hex[:6]
    cluster.apply(
        yaml.safe_dump(
            {
                "apiVersion": "kopf.dev/v1",
                "kind": "ClusterKopfPeering",
                "metadata": {"name": peering},
            }
        )
    )
    env = {
        "SWIFTCLAW_STANDALONE": "0",
        "SWIFTCLAW_PEERING": peering,
        "SWIFTCLAW_PEERING_LIFETIME": "5",
    }
    high = Operator(cluster, tmp_path / "a", env={**env, "SWIFTCLAW_PRIORITY": "200"})
    low = Operator(cluster, tmp_path / "b", env={**env, "SWIFTCLAW_PRIORITY": "100"})
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    ns = "peer-" + uuid.uuid4().hex[:6]
    cluster.kubectl("create", "namespace", ns)
    # A just-started API server answers 429 for a while; a short peering lifetime would
    # let the paused replica take over. Start once it serves the resource.
    wait_for(
        "the API server to serve AgentDeployments",
        lambda: (
            subprocess.run(
                [str(cluster.bin / "kubectl"), "get", "agentdeployments", "-A"],
                env=cluster.env,
                capture_output=True,
                check=False,
            ).returncode
            == 0
        ),
    )
    try:
        high.start()
        low.start()
        wait_for("the low-priority replica to pause", lambda: "Pausing" in low.log(), timeout=30)

        def create(name: str) -> None:
            doc = example(name)
            doc["metadata"]["namespace"] = ns
            cluster.apply(yaml.safe_dump(doc))

        create("first")
        wait_for("the first agent served", lambda: wrote(high, f"{ns}/first"), 60)
        assert len(children(cluster, ns, "first")) == 13 and not wrote(low, f"{ns}/first")

        high.kill()  # no goodbye: the survivor must wait out the peering lifetime
        create("second")
        # All thirteen: the first child alone can show up mid-reconcile.
        wait_for(
            "the survivor to serve the second agent",
            lambda: len(children(cluster, ns, "second")) == 13,
            timeout=60,
        )
        assert not wrote(high, f"{ns}/second")
    finally:
        high.stop()
        low.stop()
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        cluster.kubectl("delete", "clusterkopfpeering", peering, check=False)
