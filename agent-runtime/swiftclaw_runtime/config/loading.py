"""Reading a manifest or runtime config into the policy, every error at its field path
(``spec.models.tiers[1].name``), and rendering the config a runtime pod loads.

Cross-field rules (fallbacks name declared providers, the default tier exists, ...) live
in :func:`reference_issues` so that each error carries the exact field path, and the
operator mirrors them as CEL rules in the CRD.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import ValidationError
from pydantic.alias_generators import to_camel

from .base import API_GROUP, API_VERSION, KIND, NAME_PATTERN, PLACEHOLDERS, RUNTIME_CONFIG_KIND
from .pods import AgentDeploymentSpec
from .policy import AgentPolicy


@dataclass(frozen=True)
class FieldIssue:
    """One problem with a config, at a field path such as ``spec.models.tiers[1].name``."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ConfigError(ValueError):
    """A manifest or runtime config that does not validate; lists every issue found."""

    def __init__(self, issues: list[FieldIssue], source: str = "config") -> None:
        self.issues = issues
        self.source = source
        lines = "\n".join(f"  {i}" for i in issues)
        super().__init__(f"{source} is invalid ({len(issues)} problem(s)):\n{lines}")


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "none", "dict", "list"})


def _is_union_tag(part: int | str) -> bool:
    """pydantic puts the member type of a union in error locations (``str``,
    ``list[ContentPart]``, ``SecretKeyRef``); those are not part of the field's path."""
    return isinstance(part, str) and (part[:1].isupper() or "[" in part or part in _TYPE_TAGS)


def format_path(prefix: str, loc: Iterable[int | str]) -> str:
    """``("models", "tiers", 1, "name")`` -> ``spec.models.tiers[1].name``."""
    out = prefix
    for part in loc:
        if _is_union_tag(part):
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _issues_from_validation(err: ValidationError, prefix: str) -> list[FieldIssue]:
    issues = []
    for e in err.errors(include_url=False):
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        elif e["type"] == "string_pattern_mismatch":
            msg = f"{e['input']!r} does not match {e['ctx']['pattern']}"
        issues.append(FieldIssue(format_path(prefix, e["loc"]), msg))
    return issues


def _split_ref(ref: str) -> tuple[str, str]:
    provider, _, model = ref.partition("/")
    return provider, model


def reference_issues(policy: AgentPolicy, prefix: str = "spec") -> list[FieldIssue]:
    """Cross-field rules: names unique, references resolve, bounds ordered."""
    issues: list[FieldIssue] = []
    provider_names = [p.name for p in policy.providers]
    for i, name in enumerate(provider_names):
        if name in provider_names[:i]:
            issues.append(FieldIssue(f"{prefix}.providers[{i}].name", f"duplicate name {name!r}"))
    for i, p in enumerate(policy.providers):
        if p.api_key_secret_ref and p.api_key_env:
            issues.append(
                FieldIssue(
                    f"{prefix}.providers[{i}]",
                    "set apiKeySecretRef or apiKeyEnv, not both",
                )
            )
    tier_names = [t.name for t in policy.models.tiers]
    for i, t in enumerate(policy.models.tiers):
        path = f"{prefix}.models.tiers[{i}]"
        if t.name in tier_names[:i]:
            issues.append(FieldIssue(f"{path}.name", f"duplicate name {t.name!r}"))
        provider, _ = _split_ref(t.model)
        if provider not in provider_names:
            issues.append(FieldIssue(f"{path}.model", f"unknown provider {provider!r}"))
        for j, fb in enumerate(t.fallbacks):
            fb_provider, _ = _split_ref(fb)
            if fb_provider not in provider_names:
                issues.append(
                    FieldIssue(f"{path}.fallbacks[{j}]", f"unknown provider {fb_provider!r}")
                )
            if fb == t.model:
                issues.append(
                    FieldIssue(f"{path}.fallbacks[{j}]", "a tier cannot fall back to its own model")
                )
            if fb in t.fallbacks[:j]:
                issues.append(FieldIssue(f"{path}.fallbacks[{j}]", f"duplicate fallback {fb!r}"))
    issues += _embeddings_issues(policy, prefix)
    default = policy.models.routing.default
    if default is not None and default not in tier_names:
        issues.append(FieldIssue(f"{prefix}.models.routing.default", f"unknown tier {default!r}"))
    retry = policy.reliability.retry
    if retry.initial_backoff_ms > retry.max_backoff_ms:
        issues.append(
            FieldIssue(
                f"{prefix}.reliability.retry.initialBackoffMs",
                "must not exceed maxBackoffMs",
            )
        )
    reliability = policy.reliability
    if (
        reliability.attempt_timeout_seconds is not None
        and reliability.attempt_timeout_seconds > reliability.timeout_seconds
    ):
        issues.append(
            FieldIssue(
                f"{prefix}.reliability.attemptTimeoutSeconds", "must not exceed timeoutSeconds"
            )
        )
    scaling = policy.scaling
    if scaling.min_replicas > scaling.max_replicas:
        issues.append(FieldIssue(f"{prefix}.scaling.minReplicas", "must not exceed maxReplicas"))
    budget = policy.budget
    if (
        budget.daily_usd is not None
        and budget.per_user_daily_usd is not None
        and budget.per_user_daily_usd > budget.daily_usd
    ):
        issues.append(FieldIssue(f"{prefix}.budget.perUserDailyUSD", "must not exceed dailyUSD"))
    if (
        budget.daily_usd is not None
        and budget.monthly_usd is not None
        and budget.daily_usd > budget.monthly_usd
    ):
        issues.append(FieldIssue(f"{prefix}.budget.dailyUSD", "must not exceed monthlyUSD"))
    if not valid_time_zone(budget.time_zone):
        issues.append(
            FieldIssue(
                f"{prefix}.budget.timeZone",
                f"unknown time zone {budget.time_zone!r} (an IANA name such as Europe/Paris)",
            )
        )
    limits = policy.rate_limits
    for inner, outer, inner_name, outer_name in (
        (limits.per_user, limits.per_tenant, "perUser", "perTenant"),
        (limits.per_tenant, limits.global_, "perTenant", "global"),
    ):
        if inner is None or outer is None:
            continue
        for unit in ("requests_per_minute", "tokens_per_minute"):
            a, b = getattr(inner, unit), getattr(outer, unit)
            if a is not None and b is not None and a > b:
                wire = to_camel(unit)
                issues.append(
                    FieldIssue(
                        f"{prefix}.rateLimits.{inner_name}.{wire}",
                        f"must not exceed {outer_name}.{wire}",
                    )
                )
    for i, source in enumerate(policy.agent.context):
        rest = source.url
        for placeholder in PLACEHOLDERS:
            rest = rest.replace(placeholder, "")
        if "{" in rest or "}" in rest:
            issues.append(
                FieldIssue(
                    f"{prefix}.agent.context[{i}].url",
                    "only the placeholders {user} and {tenant} are allowed",
                )
            )
    redis = policy.cache.redis
    if redis.mode == "external" and redis.url_secret_ref is None:
        issues.append(
            FieldIssue(f"{prefix}.cache.redis.urlSecretRef", "required when mode is external")
        )
    if redis.mode != "external" and redis.url_secret_ref is not None:
        issues.append(
            FieldIssue(f"{prefix}.cache.redis.urlSecretRef", "only allowed when mode is external")
        )
    embedder = policy.cache.semantic.embeddings.provider
    if embedder is not None and not any(
        p.name == embedder and p.type in ("openai", "openai-compatible") for p in policy.providers
    ):
        issues.append(
            FieldIssue(
                f"{prefix}.cache.semantic.embeddings.provider",
                "must name a provider of type openai or openai-compatible declared in"
                " spec.providers",
            )
        )
    context_names = [c.name for c in policy.agent.context]
    for i, name in enumerate(context_names):
        if name in context_names[:i]:
            issues.append(
                FieldIssue(f"{prefix}.agent.context[{i}].name", f"duplicate name {name!r}")
            )
    return issues


def valid_time_zone(name: str) -> bool:
    """Whether ``name`` is in the IANA zone database (as Python's zoneinfo knows it)."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _embeddings_issues(policy: AgentPolicy, prefix: str) -> list[FieldIssue]:
    spec = policy.models.embeddings
    if spec is None:
        return []
    types = {p.name: p.type for p in policy.providers}
    issues = []
    for i, ref in enumerate(spec.refs):
        path = f"{prefix}.models.embeddings." + ("model" if i == 0 else f"fallbacks[{i - 1}]")
        provider, _ = _split_ref(ref)
        if provider not in types:
            issues.append(FieldIssue(path, f"unknown provider {provider!r}"))
        elif types[provider] == "anthropic":
            issues.append(
                FieldIssue(path, f"provider {provider!r} is anthropic, which has no embeddings API")
            )
        if i and ref == spec.model:
            issues.append(FieldIssue(path, "embeddings cannot fall back to their own model"))
        elif i and ref in spec.refs[1:i]:
            issues.append(FieldIssue(path, f"duplicate fallback {ref!r}"))
    return issues


def parse_policy(
    spec: Mapping[str, Any],
    source: str = "config",
    prefix: str = "spec",
    model: type[AgentPolicy] = AgentPolicy,
) -> AgentPolicy:
    """Validate a ``spec`` mapping into ``model`` (the policy, or the operator's spec that
    extends it), or raise :class:`ConfigError`."""
    if not isinstance(spec, Mapping):
        raise ConfigError([FieldIssue(prefix, "must be a mapping")], source)
    try:
        policy = model.model_validate(spec)
    except ValidationError as err:
        raise ConfigError(_issues_from_validation(err, prefix), source) from None
    issues = reference_issues(policy, prefix)
    if issues:
        raise ConfigError(issues, source)
    return policy


@dataclass(frozen=True)
class LoadedConfig:
    """A validated policy with the identity of the AgentDeployment it came from."""

    name: str
    namespace: str
    policy: AgentPolicy


def parse_document(
    doc: Any, source: str = "config", model: type[AgentPolicy] = AgentPolicy
) -> LoadedConfig:
    """Accept an ``AgentDeployment`` manifest or the ``RuntimeConfig`` the operator renders."""
    if not isinstance(doc, Mapping):
        raise ConfigError([FieldIssue("(document)", "must be a YAML/JSON mapping")], source)
    issues: list[FieldIssue] = []
    api_version = doc.get("apiVersion")
    kind = doc.get("kind")
    if api_version != f"{API_GROUP}/{API_VERSION}":
        issues.append(
            FieldIssue("apiVersion", f"expected '{API_GROUP}/{API_VERSION}', got {api_version!r}")
        )
    if kind not in (KIND, RUNTIME_CONFIG_KIND):
        issues.append(FieldIssue("kind", f"expected {KIND} or {RUNTIME_CONFIG_KIND}, got {kind!r}"))
    metadata = doc.get("metadata") or {}
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    if not isinstance(name, str) or not re.match(NAME_PATTERN, name):
        issues.append(FieldIssue("metadata.name", f"must be a DNS label, got {name!r}"))
    if "spec" not in doc:
        issues.append(FieldIssue("spec", "required"))
    if issues:
        raise ConfigError(issues, source)
    if model is AgentPolicy and kind == KIND:
        model = AgentDeploymentSpec  # the whole manifest is checked, pod settings included
    policy = parse_policy(doc["spec"], source, model=model)
    namespace = metadata.get("namespace") or "default"
    return LoadedConfig(name=str(name), namespace=str(namespace), policy=policy)


def load_config(path: str | Path) -> LoadedConfig:
    """Read a manifest or runtime config file (YAML or JSON; the first document is used)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as err:
        raise ConfigError(
            [FieldIssue("(file)", f"cannot read {p}: {err.strerror}")], str(p)
        ) from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as err:
        raise ConfigError([FieldIssue("(document)", f"not valid YAML: {err}")], str(p)) from None
    agents = [
        d for d in docs if isinstance(d, Mapping) and d.get("kind") in (KIND, RUNTIME_CONFIG_KIND)
    ]
    if not agents:
        raise ConfigError(
            [FieldIssue("kind", f"no {KIND} or {RUNTIME_CONFIG_KIND} document in the file")], str(p)
        )
    return parse_document(agents[0], str(p))


# Policy fields no runtime reads: the HPA acts on scaling, the alert rules on the SLO. Kept
# out of the pods' config, whose checksum is in the pod template, so that changing them does
# not roll every pod.
NOT_FOR_PODS = frozenset({"scaling", "slo"})


def render_runtime_config(name: str, namespace: str, policy: AgentPolicy) -> dict[str, Any]:
    """The document a runtime pod loads: the policy the runtime acts on, defaults filled in,
    no secrets."""
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": RUNTIME_CONFIG_KIND,
        "metadata": {"name": name, "namespace": namespace},
        # Only the policy: pod settings of an AgentDeploymentSpec are the operator's business.
        "spec": policy.model_dump(
            mode="json",
            by_alias=True,
            exclude_none=True,
            include=set(AgentPolicy.model_fields) - NOT_FOR_PODS,
        ),
    }
