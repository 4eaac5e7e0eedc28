"""The API server itself refuses each invalid manifest, with a message naming the field."""

from __future__ import annotations

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
