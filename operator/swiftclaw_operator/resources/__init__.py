"""Pure builders: an AgentDeployment in, the manifests of its children out.

No I/O here; :mod:`swiftclaw_operator.reconcile` applies what these return. Which
children exist, and when, is :mod:`.registry`'s.
"""

from __future__ import annotations

from typing import Any

from .common import Agent, Settings, with_spec_hash
from .registry import child_kinds, wanted_children

__all__ = ["Agent", "Settings", "build_children", "child_kinds"]


def build_children(agent: Agent) -> list[dict[str, Any]]:
    """Every child, in the order to apply them (config first, so pods find it)."""
    return [with_spec_hash(c.build(agent)) for c in wanted_children(agent)]
