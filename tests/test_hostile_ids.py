"""Client-chosen ids are for correlation only (issue 20, item 1), over real HTTP and Redis.

A client that sends the same ``x-request-id`` on every request must not pass as one
request to the rate limits, must not leave token charges behind in a window, and must not
rate one response again and again through ``/v1/feedback``. A malformed id is refused
with a 400 naming the header, before anything is counted.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import redis as redis_py

from swiftclaw_runtime.spend.identity import Identity
from swiftclaw_runtime.spend.redis import SpendRedis
from swiftclaw_runtime.spend.usage import Charge, UsageBook

from .conftest import API_KEY, Launcher, manifest, openai_provider
from .test_spend import redis as redis  # the fixtures of an emptied real Redis
from .test_spend import redis_proc as redis_proc
from .test_spend_live import AGENT, Resp, call, chat, metrics_of, with_redis

REUSED = "same-id-every-time"


def post(url: str, path: str, body: dict[str, Any], headers: dict[str, str]) -> Resp:
    req = urllib.request.Request(
        url + path,
        data=json.dumps(body).encode(),
        headers={
            "authorization": f"Bearer {API_KEY}",
            "content-type": "application/json",
            **headers,
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            streamed = r.headers.get("content-type", "").startswith("text/event-stream")
            return Resp(r.status, dict(r.headers), raw.decode() if streamed else json.loads(raw))
    except urllib.error.HTTPError as err:
        return Resp(err.code, dict(err.headers), json.loads(err.read() or b"null"))


def _agent(launch: Launcher, limits: dict[str, Any]) -> tuple[str, redis_py.Redis]:
    r = with_redis(launch)
    up = launch.sim("--latency", "fixed:1")
    doc = manifest([openai_provider("up", up)], [{"name": "t", "model": "up/m"}], rateLimits=limits)
    rt = launch.runtime(doc, "--redis-url", f"redis://127.0.0.1:{r.port}/0")
    return rt.url, redis_py.Redis(port=r.port)


def test_a_reused_request_id_counts_as_many_requests(launch: Launcher) -> None:
    url, _ = _agent(launch, {"perUser": {"requestsPerMinute": 5}})
    codes = [
        post(url, "/v1/chat/completions", chat("t"), {"x-request-id": REUSED}).status_code
        for _ in range(10)
    ]
    assert codes == [200] * 5 + [429] * 5


def test_a_reused_request_id_leaves_no_tokens_behind(launch: Launcher) -> None:
    url, client = _agent(launch, {"global": {"tokensPerMinute": 2000}})
    for _ in range(20):
        ok = post(url, "/v1/chat/completions", chat("t", max_tokens=16), {"x-request-id": REUSED})
        assert ok.status_code == 200, ok.body
    used = call(url, "/v1/usage").json()["rateLimits"]["global"]["tokens"]["used"]
    assert used > 0
    # The minute passes: every entry of the window's log is moved a window into the past
    # (what the clock would do in 60 s), and the next request's trim frees them all.
    log_key = f"{AGENT}:rl:g"
    entries = client.zrange(log_key, 0, -1, withscores=True)
    assert entries
    client.zadd(log_key, {member: score - 61_000 for member, score in entries})
    after = call(url, "/v1/usage").json()["rateLimits"]["global"]["tokens"]
    assert after["used"] == 0, after
    # a request that needs nearly the whole limit fits again
    big = post(url, "/v1/chat/completions", chat("t", max_tokens=1900), {})
    assert big.status_code == 200, big.body


def test_one_response_is_rated_once_whatever_id_is_reused(launch: Launcher) -> None:
    url, _ = _agent(launch, {"perUser": {"requestsPerMinute": 100}})
    served: list[Resp] = []
    reused_ok = 0
    for _ in range(3):
        r = post(url, "/v1/chat/completions", chat("t"), {"x-request-id": REUSED})
        assert r.status_code == 200, r.body
        served.append(r)
        fb = post(url, "/v1/feedback", {"id": REUSED, "rating": 1}, {})
        reused_ok += fb.status_code == 200
    assert reused_ok == 0  # the client's id names nothing the server counts
    ids = [r.headers["x-request-id"] for r in served]
    assert len(set(ids)) == 3 and REUSED not in ids
    assert all(r.headers["x-client-request-id"] == REUSED for r in served)
    for rid in ids:  # the server's id of each response: rated once
        assert post(url, "/v1/feedback", {"id": rid, "rating": 5}, {}).status_code == 200
        again = post(url, "/v1/feedback", {"id": rid, "rating": 5}, {})
        assert again.status_code == 409
    text = metrics_of(url)
    assert 'swiftclaw_feedback_ratings_total{rating="5"} 3.0' in text
    assert 'swiftclaw_feedback_ratings_total{rating="1"}' not in text


def test_a_malformed_request_id_is_refused_before_anything_is_counted(launch: Launcher) -> None:
    url, _ = _agent(launch, {"perUser": {"requestsPerMinute": 100}})
    for bad in ("x" * 129, "has space", 'quote"d', "semi;colon", "é"):
        r = post(url, "/v1/chat/completions", chat("t"), {"x-request-id": bad})
        assert r.status_code == 400, (bad, r.body)
        err = r.body["error"]
        assert err["param"] == "x-request-id" and err["code"] == "invalid_request_id"
        assert "x-client-request-id" not in r.headers
    usage = call(url, "/v1/usage").json()
    assert usage["requestsToday"]["agent"] == 0
    assert usage["rateLimits"]["perUser"]["requests"]["used"] == 0
    longest = "a1-._:@/+=" * 12 + "abcdefgh"  # 128 characters
    ok = post(url, "/v1/chat/completions", chat("t"), {"x-request-id": longest})
    assert ok.status_code == 200, ok.body
    assert ok.headers["x-client-request-id"] == longest
    assert ok.headers["x-request-id"] != longest
    streamed = post(url, "/v1/chat/completions", chat("t", stream=True), {"x-request-id": "s-1"})
    assert streamed.status_code == 200
    assert streamed.headers["x-client-request-id"] == "s-1"


async def test_a_provider_repeating_a_response_id_cannot_reopen_its_rating(
    redis: SpendRedis,
) -> None:
    """The server's own request ids are unique, but a response is also known by its
    provider's completion id, which a provider may repeat: the first answer owns the id,
    and a later one does not clear its ``rated`` mark."""
    day, alice = "2026-12-07", Identity("acme", "alice")
    book = UsageBook("sc:{ids}", redis)
    charge = Charge(alice, "t", "up/m", 0.001, 10, 5, ("chatcmpl-repeated",))
    assert await book.record(day, charge)
    assert await book.feedback(day, "chatcmpl-repeated", alice, ["feedback:rating:5"]) == "ok"
    for _ in range(3):
        assert await book.record(day, charge)
        verdict = await book.feedback(day, "chatcmpl-repeated", alice, ["feedback:rating:5"])
        assert verdict == "duplicate"
    counters, _, _ = await book.day(day)
    assert counters["feedback:rating:5"] == 1
