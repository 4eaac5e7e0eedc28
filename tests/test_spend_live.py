"""Spend control over real processes: three runtimes sharing one Redis, real HTTP.

Limits exact across replicas, budgets that concurrent requests cannot overshoot, the
usage and feedback endpoints, routing headers and metrics, end users behind one key.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import openai
import pytest
import redis

from swiftclaw_devtools.processes import Proc, start_redis

from .conftest import API_KEY, Launcher, manifest, openai_provider

AGENT = "sc:{tests/test-agent}"


def chat(model: str = "auto", content: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def with_redis(launch: Launcher) -> Proc:
    r = start_redis(log_path=launch.folder / "redis.log")
    launch.procs.append(r)
    return r


@dataclass
class Resp:
    status_code: int
    headers: dict[str, str]
    body: Any

    def json(self) -> Any:
        return self.body


async def _fire(urls: list[str], bodies: list[dict[str, Any]], concurrency: int) -> list[Resp]:
    clients = [openai.AsyncOpenAI(base_url=f"{u}/v1", api_key=API_KEY, max_retries=0) for u in urls]
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> Resp:
        async with sem:
            client = clients[i % len(clients)]
            try:
                raw = await client.chat.completions.with_raw_response.create(**bodies[i])
            except openai.APIStatusError as err:
                return Resp(err.status_code, dict(err.response.headers), err.response.json())
            return Resp(raw.status_code, dict(raw.headers), raw.parse().model_dump())

    try:
        return await asyncio.gather(*(one(i) for i in range(len(bodies))))
    finally:
        for c in clients:
            await c.close()


def fire(urls: list[str], bodies: list[dict[str, Any]], concurrency: int = 32) -> list[Resp]:
    return asyncio.run(_fire(urls, bodies, concurrency))


def call(url: str, path: str, body: dict[str, Any] | None = None, key: str = API_KEY) -> Resp:
    """GET (no body) or POST JSON with the API key."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url + path,
        data=data,
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return Resp(r.status, dict(r.headers), json.loads(r.read() or b"null"))
    except urllib.error.HTTPError as err:
        return Resp(err.code, dict(err.headers), json.loads(err.read() or b"null"))


def metrics_of(url: str) -> str:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
        return str(r.read().decode())


def test_per_user_limit_is_exact_across_three_replicas(launch: Launcher) -> None:
    r = with_redis(launch)
    up = launch.sim("--latency", "fixed:1")
    doc = manifest(
        [openai_provider("up", up)],
        [{"name": "t", "model": "up/m"}],
        rateLimits={"perUser": {"requestsPerMinute": 100, "tokensPerMinute": 10_000_000}},
    )
    url = f"redis://127.0.0.1:{r.port}/0"
    rts = [launch.runtime(doc, "--redis-url", url) for _ in range(3)]
    out = fire([rt.url for rt in rts], [chat("t") for _ in range(1000)], concurrency=48)
    ok = [x for x in out if x.status_code == 200]
    limited = [x for x in out if x.status_code == 429]
    assert abs(len(ok) - 100) <= 1, len(ok)
    assert len(ok) + len(limited) == 1000
    for x in limited[:50]:
        err = x.json()["error"]
        assert err["code"] == "rate_limit_exceeded" and err["type"] == "requests"
        assert "rateLimits.perUser.requestsPerMinute" in err["message"]
        assert 1 <= int(x.headers["retry-after"]) <= 60
        assert x.headers["x-ratelimit-remaining-requests"] == "0"
    first = ok[0].headers
    assert first["x-ratelimit-limit-requests"] == "100"
    assert first["x-ratelimit-limit-tokens"] == "10000000"
    assert {"x-ratelimit-reset-requests", "x-ratelimit-remaining-tokens"} <= set(first)
    # /v1/usage on any replica sees the shared count
    usage = call(rts[2].url, "/v1/usage").json()
    assert usage["rateLimits"]["perUser"]["requests"]["remaining"] == 0
    assert usage["requestsToday"]["agent"] == len(ok)
    assert usage["shared"] is True


def _budget_agent(launch: Launcher, on_exceeded: str) -> tuple[list[Proc], redis.Redis]:
    r = with_redis(launch)
    up = launch.sim("--latency", "uniform:5,30")
    doc = manifest(
        [openai_provider("local", up), openai_provider("cloud", up)],
        [
            {"name": "cheap", "model": "local/small"},  # free: a model of one's own
            {"name": "premium", "model": "cloud/big", "inputPer1M": 1000, "outputPer1M": 1000},
        ],
        budget={"dailyUSD": 2.0, "onExceeded": on_exceeded},
    )
    url = f"redis://127.0.0.1:{r.port}/0"
    rts = [launch.runtime(doc, "--redis-url", url) for _ in range(3)]
    client = redis.Redis(port=r.port)
    day = datetime.now(UTC).date().isoformat()
    client.hset(f"{AGENT}:budget:agent:{day}", mapping={"spent": "1.5", "reserved": "0"})
    return rts, client


def _spent(client: redis.Redis) -> tuple[float, float]:
    day = datetime.now(UTC).date().isoformat()
    got = client.hmget(f"{AGENT}:budget:agent:{day}", ["spent", "reserved"])
    return float(got[0] or 0), float(got[1] or 0)


# Each request: ~12 input tokens + max_tokens 80 at 1,000 USD per 1M: at most ~0.09 USD.
MAX_COST = (16 + 80) * 1000 / 1e6


@pytest.mark.parametrize("on_exceeded", ["reject", "downgrade"])
def test_concurrent_requests_cannot_overshoot_the_budget(
    launch: Launcher, on_exceeded: str
) -> None:
    rts, client = _budget_agent(launch, on_exceeded)
    bodies = [chat("premium", f"budget test {i}", max_tokens=80) for i in range(3 * 64)]
    out = fire([rt.url for rt in rts], bodies, concurrency=3 * 64)
    spent, reserved = _spent(client)
    assert reserved == pytest.approx(0, abs=1e-9)  # every reservation settled
    assert 1.5 < spent <= 2.0 + MAX_COST
    premium = [
        x for x in out if x.status_code == 200 and x.headers["x-swiftclaw-tier"] == "premium"
    ]
    assert 1 <= len(premium) <= 0.5 / (MAX_COST / 4)  # the half dollar left, not 192 requests
    if on_exceeded == "reject":
        refused = [x for x in out if x.status_code == 429]
        assert len(refused) + len(premium) == len(out)
        err = refused[0].json()["error"]
        assert err["code"] == "insufficient_quota" and err["type"] == "insufficient_quota"
        assert "daily budget of 2 USD" in err["message"] and "resets at" in err["message"]
        assert int(refused[0].headers["retry-after"]) > 0
        assert refused[0].headers["x-should-retry"] == "false"
    else:
        cheap = [
            x for x in out if x.status_code == 200 and x.headers["x-swiftclaw-tier"] == "cheap"
        ]
        assert len(cheap) + len(premium) == len(out)
        assert cheap[0].headers["x-swiftclaw-budget"] == "exceeded; scope=daily"
        assert cheap[0].headers["x-swiftclaw-route"] == "explicit; reason=model; downgraded=budget"
    metrics = metrics_of(rts[0].url)
    assert f'swiftclaw_budget_exceeded_total{{action="{on_exceeded}",scope="daily"}}' in metrics
    # The used ratio is read back when a replica settles a charge: the replicas that served
    # one report it (with "reject", a replica may have refused all of its share).
    assert any('swiftclaw_budget_used_ratio{scope="daily"}' in metrics_of(rt.url) for rt in rts)


def test_usage_feedback_routing_and_end_users(launch: Launcher) -> None:
    r = with_redis(launch)
    up = launch.sim("--latency", "fixed:1")
    doc = manifest(
        [openai_provider("up", up)],
        [
            {"name": "small", "model": "up/s", "inputPer1M": 0.1, "outputPer1M": 0.2},
            {"name": "mid", "model": "up/m", "inputPer1M": 1, "outputPer1M": 2},
            {"name": "big", "model": "up/b", "inputPer1M": 10, "outputPer1M": 20},
        ],
        models={
            "tiers": [
                {"name": "small", "model": "up/s", "inputPer1M": 0.1, "outputPer1M": 0.2},
                {"name": "mid", "model": "up/m", "inputPer1M": 1, "outputPer1M": 2},
                {"name": "big", "model": "up/b", "inputPer1M": 10, "outputPer1M": 20},
            ],
            "routing": {"strategy": "complexity", "default": "mid"},
        },
        rateLimits={"perUser": {"requestsPerMinute": 5}},
        budget={"dailyUSD": 10, "perUserDailyUSD": 1, "timeZone": "Asia/Tokyo"},
        auth={"userFromRequest": True},
    )
    rt = launch.runtime(doc, "--redis-url", f"redis://127.0.0.1:{r.port}/0")
    u = rt.url
    simple = fire([u], [chat(content="What's the capital of Peru?")])[0]
    assert simple.headers["x-swiftclaw-route"].startswith("simple; reason=")
    assert simple.headers["x-swiftclaw-tier"] == "small"
    proof = "Prove that there are infinitely many primes, step by step, and justify each step."
    hard = fire([u], [chat(content=proof)])[0]
    assert hard.headers["x-swiftclaw-tier"] == "big"
    assert hard.headers["x-swiftclaw-route"].startswith("complex; reason=")
    named = fire([u], [chat("small", proof)])[0]
    assert named.headers["x-swiftclaw-route"] == "explicit; reason=model"
    assert named.headers["x-swiftclaw-tier"] == "small"  # the client's choice wins

    # end users behind the one key: each has their own per-user limit of 5
    for who in ("carol", "dave"):
        codes = [x.status_code for x in fire([u], [chat(content="hi", user=who)] * 6, 1)]
        assert codes == [200] * 5 + [429]
    usage = call(u, "/v1/usage?user=carol").json()
    assert usage["user"] == "carol" and usage["tenant"] == "acme"
    assert usage["rateLimits"]["perUser"]["requests"] == {
        "limit": 5,
        "used": 5,
        "remaining": 0,
        "resetSeconds": pytest.approx(usage["rateLimits"]["perUser"]["requests"]["resetSeconds"]),
    }
    assert usage["timeZone"] == "Asia/Tokyo"
    assert usage["budget"]["perUserDaily"]["limitUSD"] == 1
    assert 0 < usage["spend"]["userTodayUSD"] < usage["spend"]["tenantTodayUSD"]
    assert usage["budget"]["daily"]["remainingUSD"] == pytest.approx(
        10 - usage["spend"]["agentTodayUSD"], abs=1e-6
    )
    assert usage["activeUsersToday"] == 3  # alice (the key's user), carol, dave
    assert usage["requestsToday"]["agent"] == 13

    # feedback by x-request-id or completion id, once
    rid = simple.headers["x-request-id"]
    fb = {"id": rid, "rating": 5, "taskCompleted": True, "comment": "secret words"}
    ok = call(u, "/v1/feedback", fb)
    assert ok.status_code == 200, ok.body
    again = call(u, "/v1/feedback", {"id": rid, "rating": 1})
    assert again.status_code == 409
    by_completion = call(u, "/v1/feedback", {"id": hard.json()["id"], "taskCompleted": False})
    assert by_completion.status_code == 200
    unknown = call(u, "/v1/feedback", {"id": "nope", "rating": 3})
    assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "id"
    bad = call(u, "/v1/feedback", {"id": rid, "rating": 6})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "rating"
    empty = call(u, "/v1/feedback", {"id": rid})
    assert empty.status_code == 400 and empty.json()["error"]["param"] == "rating"
    assert call(u, "/v1/usage", key="wrong-key-123").status_code == 401

    metrics = metrics_of(rt.url)
    assert 'swiftclaw_feedback_ratings_total{rating="5"} 1.0' in metrics
    assert 'swiftclaw_feedback_task_completed_total{completed="false"} 1.0' in metrics
    assert 'swiftclaw_routing_decisions_total{reason="model",tier="small"} 1.0' in metrics
    assert 'swiftclaw_tenant_requests_total{tenant="acme"}' in metrics
    assert "swiftclaw_active_users_today 3.0" in metrics  # set when /v1/usage read it
    assert "swiftclaw_requests_today 13.0" in metrics
    assert 'swiftclaw_rate_limited_total{scope="user",unit="requests"} 2.0' in metrics
    assert "secret words" not in rt.log()  # comments are never logged
