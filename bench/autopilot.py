"""The operator's autopilot read path at scale: 600 runtime pods (200 agents x 3) read
every 10 s, with the operator's own reader, aggregation and decisions.

The pods' expositions are real: one runtime process (3 tiers on 2 simulated providers,
prices, a daily budget, 5 tenants, cache hits) serves traffic and its ``/metrics`` is
captured once per interval to come, so that every counter grows from one read to the
next as a serving pod's does. A child process serves those payloads from a few aiohttp
servers on loopback, one path per fake pod (``/<pod>/metrics``; a pod's n-th read gets
the n-th capture). Starting 600 runtimes would measure the machine, not the operator.

This process is the operator's read path and nothing else: one :class:`Reader` (its
connection and concurrency bounds), and for each agent a task that, every interval (the
agents' starts spread over the first one, as the daemons' are), reads its 3 pods and runs
``loop.evaluate`` (aggregation, scale, failover, budget, spikes, episodes) and builds the
status (``live_figures``, ``conditions``): ``loop.step`` less the Kubernetes writes, which
happen only on a change. The first interval warms up; the next ``--intervals`` are
measured: the process's CPU time (user + system, every thread) over the wall time is its
share of one core (goal: at most 20 %), and over the pod reads made, the CPU per read.

    python -m bench.autopilot [--agents 200] [--pods 3] [--interval 10] [--intervals 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from swiftclaw_devtools.processes import free_port, start_runtime, start_sim
from swiftclaw_operator.autopilot.loop import AgentState, conditions, evaluate, live_figures
from swiftclaw_operator.autopilot.scraper import Reader, Target
from swiftclaw_operator.reconcile import agent_from
from swiftclaw_operator.resources import Settings

RESULTS = Path(__file__).resolve().parent / "results"
TENANTS = 5
TIERS = ("chat", "cheap", "code")


def _manifest(sim_a: str, sim_b: str) -> dict[str, Any]:
    providers = [
        {"name": "alpha", "type": "openai-compatible", "baseURL": f"{sim_a}/v1"},
        {"name": "beta", "type": "openai-compatible", "baseURL": f"{sim_b}/v1"},
    ]
    price = {"inputPer1M": 1.0, "outputPer1M": 4.0}
    tiers = [
        {"name": "chat", "model": "alpha/big", "fallbacks": ["beta/big"], **price},
        {"name": "cheap", "model": "beta/small", "fallbacks": ["alpha/small"], **price},
        {"name": "code", "model": "alpha/coder", "fallbacks": ["beta/coder"], **price},
    ]
    return {
        "apiVersion": "swiftclaw.dev/v1alpha1",
        "kind": "AgentDeployment",
        "metadata": {"name": "bench", "namespace": "bench"},
        "spec": {
            "providers": providers,
            "models": {"tiers": tiers, "routing": {"default": "chat"}},
            "cache": {"redis": {"mode": "none"}},
            "budget": {"dailyUSD": 1000},
        },
    }


def _chat(url: str, key: str, tier: str, text: str) -> None:
    body = json.dumps({"model": tier, "messages": [{"role": "user", "content": text}]}).encode()
    req = urllib.request.Request(
        f"{url}/v1/chat/completions",
        data=body,
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        r.read()


def capture(folder: Path, count: int, per_capture: int = 60) -> list[bytes]:
    """``count`` expositions of one real runtime, ``per_capture`` requests apart (every
    tier, every tenant, a repeated question now and then: cache hits)."""
    keys = [{"key": f"sk-bench-{t}", "tenant": f"tenant-{t}", "user": "u"} for t in range(TENANTS)]
    (folder / "keys.yaml").write_text(yaml.safe_dump({"keys": keys}))
    a = start_sim(None, "--latency", "fixed:2", log_path=folder / "sim-a.log")
    b = start_sim(None, "--latency", "fixed:2", log_path=folder / "sim-b.log")
    procs = [a, b]
    try:
        path = folder / "agent.yaml"
        path.write_text(yaml.safe_dump(_manifest(a.url, b.url)))
        rt = start_runtime(
            path, None, "--api-keys", str(folder / "keys.yaml"), log_path=folder / "rt.log"
        )
        procs.append(rt)
        out = []
        n = 0
        for _ in range(count):
            for _ in range(per_capture):
                key = keys[n % TENANTS]["key"]
                text = f"question {n % 7}" if n % 4 == 0 else f"question {n}"
                _chat(rt.url, key, TIERS[n % len(TIERS)], text)
                n += 1
            with urllib.request.urlopen(f"{rt.url}/metrics", timeout=10) as r:
                out.append(r.read())
        return out
    finally:
        for p in reversed(procs):
            p.stop()


def _serve(payloads: list[bytes], ports: list[int], ready: Any) -> None:
    """The fake pods (a child process): ``/<pod>/metrics`` on every port; a pod's n-th
    read gets the n-th payload (the last one from then on)."""

    async def main() -> None:
        reads: dict[str, int] = {}

        async def metrics(request: web.Request) -> web.Response:
            pod = request.match_info["pod"]
            n = reads.get(pod, 0)
            reads[pod] = n + 1
            body = payloads[min(n, len(payloads) - 1)]
            return web.Response(body=body, content_type="text/plain")

        app = web.Application()
        app.router.add_get("/{pod}/metrics", metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        for port in ports:
            await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


def _agent(i: int, pods: int) -> Any:
    body = {
        "metadata": {"name": f"agent-{i}", "namespace": "bench", "uid": f"uid-{i}"},
        "spec": {
            **_manifest("http://127.0.0.1:1", "http://127.0.0.1:2")["spec"],
            "scaling": {"minReplicas": pods, "maxReplicas": 20, "targetConcurrency": 32},
            "autopilot": {"enabled": True, "intervalSeconds": 10},
        },
    }
    return agent_from(body, Settings())


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def operate(targets: list[list[Target]], interval: float, intervals: int) -> dict[str, Any]:
    """Every agent's loop (read, evaluate, status) for one warm-up interval and
    ``intervals`` measured ones; the process's CPU over the measured ones."""
    reader = Reader()
    loop = asyncio.get_running_loop()
    start = loop.time()
    measure_from, measure_to = start + interval, start + (1 + intervals) * interval
    marks: dict[str, float] = {}
    reads = {"ok": 0, "failed": 0}
    decide_s: list[float] = []
    step_s: list[float] = []
    agents = [_agent(i, len(t)) for i, t in enumerate(targets)]

    async def mark(name: str, at: float) -> None:
        await asyncio.sleep(max(0.0, at - loop.time()))
        marks[name], marks[f"{name}_wall"] = _cpu(), loop.time()

    async def run(i: int) -> None:
        state = AgentState()
        at = start + interval * i / len(targets)  # the daemons' starts, spread
        while at < measure_to:
            await asyncio.sleep(max(0.0, at - loop.time()))
            began = loop.time()
            samples, failed = await reader.read(targets[i])
            t0 = time.perf_counter()
            now = time.time()
            n = len(targets[i])
            out = evaluate(agents[i], state, samples, n, 0, n, now)
            assert out.fresh is not None
            live_figures(state, out.fresh, len(samples))
            conditions(state, out.fresh, "t")
            ended = loop.time()
            if measure_from <= began < measure_to:
                decide_s.append(time.perf_counter() - t0)
                step_s.append(ended - began)
                reads["ok"] += len(samples)
                reads["failed"] += len(failed)
            at += interval

    try:
        await asyncio.gather(
            mark("from", measure_from),
            mark("to", measure_to),
            *(run(i) for i in range(len(targets))),
        )
    finally:
        await reader.close()
    cpu = marks["to"] - marks["from"]
    wall = marks["to_wall"] - marks["from_wall"]
    done = reads["ok"] + reads["failed"]
    step_s.sort()
    return {
        "measured_seconds": round(wall, 1),
        "reads_ok": reads["ok"],
        "reads_failed": reads["failed"],
        "cpu_seconds": round(cpu, 2),
        "cpu_share_of_one_core_percent": round(100 * cpu / wall, 1),
        "cpu_ms_per_pod_read": round(1000 * cpu / done, 3) if done else None,
        "decisions_ms_per_agent_step_mean": round(1000 * statistics.mean(decide_s), 3),
        "step_ms_p50": round(1000 * step_s[len(step_s) // 2], 1),
        "step_ms_p99": round(1000 * step_s[int(len(step_s) * 0.99)], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--pods", type=int, default=3, help="ready pods per agent")
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--intervals", type=int, default=3, help="measured, after one warm-up")
    parser.add_argument("--servers", type=int, default=4, help="ports serving the fake pods")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-autopilot-") as tmp:
        payloads = capture(Path(tmp), args.intervals + 2)
    ports = [free_port() for _ in range(args.servers)]
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    server = ctx.Process(target=_serve, args=(payloads, ports, ready), daemon=True)
    server.start()
    try:
        if not ready.wait(30):
            raise RuntimeError("the fake pods did not start")
        targets = [
            [
                Target(
                    f"agent-{i}-{j}",
                    f"http://127.0.0.1:{ports[(i * args.pods + j) % len(ports)]}"
                    f"/agent-{i}-{j}/metrics",
                )
                for j in range(args.pods)
            ]
            for i in range(args.agents)
        ]
        figures = asyncio.run(operate(targets, args.interval, args.intervals))
    finally:
        server.terminate()
        server.join(10)
    last = payloads[-1].decode()
    result = {
        "agents": args.agents,
        "pods": args.agents * args.pods,
        "interval_seconds": args.interval,
        "exposition_bytes": len(payloads[-1]),
        "exposition_lines": sum(1 for ln in last.splitlines() if ln and ln[0] != "#"),
        **figures,
        "cores": os.cpu_count(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "autopilot.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
