"""Load is not an outage (issue 20, item 11): the cache's Redis pool under 1,024
concurrent requests against a real Redis made slow (every reply held back by a loopback
proxy), not dead. Every request is served, none bypasses the cache, Redis is never
marked down and the pool never reconnects; every answer is stored."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp
import pytest

from swiftclaw_devtools.processes import start_redis, start_slow_proxy
from swiftclaw_runtime.cache.store import MAX_CONNECTIONS
from swiftclaw_runtime.redis_client import RedisBusy, WatchedRedis, queue_until

from .conftest import API_KEY, Launcher
from .test_cache_exact import agent, metric, sim_requests

CONCURRENCY = 1024
DELAY_MS = 60  # each Redis reply: slow (but inside the socket timeout: not dead)


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


def test_a_call_queues_until_its_deadline_and_busy_is_not_down(launch: Launcher) -> None:
    """Two slots, both held by calls Redis answers slowly (``BLPOP`` on an empty list, 3 s):
    a call whose deadline comes first gets :class:`RedisBusy` and Redis stays up; one with
    a later deadline waits its turn and is answered."""
    redis = start_redis(log_path=launch.folder / "redis.log")
    launch.procs.insert(0, redis)

    async def scenario() -> None:
        watched = WatchedRedis(
            f"redis://127.0.0.1:{redis.port}/0",
            timeout=10.0,
            max_connections=2,
            queue=True,
            logger=logging.getLogger("test"),
            down_note="",
            up_note="",
        )
        try:
            assert await watched.call("ping", lambda c: c.ping())
            sleepers = [
                asyncio.create_task(watched.call("sleep", lambda c: c.blpop(["nothing"], 3)))
                for _ in range(2)
            ]
            await asyncio.sleep(0)  # their first step takes both slots (no I/O before it)
            with queue_until(time.monotonic() + 0.05), pytest.raises(RedisBusy):
                await watched.call("get", lambda c: c.get("k"))
            assert watched.up
            with queue_until(time.monotonic() + 30):
                assert await watched.call("set", lambda c: c.set("k", "v"))
            await asyncio.gather(*sleepers)
            assert watched.up
        finally:
            await watched.close()

    asyncio.run(scenario())
