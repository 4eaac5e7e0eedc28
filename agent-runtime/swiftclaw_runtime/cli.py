"""``swiftclaw``: run an agent from a manifest, validate one, hash an API key; in a source
checkout also the simulated provider and the demo (from swiftclaw_devtools)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from . import contract
from .config import ConfigError, load_config


def _bytes(value: str) -> int:
    """A byte count; a whole number above zero (the downward API gives plain bytes)."""
    n = int(value)
    if n <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {value}")
    return n


def _seconds(value: str) -> float:
    """A period in seconds, above zero and at most an hour."""
    n = float(value)
    if not 0 < n <= 3600:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 3600, not {value}")
    return n


def _run(args: argparse.Namespace) -> int:
    # One BLAS thread, set before numpy loads: the embedding of one question is too small
    # to share out, and OpenBLAS's spinning helper threads would take CPU from the event loop.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    from .auth import ApiKeyStore
    from .credentials import api_keys_path
    from .health import memory_limit_bytes
    from .logs import setup_logging
    from .memory import derive_bounds
    from .runtime import Runtime, RuntimeOptions
    from .server import serve

    setup_logging(args.log_level, args.log_format)
    config = load_config(args.manifest)
    keys_file = Path(args.api_keys) if args.api_keys else api_keys_path()
    required = config.policy.auth.required and not args.no_auth
    keys = ApiKeyStore.from_file(keys_file, required)
    limit = args.memory_limit_bytes or memory_limit_bytes()  # the flag, else the cgroup's
    bounds = derive_bounds(limit, args.max_in_flight, args.max_body_bytes)
    options = RuntimeOptions(
        redis_url=args.redis_url or os.environ.get(contract.REDIS_URL_ENV) or None,
        state_redis_url=(
            args.state_redis_url or os.environ.get(contract.REDIS_STATE_URL_ENV) or None
        ),
        max_body_bytes=bounds.max_body_bytes,
        body_timeout_seconds=args.body_timeout_seconds,
        max_in_flight=bounds.max_in_flight,
        body_pool_bytes=bounds.body_pool_bytes,
        max_json_elements=bounds.max_json_elements,
        metrics_port=args.metrics_port,
        access_log=args.access_log,
        drain_seconds=args.drain_seconds,
        grace_seconds=args.grace_seconds,
        header_timeout_seconds=args.header_timeout_seconds,
        max_header_bytes=args.max_header_bytes,
        max_connections=args.max_connections,
        write_timeout_seconds=args.write_timeout_seconds,
        api_keys_path=keys_file,
        reload_seconds=args.reload_seconds,
    )
    logging.getLogger("swiftclaw.runtime").info(
        "memory limit %s: %d requests in flight, bodies up to %d bytes, %d bytes of bodies "
        "held at once, %d JSON elements a body",
        limit or "unknown (1 GiB assumed)",
        bounds.max_in_flight,
        bounds.max_body_bytes,
        bounds.body_pool_bytes,
        bounds.max_json_elements,
    )
    serve(Runtime(config, keys, options), args.host, args.port)
    return 0


def _validate(args: argparse.Namespace) -> int:
    config = load_config(args.manifest)
    tiers = ", ".join(t.name for t in config.policy.models.tiers)
    print(
        f"{args.manifest}: valid AgentDeployment {config.namespace}/{config.name} (tiers: {tiers})"
    )
    return 0


def _hash_key(args: argparse.Namespace) -> int:
    from .auth import digest

    key = sys.stdin.readline().strip()
    if not key:
        print("hash-key: read an empty key from stdin", file=sys.stderr)
        return 2
    print(digest(key).hex())
    return 0


def _store(args: argparse.Namespace) -> Any:
    from .redis_backup import Store

    return Store(args.bucket, args.prefix, args.endpoint, args.region)


def _redis_backup(args: argparse.Namespace) -> int:
    from .redis_backup import BackupError, backup

    if args.redis_url is not None:  # the value is never echoed: it may hold the password
        raise ValueError(
            f"--redis-url is not accepted (a password in the arguments shows in ps and in "
            f"the CronJob): set ${contract.REDIS_STATE_URL_ENV}"
        )
    url = os.environ.get(contract.REDIS_STATE_URL_ENV)
    if not url:
        raise ValueError(f"${contract.REDIS_STATE_URL_ENV} (the Redis to back up) is not set")
    try:
        backup(url, _store(args), args.keep, args.max_age_days, Path(args.work_dir))
    except BackupError as err:
        print(f"redis-backup: {err}", file=sys.stderr)
        return 1
    return 0


def _redis_restore(args: argparse.Namespace) -> int:
    from .redis_backup import BackupError, restore

    try:
        restore(_store(args), args.key or None, Path(args.data_dir), args.overwrite)
    except BackupError as err:
        print(f"redis-restore: {err}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="swiftclaw", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser(contract.RUN, help="serve an AgentDeployment manifest locally")
    run.add_argument("manifest", help="AgentDeployment manifest or RuntimeConfig (YAML/JSON)")
    run.add_argument(contract.HOST_FLAG, default="127.0.0.1")
    run.add_argument(contract.PORT_FLAG, type=int, default=contract.RUNTIME_PORT)
    run.add_argument(
        "--api-keys", help="API keys file (default: $SWIFTCLAW_API_KEYS_FILE or the mounted Secret)"
    )
    run.add_argument("--no-auth", action="store_true", help="accept requests without a key")
    run.add_argument(
        "--redis-url", help="Redis URL (default $SWIFTCLAW_REDIS_URL; none: in memory)"
    )
    run.add_argument(
        "--state-redis-url",
        help="Redis URL for rate-limit counters and budget spend, run with noeviction "
        "(default $SWIFTCLAW_REDIS_STATE_URL; none: the --redis-url one)",
    )
    run.add_argument(
        contract.METRICS_PORT_FLAG,
        type=int,
        help="serve /metrics (and /healthz, /readyz) on this port only; "
        "default: /metrics on --port",
    )
    run.add_argument(
        "--memory-limit-bytes",
        type=_bytes,
        default=os.environ.get(contract.MEMORY_LIMIT_ENV) or None,
        help="the process's memory limit: the in-flight, body and body-pool bounds follow "
        f"from it (default ${contract.MEMORY_LIMIT_ENV}, else the cgroup's limit, else "
        "1 GiB is assumed)",
    )
    run.add_argument(
        "--max-body-bytes",
        type=int,
        default=4 * 1024 * 1024,
        help="the largest request body (an upper bound: the memory limit may lower it)",
    )
    run.add_argument(
        "--body-timeout-seconds",
        type=float,
        default=10.0,
        help="a request body must arrive within this time (else 408)",
    )
    run.add_argument(
        "--max-in-flight",
        type=int,
        default=1024,
        help="requests served at once; more get 503 with Retry-After instead of queueing "
        "(an upper bound: the memory limit may lower it)",
    )
    run.add_argument(
        "--header-timeout-seconds",
        type=float,
        default=10.0,
        help="a request's line and headers must arrive within this time (else 408, closed)",
    )
    run.add_argument(
        "--max-header-bytes",
        type=int,
        default=32 * 1024,
        help="largest request line and headers (else 431, closed)",
    )
    run.add_argument(
        "--max-connections",
        type=int,
        default=4096,
        help="client connections open at once; more are answered 503 and closed",
    )
    run.add_argument(
        "--write-timeout-seconds",
        type=float,
        default=30.0,
        help="a client that reads nothing of a response for this long is dropped "
        "(its request cancelled, its upstream call closed)",
    )
    run.add_argument(
        "--reload-seconds",
        type=_seconds,
        default=1.0,
        help="how often the API keys, the providers' key files and the fleet document "
        f"(${contract.FLEET_FILE_ENV}, else {contract.FLEET_PATH}) are checked for changes",
    )
    run.add_argument("--access-log", action="store_true", help="log one line per request")
    run.add_argument(
        contract.DRAIN_SECONDS_FLAG,
        type=float,
        default=float(os.environ.get(contract.DRAIN_SECONDS_ENV, "0")),
        help="after SIGTERM, stay up (not ready) this long before closing",
    )
    run.add_argument(
        contract.GRACE_SECONDS_FLAG,
        type=float,
        default=30.0,
        help="time in-flight requests get to finish on shutdown",
    )
    run.add_argument(
        contract.LOG_LEVEL_FLAG, default=os.environ.get(contract.LOG_LEVEL_ENV, "info")
    )
    run.add_argument(
        "--log-format",
        choices=["json", "text"],
        default=os.environ.get(contract.LOG_FORMAT_ENV, "json"),
    )
    run.set_defaults(func=_run)

    val = sub.add_parser("validate", help="check a manifest; errors name the field")
    val.add_argument("manifest")
    val.set_defaults(func=_validate)

    hk = sub.add_parser("hash-key", help="print the sha256 of an API key read from stdin")
    hk.set_defaults(func=_hash_key)

    def s3_args(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument("--bucket", required=True)
        cmd.add_argument("--prefix", required=True, help="key prefix, e.g. NAMESPACE/AGENT")
        cmd.add_argument("--endpoint", help="S3-compatible endpoint URL (default: AWS)")
        cmd.add_argument("--region", default="us-east-1")

    bk = sub.add_parser(
        "redis-backup",
        help="upload an RDB snapshot of the Redis at $SWIFTCLAW_REDIS_STATE_URL to "
        "S3-compatible storage, with retention (credentials from $AWS_ACCESS_KEY_ID and "
        "$AWS_SECRET_ACCESS_KEY)",
    )
    # The Redis URL (with its password) only from $SWIFTCLAW_REDIS_STATE_URL; the flag is
    # kept hidden to refuse it without argparse echoing its value.
    bk.add_argument("--redis-url", help=argparse.SUPPRESS)
    s3_args(bk)
    bk.add_argument("--keep", type=int, default=7, help="snapshots kept (the newest)")
    bk.add_argument("--max-age-days", type=int, help="delete snapshots older than this")
    bk.add_argument("--work-dir", default="/tmp", help="where the snapshot is staged")
    bk.set_defaults(func=_redis_backup)

    rs = sub.add_parser(
        "redis-restore",
        help="lay out a snapshot from S3-compatible storage in a Redis data folder, "
        "before Redis starts",
    )
    s3_args(rs)
    rs.add_argument("--key", help="the snapshot's object key (default: the newest)")
    rs.add_argument("--data-dir", required=True, help="Redis's --dir (the volume)")
    rs.add_argument("--overwrite", action="store_true", help="replace data already there")
    rs.set_defaults(func=_redis_restore)

    # The developer commands (sim, demo) where swiftclaw_devtools is installed: a source
    # checkout, not the runtime image.
    try:
        from swiftclaw_devtools.cli import add_commands
    except ModuleNotFoundError as err:
        if err.name != "swiftclaw_devtools":
            raise
    else:
        add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    except ValueError as err:
        print(f"swiftclaw {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
