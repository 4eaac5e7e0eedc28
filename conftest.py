"""Settings of the whole test session (tests/ and e2e/)."""

from __future__ import annotations

import os

import pytest

# The network rule: tests dial loopback only. botocore looks for credentials and region in
# the EC2 instance metadata service (169.254.169.254) when it finds none elsewhere; the
# e2e network watch saw the test process dial it. Nothing in the tests needs it.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Keep every test on the local cluster on one xdist worker (``make test`` runs two).

    The cluster is a session fixture, so each worker would start its own, and two control
    planes on one machine collide (same loopback pod addresses). With ``--dist loadgroup``
    the cluster's tests run in order on one worker while the other takes the rest, which
    mostly waits on real processes (the alert path waits out a 5 min ``for``).
    """
    group = pytest.mark.xdist_group("cluster")
    for item in items:
        if "cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(group)
