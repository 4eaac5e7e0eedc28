"""Pure builders: an AgentDeployment in, the manifests of its children out.

No I/O here; :mod:`swiftclaw_operator.reconcile` applies what these return. Which
children exist, and when, is :mod:`.registry`'s.
"""

from __future__ import annotations

from typing import Any

from . import redis
from .common import Agent, Settings, with_spec_hash
from .registry import child_kinds, wanted_children

__all__ = ["Agent", "Settings", "build_children", "child_kinds", "create_only_children"]


def build_children(agent: Agent) -> list[dict[str, Any]]:
    """Every child, in the order to apply them (config first, so pods find it)."""
    return [with_spec_hash(c.build(agent)) for c in wanted_children(agent)]


def create_only_children(agent: Agent, password: str) -> list[dict[str, Any]]:
    """Objects created once and never read back or updated (a 409 means they exist; the
    registry's Secret kind has only ``create``): the managed Redis's password Secret,
    ``password`` a fresh random one."""
    if agent.spec.cache.redis.mode != "managed":
        return []
    return [redis.build_auth_secret(agent, password)]
