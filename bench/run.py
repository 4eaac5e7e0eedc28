"""Added latency and throughput of the runtime, side by side with its peers, in one run.

Targets, each in front of the same simulated provider (fixed 50 ms latency, one process):
``direct`` (the provider itself), ``swiftclaw`` (the runtime, one process), ``litellm`` (the
LiteLLM proxy, one worker) and ``portkey`` (the Portkey gateway, one Node process). Load
comes from wrk (one thread, C connections, each sending the next request as soon as the
last answer arrives). Added latency is a target's percentile minus the direct one at the
same concurrency; saturation RPS is the highest throughput a target reached.

    python -m bench.run [--duration 8] [--warmup 2] [--concurrency 1 8 64 256]

With ``--policies``, the runtime instead runs once per configuration of its policies
(:data:`POLICIES`: plain, the exact cache in process and on Redis, per-user limits, a daily
budget, and their combinations) against one Redis, at c=64 unless told otherwise, and each
is measured by the CPU time its process tree and Redis spent per request served (from
``/proc/<pid>/stat``, before and after the measured run), beside plain's in the same run;
LiteLLM and Portkey (plain) join the run where installed unless ``--no-peers``; with
``--baseline-src``, each policy also runs from that checkout (target ``<name>-base``):

    python -m bench.run --policies [NAME ...] [--no-peers] [--baseline-src DIR] [--duration 8]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from http.client import HTTPResponse
from pathlib import Path
from typing import Any

import yaml

from swiftclaw_devtools.processes import (
    Proc,
    free_port,
    start,
    start_redis,
    start_runtime,
    start_sim,
)

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
KEY = "sk-bench-000000001"
BODY = json.dumps(
    {"model": "bench", "messages": [{"role": "user", "content": "benchmark"}], "max_tokens": 16}
)


@dataclass
class Target:
    name: str
    url: str
    headers: dict[str, str]
    procs: list[Proc]


@dataclass
class Cell:
    target: str
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants."""
    total = 0
    pids = [pid]
    while pids:
        p = pids.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) * 1024  # type: ignore[union-attr]
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except (OSError, AttributeError):
            continue
        pids += [int(c) for c in children]
    return total


def wrk_script(folder: Path, target: Target, body: str = BODY) -> Path:
    lines = [
        'wrk.method = "POST"',
        f"wrk.body = [[{body}]]",
        'wrk.headers["Content-Type"] = "application/json"',
    ]
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in target.headers.items()]
    path = folder / f"{target.name}.lua"
    path.write_text("\n".join(lines) + "\n")
    return path


UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_wrk(out: str) -> tuple[float, float, float, int, int]:
    def pct(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            raise ValueError(f"no {p}% line in wrk output:\n{out}")
        return float(m.group(1)) * UNITS[m.group(2)]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(x) for x in m.groups())
    return rps, pct("50"), pct("99"), errors, requests


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            todo += [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except OSError:
            continue
    return out


def pin(pid: int, cpus: set[int]) -> None:
    """Put a process and its children on ``cpus`` (all their threads)."""
    for p in descendants(pid):
        for tid in (int(t) for t in os.listdir(f"/proc/{p}/task")):
            try:
                os.sched_setaffinity(tid, cpus)
            except OSError:
                continue


def wrk(
    url: str, script: Path, concurrency: int, seconds: float, cpus: set[int] | None = None
) -> str:
    """wrk against ``url``; on ``cpus`` (the load generator's share under --pin) if given."""
    prefix = ["taskset", "-c", ",".join(map(str, sorted(cpus)))] if cpus else []
    cmd = [
        *prefix,
        "wrk",
        "-t1",
        f"-c{concurrency}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(script),
        f"{url}/chat/completions",
    ]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def post(target: Target, body: str) -> HTTPResponse:
    """One chat completion request of ``body`` to ``target`` (the caller closes the answer)."""
    req = urllib.request.Request(
        f"{target.url}/chat/completions",
        data=body.encode(),
        headers={"content-type": "application/json", **target.headers},
    )
    r: HTTPResponse = urllib.request.urlopen(req, timeout=30)
    return r


def check(target: Target) -> None:
    """One real request first: every target must answer a correct completion."""
    with post(target, BODY) as r:
        data = json.load(r)
    assert data["choices"][0]["message"]["content"], data


def start_swiftclaw(
    folder: Path,
    spec: dict[str, Any],
    name: str = "swiftclaw",
    src: Path | None = None,
    args: tuple[str, ...] = (),
) -> Target:
    """The runtime serving an AgentDeployment of ``spec``; from the checkout ``src`` if given
    (its agent-runtime folder), else from this one; ``args``: more of its options."""
    manifest = {
        "apiVersion": "swiftclaw.dev/v1alpha1",
        "kind": "AgentDeployment",
        "metadata": {"name": name},
        "spec": spec,
    }
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(manifest))
    (folder / "keys.yaml").write_text(yaml.safe_dump({"keys": [{"key": KEY, "user": "bench"}]}))
    rt = start_runtime(
        folder / f"{name}.yaml",
        None,
        "--api-keys",
        str(folder / "keys.yaml"),
        "--log-level",
        "warning",
        *args,
        log_path=folder / f"{name}.log",
        env={"PYTHONPATH": str(src)} if src is not None else None,
    )
    return Target(name, f"{rt.url}/v1", {"Authorization": f"Bearer {KEY}"}, [rt])


def start_litellm(folder: Path, litellm_params: dict[str, Any], drop_params: bool) -> Target | None:
    """The LiteLLM proxy (one worker) serving model ``bench`` with ``litellm_params``; None
    where bench/install-peers.sh has not installed it."""
    litellm = REPO / ".venv-litellm" / "bin" / "litellm"
    if not litellm.exists():
        return None
    config = {
        "model_list": [{"model_name": "bench", "litellm_params": litellm_params}],
        "litellm_settings": {"drop_params": drop_params, "set_verbose": False},
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
    return Target("litellm", f"{p.url}/v1", {"Authorization": "Bearer sk-litellm-master"}, [p])


def start_portkey(folder: Path, upstream: str) -> Target | None:
    """The Portkey gateway (one Node process) in front of ``upstream``; None where
    bench/install-peers.sh has not installed it."""
    portkey = REPO / ".tmp" / "portkey" / "node_modules" / "@portkey-ai" / "gateway"
    if not portkey.exists():
        return None
    port = free_port()
    entry = json.loads((portkey / "package.json").read_text())["bin"]
    script = entry if isinstance(entry, str) else next(iter(entry.values()))
    p = start(
        ["node", str(portkey / script), f"--port={port}", "--headless"],
        port,
        "/",
        folder / "portkey.log",
        timeout=60,
    )
    return Target(
        "portkey",
        f"{p.url}/v1",
        {
            "x-portkey-provider": "openai",
            "x-portkey-custom-host": upstream,
            "Authorization": "Bearer sk-upstream",
        },
        [p],
    )


def start_targets(folder: Path, sim: Proc, baseline_src: Path | None = None) -> list[Target]:
    upstream = f"{sim.url}/v1"
    spec = {
        "providers": [{"name": "sim", "type": "openai-compatible", "baseURL": upstream}],
        "models": {"tiers": [{"name": "bench", "model": "sim/m"}]},
        "cache": {"exact": {"enabled": False}, "redis": {"mode": "none"}},
    }
    targets = [Target("direct", upstream, {}, []), start_swiftclaw(folder, spec)]
    if baseline_src is not None:
        # The same runtime from another checkout (an earlier commit), measured side by side.
        targets.append(start_swiftclaw(folder, spec, "swiftclaw-base", baseline_src))
    litellm = start_litellm(
        folder, {"model": "openai/m", "api_base": upstream, "api_key": "sk-upstream"}, True
    )
    portkey = start_portkey(folder, upstream)
    return targets + [t for t in (litellm, portkey) if t is not None]


@dataclass
class Measured:
    targets: list[Target]
    cells: list[Cell]  # in the order measured: by concurrency, then target
    memory: dict[str, int]  # RSS after the run, by target
    pinned: bool


def arguments(doc: str | None, concurrency: list[int]) -> argparse.ArgumentParser:
    """The options every benchmark here takes."""
    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--concurrency", type=int, nargs="+", default=concurrency)
    ap.add_argument("--latency", default="fixed:50")
    ap.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="proxy on its own core; upstream and load generator on another",
    )
    return ap


def measure(
    args: argparse.Namespace,
    body: str,
    check: Callable[[Target], None],
    start_targets: Callable[[Path, Proc], list[Target]],
    prefix: str,
) -> Measured:
    """Start a simulated provider (``args.latency``, unpaced streams) and the targets in front
    of it, check each with one request, then load them with ``body``, interleaved (so drift on
    the machine hits every target alike). With ``args.pin``, the proxy under test gets a core
    of its own; the simulated upstream and wrk share the other. Every target, the direct
    baseline included, runs under the same split."""
    cpus = sorted(os.sched_getaffinity(0))
    pinned = args.pin and len(cpus) >= 2
    load_cpus = {cpus[0]} if pinned else None
    RESULTS.mkdir(parents=True, exist_ok=True)
    cells: list[Cell] = []
    memory: dict[str, int] = {}
    procs: list[Proc] = []
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
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
                for t in targets:
                    script = wrk_script(folder, t, body)
                    wrk(t.url, script, c, args.warmup, load_cpus)
                    out = wrk(t.url, script, c, args.duration, load_cpus)
                    rps, p50, p99, errors, n = parse_wrk(out)
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
    return Measured(targets, cells, memory, pinned)


def write_results(name: str, md: str, measured: Measured) -> None:
    """``bench/results/<name>.md`` (``md``) and ``.json`` (the cells and the RSS)."""
    (RESULTS / f"{name}.md").write_text(md)
    (RESULTS / f"{name}.json").write_text(
        json.dumps(
            {"cells": [asdict(c) for c in measured.cells], "rss_bytes": measured.memory},
            indent=2,
        )
    )


def cell_table(cells: list[Cell], memory: dict[str, int] | None = None) -> str:
    """A row per cell, in the order given, with the latency added over ``direct`` at the same
    concurrency; with ``memory``, a column of each target's RSS after the run."""
    direct = {c.concurrency: c for c in cells if c.target == "direct"}
    rss = memory is not None
    out = [
        "| target | concurrency | RPS | p50 ms | p99 ms | added p50 ms | added p99 ms | errors |"
        + (" RSS MiB |" if rss else ""),
        "|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if rss else ""),
    ]
    for c in cells:
        d = direct[c.concurrency]
        added = (
            "- | -"
            if c.target == "direct"
            else f"{c.p50_ms - d.p50_ms:.2f} | {c.p99_ms - d.p99_ms:.2f}"
        )
        row = (
            f"| {c.target} | {c.concurrency} | {c.rps:.0f} | {c.p50_ms:.2f} | "
            f"{c.p99_ms:.2f} | {added} | {c.errors} |"
        )
        if memory is not None:
            row += f" {memory.get(c.target, 0) / 2**20:.0f} |"
        out.append(row)
    return "\n".join(out)


def table(cells: list[Cell], memory: dict[str, int]) -> str:
    """The cells (sorted by target, then concurrency), then each target's saturation RPS."""
    names = list(dict.fromkeys(c.target for c in cells))
    out = [cell_table(cells)]
    sat = {n: max(c.rps for c in cells if c.target == n) for n in names}
    out += [
        "",
        "| target | saturation RPS | x LiteLLM | x Portkey | RSS after run (MiB) |",
        "|---|---:|---:|---:|---:|",
    ]
    for n in names:
        vs_l = f"{sat[n] / sat['litellm']:.1f}" if "litellm" in sat else "-"
        vs_p = f"{sat[n] / sat['portkey']:.2f}" if "portkey" in sat else "-"
        out.append(f"| {n} | {sat[n]:.0f} | {vs_l} | {vs_p} | {memory.get(n, 0) / 2**20:.0f} |")
    return "\n".join(out)


def plot(cells: list[Cell], path: Path, placement: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    direct = {c.concurrency: c for c in cells if c.target == "direct"}
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.5))
    for name in dict.fromkeys(c.target for c in cells):
        rows = [c for c in cells if c.target == name]
        xs = [c.concurrency for c in rows]
        ax3.plot(xs, [c.rps for c in rows], marker="o", label=name)
        if name == "direct":
            continue
        ax1.plot(
            xs,
            [c.p50_ms - direct[c.concurrency].p50_ms for c in rows],
            marker="o",
            label=name,
        )
        ax2.plot(
            xs,
            [c.p99_ms - direct[c.concurrency].p99_ms for c in rows],
            marker="o",
            label=name,
        )
    for ax, title in (
        (ax1, "added p50 latency (ms)"),
        (ax2, "added p99 latency (ms)"),
        (ax3, "throughput (requests/s)"),
    ):
        ax.set_xscale("log", base=2)
        if ax is ax3:
            ax.set_yscale("log")
        else:  # added latency can be slightly negative (noise): symmetric log around 0
            ax.set_yscale("symlog", linthresh=1)
            ax.axhline(0, color="grey", linewidth=0.8)
        ax.set_xlabel("concurrent connections")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(
        f"SwiftClaw runtime vs peers: simulated provider at 50 ms, one process each, {placement}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# --- policies: the runtime's CPU per request with its spend and cache policies on ---------

# Far above what the load sends (one user, ~1,000 requests a second): counted in Redis for
# every request, never refusing one (as in the soak).
LIMITS = {"perUser": {"requestsPerMinute": 1_000_000, "tokensPerMinute": 1_000_000_000}}
BUDGET = {"dailyUSD": 100_000, "perUserDailyUSD": 10_000, "onExceeded": "reject"}
EXACT_REDIS = {"exact": {"enabled": True}}  # redis mode managed: the --redis-url one
EXACT_MEMORY = {"exact": {"enabled": True}, "redis": {"mode": "none"}}
NO_CACHE = {"exact": {"enabled": False}, "redis": {"mode": "none"}}


@dataclass(frozen=True)
class Policy:
    """A configuration of the runtime's policies: spec keys over the plain agent's, whether
    it gets the Redis (``--redis-url``), and whether every request asks the same question
    (``hits``: the exact cache answers all but the first) or a new one (misses)."""

    name: str
    label: str
    spec: dict[str, Any]
    redis: bool
    hits: bool = False


POLICIES = [
    Policy("plain", "plain (no Redis, no cache, no limits, no budget)", {"cache": NO_CACHE}, False),
    Policy("memory-hits", "exact cache in process, hits", {"cache": EXACT_MEMORY}, False, True),
    Policy("cache-hits", "Redis, exact cache only, hits", {"cache": EXACT_REDIS}, True, True),
    Policy("cache-misses", "Redis, exact cache only, misses", {"cache": EXACT_REDIS}, True),
    Policy(
        "limits", "Redis, per-user limits only", {"cache": NO_CACHE, "rateLimits": LIMITS}, True
    ),
    Policy("budget", "Redis, daily budget only", {"cache": NO_CACHE, "budget": BUDGET}, True),
    Policy(
        "limits-budget",
        "Redis, limits + budget",
        {"cache": NO_CACHE, "rateLimits": LIMITS, "budget": BUDGET},
        True,
    ),
    Policy(
        "limits-budget-misses",
        "Redis, limits + budget + exact cache, misses",
        {"cache": EXACT_REDIS, "rateLimits": LIMITS, "budget": BUDGET},
        True,
    ),
    Policy(
        "limits-budget-hits",
        "Redis, limits + budget + exact cache, hits",
        {"cache": EXACT_REDIS, "rateLimits": LIMITS, "budget": BUDGET},
        True,
        True,
    ),
]
# One question, temperature 0: the exact cache looks it up and stores it.
QUESTION = {
    "model": "bench",
    "messages": [{"role": "user", "content": "benchmark"}],
    "max_tokens": 16,
    "temperature": 0,
}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its descendants (live ones), in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in descendants(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / tick


def questions_script(folder: Path, target: Target, hits: bool, run: int) -> Path:
    """A wrk script sending :data:`QUESTION`; unless ``hits``, each request a question never
    asked before (numbered, with ``run`` so no two wrk runs share one)."""
    body = json.dumps(QUESTION)
    lines = ['wrk.method = "POST"', 'wrk.headers["Content-Type"] = "application/json"']
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in target.headers.items()]
    if hits:
        lines.append(f"wrk.body = [[{body}]]")
    else:
        head, tail = body.split('"benchmark"')
        lines += [
            "local n = 0",
            "request = function()",
            "  n = n + 1",
            f'  return wrk.format(nil, nil, nil, [[{head}"benchmark {run}-]] .. n .. [["{tail}]])',
            "end",
        ]
    path = folder / f"{target.name}-{run}.lua"
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class PolicyCell:
    target: str
    label: str
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    cpu_us: float  # the target's process tree, per request served
    redis_us: float | None  # Redis, per request served (None: the target uses none)


def policy_targets(
    folder: Path,
    sim: Proc,
    redis: Proc,
    names: list[str],
    peers: bool,
    baseline_src: Path | None = None,
) -> tuple[list[tuple[Target, Policy | None]], dict[str, Policy]]:
    upstream = f"{sim.url}/v1"
    base = {
        "providers": [{"name": "sim", "type": "openai-compatible", "baseURL": upstream}],
        "models": {
            "tiers": [{"name": "bench", "model": "sim/m", "inputPer1M": 1.0, "outputPer1M": 2.0}]
        },
    }
    url = f"redis://127.0.0.1:{redis.port}/0"
    out: list[tuple[Target, Policy | None]] = []
    chosen = {p.name: p for p in POLICIES if p.name in names}
    for p in chosen.values():
        args = ("--redis-url", url) if p.redis else ()
        out.append((start_swiftclaw(folder, {**base, **p.spec}, p.name, None, args), p))
        if baseline_src is not None:  # the same policy from another checkout, side by side
            based = replace(p, name=f"{p.name}-base", label=f"{p.label} [baseline]")
            target = start_swiftclaw(folder, {**base, **p.spec}, based.name, baseline_src, args)
            out.append((target, based))
    if peers:
        litellm = start_litellm(
            folder, {"model": "openai/m", "api_base": upstream, "api_key": "sk-upstream"}, True
        )
        portkey = start_portkey(folder, upstream)
        out += [(t, None) for t in (litellm, portkey) if t is not None]
    return out, chosen


def measure_policies(args: argparse.Namespace) -> list[PolicyCell]:
    """Start the simulated provider, a Redis and a runtime per policy (and the peers), pin
    them (each target alone on the second core; the upstream, Redis and wrk on the first),
    then load each in turn and read the CPU its processes and Redis spent."""
    cpus = sorted(os.sched_getaffinity(0))
    pinned = args.pin and len(cpus) >= 2
    load_cpus = {cpus[0]} if pinned else None
    cells: list[PolicyCell] = []
    procs: list[Proc] = []
    with tempfile.TemporaryDirectory(prefix="swiftclaw-policies-") as tmp:
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
            redis = start_redis(log_path=folder / "redis.log")
            procs.append(redis)
            targets, _ = policy_targets(
                folder, sim, redis, args.policies, args.peers, args.baseline_src
            )
            procs += [p for t, _ in targets for p in t.procs]
            if pinned:
                pin(sim.pid, {cpus[0]})
                pin(redis.pid, {cpus[0]})
                for t, _ in targets:
                    for p in t.procs:
                        pin(p.pid, {cpus[1]})
            for t, _ in targets:
                check(t)
            print(f"targets: {', '.join(t.name for t, _ in targets)}; upstream {args.latency}")
            run = 0
            for c in args.concurrency:
                for t, policy in targets:
                    hits = policy is not None and policy.hits
                    run += 1
                    wrk(t.url, questions_script(folder, t, hits, run), c, args.warmup, load_cpus)
                    run += 1
                    script = questions_script(folder, t, hits, run)
                    pid = t.procs[0].pid
                    cpu0, redis0 = cpu_seconds(pid), cpu_seconds(redis.pid)
                    out = wrk(t.url, script, c, args.duration, load_cpus)
                    cpu1, redis1 = cpu_seconds(pid), cpu_seconds(redis.pid)
                    rps, p50, p99, errors, n = parse_wrk(out)
                    uses_redis = policy is not None and policy.redis
                    cell = PolicyCell(
                        t.name,
                        policy.label if policy is not None else f"{t.name} (plain)",
                        c,
                        rps,
                        p50,
                        p99,
                        errors,
                        n,
                        (cpu1 - cpu0) / max(1, n) * 1e6,
                        (redis1 - redis0) / max(1, n) * 1e6 if uses_redis else None,
                    )
                    cells.append(cell)
                    print(
                        f"  {t.name:22s} c={c:<4d} {rps:7.0f} rps  p50 {p50:7.2f} ms  "
                        f"cpu {cell.cpu_us:7.0f} us/req  redis "
                        f"{'-' if cell.redis_us is None else f'{cell.redis_us:.0f}'} us/req  "
                        f"errors {errors}"
                    )
        finally:
            for p in reversed(procs):
                p.stop()
    return cells


def policy_table(cells: list[PolicyCell]) -> str:
    """A row per cell, CPU per request as a ratio to plain's at the same concurrency."""
    plain = {c.concurrency: c for c in cells if c.target == "plain"}
    out = [
        "| configuration | c | runtime CPU per request | Redis CPU per request "
        "| requests/s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cells:
        base = plain.get(c.concurrency)
        ratio = f"{c.cpu_us / base.cpu_us:.2f}x" if base else "-"
        cpu = f"{ratio} ({c.cpu_us:.0f} µs)"
        if c.redis_us is None:
            redis = "-"
        elif base:
            redis = f"{c.redis_us:.0f} µs ({c.redis_us / base.cpu_us:.2f}x)"
        else:
            redis = f"{c.redis_us:.0f} µs"
        out.append(
            f"| {c.label} | {c.concurrency} | {cpu} | {redis} | {c.rps:.0f} | "
            f"{c.p50_ms:.1f} | {c.p99_ms:.1f} | {c.errors} |"
        )
    return "\n".join(out)


def policies_main(args: argparse.Namespace) -> int:
    RESULTS.mkdir(parents=True, exist_ok=True)
    cells = measure_policies(args)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    md = policy_table(cells)
    header = (
        f"# Policies {stamp}\n\nUpstream: simulated provider, {args.latency} ms. Load: wrk, "
        f"1 thread, {args.duration:g} s per cell after {args.warmup:g} s warm-up; questions "
        "with temperature 0, each new (misses) or all the same (hits). CPU: the target's "
        "process tree and Redis, from /proc, per request served; ratios to plain in this run. "
        f"Machine: {os.cpu_count()} cores"
        + (
            ", each target pinned to its own core; upstream, Redis and wrk on the other"
            if args.pin
            else ", no pinning"
        )
        + ".\n\n"
    )
    (RESULTS / f"policies-{stamp}.md").write_text(header + md + "\n")
    (RESULTS / f"policies-{stamp}.json").write_text(
        json.dumps({"cells": [asdict(c) for c in cells]}, indent=2)
    )
    print()
    print(md)
    print(f"\nwritten: bench/results/policies-{stamp}.md, .json")
    return 0


def main() -> int:
    ap = arguments(__doc__, [1, 8, 64, 256])
    ap.add_argument(
        "--baseline-src",
        type=Path,
        help="also run the runtime from this agent-runtime folder of another checkout "
        "(e.g. a `git worktree` of an earlier commit) as target swiftclaw-base",
    )
    ap.add_argument(
        "--policies",
        nargs="*",
        choices=[p.name for p in POLICIES],
        help="measure the runtime's policies (all, or those named) by CPU per request",
    )
    ap.add_argument(
        "--peers",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="with --policies: LiteLLM and Portkey (plain) in the same run, where installed",
    )
    args = ap.parse_args()
    if args.policies is not None:
        if not args.policies:
            args.policies = [p.name for p in POLICIES]
        if "plain" not in args.policies:
            args.policies.insert(0, "plain")
        if "--concurrency" not in sys.argv:
            args.concurrency = [64]
        return policies_main(args)
    m = measure(
        args,
        BODY,
        check,
        lambda folder, sim: start_targets(folder, sim, args.baseline_src),
        "swiftclaw-bench-",
    )
    order = [t.name for t in m.targets]
    cells = sorted(m.cells, key=lambda c: (order.index(c.target), c.concurrency))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    md = table(cells, m.memory)
    placement = (
        "each proxy pinned to its own core; upstream and wrk on the other"
        if m.pinned
        else "no CPU pinning"
    )
    header = (
        f"# Benchmark {stamp}\n\nUpstream: simulated provider, {args.latency} ms, one "
        f"process. Load: wrk, 1 thread, {args.duration:g} s per cell after "
        f"{args.warmup:g} s warm-up. Machine: {os.cpu_count()} cores, {placement}.\n\n"
    )
    write_results(f"bench-{stamp}", header + md + "\n", replace(m, cells=cells))
    plot(cells, RESULTS / f"bench-{stamp}.png", placement)
    print()
    print(md)
    print(f"\nwritten: bench/results/bench-{stamp}.md, .json, .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
