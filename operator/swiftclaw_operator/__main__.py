"""``python -m swiftclaw_operator``: run the operator (in cluster, or out with a kubeconfig).

Its settings are the ``SWIFTCLAW_*`` environment variables of :mod:`.settings`
(``OperatorConfig``): SWIFTCLAW_STANDALONE=1 runs without peering (one replica, tests);
SWIFTCLAW_PEERING names the peering object otherwise (two replicas, one active);
SWIFTCLAW_NAMESPACES (comma-separated) limits it to those namespaces (kopf's
``--namespace`` for each; its RBAC then need cover only them); SWIFTCLAW_LIVENESS_PORT and
SWIFTCLAW_METRICS_PORT open the liveness and metrics endpoints.
"""

from __future__ import annotations

import logging

import kopf

from . import handlers
from .settings import OperatorConfig


def main() -> None:
    config = OperatorConfig.from_env()
    kopf.configure(
        log_format=kopf.LogFormat.JSON if config.log_format == "json" else kopf.LogFormat.PLAIN,
        verbose=config.log_level == "debug",
    )
    # Its DEBUG logs every response body, and a created Secret (the Redis password) is one.
    logging.getLogger("kubernetes_asyncio").setLevel(logging.INFO)
    settings = kopf.OperatorSettings()
    # Serving listed namespaces, kopf need not watch namespaces and CRDs cluster-wide (it
    # discovers the resources once at start), so the operator needs no cluster-scoped role.
    settings.scanning.disabled = bool(config.namespaces)
    kopf.run(
        settings=settings,
        registry=handlers.registry(config),
        memo=handlers.Memo(config),
        standalone=config.standalone,
        priority=config.priority,
        peering_name=None if config.standalone else config.peering,
        clusterwide=not config.namespaces,
        namespaces=list(config.namespaces),
        liveness_endpoint=(
            f"http://0.0.0.0:{config.liveness_port}/healthz" if config.liveness_port else None
        ),
    )


if __name__ == "__main__":
    main()
