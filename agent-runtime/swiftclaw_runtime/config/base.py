"""What every policy model shares: the API's names, field patterns, the CEL and list
helpers of the CRD schema, and the :class:`Model` base (camelCase on the wire, unknown
fields rejected)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

API_GROUP = "swiftclaw.dev"
API_VERSION = "v1alpha1"
KIND = "AgentDeployment"
RUNTIME_CONFIG_KIND = "RuntimeConfig"

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
MODEL_REF_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[^\s/][^\s]*$"
# Also matches templated context URLs, whose {user} and {tenant} placeholders are plain text.
URL_PATTERN = r"^https?://[^\s/?#]+(/[^\s]*)?$"
# A context source's host has no placeholders: only its path and query are templated.
CONTEXT_URL_PATTERN = r"^https?://[^\s/?#{}]+(/[^\s]*)?$"
PLACEHOLDERS = ("{user}", "{tenant}")
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
# The shape of an IANA zone name; whether it exists is checked against the zone database.
TIME_ZONE_PATTERN = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$"

Name = Annotated[str, Field(min_length=1, max_length=63, pattern=NAME_PATTERN)]
ModelRef = Annotated[str, Field(min_length=3, max_length=253, pattern=MODEL_REF_PATTERN)]


def cel(*rules: tuple[str, str, str | None]) -> dict[str, Any]:
    """``x-kubernetes-validations`` for the CRD: (rule, message, fieldPath) each.

    The same rules are checked in Python by :func:`reference_issues`; a CEL rule lives
    next to the model it guards so that the two are read, and changed, together.
    """
    out = []
    for rule, message, field_path in rules:
        entry = {"rule": rule}
        entry["messageExpression" if message.startswith("'") else "message"] = message
        if field_path:
            entry["fieldPath"] = field_path
        out.append(entry)
    return {"x-kubernetes-validations": out}


def map_list(*keys: str) -> dict[str, Any]:
    """A list whose items are unique by ``keys``: the API server rejects duplicates itself."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)}


class Model(BaseModel):
    """Base for every policy model: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )



class SecretKeyRef(Model):
    """A key inside a Kubernetes Secret in the AgentDeployment's namespace."""

    name: Name
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")]

