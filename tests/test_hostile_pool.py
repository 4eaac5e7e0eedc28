"""Load is not an outage (issue 20, item 11): the cache's Redis pool under 1,024
concurrent requests against a real Redis made slow (every reply held back by a loopback
proxy), not dead. Every request is served, none bypasses the cache, Redis is never
marked down and the pool never reconnects; every answer is stored."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from swiftclaw_devtools.processes import start_redis, start_slow_proxy
from swiftclaw_runtime.cache.store import MAX_CONNECTIONS

from .conftest import API_KEY, Launcher
from .test_cache_exact import agent, metric, sim_requests

CONCURRENCY = 1024
DELAY_MS = 60  # each Redis reply: slow, well inside the cache's 0.25 s socket timeout


async def burst(url: str, questions: list[str]) -> list[tuple[int, str]]:
    """POST every question at once; (status, x-swiftclaw-cache) of each."""
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(q: str) -> tuple[int, str]:
            body: dict[str, Any] = {
                "model": "t",
                "temperature": 0,
                "messages": [{"role": "user", "content": q}],
            }
            async with session.post(
                f"{url}/v1/chat/completions",
                json=body,
                headers={"authorization": f"Bearer {API_KEY}"},
            ) as r:
                await r.read()
                return r.status, r.headers.get("x-swiftclaw-cache", "")

        return await asyncio.gather(*(one(q) for q in questions))


def test_a_slow_redis_at_1024_concurrent_requests_is_queued_for_not_bypassed(
    launch: Launcher,
) -> None:
    assert CONCURRENCY >= 4 * MAX_CONNECTIONS  # well past the pool's size
    redis = start_redis(log_path=launch.folder / "redis.log")
    launch.procs.insert(0, redis)
    proxy = start_slow_proxy(redis.port, DELAY_MS, launch.folder / "proxy.log")
    launch.procs.insert(1, proxy)
    sim = launch.sim("--latency", "fixed:20")
    doc = agent(
        sim,
        cache={
            "exact": {"cacheable": "always"},
            "redis": {"mode": "external", "urlSecretRef": {"name": "r", "key": "url"}},
        },
    )
    rt = launch.runtime(doc, "--redis-url", f"redis://127.0.0.1:{proxy.port}/0")
    accepted_before = proxy.log().count("accepted")

    questions = [f"What is the status of ticket {i}?" for i in range(CONCURRENCY)]
    replies = asyncio.run(burst(rt.url, questions))

    assert [s for s, _ in replies] == [200] * CONCURRENCY
    assert {c for _, c in replies} == {"miss"}  # looked up, none bypassed
    assert sim_requests(sim) == CONCURRENCY
    assert metric(rt, "swiftclaw_cache_bypassed_total") == 0
    assert metric(rt, "swiftclaw_cache_backend_errors_total") == 0
    assert metric(rt, "swiftclaw_cache_backend_up") == 1
    assert "redis is unreachable" not in rt.log()
    # the pool grew to its size at most and never dropped its connections to reconnect
    opened = proxy.log().count("accepted") - accepted_before
    assert opened <= MAX_CONNECTIONS + 2, opened
    # every answer was stored: the same questions again are all exact hits
    again = asyncio.run(burst(rt.url, questions[: MAX_CONNECTIONS * 2]))
    assert {c for _, c in again} == {"exact"}
    assert sim_requests(sim) == CONCURRENCY
