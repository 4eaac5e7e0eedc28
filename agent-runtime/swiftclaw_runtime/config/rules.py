"""Cross-field rules, each declared once: its CEL for the CRD and its Python check.

A model lists its :class:`Rule` objects in ``rules``; the model base (:class:`.base.Model`)
renders their CEL into the model's ``x-kubernetes-validations`` and runs their Python
check as a model validator (loading collects the issues of every model at once), so the
API server and the runtime refuse the same manifests. The Python check may say more
precisely where a problem is than CEL can (which item of a list), so each issue carries
its own location, relative to the model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

# (location relative to the model, in wire names and list indexes; message)
Loc = tuple[str | int, ...]
Issue = tuple[Loc, str]


@dataclass(frozen=True)
class Rule:
    """``check`` finds the issues of a model; ``cel`` is (rule, message, fieldPath) for the
    CRD, or None where the API server enforces the rule otherwise (a list's map keys) or
    cannot (the IANA zone database)."""

    check: Callable[[Any], Iterable[Issue]]
    cel: tuple[str, str, str | None] | None = None


def field_loc(field_path: str | None) -> Loc:
    """CEL's ``fieldPath`` (``.urlSecretRef``) as a location (``("urlSecretRef",)``)."""
    return tuple(field_path.strip(".").split(".")) if field_path else ()


def holds(rule: str, message: str, field_path: str | None, ok: Callable[[Any], bool]) -> Rule:
    """A rule whose Python check is a predicate: when it fails, the issue is the CEL's
    ``message`` at its ``fieldPath``."""
    loc = field_loc(field_path)
    return Rule(lambda m: [] if ok(m) else [(loc, message)], (rule, message, field_path))


def checked(
    rule: str, message: str, field_path: str | None, issues: Callable[[Any], Iterable[Issue]]
) -> Rule:
    """A rule whose Python check names the exact place (an item of a list) and may word
    its message with the offending value, where CEL names only the list."""
    return Rule(issues, (rule, message, field_path))


def python_only(issues: Callable[[Any], Iterable[Issue]]) -> Rule:
    """A rule the CRD enforces by other means, or cannot: see :class:`Rule`."""
    return Rule(issues)


def wire_value(model: Any, path: str) -> Any:
    """The value at a dotted path of wire names (``perUser.requestsPerMinute``), None
    where a step is unset."""
    value = model
    for step in path.split("."):
        if value is None:
            return None
        assert isinstance(value, BaseModel)
        fields = type(value).model_fields
        name = next(n for n, f in fields.items() if (f.alias or n) == step)
        value = getattr(value, name)
    return value


def at_most(inner: str, outer: str) -> Rule:
    """``inner <= outer`` when both are set (wire paths relative to the model, such as
    ``perUser.requestsPerMinute``): reported at ``inner``."""
    a, b = inner.split("."), outer.split(".")
    guards = [
        f"!has(self.{'.'.join(path[:depth])})"
        for depth in range(1, max(len(a), len(b)) + 1)
        for path in (a, b)
        if depth <= len(path)
    ]
    rule = " || ".join([*guards, f"self.{inner} <= self.{outer}"])

    def ok(model: Any) -> bool:
        x, y = wire_value(model, inner), wire_value(model, outer)
        return x is None or y is None or x <= y

    return holds(rule, f"must not exceed {outer}", f".{inner}", ok)


def issue_if(found: bool, loc: Loc, message: str) -> list[Issue]:
    """The issue at ``loc`` when ``found``, else none."""
    return [(loc, message)] if found else []


def duplicates(items: Sequence[Any], key: Callable[[Any], Any]) -> list[int]:
    """The indexes of the items whose key an earlier item already has."""
    keys = [key(item) for item in items]
    return [i for i, k in enumerate(keys) if k in keys[:i]]


def unique_names(list_field: str) -> Rule:
    """The items of ``list_field`` have distinct names (the CRD: the list's map keys)."""

    def issues(model: Any) -> list[Issue]:
        items = wire_value(model, list_field)
        return [
            ((list_field, i, "name"), f"duplicate name {items[i].name!r}")
            for i in duplicates(items, lambda item: item.name)
        ]

    return python_only(issues)


def cel_validations(rules: Iterable[tuple[str, str, str | None]]) -> list[dict[str, str]]:
    """``x-kubernetes-validations`` entries: (rule, message, fieldPath) each; a message
    that starts with a quote is a ``messageExpression``."""
    out = []
    for rule, message, field_path in rules:
        entry = {"rule": rule}
        entry["messageExpression" if message.startswith("'") else "message"] = message
        if field_path:
            entry["fieldPath"] = field_path
        out.append(entry)
    return out


def issues_of(model: Any, rules: Iterable[Rule]) -> list[Issue]:
    return [issue for r in rules for issue in r.check(model)]
