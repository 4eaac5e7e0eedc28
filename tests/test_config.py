"""The policy model: the example loads, defaults fill in, and every error names its field."""

from __future__ import annotations

import copy
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from swiftclaw_runtime.config import (
    NOT_FOR_PODS,
    AgentDeploymentSpec,
    AgentPolicy,
    BudgetSpec,
    ConfigError,
    Model,
    RateLimitsSpec,
    RetrySpec,
    load_config,
    parse_document,
    render_runtime_config,
)

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "local-agent.yaml"


def example() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE.read_text())


def errors_of(doc: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_document(doc)
    return [str(i) for i in info.value.issues]


def test_example_manifest_loads_with_its_values() -> None:
    cfg = load_config(EXAMPLE)
    assert (cfg.name, cfg.namespace) == ("support-agent", "agents")
    p = cfg.policy
    assert [t.name for t in p.models.tiers] == ["simple", "medium", "complex"]
    assert p.default_tier.name == "medium"
    assert p.provider("sim-anthropic").type == "anthropic"
    assert p.models.tiers[1].fallbacks == [
        "sim-anthropic/claude-haiku-4-5",
        "sim-gemini/gemini-2.0-flash",
    ]
    assert p.reliability.retry.initial_backoff_ms == 100
    assert p.budget.daily_usd == 50 and p.budget.per_user_daily_usd == 5
    assert p.rate_limits.per_user is not None
    assert p.rate_limits.per_user.requests_per_minute == 600


def test_defaults_fill_in_a_minimal_spec() -> None:
    doc = {
        "apiVersion": "swiftclaw.dev/v1alpha1",
        "kind": "AgentDeployment",
        "metadata": {"name": "a"},
        "spec": {
            "providers": [{"name": "p", "type": "openai", "baseURL": "https://x/v1"}],
            "models": {"tiers": [{"name": "t", "model": "p/m"}]},
        },
    }
    cfg = parse_document(doc)
    p = cfg.policy
    assert cfg.namespace == "default"
    assert p.reliability.timeout_seconds == 30
    assert p.reliability.retry.max_attempts == 3
    assert p.reliability.circuit_breaker.failure_threshold == 5
    assert p.cache.redis.mode == "managed"
    assert p.scaling.min_replicas == 2 and p.scaling.max_replicas == 10
    assert p.auth.required is True
    assert p.default_tier.name == "t"


def test_the_issue_example_error_names_the_fallback() -> None:
    doc = example()
    doc["spec"]["models"]["tiers"][1]["fallbacks"][0] = "opneai/gpt-4o-mini"
    assert errors_of(doc) == ["spec.models.tiers[1].fallbacks[0]: unknown provider 'opneai'"]


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (["spec", "providers", 0, "type"], "azure", "spec.providers[0].type: Input should be"),
        (["spec", "providers", 1, "baseURL"], "ftp://x", "spec.providers[1].baseURL: 'ftp://x'"),
        (["spec", "models", "tiers", 0, "inputPer1M"], -1, "spec.models.tiers[0].inputPer1M:"),
        (["spec", "models", "tiers", 2, "name"], "Complex", "spec.models.tiers[2].name:"),
        (["spec", "models", "tiers", 0, "model"], "no-slash", "spec.models.tiers[0].model:"),
        (["spec", "reliability", "timeoutSeconds"], 0, "spec.reliability.timeoutSeconds:"),
        (
            ["spec", "reliability", "retry", "maxAttempts"],
            11,
            "spec.reliability.retry.maxAttempts:",
        ),
        (["spec", "cache", "semantic", "threshold"], 1.5, "spec.cache.semantic.threshold:"),
        (["spec", "budget", "onExceeded"], "panic", "spec.budget.onExceeded:"),
        (["spec", "budget", "alertAtPercent"], 0, "spec.budget.alertAtPercent:"),
        (["spec", "scaling", "maxReplicas"], 0, "spec.scaling.maxReplicas:"),
        (["spec", "slo", "p95LatencyMs"], "fast", "spec.slo.p95LatencyMs:"),
        (["spec", "agent", "maxInputTokens"], 0, "spec.agent.maxInputTokens:"),
        (["spec", "models", "routing", "strategy"], "random", "spec.models.routing.strategy:"),
        (["spec", "cache", "redis", "mode"], "cluster", "spec.cache.redis.mode:"),
    ],
)
def test_structural_errors_name_the_field(path: list[Any], value: Any, expected: str) -> None:
    doc = example()
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    errors = errors_of(doc)
    assert any(e.startswith(expected) for e in errors), errors


def test_unknown_fields_are_rejected_with_their_path() -> None:
    doc = example()
    doc["spec"]["models"]["tiers"][0]["fallback"] = ["sim-openai/x"]
    doc["spec"]["reliabilty"] = {}
    errors = errors_of(doc)
    assert "spec.models.tiers[0].fallback: unknown field" in errors
    assert "spec.reliabilty: unknown field" in errors


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda s: s["providers"].append(copy.deepcopy(s["providers"][0])),
            "spec.providers[3].name: duplicate name 'sim-openai'",
        ),
        (
            lambda s: s["models"]["tiers"][2].update(name="simple"),
            "spec.models.tiers[2].name: duplicate name 'simple'",
        ),
        (
            lambda s: s["models"]["tiers"][0].update(model="nope/m"),
            "spec.models.tiers[0].model: unknown provider 'nope'",
        ),
        (
            lambda s: s["models"]["tiers"][0]["fallbacks"].append("sim-openai/llama-3.1-8b"),
            "spec.models.tiers[0].fallbacks[1]: a tier cannot fall back to its own model",
        ),
        (
            lambda s: s["models"]["tiers"][0]["fallbacks"].append("sim-gemini/gemini-2.0-flash"),
            "spec.models.tiers[0].fallbacks[1]: duplicate fallback 'sim-gemini/gemini-2.0-flash'",
        ),
        (
            lambda s: s["models"]["routing"].update(default="huge"),
            "spec.models.routing.default: unknown tier 'huge'",
        ),
        (
            lambda s: s["reliability"]["retry"].update(initialBackoffMs=5000, maxBackoffMs=100),
            "spec.reliability.retry.initialBackoffMs: must not exceed maxBackoffMs",
        ),
        (
            lambda s: s["scaling"].update(minReplicas=20, maxReplicas=10),
            "spec.scaling.minReplicas: must not exceed maxReplicas",
        ),
        (
            lambda s: s["budget"].update(dailyUSD=1, perUserDailyUSD=5),
            "spec.budget.perUserDailyUSD: must not exceed dailyUSD",
        ),
        (
            lambda s: s["cache"]["redis"].update(mode="external"),
            "spec.cache.redis.urlSecretRef: required when mode is external",
        ),
        (
            lambda s: s["cache"]["redis"].update(urlSecretRef={"name": "r", "key": "url"}),
            "spec.cache.redis.urlSecretRef: only allowed when mode is external",
        ),
        (
            lambda s: s["providers"][0].update(
                apiKeyEnv="K", apiKeySecretRef={"name": "s", "key": "k"}
            ),
            "spec.providers[0]: set apiKeySecretRef or apiKeyEnv, not both",
        ),
        (
            lambda s: s["agent"].update(
                context=[{"name": "a", "url": "http://x/a"}, {"name": "a", "url": "http://x/b"}]
            ),
            "spec.agent.context[1].name: duplicate name 'a'",
        ),
    ],
)
def test_cross_field_rules_name_the_field(mutate: Any, expected: str) -> None:
    doc = example()
    mutate(doc["spec"])
    assert expected in errors_of(doc)


def test_document_envelope_errors() -> None:
    errors = errors_of({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "UPPER"}})
    assert any(e.startswith("apiVersion:") for e in errors)
    assert any(e.startswith("kind:") for e in errors)
    assert any(e.startswith("metadata.name:") for e in errors)
    assert "spec: required" in errors


def test_load_config_reports_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_runtime_config_round_trips_and_holds_no_secret_values() -> None:
    doc = example()
    doc["spec"]["providers"][0]["apiKeySecretRef"] = {"name": "openai", "key": "apiKey"}
    cfg = parse_document(doc)
    rendered = render_runtime_config(cfg.name, cfg.namespace, cfg.policy)
    assert rendered["kind"] == "RuntimeConfig"
    again = parse_document(rendered)
    assert type(again.policy) is AgentPolicy
    read = set(AgentPolicy.model_fields) - NOT_FOR_PODS
    assert again.policy.model_dump(include=read) == cfg.policy.model_dump(include=read)
    assert "runtime" not in rendered["spec"] and "monitoring" not in rendered["spec"]
    # what only the operator acts on stays out, so changing it rolls no pod
    assert not NOT_FOR_PODS & set(rendered["spec"])
    # Only the reference to the Secret travels, never a key.
    assert rendered["spec"]["providers"][0]["apiKeySecretRef"] == {
        "name": "openai",
        "key": "apiKey",
    }
    assert "inputPer1M" in rendered["spec"]["models"]["tiers"][0]


def test_a_model_built_directly_keeps_its_rules() -> None:
    """The rules are the models' own (CEL in the CRD, a validator in Python), not only
    the loader's: a model built in code cannot break them either."""
    with pytest.raises(ValidationError, match="initialBackoffMs: must not exceed maxBackoffMs"):
        RetrySpec(initial_backoff_ms=5000, max_backoff_ms=100)
    assert RetrySpec(initial_backoff_ms=100, max_backoff_ms=100).initial_backoff_ms == 100
    with pytest.raises(ValidationError, match=r"perUser\.requestsPerMinute: must not exceed"):
        RateLimitsSpec.model_validate(
            {"perUser": {"requestsPerMinute": 10}, "perTenant": {"requestsPerMinute": 5}}
        )
    with pytest.raises(ValidationError, match="unknown time zone 'Mars/Base'"):
        BudgetSpec(time_zone="Mars/Base")


def test_every_rule_of_the_crd_is_checked_in_python_too() -> None:
    """Each CEL rule of the policy's CRD schema comes from a Rule with a Python check
    (but transition rules: only the API server sees the object a change replaces)."""
    from swiftclaw_operator.crd import build_crd

    def validations(node: Any) -> list[str]:
        if isinstance(node, dict):
            own = [v["rule"] for v in node.get("x-kubernetes-validations", [])]
            return own + [r for v in node.values() for r in validations(v)]
        if isinstance(node, list):
            return [r for v in node for r in validations(v)]
        return []

    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    in_crd = [r for r in validations(schema["properties"]["spec"]) if "oldSelf" not in r]
    models = {AgentDeploymentSpec, *_models_of(AgentDeploymentSpec)}
    declared = [r.cel[0] for m in models for r in m.rules if r.cel is not None]
    assert set(in_crd) == set(declared)
    assert len(set(declared)) >= 20


def _models_of(model: type[Any]) -> set[type[Any]]:
    out: set[type[Any]] = set()
    for field in model.model_fields.values():
        for arg in [field.annotation, *typing.get_args(field.annotation)]:
            for c in [arg, *typing.get_args(arg)]:
                if isinstance(c, type) and issubclass(c, Model) and c not in out:
                    out |= {c, *_models_of(c)}
    return out
