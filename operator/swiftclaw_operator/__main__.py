"""``python -m swiftclaw_operator``: run the operator (in cluster, or out with a kubeconfig).

Environment: SWIFTCLAW_STANDALONE=1 runs without peering (one replica, tests);
SWIFTCLAW_PEERING names the peering object otherwise (two replicas, one active: each
takes a random priority unless SWIFTCLAW_PRIORITY sets one, since kopf freezes operators
of equal priority; SWIFTCLAW_PEERING_LIFETIME is how long a silent peer counts as alive);
SWIFTCLAW_NAMESPACES (comma-separated) limits it to those namespaces (kopf's
``--namespace`` for each; its RBAC then need cover only them); SWIFTCLAW_LIVENESS_PORT and
SWIFTCLAW_METRICS_PORT open the liveness and metrics endpoints; SWIFTCLAW_LOG_FORMAT
is json (default) or plain.
"""

from __future__ import annotations

import os
import random

import kopf

from . import handlers  # noqa: F401 - registers the handlers


def main() -> None:
    fmt = os.environ.get("SWIFTCLAW_LOG_FORMAT", "json")
    kopf.configure(
        log_format=kopf.LogFormat.JSON if fmt == "json" else kopf.LogFormat.PLAIN,
        verbose=os.environ.get("SWIFTCLAW_LOG_LEVEL") == "debug",
    )
    namespaces = [n.strip() for n in os.environ.get("SWIFTCLAW_NAMESPACES", "").split(",")]
    namespaces = [n for n in namespaces if n]
    liveness_port = os.environ.get("SWIFTCLAW_LIVENESS_PORT")
    standalone = os.environ.get("SWIFTCLAW_STANDALONE", "0") == "1"
    priority = int(os.environ.get("SWIFTCLAW_PRIORITY") or random.randint(1, 2**31 - 1))
    settings = kopf.OperatorSettings()
    # Serving listed namespaces, kopf need not watch namespaces and CRDs cluster-wide (it
    # discovers the resources once at start), so the operator needs no cluster-scoped role.
    settings.scanning.disabled = bool(namespaces)
    kopf.run(
        settings=settings,
        standalone=standalone,
        priority=priority,
        peering_name=None if standalone else os.environ.get("SWIFTCLAW_PEERING", "swiftclaw"),
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=f"http://0.0.0.0:{liveness_port}/healthz" if liveness_port else None,
    )


if __name__ == "__main__":
    main()
