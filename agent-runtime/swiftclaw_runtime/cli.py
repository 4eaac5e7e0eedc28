"""``swiftclaw``: run an agent from a manifest, run the simulated provider, validate, demo."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from .config import ConfigError, load_config


def _run(args: argparse.Namespace) -> int:
    # One BLAS thread, set before numpy loads: the embedding of one question is too small
    # to share out, and OpenBLAS's spinning helper threads would take CPU from the event loop.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    from .auth import ApiKeyStore
    from .credentials import api_keys_path
    from .logs import setup_logging
    from .runtime import Runtime, RuntimeOptions
    from .server import serve

    setup_logging(args.log_level, args.log_format)
    config = load_config(args.manifest)
    keys_file = Path(args.api_keys) if args.api_keys else api_keys_path()
    required = config.policy.auth.required and not args.no_auth
    keys = ApiKeyStore.from_file(keys_file, required)
    options = RuntimeOptions(
        redis_url=args.redis_url or os.environ.get("SWIFTCLAW_REDIS_URL") or None,
        state_redis_url=(
            args.state_redis_url or os.environ.get("SWIFTCLAW_REDIS_STATE_URL") or None
        ),
        max_body_bytes=args.max_body_bytes,
        body_timeout_seconds=args.body_timeout_seconds,
        max_in_flight=args.max_in_flight,
        access_log=args.access_log,
        drain_seconds=args.drain_seconds,
        grace_seconds=args.grace_seconds,
    )
    serve(Runtime(config, keys, options), args.host, args.port)
    return 0


def _sim(args: argparse.Namespace) -> int:
    from .sim import SimConfig, parse_latency, parse_outage, serve_simulator

    parse_latency(args.latency)  # fail early with a clear message
    config = SimConfig(
        latency=args.latency,
        error_rate=args.error_rate,
        hang_rate=args.hang_rate,
        rate_limit_rate=args.rate_limit_rate,
        retry_after=args.retry_after,
        outages=[parse_outage(o) for o in args.outage],
        outage_mode=args.outage_mode,
        stream_pace_ms=args.stream_pace_ms,
        require_key=os.environ.get(args.require_key_env) if args.require_key_env else None,
        seed=args.seed,
    )
    serve_simulator(config, args.host, args.port)
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

    url = args.redis_url or os.environ.get("SWIFTCLAW_REDIS_STATE_URL")
    if not url:
        raise ValueError("--redis-url (or $SWIFTCLAW_REDIS_STATE_URL) is required")
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


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(Path(args.manifest), args.requests, args.concurrency)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="swiftclaw", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="serve an AgentDeployment manifest locally")
    run.add_argument("manifest", help="AgentDeployment manifest or RuntimeConfig (YAML/JSON)")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8080)
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
    run.add_argument("--max-body-bytes", type=int, default=4 * 1024 * 1024)
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
        help="requests served at once; more get 503 with Retry-After instead of queueing",
    )
    run.add_argument("--access-log", action="store_true", help="log one line per request")
    run.add_argument(
        "--drain-seconds",
        type=float,
        default=float(os.environ.get("SWIFTCLAW_DRAIN_SECONDS", "0")),
        help="after SIGTERM, stay up (not ready) this long before closing",
    )
    run.add_argument(
        "--grace-seconds",
        type=float,
        default=30.0,
        help="time in-flight requests get to finish on shutdown",
    )
    run.add_argument("--log-level", default=os.environ.get("SWIFTCLAW_LOG_LEVEL", "info"))
    run.add_argument(
        "--log-format",
        choices=["json", "text"],
        default=os.environ.get("SWIFTCLAW_LOG_FORMAT", "json"),
    )
    run.set_defaults(func=_run)

    sim = sub.add_parser("sim", help="run the simulated OpenAI/Anthropic/Gemini provider")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=9100)
    sim.add_argument(
        "--latency",
        default="fixed:50",
        help="fixed:MS | uniform:LO,HI | normal:MEAN,SD | lognormal:MEDIAN,SIGMA",
    )
    sim.add_argument("--error-rate", type=float, default=0.0, help="fraction answered 500")
    sim.add_argument(
        "--hang-rate",
        type=float,
        default=0.0,
        help="fraction held open unanswered until the client goes away",
    )
    sim.add_argument("--rate-limit-rate", type=float, default=0.0, help="fraction answered 429")
    sim.add_argument("--retry-after", type=float, default=1.0, help="Retry-After of a 429 (s)")
    sim.add_argument(
        "--outage",
        action="append",
        default=[],
        metavar="START:DURATION",
        help="seconds after start; repeatable",
    )
    sim.add_argument("--outage-mode", choices=["error", "hang", "ratelimit"], default="error")
    sim.add_argument("--stream-pace-ms", type=float, default=5.0, help="delay between chunks")
    sim.add_argument("--require-key-env", help="env var holding the key clients must send")
    sim.add_argument("--seed", type=int, help="seed for latency and error draws")
    sim.set_defaults(func=_sim)

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
        help="upload an RDB snapshot of Redis to S3-compatible storage, with retention "
        "(credentials from $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY)",
    )
    bk.add_argument("--redis-url", help="default $SWIFTCLAW_REDIS_STATE_URL")
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

    demo = sub.add_parser("demo", help="simulated providers + runtime + a workload with an outage")
    demo.add_argument("--manifest", default="examples/local-agent.yaml")
    demo.add_argument("--requests", type=int, default=300)
    demo.add_argument("--concurrency", type=int, default=8)
    demo.set_defaults(func=_demo)
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
