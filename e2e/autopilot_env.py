"""What the autopilot's e2e modules share: the API, the pod runner and the operator (one of
each per module), and readers of the agent's status and the HPA's bounds."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import yaml

from .cluster import Cluster, wait_for
from .kubeapi import KubeAPI
from .operator import Operator, install_crd
from .podrunner import NAMESPACE_PREFIX, PodRunner


@pytest.fixture(scope="module")
def api(cluster: Cluster) -> KubeAPI:
    if cluster.mode != "local" and os.environ.get("E2E_POD_RUNNER") != "1":
        pytest.fail("the autopilot scenarios run the pods under e2e/podrunner.py")
    return KubeAPI(cluster.kubeconfig)


@pytest.fixture(scope="module")
def runner(api: KubeAPI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PodRunner]:
    root = tmp_path_factory.mktemp("podrun")
    r = PodRunner(api, root, root / "logs").start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def operator(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    install_crd(cluster)
    op = Operator(
        cluster, tmp_path_factory.mktemp("operator"), env={"SWIFTCLAW_DRIFT_SECONDS": "2"}
    ).start()
    yield op
    op.stop()


def body(cluster: Cluster, ns: str, name: str = "agent") -> dict[str, Any]:
    return dict(cluster.get("agentdeployment", name, "-n", ns))


def hpa_bounds(api: KubeAPI, ns: str, name: str = "agent") -> tuple[int, int]:
    hpa = api.get(f"/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers/{name}")
    return int(hpa["spec"]["minReplicas"]), int(hpa["spec"]["maxReplicas"])


@contextmanager
def agent_namespace(cluster: Cluster, runner: PodRunner, api_key: str) -> Iterator[str]:
    """A ``podrun-*`` namespace with the ``api-keys`` Secret holding ``api_key``; deleted
    after, waiting a while for its pods to end."""
    name = NAMESPACE_PREFIX + uuid.uuid4().hex[:8]
    cluster.kubectl("create", "namespace", name)
    keys = yaml.safe_dump({"keys": [{"key": api_key, "tenant": "acme", "user": "alice"}]})
    cluster.kubectl(
        "create", "secret", "generic", "api-keys", "-n", name, f"--from-literal=keys.yaml={keys}"
    )
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
        try:
            wait_for(
                f"the pods of {name} to end",
                lambda: not runner.api.get(f"/api/v1/namespaces/{name}/pods")["items"],
                timeout=60,
            )
        except AssertionError as err:
            print(err)
