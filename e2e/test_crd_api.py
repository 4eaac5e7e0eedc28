"""The API server itself refuses each invalid manifest, with a message naming the field."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from .cluster import REPO, Cluster
from .operator import install_crd

# A manifest the API server cannot judge (an IANA zone that does not exist has the right
# shape) is marked "checked-by: python": the runtime and the operator refuse it.
INVALID = [
    p
    for p in sorted((REPO / "tests" / "invalid-manifests").glob("*.yaml"))
    if "# checked-by: python" not in p.read_text()
]


def expect_field(path: Path) -> str:
    for line in path.read_text().splitlines():
        if line.startswith("# expect-field: "):
            return line.removeprefix("# expect-field: ")
    raise AssertionError(f"{path.name} has no '# expect-field:' line")


@pytest.fixture(scope="module")
def crd_ns(cluster: Cluster) -> Iterator[str]:
    install_crd(cluster)
    with cluster.namespace("crd-" + uuid.uuid4().hex[:8]) as ns:
        yield ns


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_api_server_rejects_and_names_the_field(cluster: Cluster, crd_ns: str, path: Path) -> None:
    proc = subprocess.run(
        [str(cluster.bin / "kubectl"), "apply", "-n", crd_ns, "-f", str(path)],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0, f"{path.name} was accepted"
    assert expect_field(path) in proc.stderr, proc.stderr


def test_valid_examples_are_accepted_with_defaults(cluster: Cluster, crd_ns: str) -> None:
    for example in ("agent-in-cluster.yaml", "local-agent.yaml"):
        doc = yaml.safe_load((REPO / "examples" / example).read_text())
        doc["metadata"] = {"name": f"ok-{example.split('-')[0]}", "namespace": crd_ns}
        out = cluster.kubectl(
            "apply", "--dry-run=server", "-o", "yaml", "-f", "-", input=yaml.safe_dump(doc)
        )
        stored = yaml.safe_load(out)
        assert stored["spec"]["reliability"]["circuitBreaker"]["halfOpenProbes"] == 1
        assert stored["spec"]["runtime"]["resources"]["requests"]["cpu"] == "250m"


def test_redis_storage_cannot_change_once_set(cluster: Cluster, crd_ns: str) -> None:
    """A StatefulSet's volume claims are immutable: the API server refuses the edit up
    front instead of the operator failing on it later."""
    doc = yaml.safe_load((REPO / "examples" / "agent-in-cluster.yaml").read_text())
    doc["metadata"] = {"name": "storage", "namespace": crd_ns}
    cluster.apply(yaml.safe_dump(doc))

    def patch(redis: dict[str, str | None]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                *(str(cluster.bin / "kubectl"), "patch", "agentdeployment", "storage"),
                *("-n", crd_ns, "--type=merge", "-p"),
                json.dumps({"spec": {"cache": {"redis": redis}}}),
            ],
            env=cluster.env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    size = doc["spec"]["cache"]["redis"]["storage"]
    refused = patch({"storage": "3Gi" if size != "3Gi" else "4Gi"})
    assert refused.returncode != 0
    assert "spec.cache.redis.storage" in refused.stderr, refused.stderr
    assert "cannot be changed while the Redis is managed" in refused.stderr, refused.stderr
    # The same value, and the other Redis fields, still change.
    assert patch({"storage": size, "stateMemory": "384Mi"}).returncode == 0
    stored = cluster.get("agentdeployment", "storage", "-n", crd_ns)["spec"]["cache"]["redis"]
    assert (stored["storage"], stored["stateMemory"]) == (size, "384Mi")
    # Leaving managed mode (the StatefulSet goes) takes the managed-only fields with it: kept,
    # they are refused; dropped, the size may come back as something else later.
    kept = patch({"mode": "none", "storage": None, "backup": None})
    assert kept.returncode != 0 and "only allowed when mode is managed" in kept.stderr
    left = patch(
        {"mode": "none", "storage": None, "backup": None, "cacheMemory": None, "stateMemory": None}
    )
    assert left.returncode == 0, left.stderr
    cluster.kubectl("delete", "agentdeployment", "storage", "-n", crd_ns)
