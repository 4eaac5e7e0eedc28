"""The AgentDeployment API reference page, generated from the CRD that ``make crds`` builds
from the pydantic models: every field with its path, type, default, bounds, the CEL rules
that apply to it and its description (a field docstring in the models).

Walking the CRD's schema rather than the models keeps one source of truth: whatever the
CRD says the API server accepts is what the page says. ``make docs-ref`` writes the page;
``tests/test_docs_reference.py`` fails when it is stale or a field has no description.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from swiftclaw_operator.api import KIND, SHORT_NAMES
from swiftclaw_operator.crd import build_crd
from swiftclaw_runtime.config import Model

from .reference_pages import main

PAGE = "docs/reference/agentdeployment.md"


@dataclass(frozen=True)
class Entry:
    """One field of the schema, found at ``path`` (``spec.providers[].name``)."""

    path: str
    node: dict[str, Any]
    required: bool
    # the parent object's CEL rules whose fieldPath names this field
    rules: list[dict[str, str]] = field(default_factory=list)


def walk(
    path: str, node: dict[str, Any], required: bool, parent_rules: list[dict[str, str]]
) -> Iterator[Entry]:
    """The field at ``path``, then every field inside it (depth first, declaration order)."""
    name = path.rsplit(".", 1)[-1]
    own = [r for r in parent_rules if _names_field(r.get("fieldPath"), name)]
    yield Entry(path, node, required, own)
    target, prefix = node, path
    while target.get("type") == "array" and isinstance(target.get("items"), dict):
        target, prefix = target["items"], prefix + "[]"
    if isinstance(target.get("additionalProperties"), dict):
        target, prefix = target["additionalProperties"], prefix + ".<key>"
    props = target.get("properties", {})
    rules = target.get("x-kubernetes-validations", [])
    needed = set(target.get("required", []))
    for key, child in props.items():
        yield from walk(f"{prefix}.{key}", child, key in needed, rules)


def _names_field(field_path: str | None, name: str) -> bool:
    if not field_path:
        return False
    return field_path.lstrip(".").split(".")[0].split("[")[0] == name


def type_of(node: dict[str, Any]) -> str:
    """The schema type in words: ``array of string``, ``map of string to string``."""
    kind = str(node.get("type", "any"))
    if kind == "array" and isinstance(node.get("items"), dict):
        return "array of " + type_of(node["items"])
    if kind == "object" and isinstance(node.get("additionalProperties"), dict):
        return "map of string to " + type_of(node["additionalProperties"])
    return kind


def bounds_of(node: dict[str, Any]) -> list[str]:
    """The schema's limits on the value, in words."""
    out: list[str] = []
    if "minimum" in node:
        op = ">" if node.get("exclusiveMinimum") is True else "≥"
        out.append(f"{op} {_num(node['minimum'])}")
    if "maximum" in node:
        op = "<" if node.get("exclusiveMaximum") is True else "≤"
        out.append(f"{op} {_num(node['maximum'])}")
    for key, words in (
        ("minLength", "at least {} characters"),
        ("maxLength", "at most {} characters"),
        ("minItems", "at least {} items"),
        ("maxItems", "at most {} items"),
        ("maxProperties", "at most {} entries"),
    ):
        if key in node:
            out.append(words.format(f"{node[key]:,}"))
    if "enum" in node:
        out.append("one of " + ", ".join(f"`{json.dumps(v)}`" for v in node["enum"]))
    if "pattern" in node:
        out.append(f"matches `{node['pattern']}`")
    list_type = node.get("x-kubernetes-list-type")
    if list_type == "set":
        out.append("items unique")
    elif list_type == "map":
        keys = ", ".join(node.get("x-kubernetes-list-map-keys", []))
        out.append(f"items unique by `{keys}`")
    return out


def _num(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{value:,}" if isinstance(value, int) else str(value)


def anchor(path: str) -> str:
    """A stable anchor for a path: ``spec.providers[].name`` -> ``spec-providers-name``."""
    cleaned = path.replace("[]", "").replace("<key>", "key")
    return "-".join(part for part in cleaned.split(".") if part)


def checked_in_python() -> set[str]:
    """The CEL of every model's ``rules``: the runtime checks those in Python as well
    (``swiftclaw validate``); any other CEL rule only the API server checks."""
    found: set[str] = set()
    pending: list[type[Model]] = [Model]
    while pending:
        model = pending.pop()
        found |= {r.cel[0] for r in model.rules if r.cel is not None}
        pending += model.__subclasses__()
    return found


def rule_lines(rules: list[dict[str, str]]) -> list[str]:
    """A rule as the API server reports it, who checks it, and its CEL."""
    both = checked_in_python()
    out = []
    for rule in rules:
        message = rule.get("message") or f"(computed) {rule.get('messageExpression', '')}"
        where = f" at `{rule['fieldPath']}`" if rule.get("fieldPath") else ""
        update = ", on update" if "oldSelf" in rule["rule"] else ""
        who = "API server and runtime" if rule["rule"] in both else "API server only"
        out.append(f"- {_escape(message)}{where} ({who}{update}): `{rule['rule']}`")
    return out


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;")


def description_of(node: dict[str, Any]) -> str:
    """The description as Markdown paragraphs (docstrings wrap their lines)."""
    paragraphs = str(node.get("description", "")).strip().split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs if p.strip())


def entries() -> list[Entry]:
    """Every field of the CRD's spec and status (the metadata is Kubernetes')."""
    root = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    props = root["properties"]
    needed = set(root.get("required", []))
    found: list[Entry] = []
    for top in ("spec", "status"):
        found += walk(top, props[top], top in needed, [])
    return found


def render_entry(entry: Entry) -> list[str]:
    node = entry.node
    facts = [type_of(node)]
    if entry.required:
        facts.append("required")
    if "default" in node:
        facts.append("default `" + json.dumps(node["default"], separators=(", ", ": ")) + "`")
    elif node.get("nullable"):
        facts.append("optional")
    facts += bounds_of(node)
    lines = [f"### `{entry.path}` {{ #{anchor(entry.path)} }}", "", " · ".join(facts), ""]
    lines += [_escape(description_of(node)) or "(no description)", ""]
    target = node
    while target.get("type") == "array" and isinstance(target.get("items"), dict):
        target = target["items"]
    own_rules = target.get("x-kubernetes-validations", [])
    if entry.rules:
        lines += ["Rules on this field:", ""]
        lines += [*rule_lines(entry.rules), ""]
    if own_rules:
        lines += ["Rules of this object:", ""]
        lines += [*rule_lines(own_rules), ""]
    return lines


def render() -> str:
    crd = build_crd()
    version = crd["spec"]["versions"][0]
    root_rules = version["schema"]["openAPIV3Schema"].get("x-kubernetes-validations", [])
    lines = [
        "<!-- Generated by `make docs-ref` (python -m swiftclaw_devtools.api_reference) from"
        " the pydantic models in agent-runtime/swiftclaw_runtime/config/. Do not edit:"
        " change the models and regenerate. -->",
        "",
        f"# {KIND} API reference",
        "",
        f"`{crd['spec']['group']}/{version['name']}`, kind `{KIND}` (short names "
        + ", ".join(f"`{n}`" for n in SHORT_NAMES)
        + "). Every field of the CRD, in the order of the models, with its type, default,"
        " bounds and the CEL rules the API server checks; those marked *API server and"
        " runtime* the runtime checks in Python as well (`swiftclaw validate` reports them"
        " the same way, naming the item of a list). A field whose default is not shown and"
        " that is not required may be left out.",
        "",
        "Rules on the whole object:",
        "",
        *rule_lines(root_rules),
        "",
    ]
    for top in ("spec", "status"):
        lines += [f"## {top}", ""]
        for entry in (e for e in entries() if e.path.split(".")[0].split("[")[0] == top):
            lines += render_entry(entry)
    return "\n".join(lines).rstrip() + "\n"


def undescribed() -> list[str]:
    """The paths of the fields without a description."""
    return [e.path for e in entries() if not description_of(e.node)]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], PAGE, render))
