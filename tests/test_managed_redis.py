"""The managed Redis as the operator renders it, run for real: two redis-server processes
started with exactly the arguments of the StatefulSets (the password expanded as the
kubelet would), and a runtime given the two URLs the Deployment gives it.

A client without the password is refused; the cache instance, filled past its
``maxmemory``, evicts cache entries, while the state instance keeps every counter (full,
it refuses writes rather than drop one).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from swiftclaw_devtools.processes import Proc, free_port, redis_env, redis_server_path, start
from swiftclaw_operator.resources import Agent
from swiftclaw_operator.resources.common import REDIS_PORT
from swiftclaw_operator.resources.redis import (
    DATA_DIR,
    PASSWORD_ENV,
    SERVER,
    Role,
    maxmemory,
    server_args,
    server_command,
)
from swiftclaw_runtime.config import AgentDeploymentSpec

from .conftest import API_KEY, Launcher, manifest, openai_provider
from .test_spend_live import call, chat, fire

PASSWORD = secrets.token_hex(32)


def managed_agent(**redis_spec: Any) -> Agent:
    provider = {"name": "up", "type": "openai-compatible", "baseURL": "http://x/v1"}
    doc = manifest(
        [provider],
        [{"name": "t", "model": "up/m"}],
        cache={"redis": {"mode": "managed", **redis_spec}},
    )
    return Agent("agent", "tests", "uid-1", AgentDeploymentSpec.model_validate(doc["spec"]))


def start_instance(agent: Agent, role: Role, folder: Path) -> Proc:
    """redis-server with the StatefulSet's command and arguments, the password in the
    container's environment; only where it listens and its folder differ (a pod's own
    port and volume), and the server's path."""
    port = free_port()
    data = folder / role
    data.mkdir(parents=True, exist_ok=True)
    pod = {SERVER: redis_server_path(), DATA_DIR: str(data), str(REDIS_PORT): str(port)}
    argv = [pod.get(a, a) for a in [*server_command(), *server_args(agent, role)]]
    env = {**redis_env(), PASSWORD_ENV: PASSWORD}
    return start([*argv, "--bind", "127.0.0.1"], port, None, folder / f"redis-{role}.log", env)


@pytest.fixture
def instances(tmp_path: Path) -> Iterator[tuple[Agent, Proc, Proc]]:
    agent = managed_agent(cacheMemory="32Mi", stateMemory="32Mi")
    cache = start_instance(agent, "cache", tmp_path)
    try:
        state = start_instance(agent, "state", tmp_path)
    except BaseException:
        cache.stop()
        raise
    yield agent, cache, state
    cache.stop()
    state.stop()


def client(p: Proc, password: str | None = PASSWORD) -> redis.Redis:
    return redis.Redis(port=p.port, password=password, socket_timeout=10)


def test_a_client_without_the_password_is_refused(instances: tuple[Agent, Proc, Proc]) -> None:
    _, cache, state = instances
    for p in (cache, state):
        with pytest.raises(redis.AuthenticationError):
            client(p, None).set("k", "v")
        with pytest.raises(redis.AuthenticationError):
            client(p, "not-the-password").ping()
        assert client(p).ping() is True


def test_cache_evicts_past_maxmemory_and_state_keeps_every_counter(
    instances: tuple[Agent, Proc, Proc],
) -> None:
    agent, cache_p, state_p = instances
    cache, state = client(cache_p), client(state_p)
    limit = maxmemory(agent, "cache")
    assert int(cache.config_get("maxmemory")["maxmemory"]) == limit == 32 * 2**20 * 3 // 4
    assert int(state.config_get("maxmemory")["maxmemory"]) == maxmemory(agent, "state")

    counters = 5000
    pipe = state.pipeline(transaction=False)
    for i in range(counters):
        pipe.incrby(f"sc:{{tests/agent}}:rl:user-{i}", i + 1)
    pipe.execute()

    value = b"x" * 16 * 1024
    written = 0
    while written * len(value) < 3 * limit:  # three times what the cache may hold
        pipe = cache.pipeline(transaction=False)
        for _ in range(256):
            pipe.set(f"swiftclaw:tests/agent:exact:{written}", value, ex=3600)
            written += 1
        pipe.execute()
    info = cache.info()
    assert info["evicted_keys"] > 0
    assert info["used_memory"] <= limit * 1.05
    assert cache.dbsize() < written  # entries went, and the instance stayed up
    assert cache.get(f"swiftclaw:tests/agent:exact:{written - 1}") == value  # the newest stays

    # The state instance, filled with big values past its maxmemory, refuses the write
    # (the runtime then counts in-process) and drops nothing.
    fillers = 0
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        for fillers in range(10_000):
            state.set(f"filler:{fillers}", value)
    assert state.info()["evicted_keys"] == 0
    got = state.mget([f"sc:{{tests/agent}}:rl:user-{i}" for i in range(counters)])
    assert [int(v) for v in got] == [i + 1 for i in range(counters)]
    print(
        f"cache: {written} entries of 16 KiB written, {info['evicted_keys']} evicted, "
        f"used_memory {info['used_memory']} of maxmemory {limit}; state: {counters} counters "
        f"kept, writes refused (OOM) after {fillers} fillers of 16 KiB"
    )


def test_runtime_keeps_counters_in_state_and_cache_entries_in_cache(
    instances: tuple[Agent, Proc, Proc], launch: Launcher
) -> None:
    _, cache_p, state_p = instances
    up = launch.sim("--latency", "fixed:1")
    doc = manifest(
        [openai_provider("up", up)],
        [{"name": "t", "model": "up/m"}],
        cache={"exact": {"enabled": True, "ttlSeconds": 600}, "redis": {"mode": "managed"}},
        rateLimits={"perUser": {"requestsPerMinute": 1000, "tokensPerMinute": 10_000_000}},
    )
    url = f"redis://:{PASSWORD}@127.0.0.1:{{}}/0"
    rt = launch.runtime(
        doc,
        "--redis-url",
        url.format(cache_p.port),
        "--state-redis-url",
        url.format(state_p.port),
    )
    cache, state = client(cache_p), client(state_p)
    first = fire(
        [rt.url], [chat("t", f"question {i}", temperature=0) for i in range(40)], concurrency=8
    )
    assert all(r.status_code == 200 for r in first)
    cache_keys = [k.decode() for k in cache.scan_iter(count=1000)]
    state_keys = [k.decode() for k in state.scan_iter(count=1000)]
    assert any(k.startswith("swiftclaw:") for k in cache_keys), cache_keys[:5]
    assert state_keys and all(k.startswith("sc:{") for k in state_keys), state_keys[:5]
    # A key per served response (whose it is, for feedback) grows with traffic: it goes to
    # the evictable cache instance; the state one keeps only what the configuration bounds.
    owners = [k for k in cache_keys if k.startswith("sc:{tests/test-agent}:resp:")]
    assert len(owners) == 2 * 40  # by x-request-id and by completion id
    assert not any(":resp:" in k or ":feedback:" in k for k in state_keys), state_keys
    assert not any(k.startswith("sc:{") and ":resp:" not in k for k in cache_keys)
    rid = first[0].headers["x-request-id"]
    assert call(rt.url, "/v1/feedback", {"id": rid, "rating": 5}).status_code == 200
    assert call(rt.url, "/v1/feedback", {"id": rid, "rating": 1}).status_code == 409
    assert call(rt.url, "/v1/feedback", {"id": "nope", "rating": 3}).status_code == 404
    assert not any(b":resp:" in k for k in state.scan_iter(count=1000))

    # The cache instance under pressure evicts (the runtime's entries among others); the
    # counters and the day's spend, in the state instance, are all still there.
    value = b"y" * 64 * 1024
    for i in range(3 * maxmemory(instances[0], "cache") // len(value)):
        cache.set(f"pressure:{i}", value)
    assert cache.info()["evicted_keys"] > 0
    second = fire([rt.url], [chat("t", f"more {i}") for i in range(10)], concurrency=4)
    assert all(r.status_code == 200 for r in second)
    usage = call(rt.url, "/v1/usage", key=API_KEY).json()
    assert usage["requestsToday"]["agent"] == 50
    # the owner of a response evicted from the cache instance is unknown: no second count
    evicted = [
        r
        for r in first[1:]
        if not cache.exists(f"sc:{{tests/test-agent}}:resp:{r.headers['x-request-id']}")
    ]
    assert evicted
    assert (
        call(
            rt.url, "/v1/feedback", {"id": evicted[0].headers["x-request-id"], "rating": 2}
        ).status_code
        == 404
    )
    assert state.hget(f"sc:{{tests/test-agent}}:usage:{usage['date']}", "feedback:rating:5") == b"1"
    assert usage["rateLimits"]["perUser"]["requests"]["remaining"] == 1000 - 50
    health = call(rt.url, "/health").json()
    assert health["checks"]["redis"]["status"] == "ok"
    assert health["checks"]["redisState"]["status"] == "ok"
