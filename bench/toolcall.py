"""Added latency of a streamed tool-call completion through the Anthropic translation.

One ``swiftclaw sim`` (fixed 50 ms, unpaced streams) plays the model. Targets:

- ``direct``: the sim in OpenAI's shape answering the same streamed tool call (the baseline);
- ``swiftclaw``: the runtime with an ``anthropic`` provider pointing at the sim: the client
  speaks OpenAI chat, the runtime translates to Anthropic Messages and the SSE back;
- ``litellm``: the LiteLLM proxy doing the same translation (``model: anthropic/<name>``,
  ``api_base`` the sim; LiteLLM appends ``/v1/messages`` to it).

Load and placement as :mod:`bench.run` (wrk, one thread, C keep-alive connections; the proxy
on its own core, the sim and wrk on the other). wrk's latency is the whole stream's, to its
last byte. Added latency = a target's percentile minus the direct one.

    python -m bench.toolcall [--duration 8] [--warmup 2] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import urllib.request
from dataclasses import asdict
from pathlib import Path

import yaml

from swiftclaw_runtime.processes import Proc, free_port, start, start_runtime, start_sim

from . import run
from .run import KEY, RESULTS, Cell, Target, parse_wrk, pin, rss_bytes

REPO = Path(__file__).resolve().parent.parent
BODY = json.dumps(
    {
        "model": "bench",
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "stream": True,
        "max_tokens": 64,
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "The weather in a city",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "city": {"type": "string"},
                            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                        },
                        "required": ["city", "unit"],
                    },
                },
            }
        ],
    }
)


def script(folder: Path, target: Target) -> Path:
    lines = [
        'wrk.method = "POST"',
        f"wrk.body = [[{BODY}]]",
        'wrk.headers["Content-Type"] = "application/json"',
        *(f'wrk.headers["{k}"] = "{v}"' for k, v in target.headers.items()),
    ]
    path = folder / f"toolcall-{target.name}.lua"
    path.write_text("\n".join(lines) + "\n")
    return path


def check(target: Target) -> None:
    """One real request first: a streamed tool call of get_weather with JSON arguments."""
    req = urllib.request.Request(
        f"{target.url}/chat/completions",
        data=BODY.encode(),
        headers={"content-type": "application/json", **target.headers},
    )
    name, arguments, finish = None, "", None
    with urllib.request.urlopen(req, timeout=30) as r:
        for line in r.read().decode().splitlines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            for choice in chunk.get("choices") or []:
                finish = choice.get("finish_reason") or finish
                for frag in (choice.get("delta") or {}).get("tool_calls") or []:
                    fn = frag.get("function") or {}
                    name = fn.get("name") or name
                    arguments += fn.get("arguments") or ""
    assert name == "get_weather" and finish == "tool_calls", (target.name, name, finish)
    assert json.loads(arguments)["unit"] == "celsius", (target.name, arguments)


def start_targets(folder: Path, sim: Proc) -> list[Target]:
    targets = [Target("direct", f"{sim.url}/v1", {}, [])]
    manifest = {
        "apiVersion": "swiftclaw.dev/v1alpha1",
        "kind": "AgentDeployment",
        "metadata": {"name": "bench"},
        "spec": {
            "providers": [{"name": "ant", "type": "anthropic", "baseURL": f"{sim.url}/v1"}],
            "models": {"tiers": [{"name": "bench", "model": "ant/claude-bench"}]},
            "cache": {"exact": {"enabled": False}, "redis": {"mode": "none"}},
        },
    }
    (folder / "agent.yaml").write_text(yaml.safe_dump(manifest))
    (folder / "keys.yaml").write_text(yaml.safe_dump({"keys": [{"key": KEY, "user": "bench"}]}))
    rt = start_runtime(
        folder / "agent.yaml",
        None,
        "--api-keys",
        str(folder / "keys.yaml"),
        "--log-level",
        "warning",
        log_path=folder / "runtime.log",
    )
    targets.append(Target("swiftclaw", f"{rt.url}/v1", {"Authorization": f"Bearer {KEY}"}, [rt]))
    litellm = REPO / ".venv-litellm" / "bin" / "litellm"
    if litellm.exists():
        config = {
            "model_list": [
                {
                    "model_name": "bench",
                    "litellm_params": {
                        "model": "anthropic/claude-bench",
                        "api_base": sim.url,  # LiteLLM appends /v1/messages
                        "api_key": "sk-upstream",
                    },
                }
            ],
            "litellm_settings": {"drop_params": False, "set_verbose": False},
        }
        (folder / "litellm.yaml").write_text(yaml.safe_dump(config))
        port = free_port()
        env = {
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_MASTER_KEY": "sk-litellm-master",
            "LITELLM_LOG": "ERROR",
            "DISABLE_SCHEMA_UPDATE": "true",
            "LITELLM_TELEMETRY": "False",
            "NO_DOCS": "True",
        }
        p = start(
            [
                str(litellm),
                "--config",
                str(folder / "litellm.yaml"),
                "--port",
                str(port),
                "--host",
                "127.0.0.1",
                "--num_workers",
                "1",
            ],
            port,
            "/health/liveliness",
            folder / "litellm.log",
            env,
            timeout=180,
        )
        targets.append(
            Target("litellm", f"{p.url}/v1", {"Authorization": "Bearer sk-litellm-master"}, [p])
        )
    return targets


def table(cells: list[Cell], memory: dict[str, int]) -> str:
    direct = {c.concurrency: c for c in cells if c.target == "direct"}
    out = [
        "| target | concurrency | RPS | p50 ms | p99 ms | added p50 ms | added p99 ms | errors "
        "| RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cells:
        d = direct[c.concurrency]
        added = (
            "- | -"
            if c.target == "direct"
            else f"{c.p50_ms - d.p50_ms:.2f} | {c.p99_ms - d.p99_ms:.2f}"
        )
        out.append(
            f"| {c.target} | {c.concurrency} | {c.rps:.0f} | {c.p50_ms:.2f} | {c.p99_ms:.2f} | "
            f"{added} | {c.errors} | {memory.get(c.target, 0) / 2**20:.0f} |"
        )
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[64])
    ap.add_argument("--latency", default="fixed:50")
    ap.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True)
    args = ap.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    pinned = args.pin and len(cpus) >= 2
    if pinned:
        run.LOAD_CPUS = {cpus[0]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    cells: list[Cell] = []
    memory: dict[str, int] = {}
    procs: list[Proc] = []
    with tempfile.TemporaryDirectory(prefix="swiftclaw-toolcall-") as tmp:
        folder = Path(tmp)
        try:
            sim = start_sim(
                None,
                "--latency",
                args.latency,
                "--stream-pace-ms",
                "0",
                log_path=folder / "sim.log",
            )
            procs.append(sim)
            targets = start_targets(folder, sim)
            procs += [p for t in targets for p in t.procs]
            if pinned:
                pin(sim.pid, {cpus[0]})
                for t in targets:
                    for p in t.procs:
                        pin(p.pid, {cpus[1]})
            for t in targets:
                check(t)
            print(f"targets: {', '.join(t.name for t in targets)}; upstream {args.latency}")
            for c in args.concurrency:
                for t in targets:  # interleaved, so drift on the machine hits all alike
                    lua = script(folder, t)
                    run.wrk(t.url, lua, c, args.warmup)
                    rps, p50, p99, errors, n = parse_wrk(run.wrk(t.url, lua, c, args.duration))
                    cells.append(Cell(t.name, c, rps, p50, p99, errors, n))
                    print(
                        f"  {t.name:10s} c={c:<4d} {rps:8.0f} rps  p50 {p50:7.2f} ms  "
                        f"p99 {p99:7.2f} ms  errors {errors}"
                    )
            for t in targets:
                if t.procs:
                    memory[t.name] = rss_bytes(t.procs[0].pid)
        finally:
            for p in reversed(procs):
                p.stop()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    placement = "proxy pinned to its own core; sim and wrk on the other" if pinned else "no pinning"
    md = (
        f"# Streamed tool call through the Anthropic translation, {stamp}\n\n"
        f"Upstream: `swiftclaw sim`, {args.latency} ms, unpaced stream. Load: wrk, 1 thread, "
        f"{args.duration:g} s per cell after {args.warmup:g} s warm-up. Machine: "
        f"{os.cpu_count()} cores, {placement}.\n\n" + table(cells, memory) + "\n"
    )
    (RESULTS / f"toolcall-{stamp}.md").write_text(md)
    (RESULTS / f"toolcall-{stamp}.json").write_text(
        json.dumps({"cells": [asdict(c) for c in cells], "rss_bytes": memory}, indent=2)
    )
    print()
    print(md)
    print(f"written: bench/results/toolcall-{stamp}.md, .json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
