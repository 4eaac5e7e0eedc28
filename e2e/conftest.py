from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from .cluster import Cluster, start, stop


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The cluster of ``E2E_CLUSTER`` (local by default), torn down after the session."""
    mode = os.environ.get("E2E_CLUSTER", "local")
    c = start(mode)
    try:
        yield c
    finally:
        if not os.environ.get("E2E_KEEP_CLUSTER"):
            stop(c)
