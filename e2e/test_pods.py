"""In-cluster traffic: the operator's pods run as real runtime and Redis processes.

The pod runner (``e2e/podrunner.py``) stands in for the kubelet in ``podrun-*`` namespaces,
so here readiness, rollouts, deletions, the Redis volume and the backup job are the real
thing. Requests go through the official ``openai`` client and a client-side balancer over
the Service's ready pods (``e2e/balancer.py`` says why), with no retries: every failed
request is counted, and the scenarios that promise none assert zero.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import signal
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import redis
import yaml

from swiftclaw_devtools.processes import Proc, start_sim
from swiftclaw_devtools.sim import answer_for, estimate_message_tokens

from .balancer import Load, PodBalancer, one_stream, openai_client
from .cluster import REPO, Cluster, component_pids, is_loopback, wait_for
from .kubeapi import DIALED, KubeAPI, pod_ready
from .netwatch import ConnectionWatch
from .operator import Operator, condition, install_crd, wait_condition
from .podrunner import NAMESPACE_PREFIX, POD_NETWORK, PodRunner
from .seaweedfs import SeaweedS3, seaweed_s3

API_KEY = "sk-podrun-0123456789"
UPSTREAM_KEY = "upstream-key-podrun"
OLD_PROMPT = "Answer briefly."
NEW_PROMPT = "You are the rolled-out agent: answer briefly, kindly, and in plain words. " * 3
RUNTIME = {"app.kubernetes.io/instance": "agent", "app.kubernetes.io/component": "runtime"}
RUNBOOK = REPO / "docs" / "runbooks" / "redis-backup-restore.md"
ROLES = ("cache", "state")
BUCKET = "swiftclaw-backups"


@pytest.fixture(scope="module")
def api(cluster: Cluster) -> KubeAPI:
    if cluster.mode != "local" and os.environ.get("E2E_POD_RUNNER") != "1":
        pytest.fail(
            "these scenarios run the operator's pods under e2e/podrunner.py, which stands in "
            "for kwok's fake nodes: use E2E_CLUSTER=local, or E2E_POD_RUNNER=1 on a cluster "
            "from make cluster-up (real kubelets would need the images built and loaded)"
        )
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
    op = Operator(cluster, tmp_path_factory.mktemp("operator")).start()
    yield op
    op.stop()


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """The provider the pods call, on 127.0.0.1; it refuses requests without the key."""
    p = start_sim(
        None,
        "--latency",
        "fixed:20",
        "--stream-pace-ms",
        "5",
        "--require-key-env",
        "SIM_KEY",
        log_path=tmp_path_factory.mktemp("sim") / "sim.log",
        env={"SIM_KEY": UPSTREAM_KEY},
    )
    yield p
    p.stop()


@pytest.fixture(scope="module")
def watch(
    cluster: Cluster, runner: PodRunner, operator: Operator, sim: Proc
) -> Iterator[ConnectionWatch]:
    """Every TCP connection of the suite, the operator, the pods and the control plane."""

    def pids() -> dict[int, str]:
        out = {os.getpid(): "tests", sim.pid: "sim"}
        if operator.proc is not None:
            out[operator.proc.pid] = "operator"
        out.update({pid: "pod" for pid in list(runner.pids)})
        out.update(component_pids(cluster))
        return out

    w = ConnectionWatch(pids)
    w.start()
    yield w
    w.stop()


@pytest.fixture(scope="module")
def ns(cluster: Cluster, runner: PodRunner, watch: ConnectionWatch) -> Iterator[str]:
    name = NAMESPACE_PREFIX + uuid.uuid4().hex[:8]
    cluster.kubectl("create", "namespace", name)
    keys = yaml.safe_dump({"keys": [{"key": API_KEY, "tenant": "acme", "user": "alice"}]})
    cluster.kubectl(
        "create", "secret", "generic", "api-keys", "-n", name, f"--from-literal=keys.yaml={keys}"
    )
    cluster.kubectl(
        "create",
        "secret",
        "generic",
        "upstream",
        "-n",
        name,
        f"--from-literal=apiKey={UPSTREAM_KEY}",
    )
    yield name
    # Deleted while the runner still runs, so that its pods end as a kubelet would end them;
    # the rest of the namespace goes without it.
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
    try:
        wait_for(
            f"the pods of {name} to end",
            lambda: not runner.api.get(f"/api/v1/namespaces/{name}/pods")["items"],
            timeout=60,
        )
    except AssertionError as err:
        print(err)


def agent_doc(sim: Proc, prompt: str = OLD_PROMPT, min_replicas: int = 2) -> dict[str, Any]:
    return {
        "apiVersion": "swiftclaw.dev/v1alpha1",
        "kind": "AgentDeployment",
        "metadata": {"name": "agent"},
        "spec": {
            "agent": {"systemPrompt": prompt},
            "providers": [
                {
                    "name": "sim",
                    "type": "openai-compatible",
                    "baseURL": f"{sim.url}/v1",
                    "apiKeySecretRef": {"name": "upstream", "key": "apiKey"},
                }
            ],
            "models": {"tiers": [{"name": "t", "model": "sim/m"}], "routing": {"default": "t"}},
            "cache": {"redis": {"mode": "managed", "storage": "1Gi"}},
            "reliability": {"timeoutSeconds": 10},
            "scaling": {"minReplicas": min_replicas, "maxReplicas": 5},
            "auth": {"apiKeysSecretRef": {"name": "api-keys", "key": "keys.yaml"}},
            "runtime": {"drainSeconds": 2, "graceSeconds": 10},
        },
    }


def apply(cluster: Cluster, ns: str, doc: dict[str, Any]) -> None:
    cluster.apply(yaml.safe_dump({**doc, "metadata": {**doc["metadata"], "namespace": ns}}))


@pytest.fixture(scope="module")
def agent(cluster: Cluster, operator: Operator, ns: str, sim: Proc) -> dict[str, Any]:
    doc = agent_doc(sim)
    apply(cluster, ns, doc)
    wait_condition(cluster, ns, "agent", "Ready", "True", "Available", timeout=120)
    return doc


@pytest.fixture(scope="module")
def balancer(api: KubeAPI, ns: str, agent: dict[str, Any]) -> Iterator[PodBalancer]:
    b = PodBalancer(api, ns, RUNTIME, 8080).start()
    b.wait_ready(2)
    yield b
    b.stop()


@pytest.fixture(scope="module")
def client(balancer: PodBalancer, ns: str) -> openai.OpenAI:
    return openai_client(balancer, API_KEY, f"agent.{ns}.svc")


def pods(api: KubeAPI, ns: str, selector: dict[str, str]) -> list[dict[str, Any]]:
    query = ",".join(f"{k}={v}" for k, v in selector.items())
    return list(api.get(f"/api/v1/namespaces/{ns}/pods", labelSelector=query)["items"])


def expected_tokens(prompt: str, message: str) -> int:
    return estimate_message_tokens([prompt, message])


def exact_answer(message: str, answer: Any) -> None:
    """The simulator's answer is a function of model and message: the pods passed it on."""
    expected = " ".join(answer_for("m", message, None))
    if answer.choices[0].message.content != expected:
        raise AssertionError(f"unexpected answer {answer.choices[0].message.content!r}")


class PromptCheck:
    """Checks each answer, and tells by its prompt tokens which system prompt it was sent with."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, message: str, answer: Any) -> None:
        exact_answer(message, answer)
        tokens = answer.usage.prompt_tokens
        which = {
            expected_tokens(OLD_PROMPT, message): "old",
            expected_tokens(NEW_PROMPT, message): "new",
        }.get(tokens)
        if which is None:
            raise AssertionError(f"{tokens} prompt tokens match neither system prompt")
        with self.lock:
            self.seen.append(which)


# --- scenarios ------------------------------------------------------------------------------


def test_pods_run_as_processes_become_ready_through_probes_and_serve(
    cluster: Cluster,
    api: KubeAPI,
    runner: PodRunner,
    ns: str,
    agent: dict[str, Any],
    balancer: PodBalancer,
    client: openai.OpenAI,
) -> None:
    runtime = [p for p in pods(api, ns, RUNTIME) if pod_ready(p)]
    assert len(runtime) == 2
    redis_pods = [api.get(f"/api/v1/namespaces/{ns}/pods/agent-redis-{r}-0") for r in ROLES]
    for pod in [*runtime, *redis_pods]:
        ip = pod["status"]["podIP"]
        assert ipaddress.ip_address(ip) in POD_NETWORK, ip
        cs = pod["status"]["containerStatuses"][0]
        assert cs["ready"] and cs["started"] and cs["restartCount"] == 0, cs
        worker = runner.pod_worker(ns, pod["metadata"]["name"])
        assert worker is not None and worker.proc is not None and worker.proc.poll() is None
        assert cs["containerID"] == f"podrunner://{worker.proc.pid}"
    for pod in runtime:  # the readiness the probe saw is the process's own
        with urllib.request.urlopen(f"http://{pod['status']['podIP']}:8080/readyz", timeout=5) as r:
            assert r.status == 200

    answers = [
        client.chat.completions.create(model="t", messages=[{"role": "user", "content": f"q{i}"}])
        for i in range(6)
    ]
    for i, a in enumerate(answers):  # the provider's key reached the pods through the Secret
        assert a.choices[0].message.content == " ".join(answer_for("m", f"q{i}", None))
        assert a.usage is not None
        assert a.usage.prompt_tokens == expected_tokens(OLD_PROMPT, f"q{i}")
    for i in range(4):
        assert one_stream(client, f"s{i}")
    assert set(balancer.sent) == {p["status"]["podIP"] for p in runtime}

    deployment = api.get(f"/apis/apps/v1/namespaces/{ns}/deployments/agent")
    assert deployment["status"]["readyReplicas"] == 2
    body = cluster.get("agentdeployment", "agent", "-n", ns)
    assert body["status"]["readyReplicas"] == 2
    assert condition(body, "Ready")["status"] == "True"

    # A Secret's change reaches the running pod's files, as the kubelet writes them.
    worker = runner.pod_worker(ns, runtime[0]["metadata"]["name"])
    assert worker is not None
    keys_file = worker.root / "var/run/secrets/swiftclaw/api-keys/keys.yaml"
    assert API_KEY in keys_file.read_text()
    extra = yaml.safe_dump(
        {
            "keys": [
                {"key": API_KEY, "tenant": "acme", "user": "alice"},
                {"key": "sk-podrun-second-key", "tenant": "acme", "user": "bob"},
            ]
        }
    )
    patch = {"data": {"keys.yaml": base64.b64encode(extra.encode()).decode()}}
    cluster.kubectl("patch", "secret", "api-keys", "-n", ns, "-p", json.dumps(patch))
    wait_for("the new key in the pod's file", lambda: "bob" in keys_file.read_text(), timeout=15)


def test_new_system_prompt_rolls_the_pods_under_load_without_a_failed_request(
    cluster: Cluster,
    api: KubeAPI,
    ns: str,
    sim: Proc,
    agent: dict[str, Any],
    balancer: PodBalancer,
    client: openai.OpenAI,
) -> None:
    check = PromptCheck()
    load = Load(client, check=check).start()
    load.wait_requests(40)
    old = {p["metadata"]["name"] for p in pods(api, ns, RUNTIME)}
    at_change = load.total
    apply(cluster, ns, agent_doc(sim, NEW_PROMPT))

    def rolled() -> bool:
        current = pods(api, ns, RUNTIME)
        names = {p["metadata"]["name"] for p in current}
        return len(current) == 2 and not names & old and all(pod_ready(p) for p in current)

    wait_for("the pods to roll", rolled, timeout=120)
    balancer.wait_ready(2)
    during = load.total - at_change
    after = len(check.seen)
    load.wait_requests(60)
    load.stop()

    assert load.failed == 0, load.errors
    assert during >= 30  # the traffic went on while the pods rolled
    assert "old" in check.seen[:after] and "new" in check.seen[:after]
    assert set(check.seen[after + 10 :]) == {"new"}  # a few may have been in flight
    wait_condition(cluster, ns, "agent", "Ready", "True", timeout=30)
    print(f"roll: {load.ok} requests ({during} while rolling), {load.failed} failed")


def test_runtime_pod_deleted_under_load_fails_no_request(
    cluster: Cluster,
    api: KubeAPI,
    runner: PodRunner,
    ns: str,
    balancer: PodBalancer,
    client: openai.OpenAI,
) -> None:
    load = Load(client, check=exact_answer).start()
    load.wait_requests(40)
    victim = pods(api, ns, RUNTIME)[0]["metadata"]["name"]
    worker = runner.pod_worker(ns, victim)
    assert worker is not None
    cluster.kubectl("delete", "pod", victim, "-n", ns, "--wait=false")

    def replaced() -> bool:
        current = pods(api, ns, RUNTIME)
        names = {p["metadata"]["name"] for p in current}
        return victim not in names and len(current) == 2 and all(pod_ready(p) for p in current)

    wait_for("a replacement pod", replaced, timeout=90)
    balancer.wait_ready(2)
    load.wait_requests(40)
    load.stop()

    assert load.failed == 0, load.errors
    assert load.ok >= 80
    # It drained and exited by itself on SIGTERM, within the grace period.
    assert worker.state.get("terminated", {}).get("exitCode") == 0, worker.state
    print(f"pod deleted: {load.ok} requests, {load.failed} failed")


def test_a_crashed_runtime_process_is_restarted_and_ready_again(
    api: KubeAPI, runner: PodRunner, ns: str, balancer: PodBalancer
) -> None:
    name = pods(api, ns, RUNTIME)[0]["metadata"]["name"]
    worker = runner.pod_worker(ns, name)
    assert worker is not None and worker.proc is not None
    os.kill(worker.proc.pid, signal.SIGKILL)

    def restarted() -> dict[str, Any] | None:
        pod = api.get(f"/api/v1/namespaces/{ns}/pods/{name}")
        cs = pod["status"]["containerStatuses"][0]
        return cs if cs["restartCount"] == 1 and cs["ready"] and pod_ready(pod) else None

    cs = wait_for("the container restarted and ready", restarted, timeout=60)
    assert cs["lastState"]["terminated"]["exitCode"] == 137  # 128 + SIGKILL
    assert cs["containerID"] == f"podrunner://{worker.proc.pid}"
    balancer.wait_ready(2)


def health(ip: str) -> dict[str, Any]:
    req = urllib.request.Request(
        f"http://{ip}:8080/health", headers={"authorization": f"Bearer {API_KEY}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return dict(json.loads(r.read()))
    except urllib.error.HTTPError as err:
        return dict(json.loads(err.read()))


def redis_pod(
    api: KubeAPI, ns: str, not_uid: str | None = None, agent: str = "agent"
) -> dict[str, Any]:
    """The ready pod of the agent's state instance (the one with a volume)."""

    def probe() -> dict[str, Any] | None:
        pod = api.get(f"/api/v1/namespaces/{ns}/pods/{agent}-redis-state-0")
        if pod and pod["metadata"]["uid"] != not_uid and pod_ready(pod):
            return dict(pod)
        return None

    return dict(wait_for("a ready Redis pod", probe, timeout=90))


def restart_redis(cluster: Cluster, api: KubeAPI, ns: str) -> dict[str, Any]:
    old = redis_pod(api, ns)
    cluster.kubectl("delete", "pod", "agent-redis-state-0", "-n", ns, "--wait=false")
    return redis_pod(api, ns, not_uid=old["metadata"]["uid"])


def redis_password(api: KubeAPI, ns: str, agent: str = "agent") -> str:
    """The password the operator generated (read here as an admin; the operator never does)."""
    secret = api.get(f"/api/v1/namespaces/{ns}/secrets/{agent}-redis-auth")
    return base64.b64decode(secret["data"]["password"]).decode()


def connect(pod: dict[str, Any], password: str | None) -> redis.Redis:
    return redis.Redis(host=pod["status"]["podIP"], port=6379, password=password, socket_timeout=5)


def test_redis_pod_deleted_comes_back_with_its_data_and_the_runtime_reconnects(
    cluster: Cluster, api: KubeAPI, runner: PodRunner, ns: str, balancer: PodBalancer
) -> None:
    first = redis_pod(api, ns)
    password = redis_password(api, ns)
    with pytest.raises(redis.AuthenticationError):  # no password, no access
        connect(first, None).set("podrun:no-password", "x")
    value = uuid.uuid4().hex
    connect(first, password).set("podrun:before-restart", value)
    runtime_ips = balancer.ready()
    for ip in runtime_ips:  # the runtime reached both with the password of the Secret
        checks = health(ip)["checks"]
        assert checks["redis"]["status"] == checks["redisState"]["status"] == "ok", checks

    second = restart_redis(cluster, api, ns)
    new = connect(second, password)
    assert new.get("podrun:before-restart") == value.encode()
    volume = runner.volume_of_claim(ns, "data-agent-redis-state-0")
    assert volume.joinpath("appendonlydir").is_dir()

    # Each runtime pod reaches the new Redis process by itself, through the Service: once
    # its cached report (2 s) has expired, its next check connects to the new server.
    before = new.info("stats")["total_connections_received"]
    time.sleep(2.2)
    wait_for(
        "every runtime pod's Redis check to be ok again",
        lambda: all(health(ip)["checks"]["redisState"]["status"] == "ok" for ip in runtime_ips),
        timeout=30,
    )
    assert new.info("stats")["total_connections_received"] - before >= len(runtime_ips)


def runbook_manifests(values: dict[str, str]) -> list[dict[str, Any]]:
    """The restore claim and Job exactly as the runbook gives them, its placeholders filled
    as its sed does."""
    text = RUNBOOK.read_text()
    m = re.search(r"<<'EOF'.*?\n(.*?)\n\s*EOF\n", text, re.S)
    assert m, "no manifest in the runbook"
    lines = m.group(1).splitlines()
    indent = len(lines[0]) - len(lines[0].lstrip())
    body = "\n".join(line[indent:] for line in lines)
    for placeholder, value in values.items():
        assert placeholder in body, placeholder
        body = body.replace(placeholder, value)
    return [d for d in yaml.safe_load_all(body) if d]


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    with seaweed_s3(tmp_path_factory.mktemp("seaweedfs"), (BUCKET,)) as server:
        yield server


def keeper_doc(sim: Proc, s3: SeaweedS3) -> dict[str, Any]:
    """An agent of one runtime pod whose Redis is backed up to the local SeaweedFS."""
    doc = agent_doc(sim, min_replicas=1)
    doc["metadata"] = {"name": "keeper"}
    doc["spec"]["cache"]["redis"]["backup"] = {
        "schedule": "0 3 * * *",
        "keep": 3,
        "s3": {"endpoint": s3.endpoint, "bucket": BUCKET, "credentialsSecretName": "s3-creds"},
    }
    return doc


def test_backup_lands_in_s3_and_the_runbook_restores_it_after_the_agent_is_deleted(
    cluster: Cluster, api: KubeAPI, runner: PodRunner, ns: str, sim: Proc, s3: SeaweedS3
) -> None:
    cluster.kubectl(
        "create",
        "secret",
        "generic",
        "s3-creds",
        "-n",
        ns,
        *(f"--from-literal={k}={v}" for k, v in s3.env().items()),
    )
    doc = keeper_doc(sim, s3)
    apply(cluster, ns, doc)
    pod = redis_pod(api, ns, agent="keeper")
    password = redis_password(api, ns, "keeper")
    r = connect(pod, password)
    spend = {f"sc:{{{ns}/keeper}}:spend:user-{i}": str(i * 3) for i in range(200)}
    r.mset(spend)

    cluster.kubectl("create", "job", "-n", ns, "--from=cronjob/keeper-redis-backup", "keep-now")
    wait_for(
        "the backup job to complete",
        lambda: (
            api.get(f"/apis/batch/v1/namespaces/{ns}/jobs/keep-now")["status"].get("succeeded") == 1
        ),
        timeout=90,
    )
    keys = s3.keys(BUCKET, f"{ns}/keeper/")
    assert len(keys) == 1 and keys[0].startswith(f"{ns}/keeper/redis-state-"), keys
    snapshot = s3.client().get_object(Bucket=BUCKET, Key=keys[0])["Body"].read()
    assert snapshot.startswith(b"REDIS")

    # The agent goes: its StatefulSets go, the claim and the password stay (the default).
    claims = f"/api/v1/namespaces/{ns}/persistentvolumeclaims"
    cluster.kubectl("delete", "agentdeployment", "keeper", "-n", ns, "--wait=false")
    wait_for(
        "the keeper's Redis pods to end",
        lambda: not pods(api, ns, {"app.kubernetes.io/instance": "keeper"}),
        timeout=90,
    )
    wait_for(
        "the keeper's StatefulSets to go",
        lambda: not api.get(f"/apis/apps/v1/namespaces/{ns}/statefulsets/keeper-redis-state"),
        timeout=60,
    )
    claim = api.get(f"{claims}/data-keeper-redis-state-0")
    assert claim is not None and not claim["metadata"].get("ownerReferences"), claim
    assert redis_password(api, ns, "keeper") == password
    # The disaster: the volume is lost as well.
    cluster.kubectl("delete", "pvc", "data-keeper-redis-state-0", "-n", ns, "--wait=false")
    wait_for("the claim to go", lambda: not api.get(f"{claims}/data-keeper-redis-state-0"))

    values = {
        "AGENT_NAME": "keeper",
        "STORAGE_SIZE": "1Gi",
        "RUNTIME_IMAGE": "ghcr.io/swiftclaw/agent-runtime:0.1.0",
        "S3_BUCKET": BUCKET,
        "S3_PREFIX": f"{ns}/keeper",
        "S3_ENDPOINT": s3.endpoint,
        "S3_REGION": "us-east-1",
        "S3_CREDENTIALS": "s3-creds",
        "SNAPSHOT_KEY": "",  # the newest
    }
    for manifest in runbook_manifests(values):
        cluster.apply(yaml.safe_dump(manifest), "-n", ns)
    wait_for(
        "the restore job to complete",
        lambda: (
            api.get(f"/apis/batch/v1/namespaces/{ns}/jobs/keeper-redis-restore")["status"].get(
                "succeeded"
            )
            == 1
        ),
        timeout=90,
    )
    cluster.kubectl("delete", "job", "keeper-redis-restore", "-n", ns, "--wait=false")

    apply(cluster, ns, doc)  # the agent again: its Redis loads the restored data
    again = connect(redis_pod(api, ns, agent="keeper"), password)
    assert again.mget(list(spend)) == [v.encode() for v in spend.values()]
    cluster.kubectl("delete", "agentdeployment", "keeper", "-n", ns, "--wait=false")


def test_scaling_from_2_to_5_spreads_traffic_over_every_ready_pod(
    cluster: Cluster,
    api: KubeAPI,
    ns: str,
    sim: Proc,
    balancer: PodBalancer,
    client: openai.OpenAI,
) -> None:
    before = set(balancer.wait_ready(2))
    apply(cluster, ns, agent_doc(sim, NEW_PROMPT, min_replicas=5))
    ready = balancer.wait_ready(5, timeout=90)
    assert before < set(ready)  # the HPA added pods; the two serving ones were not rolled
    balancer.sent.clear()
    load = Load(client, check=exact_answer).start()
    load.wait_requests(250)
    load.stop()

    assert load.failed == 0, load.errors
    assert set(balancer.sent) == set(ready)
    share = min(balancer.sent.values()) / sum(balancer.sent.values())
    assert share >= 0.15, balancer.sent  # round robin: a fifth each
    body = wait_condition(cluster, ns, "agent", "Ready", "True", timeout=30)
    assert body["status"]["readyReplicas"] == 5
    hpa = api.get(f"/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers/agent")
    assert hpa["status"]["desiredReplicas"] == 5
    print(f"scaled: {load.ok} requests over {len(ready)} pods, {load.failed} failed")


# --- the fleet document and revoked keys, through mounts updated as a kubelet does -----

AUTO = {"app.kubernetes.io/instance": "auto", "app.kubernetes.io/component": "runtime"}
KUBELET_SYNC = 60.0  # a kubelet's syncFrequency: how late a mounted ConfigMap may change
BOB = "sk-podrun-bob-0123456"


@pytest.fixture(scope="module")
def backup_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """A second provider, the fallback of the ``auto`` agent's tier."""
    p = start_sim(
        None,
        "--latency",
        "fixed:20",
        "--require-key-env",
        "SIM_KEY",
        log_path=tmp_path_factory.mktemp("backup-sim") / "sim.log",
        env={"SIM_KEY": UPSTREAM_KEY},
    )
    yield p
    p.stop()


def auto_doc(sim: Proc, backup: Proc) -> dict[str, Any]:
    doc = agent_doc(sim)
    doc["metadata"] = {"name": "auto"}
    spec = doc["spec"]
    spec["providers"].append(
        {
            "name": "backup",
            "type": "openai-compatible",
            "baseURL": f"{backup.url}/v1",
            "apiKeySecretRef": {"name": "upstream", "key": "apiKey"},
        }
    )
    spec["models"] = {
        "tiers": [{"name": "t", "model": "sim/m", "fallbacks": ["backup/m"]}],
        "routing": {"default": "t"},
    }
    spec["cache"] = {"redis": {"mode": "none"}}
    spec["auth"] = {"apiKeysSecretRef": {"name": "auto-keys", "key": "keys.yaml"}}
    return doc


def pod_chat(ip: str, key: str = API_KEY) -> tuple[int, str | None]:
    """One request straight to a pod: its status and the model that answered."""
    req = urllib.request.Request(
        f"http://{ip}:8080/v1/chat/completions",
        data=json.dumps({"model": "t", "messages": [{"role": "user", "content": "hi"}]}).encode(),
        headers={"content-type": "application/json", "authorization": f"Bearer {key}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers.get("x-swiftclaw-model")
    except urllib.error.HTTPError as err:
        return err.code, None


def pod_metric(ip: str, name: str) -> float | None:
    with urllib.request.urlopen(f"http://{ip}:9090/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
    return None


def sim_requests(sim: Proc) -> int:
    with urllib.request.urlopen(f"{sim.url}/_sim/stats", timeout=5) as r:
        return int(json.load(r)["requests"])


def keys_yaml(*entries: tuple[str, str]) -> str:
    return yaml.safe_dump({"keys": [{"key": k, "tenant": "acme", "user": u} for k, u in entries]})


def test_the_fleet_document_and_a_revoked_key_reach_every_pod_through_delayed_mounts(
    cluster: Cluster,
    api: KubeAPI,
    runner: PodRunner,
    ns: str,
    sim: Proc,
    backup_sim: Proc,
) -> None:
    """ConfigMap and Secret updates reach the pods a kubelet's sync period late: the fleet
    document takes the tier's primary out of every pod, a pod started meanwhile has it at
    once, and a key deleted from the Secret is refused, all without a restart."""
    before = runner.volume_delay
    runner.volume_delay = KUBELET_SYNC
    try:
        cluster.kubectl(
            "create",
            "secret",
            "generic",
            "auto-keys",
            "-n",
            ns,
            f"--from-literal=keys.yaml={keys_yaml((API_KEY, 'alice'), (BOB, 'bob'))}",
        )
        apply(cluster, ns, auto_doc(sim, backup_sim))
        wait_condition(cluster, ns, "auto", "Ready", "True", "Available", timeout=120)

        def ready_ips() -> dict[str, str]:
            return {
                p["metadata"]["name"]: p["status"]["podIP"]
                for p in pods(api, ns, AUTO)
                if pod_ready(p) and not p["metadata"].get("deletionTimestamp")
            }

        ips = wait_for("two ready pods", lambda: len(ready_ips()) == 2 and ready_ips())
        pids = {}
        for name, ip in ips.items():
            worker = runner.pod_worker(ns, name)
            assert worker is not None and worker.proc is not None
            pids[name] = worker.proc.pid
            assert pod_chat(ip) == (200, "sim/m") and pod_chat(ip, BOB)[0] == 200
            assert pod_metric(ip, "swiftclaw_fleet_overrides_generation") == 0

        # the autopilot's write (the operator side's), stood in for: sim/m out of tier t
        now = time.time()
        out = {"tier": "t", "model": "sim/m", "cause": "breaker-open", "since": now}
        fleet = {"generation": 1, "excluded": [{**out, "until": now + 3600}]}
        cluster.kubectl(
            "create",
            "configmap",
            "auto-fleet",
            "-n",
            ns,
            f"--from-literal=fleet.json={json.dumps(fleet)}",
        )
        # each pod's volume changes at its own next sync, at most KUBELET_SYNC later
        for ip in ips.values():
            wait_for(
                f"pod {ip} applying the fleet document",
                lambda ip=ip: pod_metric(ip, "swiftclaw_fleet_overrides_generation") == 1,
                timeout=KUBELET_SYNC + 60,
            )
        sent = sim_requests(sim)
        for ip in ips.values():
            for _ in range(5):
                assert pod_chat(ip) == (200, "backup/m")
        assert sim_requests(sim) == sent  # not one call to the model out of the tier

        # a pod started now has the document from its first request
        gone = next(iter(ips))
        cluster.kubectl("delete", "pod", gone, "-n", ns, "--wait=false")
        fresh = wait_for(
            "a replacement pod",
            lambda: {n: ip for n, ip in ready_ips().items() if n not in ips} or None,
            timeout=90,
        )
        (new_ip,) = fresh.values()
        assert pod_metric(new_ip, "swiftclaw_fleet_overrides_generation") == 1
        assert pod_chat(new_ip) == (200, "backup/m")
        assert sim_requests(sim) == sent

        # a key deleted from the Secret: refused by every pod within the sync period
        encoded = base64.b64encode(keys_yaml((API_KEY, "alice")).encode()).decode()
        patch = {"data": {"keys.yaml": encoded}}
        cluster.kubectl("patch", "secret", "auto-keys", "-n", ns, "-p", json.dumps(patch))
        serving = {n: ip for n, ip in ips.items() if n != gone} | fresh
        for ip in serving.values():
            wait_for(
                f"pod {ip} refusing the deleted key",
                lambda ip=ip: pod_chat(ip, BOB)[0] == 401,
                timeout=KUBELET_SYNC + 60,
            )
            assert pod_chat(ip) == (200, "backup/m")
        # nothing was restarted for any of it
        for name in serving:
            pod = api.get(f"/api/v1/namespaces/{ns}/pods/{name}")
            assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
        kept = next(n for n in ips if n != gone)
        worker = runner.pod_worker(ns, kept)
        assert worker is not None and worker.proc is not None and worker.proc.pid == pids[kept]
    finally:
        runner.volume_delay = before
        cluster.kubectl("delete", "agentdeployment", "auto", "-n", ns, "--wait=false", check=False)


def test_every_connection_stays_on_loopback(
    cluster: Cluster, api: KubeAPI, runner: PodRunner, ns: str, watch: ConnectionWatch
) -> None:
    time.sleep(1)  # one more round of samples
    assert DIALED, "nothing recorded"
    for host, port in DIALED:
        assert is_loopback(host), (host, port)
    assert runner.ips_used and all(
        ipaddress.ip_address(ip) in POD_NETWORK for ip in runner.ips_used
    )
    assert {h for h, _ in DIALED} & runner.ips_used  # the probes and balancer did dial pods
    for pod in api.get("/api/v1/pods")["items"]:
        for ip in (pod["status"].get("podIP"), pod["status"].get("hostIP")):
            if ip:
                assert is_loopback(ip), (pod["metadata"]["name"], ip)

    remote = watch.remote_ips()
    for who in ("tests", "operator", "pod", "kube-apiserver", "etcd"):
        assert remote.get(who), f"no connection of {who} was sampled: {sorted(remote)}"
    off = {
        (who, ip): watch.holders.get((who, ip), "?")
        for who, ips in remote.items()
        for ip in ips
        if not is_loopback(ip)
    }
    assert not off, off  # each address off loopback, with the command line that held it
