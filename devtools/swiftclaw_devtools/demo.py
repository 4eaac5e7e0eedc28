"""``swiftclaw demo``: the whole data plane on one machine, with no cluster, keys or network.

Starts one simulated provider per provider of the manifest (on free loopback ports), the
runtime in front of them, and drives a mixed workload (plain and streamed, several tiers)
through the official ``openai`` client. A third of the way in, the primary provider goes
down: it fails every new request (HTTP 500), and once the streams it was sending have
ended its process is killed (connections refused); two thirds in, it comes back. (A
stream cut after its first byte cannot be moved to another model by any gateway: the
runtime ends it with a ``stream_interrupted`` event, which the tests cover; the demo shows
what a client sees of an outage otherwise.) The report shows latency percentiles,
the success rate and how many requests the fallbacks carried. Everything started is
stopped by pid at the end.

The workload asks support questions the way users do: the same question again, the
same question in other words, and near-misses (another order number, disable instead of
enable, Saturday instead of Sunday) that must not get the cached answer. Each question
has a meaning; a cache hit is wrong when the answer it replays was given to a question
of another meaning (the simulator's answers are a function of the question, so the
demo knows which question an answer came from). The report shows the cache's hit rates,
its wrong hits and the model spend it saved.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from swiftclaw_runtime.config import load_config

from .processes import Proc, free_port, sim_control, start_runtime, start_sim

DEMO_KEY = "sk-demo-alice-0001"
SIM_ARGS = ("--latency", "lognormal:120,0.35", "--stream-pace-ms", "4", "--seed", "7")
# (question, paraphrases, near-misses): a paraphrase means the question, a near-miss not.
FAMILIES: list[tuple[str, list[str], list[str]]] = [
    (
        "How do I reset my password?",
        ["I forgot my password, how can I change it?", "How can I reset my password?"],
        ["How do I reset my username?"],
    ),
    (
        "Can I return an item after 30 days?",
        ["Is it possible to return something after 30 days?"],
        ["Can I return an item after 60 days?"],
    ),
    (
        "How do I enable two-factor authentication?",
        ["How can I turn on 2FA for my account?"],
        ["How do I disable two-factor authentication?"],
    ),
    (
        "Are you open on Sunday?",
        ["Is the shop open on Sundays?"],
        ["Are you open on Saturday?"],
    ),
    (
        "What's included in the Pro plan?",
        ["What do I get with the Pro plan?"],
        ["What's included in the Business plan?"],
    ),
    (
        "How do I transfer money from savings to checking?",
        ["How can I move funds from my savings account to my checking account?"],
        ["How do I transfer money from checking to savings?"],
    ),
    (
        "Why was I charged twice for order 1042?",
        ["I see two charges for order 1042, why?"],
        ["Why was I charged twice for order 1043?"],
    ),
    (
        "Is shipping free for orders over $50?",
        ["Do orders above $50 ship for free?"],
        ["Is shipping free for orders over $75?"],
    ),
    (
        "How do I upgrade my plan?",
        ["How can I upgrade my plan?"],
        ["How do I downgrade my plan?"],
    ),
]


def pick_question(i: int, rng: random.Random) -> tuple[str, str]:
    """A question and its meaning: a third are new questions, the rest come from the
    families (asked as such, paraphrased, or near-missed)."""
    if rng.random() < 0.33:
        return f"Please look at ticket {i}: the customer cannot log in.", f"ticket-{i}"
    n = rng.randrange(len(FAMILIES))
    question, paraphrases, near = FAMILIES[n]
    roll = rng.random()
    if roll < 0.4:
        return question, str(n)
    if roll < 0.75:
        return rng.choice(paraphrases), str(n)
    j = rng.randrange(len(near))
    return near[j], f"{n}-near-{j}"


@dataclass
class Outcome:
    ok: bool
    seconds: float
    tier: str
    model: str
    fallback: bool
    stream: bool
    error: str = ""
    cache: str = ""
    meaning: str = ""
    text: str = ""


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
    question, meaning = pick_question(i, rng)
    messages = [{"role": "user", "content": question}]
    started = time.perf_counter()
    try:
        if stream:
            raw = await client.chat.completions.with_raw_response.create(
                model=model, messages=messages, stream=True, temperature=0
            )
            text = ""
            async for chunk in raw.parse():
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
        else:
            raw = await client.chat.completions.with_raw_response.create(
                model=model, messages=messages, temperature=0
            )
            text = raw.parse().choices[0].message.content or ""
        h = raw.headers
        return Outcome(
            bool(text),
            time.perf_counter() - started,
            h["x-swiftclaw-tier"],
            h["x-swiftclaw-model"],
            h["x-swiftclaw-fallback"] == "true",
            stream,
            cache=h.get("x-swiftclaw-cache", ""),
            meaning=meaning,
            text=text,
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


def wrong_hits(results: list[Outcome]) -> int:
    """Cache hits whose answer was first given to a question of another meaning."""
    meaning_of: dict[str, str] = {}
    for r in results:
        if r.ok and r.cache in ("miss", "bypass"):
            meaning_of.setdefault(r.text, r.meaning)
    hits = [r for r in results if r.ok and r.cache in ("exact", "semantic", "stale-similar")]
    return sum(1 for r in hits if meaning_of.get(r.text, r.meaning) != r.meaning)


def report(results: list[Outcome], elapsed: float, spent: float = 0.0, saved: float = 0.0) -> str:
    ok = [r for r in results if r.ok]
    ms = [r.seconds * 1000 for r in ok] or [0.0]
    cache = {k: sum(r.cache == k for r in results) for k in ("exact", "semantic", "miss")}
    near = [r for r in results if "-near-" in r.meaning]
    lines = [
        "",
        "SwiftClaw demo: support-agent on simulated providers",
        f"  requests        {len(results)} in {elapsed:.1f}s "
        f"({len(results) / elapsed:.0f} req/s), {sum(r.stream for r in results)} streamed",
        f"  success rate    {len(ok) / len(results) * 100:.2f}% ({len(ok)}/{len(results)})",
        f"  latency (ms)    p50 {percentile(ms, 50):.0f}   p95 {percentile(ms, 95):.0f}   "
        f"p99 {percentile(ms, 99):.0f}   mean {statistics.fmean(ms):.0f}",
        f"  fallbacks       {sum(r.fallback for r in ok)} requests served by a fallback model",
        f"  cache           {cache['exact']} exact hits ({cache['exact'] / len(results):.0%}), "
        f"{cache['semantic']} semantic hits ({cache['semantic'] / len(results):.0%}), "
        f"{cache['miss']} misses",
        f"  near-misses     {len(near)} asked, {sum(r.cache == 'semantic' for r in near)} "
        f"served from the cache by meaning",
        f"  wrong hits      {wrong_hits(results)}",
        f"  cost            ${spent:.6f} spent on models, ${saved:.6f} saved by the cache "
        f"({saved / (spent + saved) if spent + saved else 0:.0%} of the total)",
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


def _wait_streams_ended(url: str, seconds: float) -> None:
    """Until the simulator sends no stream (at most ``seconds``)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{url}/_sim/stats", timeout=5) as r:
            if json.load(r)["open_streams"] == 0:
                return
        time.sleep(0.02)


def _metric_sum(url: str, name: str) -> float:
    """The sum of a counter's samples on a runtime's /metrics."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


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
                print(f"  ... provider '{primary_name}' fails every new request")
                sim_control(primary.url, mode="error")
                _wait_streams_ended(primary.url, seconds=3.0)
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
            elapsed = time.perf_counter() - started
            spent = _metric_sum(runtime.url, "swiftclaw_cost_usd_total")
            saved = _metric_sum(runtime.url, "swiftclaw_cache_saved_usd_total")
            print(report(results, elapsed, spent, saved))
            return 0 if all(r.ok for r in results) and wrong_hits(results) == 0 else 1
        finally:
            for p in reversed(procs):
                p.stop()
