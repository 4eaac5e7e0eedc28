"""The cache's two figures of the issue, in one run.

1. **Semantic lookup on one core**: the runtime's own lookup, ``ResponseCache.lookup``
   of a cache built as the runtime builds it (the local encoder, all-MiniLM-L6-v2 on
   onnxruntime in its worker thread, with its memo; a real Redis Stack), the semantic cache
   alone on: the question's embedding, a RediSearch KNN search among ``--index-size``
   entries of the question's scope and the verification of the candidates above the
   threshold, stopping at the first that passes. This process is pinned to one core and
   Redis to the other. The questions are the evaluation set's (``cache/eval/pairs.jsonl``):
   the first of each pair is stored through the cache, the second looked up once, so hits
   and refusals both occur and the memo does not help. The breakdown (embed, search +
   verify) is read from the layer's own clocks, its metrics.
2. **Exact hits vs the proxied path, on one runtime worker**: one ``swiftclaw run``
   process (pinned to its own core) with the exact cache on Redis, then another with it in
   process (``redis.mode: none``), in front of the simulated provider (``--latency``,
   default 50 ms); wrk (one thread, C connections, on the other core with the simulator
   and Redis) sends either one cacheable request over and over (every answer after the
   first is an exact hit, zero upstream calls) or a request that differs each time (every
   one a miss, proxied to the simulator and then stored), interleaved at each
   concurrency. The figure is each path's saturation (its highest RPS) and their ratio.

    python -m bench.cache [--index-size 5000] [--concurrency 64 256] [--latency fixed:50]
                          [--only semantic]

``--only semantic`` times the semantic lookup alone (about 10 s) and prints its figures
without writing a results file: for quick comparisons while working on the lookup.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.run import (
    RESULTS,
    Target,
    arguments,
    parse_wrk,
    pin,
    post,
    start_swiftclaw,
    wrk,
)
from swiftclaw_devtools.processes import Proc, start_redis, start_sim

QUESTION = {"model": "bench", "max_tokens": 16, "temperature": 0}
HIT_BODY = json.dumps({**QUESTION, "messages": [{"role": "user", "content": "benchmark"}]})
# wrk sends a new question each time: a counter in the message (JSON built in Lua)
MISS_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
{headers}
local n = 0
local id = tostring(math.random(1, 1e9))
request = function()
  n = n + 1
  local body = '{{"model": "bench", "max_tokens": 16, "temperature": 0, "messages": '
    .. '[{{"role": "user", "content": "question ' .. id .. ' ' .. n .. '"}}]}}'
  return wrk.format(nil, nil, nil, body)
end
"""
HIT_LUA = """
wrk.method = "POST"
wrk.body = [[{body}]]
wrk.headers["Content-Type"] = "application/json"
{headers}
"""


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def semantic_lookups(redis_url: str, index_size: int) -> dict[str, float]:
    """Time the runtime's own semantic lookup, ``ResponseCache.lookup``, for the evaluation
    set's second questions: a ``ResponseCache`` built as ``Runtime`` builds it (the local
    encoder, Redis), the semantic cache alone on (the exact cache off, so a lookup is the
    semantic one and no single flight follows a miss)."""
    import numpy as np

    from swiftclaw_runtime.cache import ResponseCache
    from swiftclaw_runtime.cache.embeddings import LocalEmbedder
    from swiftclaw_runtime.cache.entry import CachedAnswer
    from swiftclaw_runtime.cache.evaluate import load_pairs
    from swiftclaw_runtime.cache.keys import CacheControl
    from swiftclaw_runtime.cache.layer import Lookup
    from swiftclaw_runtime.cache.verify import facts
    from swiftclaw_runtime.config import parse_policy
    from swiftclaw_runtime.metrics import Metrics
    from swiftclaw_runtime.schemas import ChatRequest
    from swiftclaw_runtime.spend.identity import Identity

    policy = parse_policy(
        {
            "providers": [
                {"name": "sim", "type": "openai-compatible", "baseURL": "http://127.0.0.1:9/v1"}
            ],
            "models": {"tiers": [{"name": "bench", "model": "sim/m"}]},
            "cache": {
                "exact": {"enabled": False},
                # served (no measured-precision gate): the lookup as a serving tier does it
                "semantic": {
                    "enabled": True,
                    "embeddings": "local",
                    "mode": "serve",
                    "requirePrecision": None,
                },
                "redis": {"mode": "managed"},
            },
        }
    )
    metrics = Metrics()
    embedder = LocalEmbedder()
    cache = ResponseCache(policy, "bench/cache", metrics, redis_url, embedder)
    await cache.start()
    principal, tier = Identity("bench", "bench"), policy.models.tiers[0]

    def plan(question: str) -> Lookup:
        payload = {**QUESTION, "messages": [{"role": "user", "content": question}]}
        return cache.plan(principal, tier, ChatRequest.model_validate(payload), payload,
                          CacheControl())  # fmt: skip

    def layer_seconds() -> tuple[float, float]:
        """The layer's own clocks so far: embedding, and the whole semantic lookup."""
        get = metrics.registry.get_sample_value
        embed = get("swiftclaw_cache_embedding_duration_seconds_sum") or 0.0
        whole = get("swiftclaw_cache_lookup_duration_seconds_sum", {"kind": "semantic"}) or 0.0
        return embed, whole

    try:
        assert cache.semantic_on and cache.index is not None and embedder.dim is not None
        answer = CachedAnswer({"role": "assistant", "content": "ok"}, "stop", "m", "sim/m", 10, 10)
        pairs = load_pairs()
        scope = plan("filler").scope
        assert scope is not None
        rng = np.random.default_rng(1)
        filler = max(0, index_size - len(pairs))
        for i in range(filler):  # random unit vectors in the questions' scope
            v = rng.standard_normal(embedder.dim).astype(np.float32)
            await cache.index.add(v / np.linalg.norm(v), scope, answer.with_question(f"q{i}"), 3600)
        for p in pairs:  # the first question of each pair, stored as the runtime stores it
            lk = plan(p.a)
            await cache.finish(lk, answer)
        for i in range(20):  # warm-up, with questions outside the set
            await cache.lookup(plan(f"warm-up question number {i}"), 1.0)
        embed, search_verify, layer, whole = [], [], [], []
        hits = 0
        for p in pairs:
            facts.cache_clear()  # verification as for a question not seen before
            lk = plan(p.b)
            e0, s0 = layer_seconds()
            t0 = time.perf_counter()
            found = await cache.lookup(lk, 1.0)
            t1 = time.perf_counter()
            e1, s1 = layer_seconds()
            hits += found is not None
            embed.append(e1 - e0)
            search_verify.append((s1 - s0) - (e1 - e0))
            layer.append(s1 - s0)
            whole.append(t1 - t0)
        stored = metrics.registry.get_sample_value(
            "swiftclaw_cache_stores_total", {"kind": "semantic", "result": "stored"}
        )
        verification = verification_seconds([(p.a, p.b) for p in pairs])
        shadow = await shadow_check_seconds(cache, plan(pairs[0].a))
    finally:
        await cache.close()
    ms = 1000.0
    return {
        "verify_p50_us": statistics.median(verification) * ms * ms,
        "verify_p99_us": percentile(verification, 0.99) * ms * ms,
        "shadow_check_p50_ms": statistics.median(shadow) * ms,
        "lookups": len(whole),
        "hits": hits,
        "index_entries": filler + int(stored or 0),
        "embed_p50_ms": statistics.median(embed) * ms,
        "search_verify_p50_ms": statistics.median(search_verify) * ms,
        "layer_p50_ms": statistics.median(layer) * ms,
        "lookup_p50_ms": statistics.median(whole) * ms,
        "lookup_p99_ms": percentile(whole, 0.99) * ms,
    }


def verification_seconds(pairs: list[tuple[str, str]]) -> list[float]:
    """The verification of one candidate as for questions not seen before: the safety
    filter on both questions, what they carry, the near-miss checks (the memos cleared)."""
    from swiftclaw_runtime.cache import safety, verify
    from swiftclaw_runtime.cache.evaluate import refusal

    out = []
    for a, b in pairs:
        for memo in (verify.facts, verify.carried, safety.topic):
            memo.cache_clear()
        started = time.perf_counter()
        refusal(a, b)
        out.append(time.perf_counter() - started)
    return out


async def shadow_check_seconds(cache: Any, lk: Any) -> list[float]:
    """A shadow check (after the upstream call, off the lookup's path): both answers
    embedded (answers of the simulator's lengths, 8-48 words, not seen before) and
    compared."""
    from swiftclaw_devtools.sim import answer_for
    from swiftclaw_runtime.cache.entry import CachedAnswer

    def entry(text: str) -> CachedAnswer:
        return CachedAnswer({"role": "assistant", "content": text}, "stop", "m", "sim/m", 10, 10)

    out = []
    for i in range(100):
        a, b = (" ".join(answer_for("m", f"shadow {i} {side}", None)) for side in "ab")
        started = time.perf_counter()
        await cache._check_shadow(lk, entry(a), entry(b))
        out.append(time.perf_counter() - started)
    return out


def agent(sim: Proc, backend: str) -> dict[str, Any]:
    """The bench agent with the exact cache on Redis (``SWIFTCLAW_REDIS_URL``) or in process."""
    return {
        "providers": [{"name": "sim", "type": "openai-compatible", "baseURL": f"{sim.url}/v1"}],
        "models": {"tiers": [{"name": "bench", "model": "sim/m"}]},
        "cache": {
            "exact": {"enabled": True},
            "redis": {"mode": "managed" if backend == "redis" else "none"},
        },
    }


Row = dict[str, Any]


def throughput(
    folder: Path, target: Target, backend: str, args: argparse.Namespace, load_cpus: set[int]
) -> list[Row]:
    """wrk with the same cacheable request (exact hits) and a new one each time (misses,
    proxied), interleaved at each concurrency."""
    for _ in range(2):
        with post(target, HIT_BODY) as r:
            outcome = r.headers["x-swiftclaw-cache"]
    assert outcome == "exact", outcome
    scripts = {
        "exact hit": lua(folder, f"hit-{backend}", HIT_LUA, target, body=HIT_BODY),
        "miss, proxied": lua(folder, f"miss-{backend}", MISS_LUA, target),
    }
    rows: list[Row] = []
    for c in args.concurrency:
        for name, script in scripts.items():
            wrk(target.url, script, c, args.warmup, load_cpus)
            rps, p50, p99, errors, n = parse_wrk(
                wrk(target.url, script, c, args.duration, load_cpus)
            )
            rows.append(
                {"backend": backend, "path": name, "concurrency": c, "rps": rps,
                 "p50_ms": p50, "p99_ms": p99, "errors": errors, "requests": n}
            )  # fmt: skip
            print(f"  {backend:6s} {name:14s} c={c:<4d} {rps:8.0f} rps  p50 {p50:7.2f} ms  "
                  f"p99 {p99:7.2f} ms  errors {errors}")  # fmt: skip
    return rows


def saturation(rows: list[Row], backend: str, path: str) -> float:
    return max(float(r["rps"]) for r in rows if r["backend"] == backend and r["path"] == path)


def lua(folder: Path, name: str, template: str, target: Target, **fields: str) -> Path:
    headers = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in target.headers.items())
    path = folder / f"{name}.lua"
    path.write_text(template.format(headers=headers, **fields))
    return path


def main() -> int:
    ap = arguments(__doc__, [64, 256])
    ap.add_argument("--index-size", type=int, default=5000)
    ap.add_argument(
        "--only", choices=["semantic"], help="run only this part (no results file written)"
    )
    args = ap.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("bench.cache pins the measured process to one core: needs two")
    one, other = {cpus[1]}, {cpus[0]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    procs: list[Proc] = []
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as tmp:
        folder = Path(tmp)
        try:
            redis = start_redis(log_path=folder / "redis.log")
            procs.append(redis)
            pin(redis.pid, other)
            redis_url = f"redis://127.0.0.1:{redis.port}/0"

            # 1. the semantic lookup, this process on one core
            own = os.sched_getaffinity(0)
            os.sched_setaffinity(0, one)
            try:
                semantic = asyncio.run(semantic_lookups(redis_url, args.index_size))
            finally:
                os.sched_setaffinity(0, own)
            print(
                f"semantic lookup on one core ({semantic['index_entries']} entries): "
                f"p50 {semantic['lookup_p50_ms']:.2f} ms, p99 {semantic['lookup_p99_ms']:.2f} ms"
                f" (in the layer's clocks: embed {semantic['embed_p50_ms']:.2f}, search + verify "
                f"{semantic['search_verify_p50_ms']:.2f}, whole {semantic['layer_p50_ms']:.2f})"
            )
            print(
                f"verification of one candidate (safety filter, payloads, near-miss checks): "
                f"p50 {semantic['verify_p50_us']:.0f} us, p99 {semantic['verify_p99_us']:.0f} us;"
                f" a shadow check (two answers embedded, compared): "
                f"p50 {semantic['shadow_check_p50_ms']:.2f} ms"
            )
            if args.only == "semantic":
                print(json.dumps(semantic, indent=2))
                return 0
            import redis as redis_py

            redis_py.Redis.from_url(redis_url).flushall()

            # 2. exact hits vs misses proxied to the simulator, one runtime process each
            sim = start_sim(
                None, "--latency", args.latency, "--stream-pace-ms", "0",
                log_path=folder / "sim.log",
            )  # fmt: skip
            procs.append(sim)
            pin(sim.pid, other)
            os.environ["SWIFTCLAW_REDIS_URL"] = redis_url
            for backend in ("redis", "memory"):
                target = start_swiftclaw(folder, agent(sim, backend), f"swiftclaw-{backend}")
                procs += target.procs
                for p in target.procs:
                    pin(p.pid, one)
                rows += throughput(folder, target, backend, args, other)
                for p in target.procs:
                    p.stop()
        finally:
            for p in reversed(procs):
                p.stop()

    now = datetime.now(UTC)
    load_end = os.getloadavg()
    ratios = {
        backend: saturation(rows, backend, "exact hit") / saturation(rows, backend, "miss, proxied")
        for backend in ("redis", "memory")
    }
    md = [
        f"# Cache benchmark, {now:%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()};"
        f" load average (1/5/15 min) at the start {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f},"
        f" at the end {load_end[0]:.2f} / {load_end[1]:.2f} / {load_end[2]:.2f} (a shared"
        " machine: other work runs beside the benchmark).",
        f"Command: python -m bench.cache --index-size {args.index_size} --concurrency "
        f"{' '.join(map(str, args.concurrency))} --latency {args.latency}",
        "",
        "## Semantic lookup on one core",
        "",
        "`ResponseCache.lookup` timed around the call; embed and search + verify are the"
        " layer's own clocks (its embedding and semantic-lookup histograms' sums, read"
        " before and after each lookup).",
        "",
        "| entries | lookups | hits | embed p50 ms | search + verify p50 ms "
        "| lookup p50 ms | lookup p99 ms |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {semantic['index_entries']} | {semantic['lookups']} | {semantic['hits']} "
        f"| {semantic['embed_p50_ms']:.2f} | {semantic['search_verify_p50_ms']:.2f} "
        f"| {semantic['lookup_p50_ms']:.2f} | {semantic['lookup_p99_ms']:.2f} |",
        "",
        f"## Exact hits vs the proxied path, one runtime worker (upstream {args.latency})",
        "",
        "| cache on | path | concurrency | RPS | p50 ms | p99 ms | errors |",
        "|---|---|---:|---:|---:|---:|---:|",
        *(
            f"| {r['backend']} | {r['path']} | {r['concurrency']} | {r['rps']:.0f} "
            f"| {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} |"
            for r in rows
        ),
        "",
        "Saturation RPS, exact hits / proxied misses: "
        + ", ".join(f"{backend} {ratio:.1f}x" for backend, ratio in ratios.items()),
    ]
    text = "\n".join(md) + "\n"
    name = f"cache-{now:%Y%m%d-%H%M}"
    (RESULTS / f"{name}.md").write_text(text)
    (RESULTS / f"{name}.json").write_text(
        json.dumps({"semantic": semantic, "throughput": rows, "load": [load, load_end]}, indent=2)
    )
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
