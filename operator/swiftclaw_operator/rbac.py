"""The chart's RBAC rules, derived from the registry of kinds and verbs.

``python -m swiftclaw_operator.rbac`` writes ``charts/swiftclaw/templates/_rules.tpl``
(``make crds`` runs it); ``e2e/test_rbac.py`` renders the chart and compares what it grants
with :func:`grants`, both ways.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from .resources.registry import CLUSTER_PEERING, CRD, KINDS, PEERING, Kind, verbs

Grant = tuple[str, str, str]  # (apiGroup, resource, verb)

RULE_SETS: dict[str, tuple[Kind, ...]] = {
    # In each namespace served: a Role there, or part of the ClusterRole for all namespaces.
    "namespaced": KINDS,
    "peering": (PEERING,),  # with peering, in each namespace served
    "clusterPeering": (CLUSTER_PEERING,),  # with peering, serving every namespace
    # Serving every namespace, kopf watches CRDs to notice resources come and go (serving
    # listed namespaces, it does not: the operator then needs nothing cluster-scoped).
    "cluster": (CRD,),
}


def _rules(kinds: Iterable[Kind]) -> list[dict[str, Any]]:
    """Rules granting exactly :func:`verbs` on ``kinds``: one rule per resource."""
    return [
        {"apiGroups": [k.group], "resources": [k.resource], "verbs": sorted(verbs(k))}
        for k in sorted(kinds, key=lambda k: (k.group, k.resource))
    ]


def grants(namespaces: list[str], peering: bool) -> dict[str | None, set[Grant]]:
    """What the operator needs, by namespace (None: cluster-wide), for the chart's modes."""

    def flat(*sets: str) -> set[Grant]:
        return {(k.group, k.resource, v) for s in sets for k in RULE_SETS[s] for v in verbs(k)}

    if not namespaces:
        return {None: flat("namespaced", "cluster", *(["clusterPeering"] if peering else []))}
    out: dict[str | None, set[Grant]] = {}
    for ns in namespaces:
        out[ns] = flat("namespaced", *(["peering"] if peering else []))
    return out


HEADER = """{{/* Generated from the registry (swiftclaw_operator.rbac) by `make crds`: do not edit.
     The operator's RBAC rules by set; templates/rbac.yaml picks the sets. */}}
"""


def render_template() -> str:
    """``charts/swiftclaw/templates/_rules.tpl``: one named template per rule set."""
    out = [HEADER]
    for name, kinds in RULE_SETS.items():
        out.append(f'{{{{- define "swiftclaw.rules.{name}" }}}}\n')
        for r in _rules(kinds):
            out.append(
                f"- apiGroups: [{json.dumps(r['apiGroups'][0])}]\n"
                f"  resources: [{r['resources'][0]}]\n"
                f"  verbs: [{', '.join(r['verbs'])}]\n"
            )
        out.append("{{- end }}\n")
    return "".join(out)


if __name__ == "__main__":
    print(render_template(), end="")
