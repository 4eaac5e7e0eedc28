"""The operator's watch-fed cache against a real API server: it lists, follows changes and
deletions, catches up after a gap in its watch, drops on a relist (what a 410 Gone leads
to) what the list no longer has, and never lets an older event replace what the operator
wrote."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from swiftclaw_operator.cache import ChildCache
from swiftclaw_operator.kube import Auth, Kube
from swiftclaw_operator.metrics import CACHE_RELISTS
from swiftclaw_operator.resources.registry import CONFIGMAP

from .cluster import Cluster

LABELS = {"app.kubernetes.io/managed-by": "swiftclaw-operator", "app.kubernetes.io/instance": "a"}


@pytest.fixture
def ns(cluster: Cluster) -> Iterator[str]:
    with cluster.namespace("cache-" + uuid.uuid4().hex[:8]) as name:
        yield name


def configmap(cluster: Cluster, ns: str, name: str, labels: dict[str, str] = LABELS) -> None:
    flags = [f"--from-literal=n={name}"]
    cluster.kubectl("create", "configmap", name, "-n", ns, *flags)
    pairs = [f"{k}={v}" for k, v in labels.items()]
    if pairs:
        cluster.kubectl("label", "configmap", name, "-n", ns, *pairs)


def compact_etcd() -> None:
    """Compact the local control plane's etcd up to now (the API server does it every few
    minutes), so that a watch from an old resourceVersion gets 410 Gone."""
    workdir = Path(os.environ.get("KWOK_WORKDIR", str(Path.home() / ".kwok")))
    name = os.environ.get("SWIFTCLAW_CLUSTER", "swiftclaw")
    config = (workdir / "clusters" / name / "kwok.yaml").read_text()
    match = re.search(r"--etcd-servers=(http://127\.0\.0\.1:\d+)", config)
    if match is None:
        pytest.skip("no local etcd to compact (E2E_CLUSTER is not local)")
    server = match.group(1)

    def post(path: str, body: dict) -> dict:
        req = urllib.request.Request(
            server + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return dict(json.loads(resp.read()))

    revision = post("/v3/kv/range", {"key": base64.b64encode(b"/").decode()})["header"]["revision"]
    post("/v3/kv/compaction", {"revision": revision, "physical": True})


async def until(what: str, probe, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not probe():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def test_the_cache_follows_changes_deletions_and_a_relist(cluster: Cluster, ns: str) -> None:
    configmap(cluster, ns, "one")
    configmap(cluster, ns, "two")
    configmap(cluster, ns, "stranger", labels={})  # not the operator's: not cached
    kube = Kube(await Auth.load(Path("/nonexistent"), environ=cluster.env))
    cache = ChildCache(kube, [CONFIGMAP], [ns])
    seen: list[tuple[str, str]] = []
    cache.listeners.append(lambda kind, namespace, agent: seen.append((kind, namespace)))
    try:
        cache.start()
        await asyncio.wait_for(cache.wait_synced(), 30)
        names = [o["metadata"]["name"] for o in cache.list("ConfigMap", ns)]
        assert names == ["one", "two"]
        assert cache.get("ConfigMap", ns, "stranger") is None
        assert [o["metadata"]["name"] for o in cache.list("ConfigMap", ns, {"x": "y"})] == []

        # Changes and deletions arrive by the watch.
        cluster.kubectl("patch", "configmap", "one", "-n", ns, "-p", '{"data":{"n":"1"}}')
        await until(
            "the change",
            lambda: (cache.get("ConfigMap", ns, "one") or {}).get("data") == {"n": "1"},
        )
        cluster.kubectl("delete", "configmap", "two", "-n", ns)
        await until("the deletion", lambda: cache.get("ConfigMap", ns, "two") is None)
        assert ("ConfigMap", ns) in seen

        # The watch stops; meanwhile one is deleted and three made, and etcd compacts its
        # history; the watch resumes from a version older than the server keeps. The server
        # answers with a replay of what its watch cache holds or with 410 Gone (then the
        # informer lists again): either way the cache ends right, the deletion included.
        await cache.stop()
        cluster.kubectl("delete", "configmap", "one", "-n", ns)
        configmap(cluster, ns, "three")
        cache.informers[0].resource_version = "1"
        compact_etcd()
        cache.start()
        await until(
            "the gap caught up",
            lambda: [o["metadata"]["name"] for o in cache.list("ConfigMap", ns)] == ["three"],
        )

        # A relist (what a 410 leads to) drops what the list no longer has: an object whose
        # deletion the cache never saw goes, and its agent is told.
        await cache.stop()
        ghost = {**(cache.get("ConfigMap", ns, "three") or {})}
        ghost["metadata"] = {**ghost["metadata"], "name": "ghost", "resourceVersion": "2"}
        cache.put(ghost)
        assert cache.get("ConfigMap", ns, "ghost") is not None
        seen.clear()
        relists = CACHE_RELISTS.labels("ConfigMap")._value.get()
        await cache.informers[0].relist()
        assert cache.get("ConfigMap", ns, "ghost") is None
        assert [o["metadata"]["name"] for o in cache.list("ConfigMap", ns)] == ["three"]
        assert ("ConfigMap", ns) in seen
        assert CACHE_RELISTS.labels("ConfigMap")._value.get() == relists  # counted on 410 only

        # What the operator wrote stays until something newer comes: an older version of
        # the object (an event that was in flight) does not replace it.
        held = cache.get("ConfigMap", ns, "three")
        assert held is not None
        newer = {**held, "data": {"n": "written"}}
        newer["metadata"] = {
            **held["metadata"],
            "resourceVersion": str(int(held["metadata"]["resourceVersion"]) + 1000),
        }
        cache.put(newer)
        cache.put(held)
        assert (cache.get("ConfigMap", ns, "three") or {})["data"] == {"n": "written"}
    finally:
        await cache.stop()
        await kube.close()
