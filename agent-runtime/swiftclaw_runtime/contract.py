"""The contract between the operator and the runtime pods it runs, in one place.

Where the pod's config and Secrets are mounted, the environment variables and command-line
flags the runtime reads, its port and its health paths. The operator's builders, the
runtime's CLI, server and credentials, and the e2e pod runner all use these names, so
that a change on one side cannot leave the other behind. (The operator depends on the
runtime package, never the reverse, so the contract lives here.)
"""

from __future__ import annotations

# --- HTTP ---------------------------------------------------------------------------

RUNTIME_PORT = 8080
# /metrics, /healthz and /readyz on a port of their own in a pod (--metrics-port): the
# Service's client port does not answer /metrics (tenant names, costs), the probes are not
# refused by the client port's connection cap, and a NetworkPolicy lets only Prometheus's
# namespace reach it.
METRICS_PORT = 9090
HEALTH_PATH = "/healthz"  # alive (startup and liveness probes)
READY_PATH = "/readyz"  # ready for traffic (readiness probe)
METRICS_PATH = "/metrics"  # Prometheus
# The gauge an HPA scales on (spec.scaling.targetConcurrency), through a custom metrics adapter.
IN_FLIGHT_METRIC = "swiftclaw_requests_in_flight"

# --- files --------------------------------------------------------------------------

# The RuntimeConfig the operator renders, from a ConfigMap mounted at CONFIG_DIR.
CONFIG_DIR = "/etc/swiftclaw"
CONFIG_FILE = "config.yaml"
CONFIG_PATH = f"{CONFIG_DIR}/{CONFIG_FILE}"
# The autopilot's fleet-wide decisions (config/fleet.py), from the ConfigMap <agent>-fleet
# mounted at FLEET_DIR and re-read on change; FLEET_FILE_ENV overrides the path (local runs).
FLEET_DIR = "/etc/swiftclaw-fleet"
FLEET_FILE = "fleet.json"
FLEET_PATH = f"{FLEET_DIR}/{FLEET_FILE}"
# Secret keys mounted as files under the secrets directory (SECRETS_DIR_ENV overrides it):
# <dir>/providers/<provider>/apiKey, and the client API keys at <dir>/api-keys/keys.yaml.
SECRETS_DIR = "/var/run/secrets/swiftclaw"
PROVIDERS_SUBDIR = "providers"
PROVIDER_KEY_FILE = "apiKey"
API_KEYS_SUBDIR = "api-keys"
API_KEYS_FILE = "keys.yaml"


def provider_key_dir(provider: str, secrets_dir: str = SECRETS_DIR) -> str:
    """Where the Secret key of ``provider`` is mounted (the file is ``PROVIDER_KEY_FILE``)."""
    return f"{secrets_dir}/{PROVIDERS_SUBDIR}/{provider}"


def api_keys_dir(secrets_dir: str = SECRETS_DIR) -> str:
    """Where the client API keys Secret is mounted (the file is ``API_KEYS_FILE``)."""
    return f"{secrets_dir}/{API_KEYS_SUBDIR}"


# --- environment --------------------------------------------------------------------

SECRETS_DIR_ENV = "SWIFTCLAW_SECRETS_DIR"
FLEET_FILE_ENV = "SWIFTCLAW_FLEET_FILE"
API_KEYS_FILE_ENV = "SWIFTCLAW_API_KEYS_FILE"
REDIS_URL_ENV = "SWIFTCLAW_REDIS_URL"
# Rate-limit counters and budget spend (a Redis run with noeviction); unset: REDIS_URL_ENV's.
REDIS_STATE_URL_ENV = "SWIFTCLAW_REDIS_STATE_URL"
# The managed Redis's password, expanded by the kubelet into the two URLs as $(...).
REDIS_PASSWORD_ENV = "SWIFTCLAW_REDIS_PASSWORD"
LOG_FORMAT_ENV = "SWIFTCLAW_LOG_FORMAT"
LOG_LEVEL_ENV = "SWIFTCLAW_LOG_LEVEL"
DRAIN_SECONDS_ENV = "SWIFTCLAW_DRAIN_SECONDS"
# The container's memory limit in bytes (the downward API's limits.memory): the in-flight,
# body and body-pool bounds are derived from it (see memory.py).
MEMORY_LIMIT_ENV = "SWIFTCLAW_MEMORY_LIMIT_BYTES"
GC_TUNING_ENV = "SWIFTCLAW_GC_TUNING"

# --- command line -------------------------------------------------------------------

COMMAND = "swiftclaw"
RUN = "run"
HOST_FLAG = "--host"
PORT_FLAG = "--port"
METRICS_PORT_FLAG = "--metrics-port"
DRAIN_SECONDS_FLAG = "--drain-seconds"
GRACE_SECONDS_FLAG = "--grace-seconds"
LOG_LEVEL_FLAG = "--log-level"
# In a pod the runtime listens on every interface; locally (the CLI's default) on loopback.
POD_HOST = "0.0.0.0"


def run_args(
    config_path: str = CONFIG_PATH,
    *,
    drain_seconds: int | None = None,
    grace_seconds: int | None = None,
    log_level: str | None = None,
    metrics_port: int | None = None,
) -> list[str]:
    """The arguments of ``swiftclaw`` that serve ``config_path`` in a pod (the image's CMD
    without the optional flags)."""
    args = [RUN, config_path, HOST_FLAG, POD_HOST, PORT_FLAG, str(RUNTIME_PORT)]
    for flag, value in (
        (DRAIN_SECONDS_FLAG, drain_seconds),
        (GRACE_SECONDS_FLAG, grace_seconds),
        (LOG_LEVEL_FLAG, log_level),
        (METRICS_PORT_FLAG, metrics_port),
    ):
        if value is not None:
            args += [flag, str(value)]
    return args
