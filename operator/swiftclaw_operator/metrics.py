"""The operator's own metrics (reconciles, their duration, errors, retries, API requests)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)

RECONCILES = Counter(
    "swiftclaw_operator_reconciles",
    "Reconciles of AgentDeployments by trigger and result.",
    ["trigger", "result"],
    registry=REGISTRY,
)
RECONCILE_SECONDS = Histogram(
    "swiftclaw_operator_reconcile_duration_seconds",
    "Time to reconcile one AgentDeployment.",
    ["trigger"],
    registry=REGISTRY,
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CHILD_WRITES = Counter(
    "swiftclaw_operator_child_writes",
    "Children applied because they changed or drifted.",
    ["kind"],
    registry=REGISTRY,
)
API_REQUESTS = Counter(
    "swiftclaw_operator_api_requests",
    "Requests to the Kubernetes API by verb and kind.",
    ["verb", "kind"],
    registry=REGISTRY,
)
API_ERRORS = Counter(
    "swiftclaw_operator_api_errors",
    "Requests to the Kubernetes API that failed, by HTTP status (0: not reached); a 404 on a "
    "read and a 409 on a create-only child are answers, not failures.",
    ["status"],
    registry=REGISTRY,
)
API_REAUTHS = Counter(
    "swiftclaw_operator_api_reauths",
    "Requests answered 401 and retried once with renewed credentials.",
    registry=REGISTRY,
)
CACHE_OBJECTS = Gauge(
    "swiftclaw_operator_cache_objects",
    "Objects held in the watch-fed cache, by kind.",
    ["kind"],
    registry=REGISTRY,
)
STATUS_UNWRITTEN = Gauge(
    "swiftclaw_operator_status_unwritten",
    "Agents whose status has changes waiting to be written (words and counts, none that"
    " makes an Event) for at most 20 s.",
    registry=REGISTRY,
)
CACHE_RELISTS = Counter(
    "swiftclaw_operator_cache_relists",
    "Watches that expired (410 Gone) and listed again, by kind.",
    ["kind"],
    registry=REGISTRY,
)
ERRORS = Counter(
    "swiftclaw_operator_errors",
    "Reconcile and status errors by reason (NameClash, ImmutableField, ApiUnavailable...).",
    ["error"],
    registry=REGISTRY,
)
RETRY_DELAY = Histogram(
    "swiftclaw_operator_retry_delay_seconds",
    "Back-off before retrying a failed reconcile.",
    ["kind"],
    registry=REGISTRY,
    buckets=(1, 2, 5, 10, 20, 40, 80, 160, 300, 600),
)


def serve_metrics(port: int) -> None:
    """Expose the metrics over HTTP on a background thread."""
    start_http_server(port, registry=REGISTRY)


AUTOPILOT_DECISIONS = Counter(
    "swiftclaw_operator_autopilot_decisions",
    "Autopilot decisions by kind (ScaleUp, ScaleDown, FleetFailover, BudgetDowngrade, ...) "
    "and phase (start, end; once for a one-off decision such as a scale change).",
    ["decision", "phase"],
    registry=REGISTRY,
)
AUTOPILOT_READS = Counter(
    "swiftclaw_operator_autopilot_pod_reads",
    "Reads of runtime pods' metrics by result (ok, failed).",
    ["result"],
    registry=REGISTRY,
)
AUTOPILOT_STEP_SECONDS = Histogram(
    "swiftclaw_operator_autopilot_step_duration_seconds",
    "One agent's autopilot step: list pods, read them, decide, write.",
    registry=REGISTRY,
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
AUTOPILOT_WEBHOOK = Counter(
    "swiftclaw_operator_autopilot_webhook_messages",
    "Episode messages posted to the alert webhook, by result (sent, failed).",
    ["result"],
    registry=REGISTRY,
)
