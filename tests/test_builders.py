"""The pure builders: every spec field reaches the children it should (and no others),
and the manifests carry what production needs (security, probes, owners, secrets)."""

from __future__ import annotations

import copy
import json
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from swiftclaw_operator.api import MAX_NAME_LENGTH
from swiftclaw_operator.failures import UnsupportedSpec, classify
from swiftclaw_operator.reconcile import (
    agent_from,
    contains,
    needs_apply,
    unsupported,
    unwanted_children,
)
from swiftclaw_operator.resources import Agent, Settings, build_children, create_only_children
from swiftclaw_operator.resources.common import CONFIG_CHECKSUM, SPEC_HASH
from swiftclaw_operator.resources.monitoring import alerts
from swiftclaw_runtime import contract
from swiftclaw_runtime.cli import build_parser
from swiftclaw_runtime.config import AgentDeploymentSpec
from swiftclaw_runtime.credentials import api_keys_path, provider_key_path
from swiftclaw_runtime.overrides import fleet_path

REPO = Path(__file__).resolve().parent.parent
SETTINGS = Settings(
    monitoring_available=True, custom_metrics=True, runbook_base_url="https://runbooks.example/rb"
)


def base_spec() -> dict[str, Any]:
    """The in-cluster example, with every optional part filled in."""
    spec = yaml.safe_load((REPO / "examples" / "agent-in-cluster.yaml").read_text())["spec"]
    spec["providers"].append(
        {
            "name": "gemini",
            "type": "gemini",
            "baseURL": "https://generativelanguage.googleapis.com/v1beta",
            "apiKeyEnv": "GEMINI_API_KEY",
        }
    )
    spec["agent"]["maxOutputTokens"] = 800
    spec["models"]["embeddings"] = {
        "model": "openai/text-embedding-3-small",
        "inputPer1M": 0.02,
        "fallbacks": ["gemini/text-embedding-004"],
        "dimensions": 256,
    }
    spec["agent"]["context"] = [
        {
            "name": "profile",
            "url": "http://users.svc/users/{user}",
            "timeoutMs": 300,
            "cacheTTLSeconds": 60,
        }
    ]
    spec["rateLimits"]["global"] = {"requestsPerMinute": 6000, "tokensPerMinute": 10_000_000}
    spec["runtime"].update(
        podAnnotations={"team": "support"}, nodeSelector={"pool": "cpu"}, priorityClassName="agents"
    )
    spec["runtime"]["resources"]["limits"]["cpu"] = "2"
    spec["monitoring"] = {"enabled": True, "scrapeInterval": "15s"}
    return spec


def build(spec: dict[str, Any], settings: Settings = SETTINGS) -> dict[str, dict[str, Any]]:
    body = {"metadata": {"name": "agent", "namespace": "team", "uid": "uid-1"}, "spec": spec}
    return {
        f"{c['kind']}/{c['metadata']['name']}": c
        for c in build_children(agent_from(body, settings))
    }


def changed(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> set[str]:
    return {ref for ref in before.keys() | after.keys() if before.get(ref) != after.get(ref)}


def leaf_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every leaf field of a model, by its wire name, e.g. ``models.tiers.fallbacks``."""
    out = []
    for name, field in model.model_fields.items():
        alias = field.alias or name
        sub: type[BaseModel] | None = None
        for arg in typing.get_args(field.annotation) or (field.annotation,):
            candidates = typing.get_args(arg) if typing.get_origin(arg) is list else (arg,)
            for c in candidates:
                if isinstance(c, type) and issubclass(c, BaseModel):
                    sub = c
        out += leaf_paths(sub, f"{prefix}{alias}.") if sub else [f"{prefix}{alias}"]
    return out


POLICY = {"ConfigMap/agent-config", "Deployment/agent"}
RULES = {"PrometheusRule/agent"}
REDIS = {
    "NetworkPolicy/agent-redis-cache",
    "Service/agent-redis-cache",
    "StatefulSet/agent-redis-cache",
    "NetworkPolicy/agent-redis-state",
    "Service/agent-redis-state",
    "StatefulSet/agent-redis-state",
    "CronJob/agent-redis-backup",
}
CACHE = {"StatefulSet/agent-redis-cache"}
STATE = {"StatefulSet/agent-redis-state"}
BACKUP = {"CronJob/agent-redis-backup"}
DEPLOY = {"Deployment/agent"}

Mutation = Callable[[dict[str, Any]], None]


def setter(path: str, value: Any) -> Mutation:
    def mutate(spec: dict[str, Any]) -> None:
        target = spec
        keys = path.split(".")
        for k in keys[:-1]:
            target = target[int(k)] if k.isdigit() else target.setdefault(k, {})
        target[keys[-1]] = value

    return mutate


def both(*mutations: Mutation) -> Mutation:
    def mutate(spec: dict[str, Any]) -> None:
        for m in mutations:
            m(spec)

    return mutate


def external_redis(name: str, key: str, state: tuple[str, str] | None = None) -> Mutation:
    redis: dict[str, Any] = {"mode": "external", "urlSecretRef": {"name": name, "key": key}}
    if state is not None:
        redis["stateUrlSecretRef"] = {"name": state[0], "key": state[1]}
    return setter("cache.redis", redis)


# leaf path -> (mutation, the children it must change, [a mutation to start from])
MUTATIONS: dict[str, tuple[Mutation, set[str], Mutation | None]] = {
    "agent.systemPrompt": (setter("agent.systemPrompt", "Be terse."), POLICY, None),
    "agent.maxInputTokens": (setter("agent.maxInputTokens", 9000), POLICY, None),
    "agent.maxOutputTokens": (setter("agent.maxOutputTokens", 900), POLICY, None),
    "agent.context.name": (setter("agent.context.0.name", "account"), POLICY, None),
    "agent.context.url": (
        setter("agent.context.0.url", "http://users.svc/v2/{user}"),
        POLICY,
        None,
    ),
    "agent.context.timeoutMs": (setter("agent.context.0.timeoutMs", 400), POLICY, None),
    "agent.context.cacheTTLSeconds": (setter("agent.context.0.cacheTTLSeconds", 30), POLICY, None),
    "providers.name": (
        # renamed with its reference: the operator refuses a spec that breaks a rule
        both(
            setter("providers.3.name", "google"),
            setter("models.embeddings.fallbacks", ["google/text-embedding-004"]),
        ),
        POLICY,
        None,
    ),
    "providers.type": (setter("providers.2.type", "openai"), POLICY, None),
    "providers.baseURL": (
        setter("providers.2.baseURL", "http://vllm.other.svc:8000/v1"),
        POLICY,
        None,
    ),
    "providers.apiKeySecretRef.name": (
        setter("providers.0.apiKeySecretRef.name", "oa"),
        POLICY,
        None,
    ),
    "providers.apiKeySecretRef.key": (
        setter("providers.0.apiKeySecretRef.key", "token"),
        POLICY,
        None,
    ),
    "providers.apiKeyEnv": (setter("providers.3.apiKeyEnv", "GOOGLE_KEY"), POLICY, None),
    "providers.maxConnections": (setter("providers.0.maxConnections", 64), POLICY, None),
    "models.tiers.name": (setter("models.tiers.2.name", "expert"), POLICY, None),
    "models.tiers.model": (setter("models.tiers.2.model", "openai/gpt-4.1"), POLICY, None),
    "models.tiers.inputPer1M": (setter("models.tiers.0.inputPer1M", 0.1), POLICY, None),
    "models.tiers.outputPer1M": (setter("models.tiers.0.outputPer1M", 0.2), POLICY, None),
    "models.tiers.cachedInputPer1M": (
        setter("models.tiers.0.cachedInputPer1M", 0.01),
        POLICY,
        None,
    ),
    "models.tiers.cacheWritePer1M": (setter("models.tiers.0.cacheWritePer1M", 0.2), POLICY, None),
    "models.tiers.fallbacks": (setter("models.tiers.2.fallbacks", []), POLICY, None),
    "models.embeddings.model": (
        setter("models.embeddings.model", "local/bge-small"),
        POLICY,
        None,
    ),
    "models.embeddings.inputPer1M": (setter("models.embeddings.inputPer1M", 0.1), POLICY, None),
    "models.embeddings.fallbacks": (setter("models.embeddings.fallbacks", []), POLICY, None),
    "models.embeddings.dimensions": (setter("models.embeddings.dimensions", 512), POLICY, None),
    "models.routing.strategy": (setter("models.routing.strategy", "fixed"), POLICY, None),
    "models.routing.default": (setter("models.routing.default", "simple"), POLICY, None),
    "cache.exact.enabled": (setter("cache.exact.enabled", False), POLICY, None),
    "cache.exact.ttlSeconds": (setter("cache.exact.ttlSeconds", 60), POLICY, None),
    "cache.semantic.enabled": (setter("cache.semantic.enabled", False), POLICY, None),
    "cache.semantic.ttlSeconds": (setter("cache.semantic.ttlSeconds", 60), POLICY, None),
    "cache.semantic.threshold": (setter("cache.semantic.threshold", 0.95), POLICY, None),
    "cache.exact.cacheable": (setter("cache.exact.cacheable", "always"), POLICY, None),
    "cache.exact.maxTemperature": (setter("cache.exact.maxTemperature", 0.0), POLICY, None),
    "cache.semantic.verify": (setter("cache.semantic.verify", False), POLICY, None),
    "cache.semantic.degradeThreshold": (
        setter("cache.semantic.degradeThreshold", 0.85),
        POLICY,
        None,
    ),
    "cache.semantic.staleTTLSeconds": (setter("cache.semantic.staleTTLSeconds", 600), POLICY, None),
    "cache.semantic.embeddings": (setter("cache.semantic.embeddings", "models"), POLICY, None),
    "cache.semantic.mode": (setter("cache.semantic.mode", "serve"), POLICY, None),
    "cache.semantic.requirePrecision": (
        setter("cache.semantic.requirePrecision", 0.99),
        POLICY,
        None,
    ),
    "cache.semantic.minSamples": (setter("cache.semantic.minSamples", 500), POLICY, None),
    "cache.maxEntryBytes": (setter("cache.maxEntryBytes", 65536), POLICY, None),
    "cache.sharing": (setter("cache.sharing", "tenant"), POLICY, None),
    "cache.promptCaching": (setter("cache.promptCaching", "off"), POLICY, None),
    "cache.local.maxEntries": (setter("cache.local.maxEntries", 500), POLICY, None),
    "cache.local.maxBytes": (setter("cache.local.maxBytes", 1048576), POLICY, None),
    "cache.redis.fallbackReplicas": (setter("cache.redis.fallbackReplicas", 3), POLICY, None),
    # (backup is allowed only when managed: it goes too, and with it its alert)
    "cache.redis.mode": (setter("cache.redis", {"mode": "none"}), POLICY | REDIS | RULES, None),
    "cache.redis.urlSecretRef.name": (
        external_redis("redis-b", "url"),
        POLICY,
        external_redis("redis-a", "url"),
    ),
    "cache.redis.urlSecretRef.key": (
        external_redis("redis-a", "uri"),
        POLICY,
        external_redis("redis-a", "url"),
    ),
    "cache.redis.stateUrlSecretRef.name": (
        external_redis("redis-a", "url", ("state-b", "url")),
        POLICY,
        external_redis("redis-a", "url", ("state-a", "url")),
    ),
    "cache.redis.stateUrlSecretRef.key": (
        external_redis("redis-a", "url", ("state-a", "uri")),
        POLICY,
        external_redis("redis-a", "url", ("state-a", "url")),
    ),
    "cache.redis.storage": (setter("cache.redis.storage", "5Gi"), POLICY | STATE, None),
    "cache.redis.cacheMemory": (setter("cache.redis.cacheMemory", "2Gi"), POLICY | CACHE, None),
    "cache.redis.stateMemory": (setter("cache.redis.stateMemory", "1Gi"), POLICY | STATE, None),
    "cache.redis.deleteDataWithAgent": (
        setter("cache.redis.deleteDataWithAgent", True),
        POLICY | STATE,
        None,
    ),
    "cache.redis.backup.schedule": (
        setter("cache.redis.backup.schedule", "30 2 * * *"),
        POLICY | BACKUP,
        None,
    ),
    "cache.redis.backup.keep": (setter("cache.redis.backup.keep", 3), POLICY | BACKUP, None),
    "cache.redis.backup.maxAgeDays": (
        setter("cache.redis.backup.maxAgeDays", 9),
        POLICY | BACKUP,
        None,
    ),
    "cache.redis.backup.s3.endpoint": (
        setter("cache.redis.backup.s3.endpoint", "http://127.0.0.1:8333"),
        POLICY | BACKUP,
        None,
    ),
    "cache.redis.backup.s3.bucket": (
        setter("cache.redis.backup.s3.bucket", "other-bucket"),
        POLICY | BACKUP,
        None,
    ),
    "cache.redis.backup.s3.prefix": (
        setter("cache.redis.backup.s3.prefix", "team/x"),
        POLICY | BACKUP,
        None,
    ),
    "cache.redis.backup.s3.region": (
        setter("cache.redis.backup.s3.region", "eu-west-1"),
        POLICY | BACKUP,
        None,
    ),
    "cache.redis.backup.s3.credentialsSecretName": (
        setter("cache.redis.backup.s3.credentialsSecretName", "other-creds"),
        POLICY | BACKUP,
        None,
    ),
    "reliability.timeoutSeconds": (setter("reliability.timeoutSeconds", 10), POLICY, None),
    "reliability.attemptTimeoutSeconds": (
        setter("reliability.attemptTimeoutSeconds", 5),
        POLICY,
        None,
    ),
    "reliability.retry.maxRetryAfterSeconds": (
        setter("reliability.retry.maxRetryAfterSeconds", 30),
        POLICY,
        None,
    ),
    "reliability.retry.budgetPercent": (
        setter("reliability.retry.budgetPercent", 10),
        POLICY,
        None,
    ),
    "reliability.circuitBreaker.failureRatePercent": (
        setter("reliability.circuitBreaker.failureRatePercent", 25),
        POLICY,
        None,
    ),
    "reliability.retry.maxAttempts": (setter("reliability.retry.maxAttempts", 2), POLICY, None),
    "reliability.retry.initialBackoffMs": (
        setter("reliability.retry.initialBackoffMs", 100),
        POLICY,
        None,
    ),
    "reliability.retry.maxBackoffMs": (
        setter("reliability.retry.maxBackoffMs", 4000),
        POLICY,
        None,
    ),
    "reliability.circuitBreaker.failureThreshold": (
        setter("reliability.circuitBreaker.failureThreshold", 3),
        POLICY,
        None,
    ),
    "reliability.circuitBreaker.windowSeconds": (
        setter("reliability.circuitBreaker.windowSeconds", 10),
        POLICY,
        None,
    ),
    "reliability.circuitBreaker.openSeconds": (
        setter("reliability.circuitBreaker.openSeconds", 20),
        POLICY,
        None,
    ),
    "reliability.circuitBreaker.halfOpenProbes": (
        setter("reliability.circuitBreaker.halfOpenProbes", 2),
        POLICY,
        None,
    ),
    "rateLimits.perUser.requestsPerMinute": (
        setter("rateLimits.perUser.requestsPerMinute", 30),
        POLICY,
        None,
    ),
    "rateLimits.perUser.tokensPerMinute": (
        setter("rateLimits.perUser.tokensPerMinute", 5000),
        POLICY,
        None,
    ),
    "rateLimits.global.requestsPerMinute": (
        setter("rateLimits.global.requestsPerMinute", 100),
        POLICY,
        None,
    ),
    "rateLimits.global.tokensPerMinute": (
        setter("rateLimits.global.tokensPerMinute", 99_000),
        POLICY,
        None,
    ),
    "rateLimits.perTenant.requestsPerMinute": (
        setter("rateLimits.perTenant.requestsPerMinute", 3000),
        POLICY,
        None,
    ),
    "rateLimits.perTenant.tokensPerMinute": (
        setter("rateLimits.perTenant.tokensPerMinute", 5_000_000),
        POLICY,
        None,
    ),
    "budget.monthlyUSD": (setter("budget.monthlyUSD", 12_000), POLICY, None),
    "budget.timeZone": (setter("budget.timeZone", "Europe/Paris"), POLICY, None),
    "budget.alertHighCostUSD": (setter("budget.alertHighCostUSD", 0.5), POLICY, None),
    "auth.userFromRequest": (setter("auth.userFromRequest", True), POLICY, None),
    "budget.dailyUSD": (setter("budget.dailyUSD", 400), POLICY | RULES, None),
    "budget.perUserDailyUSD": (setter("budget.perUserDailyUSD", 2), POLICY, None),
    "budget.alertAtPercent": (setter("budget.alertAtPercent", 90), POLICY | RULES, None),
    "budget.onExceeded": (setter("budget.onExceeded", "reject"), POLICY, None),
    # Scaling reaches the HPA only: in the pods' config it would roll every pod on a change
    # of replicas (e2e/test_pods.py saw it).
    "scaling.minReplicas": (
        setter("scaling.minReplicas", 3),
        {"HorizontalPodAutoscaler/agent"},
        None,
    ),
    "scaling.maxReplicas": (
        setter("scaling.maxReplicas", 20),
        {"HorizontalPodAutoscaler/agent"},
        None,
    ),
    "scaling.targetConcurrency": (
        setter("scaling.targetConcurrency", 8),
        {"HorizontalPodAutoscaler/agent"},
        None,
    ),
    "slo.p95LatencyMs": (setter("slo.p95LatencyMs", 1500), RULES, None),
    "slo.errorRatePercent": (setter("slo.errorRatePercent", 2), RULES, None),
    "auth.required": (setter("auth.required", False), POLICY, None),
    "auth.apiKeysSecretRef.name": (
        setter("auth.apiKeysSecretRef.name", "other-keys"),
        POLICY,
        None,
    ),
    "auth.apiKeysSecretRef.key": (setter("auth.apiKeysSecretRef.key", "k.yaml"), POLICY, None),
    # the backup job runs `swiftclaw redis-backup` from the runtime image
    "runtime.image": (
        setter("runtime.image", "registry.local/runtime:0.2.0"),
        DEPLOY | BACKUP,
        None,
    ),
    "runtime.imagePullPolicy": (
        setter("runtime.imagePullPolicy", "Always"),
        DEPLOY | BACKUP,
        None,
    ),
    "runtime.resources.requests.cpu": (
        setter("runtime.resources.requests.cpu", "500m"),
        DEPLOY,
        None,
    ),
    "runtime.resources.requests.memory": (
        setter("runtime.resources.requests.memory", "300Mi"),
        DEPLOY,
        None,
    ),
    "runtime.resources.limits.cpu": (setter("runtime.resources.limits.cpu", "1"), DEPLOY, None),
    "runtime.resources.limits.memory": (
        setter("runtime.resources.limits.memory", "1Gi"),
        DEPLOY,
        None,
    ),
    "runtime.logLevel": (setter("runtime.logLevel", "debug"), DEPLOY, None),
    "runtime.podAnnotations": (setter("runtime.podAnnotations", {"team": "billing"}), DEPLOY, None),
    "runtime.nodeSelector": (setter("runtime.nodeSelector", {"pool": "arm"}), DEPLOY, None),
    "runtime.priorityClassName": (setter("runtime.priorityClassName", "critical"), DEPLOY, None),
    "runtime.drainSeconds": (setter("runtime.drainSeconds", 10), DEPLOY, None),
    "runtime.graceSeconds": (setter("runtime.graceSeconds", 60), DEPLOY, None),
    "monitoring.enabled": (
        setter("monitoring.enabled", False),
        {"ServiceMonitor/agent", "PrometheusRule/agent"},
        None,
    ),
    "monitoring.scrapeInterval": (
        setter("monitoring.scrapeInterval", "30s"),
        {"ServiceMonitor/agent"},
        None,
    ),
    # The autopilot's knobs only the operator reads: no child, no pod config, no roll.
    "budget.onProjectedExceed": (setter("budget.onProjectedExceed", "downgrade"), set(), None),
    "budget.minDowngradeSeconds": (setter("budget.minDowngradeSeconds", 60), set(), None),
    "scaling.scaleDownWindowSeconds": (
        setter("scaling.scaleDownWindowSeconds", 600),
        {"HorizontalPodAutoscaler/agent"},
        None,
    ),
    # on, it owns the HPA's floor and the down window (the HPA's own goes to 0)
    "autopilot.enabled": (
        setter("autopilot.enabled", True),
        {"HorizontalPodAutoscaler/agent"},
        None,
    ),
    "autopilot.intervalSeconds": (setter("autopilot.intervalSeconds", 30), set(), None),
    "autopilot.prometheusURL": (
        setter("autopilot.prometheusURL", "http://prometheus.monitoring.svc:9090"),
        set(),
        None,
    ),
    **{
        f"autopilot.thresholds.{name}": (setter(f"autopilot.thresholds.{name}", value), set(), None)
        for name, value in (
            ("failoverErrorRatePercent", 20),
            ("failoverMinCalls", 5),
            ("healthySeconds", 300),
            ("addedLatencyMs", 100),
            ("loopLagMs", 100),
            ("staleHoldSeconds", 60),
        )
    },
    "alerts.costSpike.ratio": (setter("alerts.costSpike.ratio", 3), set(), None),
    "alerts.costSpike.minUSD": (setter("alerts.costSpike.minUSD", 10), set(), None),
}


def test_every_spec_field_has_a_builder_test() -> None:
    assert sorted(leaf_paths(AgentDeploymentSpec)) == sorted(MUTATIONS)


@pytest.mark.parametrize("path", sorted(MUTATIONS))
def test_spec_field_reaches_exactly_its_children(path: str) -> None:
    mutate, expected, start = MUTATIONS[path]
    before_spec = base_spec()
    if start:
        start(before_spec)
    after_spec = copy.deepcopy(before_spec)
    mutate(after_spec)
    assert after_spec != before_spec
    assert changed(build(before_spec), build(after_spec)) == expected


def test_children_are_owned_labelled_and_hashed() -> None:
    kids = build(base_spec())
    assert len(kids) == 15  # 6 runtime, 2 x 3 Redis, its backup CronJob, 2 monitoring
    for ref, obj in kids.items():
        meta = obj["metadata"]
        assert meta["namespace"] == "team", ref
        assert meta["ownerReferences"][0]["uid"] == "uid-1", ref
        assert meta["ownerReferences"][0]["controller"] is True, ref
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "swiftclaw-operator", ref
        assert len(meta["annotations"][SPEC_HASH]) == 16, ref


# Kubernetes' own name limits: a CronJob's Jobs append 11 characters to its 63; a
# StatefulSet's pods carry a controller-revision-hash label of the name plus 11 characters.
NAME_LIMITS = {"CronJob": 52, "StatefulSet": 52}


def test_the_longest_allowed_name_fits_every_child() -> None:
    spec = base_spec()
    for name_length, fits in ((MAX_NAME_LENGTH, True), (MAX_NAME_LENGTH + 1, False)):
        body = {
            "metadata": {"name": "a" * name_length, "namespace": "team", "uid": "uid-1"},
            "spec": spec,
        }
        kids = build_children(agent_from(body, SETTINGS))
        assert any(k["kind"] == "CronJob" for k in kids)
        too_long = [
            f"{k['kind']}/{k['metadata']['name']}"
            for k in kids
            if len(k["metadata"]["name"]) > NAME_LIMITS.get(k["kind"], 63)
        ]
        assert (not too_long) == fits, too_long


def test_deployment_is_hardened_probed_and_rolls_safely() -> None:
    dep = build(base_spec())["Deployment/agent"]
    spec = dep["spec"]
    assert "replicas" not in spec  # the HPA owns it
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    c = pod["containers"][0]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert c["resources"] == {
        "requests": {"cpu": "250m", "memory": "256Mi"},
        "limits": {"cpu": "2", "memory": "512Mi"},
    }
    assert pod["terminationGracePeriodSeconds"] == 5 + 30 + 5
    assert {m["mountPath"] for m in c["volumeMounts"]} >= {
        "/etc/swiftclaw",
        "/tmp",
        "/var/run/secrets/swiftclaw/providers/openai",
        "/var/run/secrets/swiftclaw/providers/anthropic",
        "/var/run/secrets/swiftclaw/api-keys",
    }
    env = {e["name"]: e for e in c["env"]}
    password = "$(SWIFTCLAW_REDIS_PASSWORD)"
    assert env["SWIFTCLAW_REDIS_URL"]["value"] == f"redis://:{password}@agent-redis-cache:6379/0"
    assert env["SWIFTCLAW_REDIS_STATE_URL"]["value"] == (
        f"redis://:{password}@agent-redis-state:6379/0"
    )
    # the password from the generated Secret, defined before the URLs that expand it
    assert env["SWIFTCLAW_REDIS_PASSWORD"]["valueFrom"] == {
        "secretKeyRef": {"name": "agent-redis-auth", "key": "password"}
    }
    names = [e["name"] for e in c["env"]]
    assert names.index("SWIFTCLAW_REDIS_PASSWORD") < names.index("SWIFTCLAW_REDIS_URL")


def dockerfile_stage(target: str) -> dict[str, str]:
    """The instructions of one stage of the Dockerfile (the last of each kind)."""
    out: dict[str, str] = {}
    stage = None
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if line.startswith("FROM "):
            stage = line.split(" AS ")[-1].strip()
        elif stage == target and line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out[word] = rest
    return out


def test_the_pod_follows_the_runtime_contract() -> None:
    """What the operator mounts and passes is where the runtime looks, and the image runs
    the same command as the pod (both from swiftclaw_runtime.contract)."""
    kids = build(base_spec())
    pod = kids["Deployment/agent"]["spec"]["template"]["spec"]
    c = pod["containers"][0]
    volumes = {v["name"]: v for v in pod["volumes"]}
    files = set()
    for m in c["volumeMounts"]:
        v = volumes[m["name"]]
        if "secret" in v:
            files |= {f"{m['mountPath']}/{i['path']}" for i in v["secret"]["items"]}
        if "configMap" in v and v["configMap"]["name"] == "agent-fleet":
            # the autopilot's, made later: optional, so the pod starts without it
            assert v["configMap"].get("optional") is True
            files.add(f"{m['mountPath']}/{contract.FLEET_FILE}")
        elif "configMap" in v:
            data = kids[f"ConfigMap/{v['configMap']['name']}"]["data"]
            files |= {f"{m['mountPath']}/{key}" for key in data}
    environ = {e["name"]: e["value"] for e in c["env"] if "value" in e}
    assert str(fleet_path(environ)) in files
    assert str(fleet_path(environ)) == contract.FLEET_PATH
    assert str(provider_key_path("openai", environ)) in files
    assert str(provider_key_path("anthropic", environ)) in files
    assert str(api_keys_path(environ)) in files
    args = build_parser().parse_args(c["args"])
    assert args.manifest in files
    assert args.port == c["ports"][0]["containerPort"] == contract.RUNTIME_PORT
    assert (args.drain_seconds, args.grace_seconds, args.log_level) == (5, 30, "info")
    image = dockerfile_stage("runtime")
    assert json.loads(image["ENTRYPOINT"]) == c["command"]
    assert json.loads(image["CMD"]) == contract.run_args() == c["args"][:6]
    assert image["EXPOSE"] == str(contract.RUNTIME_PORT)


def test_secrets_are_mounted_never_copied() -> None:
    kids = build(base_spec())
    config = kids["ConfigMap/agent-config"]["data"]["config.yaml"]
    doc = yaml.safe_load(config)
    assert doc["kind"] == "RuntimeConfig"
    assert doc["spec"]["providers"][0]["apiKeySecretRef"] == {"name": "openai", "key": "apiKey"}
    assert "runtime" not in doc["spec"]
    volumes = {
        v["name"]: v for v in kids["Deployment/agent"]["spec"]["template"]["spec"]["volumes"]
    }
    assert volumes["provider-openai"]["secret"] == {
        "secretName": "openai",
        "items": [{"key": "apiKey", "path": "apiKey"}],
        "defaultMode": 0o440,
    }
    spec = base_spec()
    external_redis("redis", "url")(spec)
    env = {
        e["name"]: e
        for e in build(spec)["Deployment/agent"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["SWIFTCLAW_REDIS_URL"] == {
        "name": "SWIFTCLAW_REDIS_URL",
        "valueFrom": {"secretKeyRef": {"name": "redis", "key": "url"}},
    }
    assert "SWIFTCLAW_REDIS_STATE_URL" not in env and "SWIFTCLAW_REDIS_PASSWORD" not in env
    spec = base_spec()
    external_redis("redis", "url", ("redis-state", "url"))(spec)
    env = {
        e["name"]: e
        for e in build(spec)["Deployment/agent"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["SWIFTCLAW_REDIS_STATE_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": "redis-state", "key": "url"}
    }


def test_config_change_changes_the_pod_checksum() -> None:
    a = build(base_spec())["Deployment/agent"]
    spec = base_spec()
    spec["agent"]["systemPrompt"] = "changed"
    b = build(spec)["Deployment/agent"]
    key = ("spec", "template", "metadata", "annotations", CONFIG_CHECKSUM)
    va, vb = a, b
    for k in key:
        va, vb = va[k], vb[k]
    assert va != vb


def test_hpa_pdb_and_network_policy() -> None:
    kids = build(base_spec())
    hpa = kids["HorizontalPodAutoscaler/agent"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 50)
    assert [m["type"] for m in hpa["metrics"]] == ["Resource"]  # CPU only
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "agent"}
    assert kids["PodDisruptionBudget/agent"]["spec"]["maxUnavailable"] == 1
    for role, allowed in (("cache", ["runtime"]), ("state", ["runtime", "redis-backup"])):
        np = kids[f"NetworkPolicy/agent-redis-{role}"]["spec"]
        assert np["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == f"redis-{role}"
        sources = [
            f["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
            for f in np["ingress"][0]["from"]
        ]
        assert sources == allowed
        assert np["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 6379}]


def redis_container(kids: dict[str, dict[str, Any]], role: str) -> dict[str, Any]:
    pod = kids[f"StatefulSet/agent-redis-{role}"]["spec"]["template"]["spec"]
    return dict(pod["containers"][0])


def arg(c: dict[str, Any], flag: str) -> str:
    args = c["args"]
    return str(args[args.index(flag) + 1])


def test_managed_redis_cache_evicts_state_never_and_both_need_the_password() -> None:
    kids = build(base_spec())
    cache, state = redis_container(kids, "cache"), redis_container(kids, "state")
    assert arg(cache, "--maxmemory-policy") == "allkeys-lru"
    assert arg(state, "--maxmemory-policy") == "noeviction"
    # maxmemory below the container's limit: 75% of 512Mi, 50% of 256Mi
    assert cache["resources"]["limits"]["memory"] == "512Mi"
    assert int(arg(cache, "--maxmemory")) == 512 * 2**20 * 3 // 4
    assert state["resources"]["limits"]["memory"] == "256Mi"
    assert int(arg(state, "--maxmemory")) == 256 * 2**20 // 2
    assert arg(cache, "--appendonly") == "no" and arg(cache, "--save") == ""
    assert arg(state, "--appendonly") == "yes" and arg(state, "--dir") == "/data"
    for c in (cache, state):
        assert "--requirepass" not in c["args"]  # never in an argv: see START
        assert c["command"][:2] == ["sh", "-c"] and "--aclfile" in c["command"][2]
        assert c["env"] == [
            {
                "name": "REDISCLI_AUTH",
                "valueFrom": {"secretKeyRef": {"name": "agent-redis-auth", "key": "password"}},
            }
        ]
    assert "volumeClaimTemplates" not in kids["StatefulSet/agent-redis-cache"]["spec"]


def test_state_volume_kept_unless_the_spec_says_otherwise() -> None:
    sts = build(base_spec())["StatefulSet/agent-redis-state"]["spec"]
    assert sts["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert "ownerReferences" not in sts["volumeClaimTemplates"][0]["metadata"]
    assert sts["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    spec = base_spec()
    spec["cache"]["redis"]["deleteDataWithAgent"] = True
    sts = build(spec)["StatefulSet/agent-redis-state"]["spec"]
    assert sts["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Delete"


def test_backup_cronjob_uploads_with_the_runtime_image() -> None:
    kids = build(base_spec())
    cron = kids["CronJob/agent-redis-backup"]["spec"]
    assert cron["schedule"] == "0 3 * * *" and cron["concurrencyPolicy"] == "Forbid"
    assert cron["jobTemplate"]["spec"]["activeDeadlineSeconds"] > 0  # a hung run ends
    c = cron["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]  # quotas admit it
    assert (
        c["image"] == kids["Deployment/agent"]["spec"]["template"]["spec"]["containers"][0]["image"]
    )
    assert c["command"] == ["swiftclaw"]
    assert c["args"] == [
        "redis-backup",
        "--bucket",
        "acme-swiftclaw-backups",
        "--prefix",
        "team/agent",
        "--endpoint",
        "https://s3.eu-central-1.amazonaws.com",
        "--region",
        "eu-central-1",
        "--keep",
        "7",
        "--max-age-days",
        "30",
        "--work-dir",
        "/tmp",
    ]
    env = {e["name"]: e for e in c["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"] == {
        "secretKeyRef": {"name": "redis-backup-s3", "key": "AWS_SECRET_ACCESS_KEY"}
    }
    assert env["SWIFTCLAW_REDIS_STATE_URL"]["value"].endswith("@agent-redis-state:6379/0")
    spec = base_spec()
    del spec["cache"]["redis"]["backup"]
    assert "CronJob/agent-redis-backup" not in build(spec)


def test_password_secret_is_create_only_and_only_for_managed_redis() -> None:
    spec = base_spec()
    agent = Agent("agent", "team", "uid-1", AgentDeploymentSpec.model_validate(spec), SETTINGS)
    (secret,) = create_only_children(agent, "p" * 64)
    assert secret["metadata"]["name"] == "agent-redis-auth"
    assert secret["stringData"] == {"password": "p" * 64}
    assert "ownerReferences" not in secret["metadata"]  # kept with the data
    assert not any(c["kind"] == "Secret" for c in build_children(agent))
    spec["cache"]["redis"]["deleteDataWithAgent"] = True
    agent = Agent("agent", "team", "uid-1", AgentDeploymentSpec.model_validate(spec), SETTINGS)
    (secret,) = create_only_children(agent, "p" * 64)
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    spec["cache"]["redis"] = {"mode": "none"}
    agent = Agent("agent", "team", "uid-1", AgentDeploymentSpec.model_validate(spec), SETTINGS)
    assert create_only_children(agent, "p" * 64) == []


def test_monitoring_only_where_its_crds_exist() -> None:
    with_crds = build(base_spec())
    without = build(base_spec(), Settings(monitoring_available=False))
    assert {"ServiceMonitor/agent", "PrometheusRule/agent"} <= set(with_crds)
    assert not {"ServiceMonitor/agent", "PrometheusRule/agent"} & set(without)


def test_alerts_cover_slo_errors_cost_breakers_budget_with_runbooks() -> None:
    rule = build(base_spec())["PrometheusRule/agent"]["spec"]["groups"][0]["rules"]
    by_name = {r["alert"]: r for r in rule}
    assert set(by_name) == {
        "SwiftClawLatencyAboveSLO",
        "SwiftClawErrorRateHigh",
        "SwiftClawCostSpike",
        "SwiftClawCircuitBreakerOpen",
        "SwiftClawBudgetAlert",
        "SwiftClawRedisBackupFailed",
    }
    backup = by_name["SwiftClawRedisBackupFailed"]["expr"]
    assert (
        'kube_cronjob_status_last_successful_time{namespace="team",cronjob="agent-redis-backup"}'
        in backup
    )
    assert "> 2" in by_name["SwiftClawLatencyAboveSLO"]["expr"]  # the 2000 ms SLO, in seconds
    assert "> 0.01" in by_name["SwiftClawErrorRateHigh"]["expr"]
    assert "2 * sum(rate(swiftclaw_cost_usd_total" in by_name["SwiftClawCostSpike"]["expr"]
    assert "> 400" in by_name["SwiftClawBudgetAlert"]["expr"]  # 80 % of 500 USD
    for r in rule:
        url = r["annotations"]["runbook_url"]
        assert url.startswith("https://runbooks.example/rb/")
        page = REPO / "docs" / "runbooks" / url.rsplit("/", 1)[-1]
        assert page.exists(), f"no runbook page {page.name}"


def test_no_budget_no_budget_alert() -> None:
    spec = base_spec()
    spec["budget"] = {}
    agent = Agent("a", "n", "u", AgentDeploymentSpec.model_validate(spec), SETTINGS)
    assert "SwiftClawBudgetAlert" not in {a.name for a in alerts(agent)}


def test_contains_and_needs_apply() -> None:
    desired = build(base_spec())["Service/agent"]
    live = copy.deepcopy(desired)
    live["spec"]["clusterIP"] = "127.96.0.9"  # set by the API server: no drift
    live["metadata"]["resourceVersion"] = "42"
    live["spec"]["ports"][0]["nodePort"] = None
    assert needs_apply(desired, live) is None
    assert needs_apply(desired, None) == "missing"
    tampered = copy.deepcopy(live)
    tampered["spec"]["ports"][0]["port"] = 8081
    assert needs_apply(desired, tampered) == "drifted"
    stale = copy.deepcopy(live)
    stale["metadata"]["annotations"][SPEC_HASH] = "0" * 16
    assert needs_apply(desired, stale) == "changed"
    assert contains({"a": 1.0}, {"a": 1}) and not contains({"a": [1]}, {"a": [1, 2]})
    assert contains({}, {"requests": {}})  # empty maps are dropped by the API server


def test_unwanted_children_after_disabling_redis_and_monitoring() -> None:
    spec = base_spec()
    spec["cache"]["redis"] = {"mode": "none"}
    spec["monitoring"]["enabled"] = False
    agent = Agent("agent", "team", "uid-1", AgentDeploymentSpec.model_validate(spec), SETTINGS)
    refs = {f"{k}/{n}" for _, k, n in unwanted_children(agent)}
    assert refs == REDIS | {"ServiceMonitor/agent", "PrometheusRule/agent"}


def test_target_concurrency_scales_on_in_flight_requests_where_an_adapter_serves_them() -> None:
    spec = base_spec()
    spec["scaling"]["targetConcurrency"] = 12
    hpa = build(spec)["HorizontalPodAutoscaler/agent"]["spec"]
    assert [m["type"] for m in hpa["metrics"]] == ["Resource", "Pods"]
    assert hpa["metrics"][1]["pods"] == {
        "metric": {"name": "swiftclaw_requests_in_flight"},
        "target": {"type": "AverageValue", "averageValue": "12"},
    }
    body = {"metadata": {"name": "agent", "namespace": "team", "uid": "uid-1"}, "spec": spec}
    assert unsupported(agent_from(body, SETTINGS)) is None
    # Without a custom metrics adapter: the HPA on CPU, and the field reported, not ignored
    # (reconcile raises it once the children are in place: Degraded, one Event).
    plain = Settings(custom_metrics=False)
    hpa = build(spec, plain)["HorizontalPodAutoscaler/agent"]["spec"]
    assert [m["type"] for m in hpa["metrics"]] == ["Resource"]
    problem = unsupported(agent_from(body, plain))
    assert problem is not None and "spec.scaling.targetConcurrency" in problem
    failure = classify(UnsupportedSpec(problem))
    assert (failure.permanent, failure.reason) == (True, "InvalidSpec")
    del spec["scaling"]["targetConcurrency"]
    assert unsupported(agent_from(body, plain)) is None
