"""The chart grants the operator exactly what the registry says it needs, in the namespaces
it serves and nowhere else; with one watched namespace it works there and can create
nothing elsewhere; the optional admission policy refuses what its allow-lists do not name."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from swiftclaw_operator.rbac import Grant, grants

from .cluster import Cluster, pinned_versions, tools_bin, wait_for
from .operator import Operator, children, example, install_crd, wait_condition
from .test_chart import CHART, can_i, helm

RELEASE = "sc"
SA = ("default", f"{RELEASE}-operator")
Docs = list[dict[str, Any]]


def template(*sets: str) -> subprocess.CompletedProcess[str]:
    """``helm template`` of the chart (no cluster needed), with ``--set`` values."""
    version = pinned_versions()["K8S_VERSION"].lstrip("v")
    args = [str(tools_bin() / "helm"), "template", RELEASE, str(CHART), "--kube-version", version]
    for s in sets:
        args += ["--set", s]
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


def render(*sets: str) -> Docs:
    proc = template(*sets)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def granted(docs: Docs, sa: tuple[str, str] = SA) -> dict[str | None, set[Grant]]:
    """What the rendered RBAC grants the service account, by namespace (None: cluster-wide)."""
    roles = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d for d in docs}
    out: dict[str | None, set[Grant]] = {}
    for b in docs:
        if b["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if {"kind": "ServiceAccount", "namespace": sa[0], "name": sa[1]} not in b["subjects"]:
            continue
        scope = b["metadata"]["namespace"] if b["kind"] == "RoleBinding" else None
        ref = b["roleRef"]
        role = roles[(ref["kind"], scope if ref["kind"] == "Role" else None, ref["name"])]
        for rule in role["rules"]:
            assert set(rule) == {"apiGroups", "resources", "verbs"}, rule  # no names, no URLs
            out.setdefault(scope, set()).update(
                (g, r, v)
                for g in rule["apiGroups"]
                for r in rule["resources"]
                for v in rule["verbs"]
            )
    return out


def mismatch(
    have: dict[str | None, set[Grant]], want: dict[str | None, set[Grant]]
) -> dict[str, Any]:
    """Missing and surplus grants, by namespace; empty when the chart is exact."""
    out: dict[str, Any] = {}
    for scope in have.keys() | want.keys():
        missing = want.get(scope, set()) - have.get(scope, set())
        surplus = have.get(scope, set()) - want.get(scope, set())
        if missing or surplus:
            out[str(scope)] = {"missing": sorted(missing), "surplus": sorted(surplus)}
    return out


MODES = [
    ([], 2),
    ([], 1),
    (["team-a"], 2),
    (["team-a", "team-b"], 1),
]


@pytest.mark.parametrize(("namespaces", "replicas"), MODES)
def test_chart_grants_exactly_what_the_registry_needs(namespaces: list[str], replicas: int) -> None:
    sets = [f"replicaCount={replicas}"]
    if namespaces:
        sets.append(f"operator.watchNamespaces={{{','.join(namespaces)}}}")
    docs = render(*sets)
    want = grants(namespaces, peering=replicas > 1)
    assert mismatch(granted(docs), want) == {}
    kinds = {d["kind"] for d in docs}
    assert ("ClusterKopfPeering" in kinds) == (replicas > 1 and not namespaces)
    peerings = {d["metadata"]["namespace"] for d in docs if d["kind"] == "KopfPeering"}
    assert peerings == (set(namespaces) if replicas > 1 else set())
    env = {
        e["name"]: e["value"]
        for d in docs
        if d["kind"] == "Deployment"
        for e in d["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["SWIFTCLAW_NAMESPACES"] == ",".join(namespaces)
    # Serving listed namespaces, nothing cluster-scoped; otherwise a ClusterRole.
    assert ("ClusterRole" in kinds) == (not namespaces)
    assert ("Role" in kinds) == bool(namespaces)


def test_the_comparison_catches_a_missing_and_a_surplus_verb() -> None:
    docs = render()
    role = next(d for d in docs if d["kind"] == "ClusterRole")
    rule = next(r for r in role["rules"] if r["resources"] == ["services"])
    rule["verbs"].remove("delete")  # what pruning the Redis Service needs
    role["rules"].append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]})
    assert mismatch(granted(docs), grants([], peering=True)) == {
        "None": {
            "missing": [("", "services", "delete")],
            "surplus": [("", "secrets", "get")],
        }
    }


def test_bad_values_are_refused_not_ignored() -> None:
    for value, message in [
        ("operator.watchNamespace=team-a", "operator.watchNamespace is gone"),
        ("operator.watchNamespaces=team-a", "operator.watchNamespaces must be a list"),
        ("admissionPolicy.enabled=true,admissionPolicy.providerHosts=null", "non-empty lists"),
    ]:
        proc = template(value)
        assert proc.returncode != 0 and message in proc.stderr, (value, proc.stderr)


# --- on the cluster -----------------------------------------------------------------------


def sa_cluster(cluster: Cluster, ns: str, sa: str, path: Path) -> Cluster:
    """The cluster as the service account sees it: a kubeconfig with a token for ``sa``."""
    token = cluster.kubectl("create", "token", sa, "-n", ns, "--duration=1h").strip()
    cfg = json.loads(cluster.kubectl("config", "view", "--raw", "--minify", "-o", "json"))
    cfg["users"] = [{"name": "sa", "user": {"token": token}}]
    cfg["contexts"][0]["context"]["user"] = "sa"
    path.write_text(yaml.safe_dump(cfg))
    return replace(cluster, kubeconfig=path)


@contextmanager
def installed(cluster: Cluster, *sets: str) -> Iterator[tuple[str, str]]:
    """The chart installed in a namespace of its own: (its namespace, the release)."""
    install_crd(cluster)
    tag = uuid.uuid4().hex[:6]
    op_ns, release = f"sc-op-{tag}", "sc" + tag[:4]
    cluster.kubectl("create", "namespace", op_ns)
    args = [a for s in sets for a in ("--set", s)]
    helm(cluster, "install", release, str(CHART), "-n", op_ns, "--wait=false", *args)
    try:
        yield op_ns, release
    finally:
        helm(cluster, "uninstall", release, "-n", op_ns)
        cluster.kubectl("delete", "namespace", op_ns, "--wait=false", check=False)


@contextmanager
def operator_as_sa(
    cluster: Cluster, op_ns: str, release: str, tmp_path: Path, namespaces: str = ""
) -> Iterator[Operator]:
    """The operator as the chart's service account, with peering on (the chart's peering)."""
    as_sa = sa_cluster(cluster, op_ns, f"{release}-operator", tmp_path / "sa-kubeconfig")
    env = {
        "SWIFTCLAW_NAMESPACES": namespaces,
        "SWIFTCLAW_STANDALONE": "0",
        "SWIFTCLAW_PEERING": f"{release}-operator",
        "SWIFTCLAW_DRIFT_SECONDS": "2",
    }
    op = Operator(as_sa, tmp_path, env=env).start()
    try:
        yield op
    finally:
        op.stop()


def reconciles_and_prunes(cluster: Cluster, op: Operator, ns: str) -> None:
    """An agent in ``ns`` gets every child and Ready; managed Redis off, its children go
    (the delete verbs); nothing about ``ns`` in the log is refused."""
    doc = example("agent")
    cluster.apply(yaml.safe_dump({**doc, "metadata": {"name": "agent", "namespace": ns}}))
    wait_condition(cluster, ns, "agent", "Ready", "True", timeout=90)
    assert {
        "StatefulSet/agent-redis-cache",
        "StatefulSet/agent-redis-state",
        "CronJob/agent-redis-backup",
    } <= set(children(cluster, ns, "agent"))
    doc["spec"]["cache"]["redis"] = {"mode": "none"}
    cluster.apply(yaml.safe_dump({**doc, "metadata": {"name": "agent", "namespace": ns}}))
    wait_for(
        "the managed Redis's children pruned",
        lambda: not any("redis" in ref for ref in children(cluster, ns, "agent")),
        timeout=60,
    )
    log = op.log()
    assert "Not enough permissions" not in log, log[-3000:]
    mine = [line for line in log.splitlines() if ns in line]
    # (A just-started API server may answer 429 for a moment: retried, not refused.)
    assert not [line for line in mine if "reconcile failed" in line or "403" in line], mine


def test_one_watched_namespace_works_there_and_creates_nothing_elsewhere(
    cluster: Cluster, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:6]
    watched, other = f"sc-watched-{tag}", f"sc-other-{tag}"
    with (
        cluster.namespace(watched),
        cluster.namespace(other),
        installed(cluster, f"operator.watchNamespaces={{{watched}}}") as (op_ns, release),
    ):
        sa = f"system:serviceaccount:{op_ns}:{release}-operator"
        for resource in (
            "deployments.apps",
            "statefulsets.apps",
            "cronjobs.batch",
            "services",
            "configmaps",
            "secrets",
        ):
            assert can_i(cluster, sa, "create", resource, watched), resource
            assert not can_i(cluster, sa, "create", resource, other), resource
            assert not can_i(cluster, sa, "create", resource, op_ns), resource
        for verb in ("get", "list", "watch"):
            assert not can_i(cluster, sa, verb, "secrets", watched), verb
        # the StatefulSet controller makes the state volume's claim; the operator never does
        assert not can_i(cluster, sa, "create", "persistentvolumeclaims", watched)
        for verb, resource in [
            ("list", "agentdeployments.swiftclaw.dev"),
            ("list", "pods"),
            ("delete", "namespaces"),
            ("create", "clusterroles.rbac.authorization.k8s.io"),
        ]:
            assert not can_i(cluster, sa, verb, resource, other), (verb, resource)
        assert not can_i(cluster, sa, "create", "deployments.apps", None)

        with operator_as_sa(cluster, op_ns, release, tmp_path, namespaces=watched) as op:
            cluster.apply(
                yaml.safe_dump(
                    {**example("agent"), "metadata": {"name": "agent", "namespace": other}}
                )
            )
            reconciles_and_prunes(cluster, op, watched)
            assert children(cluster, other, "agent") == {}
            assert not cluster.get("agentdeployment", "agent", "-n", other).get("status")


def test_every_namespace_with_the_cluster_role(cluster: Cluster, tmp_path: Path) -> None:
    with (
        cluster.namespace("sc-all-" + uuid.uuid4().hex[:6]) as ns,
        installed(cluster) as (op_ns, release),
    ):
        sa = f"system:serviceaccount:{op_ns}:{release}-operator"
        assert can_i(cluster, sa, "create", "statefulsets.apps", None)
        assert not can_i(cluster, sa, "get", "secrets", None)
        with operator_as_sa(cluster, op_ns, release, tmp_path) as op:
            reconciles_and_prunes(cluster, op, ns)


def test_admission_policy_refuses_hosts_and_images_outside_the_allow_lists(
    cluster: Cluster,
) -> None:
    hosts = "admissionPolicy.providerHosts={api.openai.com,api.anthropic.com,*.models.svc}"
    with (
        cluster.namespace("sc-vap-" + uuid.uuid4().hex[:6]) as ns,
        installed(cluster, "admissionPolicy.enabled=true", hosts),
    ):

        def attempt(name: str, **spec: Any) -> str:
            doc = example(name)
            doc["spec"].update(spec)
            doc["metadata"]["namespace"] = ns
            return cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc), check=False)

        # The policy takes a moment to reach the API server's admission chain (a probe
        # created before it did is removed).
        wait_for(
            "the policy in force",
            lambda: (
                "denied request"
                in attempt("probe", runtime={"image": "evil.example/agent-runtime:1"})
            ),
            timeout=30,
        )
        cluster.kubectl("delete", "agentdeployment", "probe", "-n", ns, "--ignore-not-found")

        ok = attempt("inside")  # the example: openai, anthropic, vllm.models.svc
        assert "created" in ok, ok
        providers = example("x")["spec"]["providers"]
        providers[0]["baseURL"] = "https://exfil.example.net/v1"
        providers[2]["baseURL"] = "http://vllm.models.svc.evil.io:8000/v1"  # not *.models.svc
        for name in ("outside", "inside"):  # a create, and an update of an admitted agent
            refused = attempt(name, providers=providers)
            assert "denied request" in refused, refused
            assert "exfil.example.net, vllm.models.svc.evil.io is not allowed" in refused, refused
        for image in (
            "ghcr.io/swiftclaw/agent-runtime-evil:1",
            "ghcr.io/swiftclaw/agent-runtime:1/x",
            "evil.example/agent-runtime:0.1.0",
        ):
            out = attempt("image", runtime={"image": image})
            assert f"spec.runtime.image {image} is not allowed" in out, out
        for image in (
            "ghcr.io/swiftclaw/agent-runtime:0.2.0",
            "ghcr.io/swiftclaw/agent-runtime@sha256:" + "a" * 64,
        ):
            out = attempt("image-ok", runtime={"image": image})
            assert "denied" not in out, out
        names = {i["metadata"]["name"] for i in cluster.get("agentdeployments", "-n", ns)["items"]}
        assert names == {"inside", "image-ok"}
