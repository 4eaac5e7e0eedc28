"""Reading a manifest or runtime config into the policy, every error at its field path
(``spec.models.tiers[1].name``), and rendering the config a runtime pod loads.

Cross-field rules (fallbacks name declared providers, the default tier exists, ...) are
the models' own (:mod:`.rules`); their issues arrive here with the exact field path.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .base import (
    API_GROUP,
    API_VERSION,
    DEFER_RULES,
    KIND,
    NAME_PATTERN,
    RUNTIME_CONFIG_KIND,
    rule_issues,
)
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
        policy = model.model_validate(spec, context={DEFER_RULES: True})
    except ValidationError as err:
        raise ConfigError(_issues_from_validation(err, prefix), source) from None
    issues = [FieldIssue(format_path(prefix, loc), message) for loc, message in rule_issues(policy)]
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
# The same within a section: the budget knobs only the operator's autopilot reads.
NOT_FOR_PODS_WITHIN: dict[str, set[str]] = {
    "budget": {"on_projected_exceed", "min_downgrade_seconds"}
}


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
            exclude=NOT_FOR_PODS_WITHIN,
        ),
    }
