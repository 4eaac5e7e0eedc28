"""``swiftclaw``: run an agent from a manifest, validate one, hash an API key; in a source
checkout also the simulated provider and the demo (from swiftclaw_devtools)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import contract
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
        redis_url=args.redis_url or os.environ.get(contract.REDIS_URL_ENV) or None,
        max_body_bytes=args.max_body_bytes,
        body_timeout_seconds=args.body_timeout_seconds,
        max_in_flight=args.max_in_flight,
        access_log=args.access_log,
        drain_seconds=args.drain_seconds,
        grace_seconds=args.grace_seconds,
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
