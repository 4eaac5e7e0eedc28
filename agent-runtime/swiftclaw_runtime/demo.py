"""``swiftclaw demo``: the whole data plane on one machine, with no cluster, keys or network.

Starts one simulated provider per provider of the manifest (on free loopback ports), the
runtime in front of them, and drives a mixed workload (plain and streamed, several tiers)
through the official ``openai`` client. A third of the way in, the primary provider's
process is killed; two thirds in, it comes back. The report shows latency percentiles,
the success rate and how many requests the fallbacks carried. Everything started is
stopped by pid at the end.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from .config import load_config
from .processes import Proc, free_port, start_runtime, start_sim

DEMO_KEY = "sk-demo-alice-0001"
SIM_ARGS = ("--latency", "lognormal:120,0.35", "--stream-pace-ms", "4", "--seed", "7")
PROMPTS = [
    "Where is my order?",
    "How do I reset my password?",
    "Can I change the delivery address?",
    "Explain the refund policy for damaged items in detail.",
    "Summarise the warranty terms.",
    "Which plan fits a team of twelve?",
]


@dataclass
class Outcome:
    ok: bool
    seconds: float
    tier: str
    model: str
    fallback: bool
    stream: bool
    error: str = ""


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, round(q / 100 * len(ordered) + 0.5))
    return ordered[min(rank, len(ordered)) - 1]


def _local_providers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        p
        for p in doc["spec"]["providers"]
        if urlsplit(p["baseURL"]).hostname in ("127.0.0.1", "localhost")
    ]


def _point_at(provider: dict[str, Any], port: int) -> None:
    url = urlsplit(provider["baseURL"])
    provider["baseURL"] = urlunsplit(url._replace(netloc=f"127.0.0.1:{port}"))


async def _one(client: Any, i: int, rng: random.Random) -> Outcome:
    import openai

    model = rng.choice(["auto", "auto", "auto", "simple", "complex"])
    stream = rng.random() < 0.3
    messages = [{"role": "user", "content": rng.choice(PROMPTS) + f" (ticket {i})"}]
    started = time.perf_counter()
    try:
        if stream:
            raw = await client.chat.completions.with_raw_response.create(
                model=model, messages=messages, stream=True
            )
            text = ""
            async for chunk in raw.parse():
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
            ok = bool(text)
        else:
            raw = await client.chat.completions.with_raw_response.create(
                model=model, messages=messages
            )
            ok = bool(raw.parse().choices[0].message.content)
        h = raw.headers
        return Outcome(
            ok,
            time.perf_counter() - started,
            h["x-swiftclaw-tier"],
            h["x-swiftclaw-model"],
            h["x-swiftclaw-fallback"] == "true",
            stream,
        )
    except openai.APIError as err:
        return Outcome(False, time.perf_counter() - started, model, "-", False, stream, str(err))


async def _workload(
    url: str, requests: int, concurrency: int, on_progress: dict[int, Any]
) -> list[Outcome]:
    import openai

    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=DEMO_KEY, max_retries=0)
    rng = random.Random(42)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    results: list[Outcome] = []

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            action = on_progress.pop(i, None)
            if action is not None:
                await asyncio.to_thread(action)
            results.append(await _one(client, i, rng))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    await client.close()
    return results


def report(results: list[Outcome], elapsed: float) -> str:
    ok = [r for r in results if r.ok]
    ms = [r.seconds * 1000 for r in ok] or [0.0]
    lines = [
        "",
        "SwiftClaw demo: support-agent on simulated providers",
        f"  requests        {len(results)} in {elapsed:.1f}s "
        f"({len(results) / elapsed:.0f} req/s), {sum(r.stream for r in results)} streamed",
        f"  success rate    {len(ok) / len(results) * 100:.2f}% ({len(ok)}/{len(results)})",
        f"  latency (ms)    p50 {percentile(ms, 50):.0f}   p95 {percentile(ms, 95):.0f}   "
        f"p99 {percentile(ms, 99):.0f}   mean {statistics.fmean(ms):.0f}",
        f"  fallbacks       {sum(r.fallback for r in ok)} requests served by a fallback model",
        "  served by",
    ]
    by_model: dict[str, int] = {}
    for r in ok:
        by_model[f"{r.tier:8s} {r.model}"] = by_model.get(f"{r.tier:8s} {r.model}", 0) + 1
    lines += [f"    {n:4d}  {k}" for k, n in sorted(by_model.items())]
    failed = [r for r in results if not r.ok]
    if failed:
        lines.append(f"  failures        first: {failed[0].error[:160]}")
    return "\n".join(lines)


def run_demo(manifest: Path, requests: int = 300, concurrency: int = 8) -> int:
    load_config(manifest)  # a bad manifest fails here, with the field named
    doc = yaml.safe_load(manifest.read_text())
    keys = manifest.parent / "api-keys.yaml"
    procs: list[Proc] = []
    with tempfile.TemporaryDirectory(prefix="swiftclaw-demo-") as tmp:
        folder = Path(tmp)
        try:
            sims: dict[str, Proc] = {}
            for provider in _local_providers(doc):
                sim = start_sim(None, *SIM_ARGS, log_path=folder / f"{provider['name']}.log")
                procs.append(sim)
                sims[provider["name"]] = sim
                _point_at(provider, sim.port)
            local = folder / "agent.yaml"
            local.write_text(yaml.safe_dump(doc))
            runtime = start_runtime(
                local,
                free_port(),
                "--api-keys",
                str(keys),
                "--log-format",
                "text",
                log_path=folder / "runtime.log",
            )
            procs.append(runtime)
            primary_name = doc["spec"]["providers"][0]["name"]
            primary = sims[primary_name]
            port = primary.port

            def outage() -> None:
                print(f"  ... killing provider '{primary_name}' (pid {primary.pid})")
                primary.kill()

            def recover() -> None:
                print(f"  ... restarting provider '{primary_name}' on port {port}")
                procs.append(start_sim(port, *SIM_ARGS, log_path=folder / "restarted.log"))

            print(
                f"runtime on {runtime.url}, {len(sims)} simulated providers; "
                f"{requests} requests, {concurrency} at a time"
            )
            started = time.perf_counter()
            results = asyncio.run(
                _workload(
                    runtime.url,
                    requests,
                    concurrency,
                    {requests // 3: outage, 2 * requests // 3: recover},
                )
            )
            print(report(results, time.perf_counter() - started))
            return 0 if all(r.ok for r in results) else 1
        finally:
            for p in reversed(procs):
                p.stop()
