"""Settings of the whole test session (tests/ and e2e/)."""

from __future__ import annotations

import os
from typing import Any

import pytest

# The network rule: tests dial loopback only. botocore looks for credentials and region in
# the EC2 instance metadata service (169.254.169.254) when it finds none elsewhere; the
# e2e network watch saw the test process dial it. Nothing in the tests needs it.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"


def _first(item: pytest.Item) -> int:
    """Where a test goes in the run: the cluster's first, then the monitoring ones (the alert
    path waits out a 5 min ``for``), then the rest, so the long ones start early."""
    if item.nodeid.startswith("e2e/"):
        return 0
    return 1 if item.get_closest_marker("monitoring") else 2


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Long work first (a stable sort: each module keeps its order)."""
    items.sort(key=_first)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``make test`` runs two xdist workers: every test under ``e2e/`` on one of them, in
    order, and the other modules spread whole over both.

    The cluster is a session fixture, so each worker that ran a cluster test would start
    its own control plane, and two on one machine collide (same loopback pod addresses).
    Module-scoped fixtures (runtimes, Redis) start once per module this way too. xdist's own
    ``--dist loadgroup`` relies on renaming items, which pytest 9 no longer honours.
    """
    from xdist.scheduler import LoadScopeScheduling  # type: ignore[import-untyped]

    class ClusterOnOneWorker(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return "e2e" if nodeid.startswith("e2e/") else nodeid.split("::", 1)[0]

    config.option.loadscopereorder = False  # keep the order _first gave
    return ClusterOnOneWorker(config, log)
