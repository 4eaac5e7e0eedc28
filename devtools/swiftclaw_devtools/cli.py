"""The developer commands of ``swiftclaw`` (added to its parser when this package is
installed): ``sim``, the simulated OpenAI/Anthropic/Gemini provider, and ``demo``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def _sim(args: argparse.Namespace) -> int:
    from .sim import SimConfig, load_answer_keys, parse_latency, parse_outage, serve_simulator

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
        answer_keys=load_answer_keys(Path(args.answer_keys)) if args.answer_keys else {},
    )
    serve_simulator(config, args.host, args.port)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(Path(args.manifest), args.requests, args.concurrency)


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``sim`` and ``demo`` to the subcommands of ``swiftclaw``."""
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
    sim.add_argument(
        "--answer-keys",
        help="JSON file {question: key}: a question listed is answered as its key is (the "
        "paraphrases of one question given one key get the same answer)",
    )
    sim.set_defaults(func=_sim)

    demo = sub.add_parser("demo", help="simulated providers + runtime + a workload with an outage")
    demo.add_argument("--manifest", default="examples/local-agent.yaml")
    demo.add_argument("--requests", type=int, default=300)
    demo.add_argument("--concurrency", type=int, default=8)
    demo.set_defaults(func=_demo)
