"""The AgentDeployment CRD, generated from the pydantic models.

pydantic's JSON schema becomes a Kubernetes structural schema: references inlined,
``Optional`` as ``nullable``, ``exclusiveMinimum`` in OpenAPI v3.0 form, titles dropped.
Object defaults are kept whole (a model's default may differ from its fields' defaults,
e.g. resource requests), without nulls.
``python -m swiftclaw_operator.crd`` prints it; ``make crds`` writes it to ``crds/``.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import yaml

from .api import (
    API_GROUP,
    API_VERSION,
    CRD_NAME,
    KIND,
    PLURAL,
    PRINTER_COLUMNS,
    ROOT_RULES,
    SHORT_NAMES,
    SINGULAR,
    AgentDeploymentSpec,
    AgentDeploymentStatus,
)

DROP = {"title", "additionalProperties", "$defs"}


def without_nulls(value: Any) -> Any:
    """Defaults as the API server stores them: no explicit nulls."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def paragraphs(text: str) -> str:
    """A docstring's wrapped lines joined: ``kubectl explain`` wraps descriptions itself."""
    return "\n\n".join(" ".join(p.split()) for p in text.strip().split("\n\n") if p.strip())


def structural(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """One pydantic JSON-schema node as a Kubernetes structural-schema node."""
    node = copy.deepcopy(schema)
    if "$ref" in node:
        ref = node.pop("$ref").rsplit("/", 1)[-1]
        target = structural(defs[ref], defs)
        extra = {k: v for k, v in node.items() if k not in DROP}
        # a model's own rules stay on the model; field-level keys are merged on top
        node = {**target, **extra}
    if "anyOf" in node:
        options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express anyOf with {len(options)} non-null options")
        node = {**structural(options[0], defs), **{k: v for k, v in node.items() if k not in DROP}}
        node["nullable"] = True
        if node.get("default", "") is None:
            del node["default"]
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if isinstance(node.get("exclusiveMinimum"), (int, float)) and not isinstance(
        node.get("exclusiveMinimum"), bool
    ):
        node["minimum"] = node.pop("exclusiveMinimum")
        node["exclusiveMinimum"] = True
    if "properties" in node:
        node["properties"] = {k: structural(v, defs) for k, v in node["properties"].items()}
        node.setdefault("type", "object")
    if "items" in node:
        node["items"] = structural(node["items"], defs)
    if isinstance(node.get("additionalProperties"), dict):
        node["additionalProperties"] = structural(node["additionalProperties"], defs)
        node.setdefault("type", "object")
    if isinstance(node.get("default"), dict):
        node["default"] = without_nulls(node["default"])
    if isinstance(node.get("description"), str):
        node["description"] = paragraphs(node["description"])
    return {
        k: v
        for k, v in node.items()
        if k not in ("title", "$defs") and not (k == "additionalProperties" and v is False)
    }


def schema_of(model: type[Any]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return structural(raw, raw.get("$defs", {}))


def build_crd() -> dict[str, Any]:
    spec_schema = schema_of(AgentDeploymentSpec)
    status_schema = schema_of(AgentDeploymentStatus)
    root = {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": status_schema,
        },
        **ROOT_RULES,
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {
                "app.kubernetes.io/name": "swiftclaw",
                "app.kubernetes.io/part-of": "swiftclaw",
            },
        },
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": SHORT_NAMES,
                "categories": ["swiftclaw"],
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def render() -> str:
    header = (
        "# Generated by `make crds` (python -m swiftclaw_operator.crd) from the pydantic "
        "models.\n# Do not edit: change the models and regenerate.\n"
    )
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=120)


if __name__ == "__main__":
    sys.stdout.write(render())
