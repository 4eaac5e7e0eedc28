"""What every policy model shares: the API's names, field patterns, the CEL and list
helpers of the CRD schema, and the :class:`Model` base (camelCase on the wire, unknown
fields rejected, cross-field rules checked)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    ValidationInfo,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError

from .rules import Issue, Loc, Rule, cel_validations, issues_of

API_GROUP = "swiftclaw.dev"
API_VERSION = "v1alpha1"
KIND = "AgentDeployment"
RUNTIME_CONFIG_KIND = "RuntimeConfig"

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
MODEL_REF_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[^\s/][^\s]*$"
# Also matches templated context URLs, whose {user} and {tenant} placeholders are plain text.
# No user:password@ in the host part: credentials come from Secrets, and the spec is copied
# into the pods' ConfigMap.
URL_PATTERN = r"^https?://[^\s/?#@]+(/[^\s]*)?$"
# A context source's host has no placeholders: only its path and query are templated.
CONTEXT_URL_PATTERN = r"^https?://[^\s/?#{}@]+(/[^\s]*)?$"
PLACEHOLDERS = ("{user}", "{tenant}")
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
# The shape of an IANA zone name; whether it exists is checked against the zone database.
TIME_ZONE_PATTERN = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$"

Name = Annotated[str, Field(min_length=1, max_length=63, pattern=NAME_PATTERN)]
ModelRef = Annotated[str, Field(min_length=3, max_length=253, pattern=MODEL_REF_PATTERN)]


def cel(*rules: tuple[str, str, str | None]) -> dict[str, Any]:
    """``x-kubernetes-validations`` for rules only the API server checks (such as the
    length of ``metadata.name``): (rule, message, fieldPath) each. A policy model's rules
    are :class:`.rules.Rule` objects in its ``rules``, checked in Python as well."""
    return {"x-kubernetes-validations": cel_validations(rules)}


def map_list(*keys: str) -> dict[str, Any]:
    """A list whose items are unique by ``keys``: the API server rejects duplicates itself."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)}


class Model(BaseModel):
    """Base for every policy model: camelCase on the wire, unknown fields rejected, and
    the model's cross-field ``rules`` (:mod:`.rules`) in its schema and checked.

    A field's docstring (the string right after it) is its description, in the CRD and
    in the API reference (``make docs-ref``): say what acts on the field."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
    )

    rules: ClassVar[tuple[Rule, ...]] = ()

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """The CEL of the model's rules joins its ``x-kubernetes-validations``."""
        json_schema = handler(core_schema)
        validations = cel_validations(r.cel for r in cls.rules if r.cel is not None)
        if validations:
            target = handler.resolve_ref_schema(json_schema)
            # A new list: the model's own json_schema_extra list is shared between builds.
            own = target.get("x-kubernetes-validations", [])
            target["x-kubernetes-validations"] = [*own, *validations]
        return json_schema

    @model_validator(mode="after")
    def check_rules(self, info: ValidationInfo) -> Self:
        """A model built directly (not through loading) keeps its rules too."""
        if info.context and info.context.get(DEFER_RULES):
            return self  # the caller collects every model's issues with rule_issues
        found = issues_of(self, self.rules)
        if found:
            summary = "; ".join(
                ".".join(map(str, loc)) + f": {message}" if loc else message
                for loc, message in found
            )
            raise PydanticCustomError("rule", "{summary}", {"summary": summary})
        return self


# Validation context key: leave the rules to rule_issues, which finds the issues of every
# model at once (a failed rule in a model would otherwise hide those of the models around it).
DEFER_RULES = "swiftclaw.defer_rules"


def rule_issues(model: Model, loc: Loc = ()) -> list[Issue]:
    """The issues of the rules of ``model`` and of every model inside it, located from it."""
    found = [((*loc, *at), message) for at, message in issues_of(model, model.rules)]
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        key = field.alias or name
        if isinstance(value, Model):
            found += rule_issues(value, (*loc, key))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, Model):
                    found += rule_issues(item, (*loc, key, i))
    return found


class SecretKeyRef(Model):
    """A key inside a Kubernetes Secret in the AgentDeployment's namespace."""

    name: Name
    """The Secret's name, in the AgentDeployment's namespace; the operator mounts it into the
    runtime pods (it never reads it)."""
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")]
    """The key inside the Secret."""
