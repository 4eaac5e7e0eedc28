"""The exact cache over real processes: the simulator counts the upstream calls, the
runtime runs in process memory (``redis.mode: none``) or on a real Redis."""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
import yaml

from swiftclaw_devtools.processes import Proc, sim_control, start_redis
from swiftclaw_runtime.cache.layer import HOT_SECONDS

from .conftest import API_KEY, Launcher, manifest, openai_provider
from .test_resilience_live import metrics

OTHER_TENANT_KEY = "sk-test-globex-0001"


def sim_requests(sim: Proc) -> int:
    with urllib.request.urlopen(f"{sim.url}/_sim/stats", timeout=5) as r:
        return int(json.load(r)["requests"])


def metric(rt: Proc, name: str) -> float:
    """The sum of every sample of ``name`` (any labels) on /metrics."""
    text = metrics(rt)
    pattern = re.compile(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", re.M)
    return sum(float(m.group(2)) for m in pattern.finditer(text))


def keys_file(folder: Path) -> Path:
    path = folder / "two-tenants.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "keys": [
                    {"key": API_KEY, "tenant": "acme", "user": "alice"},
                    {"key": OTHER_TENANT_KEY, "tenant": "globex", "user": "bob"},
                ]
            }
        )
    )
    return path


def agent(sim: Proc, **spec: Any) -> dict[str, Any]:
    return manifest(
        [openai_provider("up", sim)],
        [{"name": "t", "model": "up/m", "inputPer1M": 1.0, "outputPer1M": 4.0}],
        **spec,
    )


def post(
    rt: Proc, body: dict[str, Any], key: str = API_KEY, **headers: str
) -> tuple[int, dict[str, str], dict[str, Any]]:
    """POST a chat request; status, lower-cased headers and the JSON body."""
    req = urllib.request.Request(
        f"{rt.url}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "authorization": f"Bearer {key}", **headers},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, hdrs, raw = r.status, r.headers, r.read()
    except urllib.error.HTTPError as err:
        status, hdrs, raw = err.code, err.headers, err.read()
    return int(status), {k.lower(): v for k, v in hdrs.items()}, json.loads(raw)


def control(sim: Proc, **body: Any) -> None:
    sim_control(sim.url, **body)


def ask(text: str, **params: Any) -> dict[str, Any]:
    return {"model": "t", "messages": [{"role": "user", "content": text}], **params}


@pytest.fixture
def cached(launch: Launcher) -> tuple[Proc, Proc]:
    sim = launch.sim("--latency", "fixed:20")
    rt = launch.runtime(agent(sim), "--api-keys", str(keys_file(launch.folder)))
    return sim, rt


def test_a_repeated_request_is_an_exact_hit_with_no_upstream_call(
    cached: tuple[Proc, Proc],
) -> None:
    sim, rt = cached
    body = ask("Where is my parcel?", temperature=0)
    status, h1, first = post(rt, body)
    assert status == 200 and h1["x-swiftclaw-cache"] == "miss"
    calls = sim_requests(sim)
    status, h2, second = post(rt, body)
    assert status == 200 and h2["x-swiftclaw-cache"] == "exact"
    assert sim_requests(sim) == calls  # answered without calling the provider
    assert second["choices"][0]["message"] == first["choices"][0]["message"]
    assert second["usage"] == first["usage"]
    assert second["id"] != first["id"]
    assert h2["x-swiftclaw-model"] == "up/m" and h2["x-swiftclaw-attempts"] == "0"
    saved = (
        first["usage"]["prompt_tokens"] * 1.0 + first["usage"]["completion_tokens"] * 4.0
    ) / 1e6
    assert metric(rt, "swiftclaw_cache_saved_usd_total") == pytest.approx(saved)
    assert metric(rt, "swiftclaw_cache_lookups_total") == 2
    assert 'outcome="cached"' in metrics(rt)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"temperature": 0.1}, id="temperature"),
        pytest.param({"key": OTHER_TENANT_KEY}, id="tenant"),
        pytest.param({"system": "Answer in French."}, id="system prompt"),
        pytest.param({"max_tokens": 5}, id="max_tokens"),
        pytest.param({"seed": 3}, id="seed"),
        pytest.param({"stop": ["."]}, id="stop"),
        pytest.param({"response_format": {"type": "json_object"}}, id="response_format"),
        pytest.param({"top_p": 0.5}, id="top_p"),
    ],
)
def test_anything_that_changes_the_answer_is_a_miss(
    cached: tuple[Proc, Proc], change: dict[str, Any]
) -> None:
    sim, rt = cached
    base = ask("How do I change my plan?", temperature=0)
    assert post(rt, base)[1]["x-swiftclaw-cache"] == "miss"
    assert post(rt, base)[1]["x-swiftclaw-cache"] == "exact"
    body = dict(base)
    key = change.pop("key", API_KEY)
    system = change.pop("system", None)
    if system:
        body["messages"] = [{"role": "system", "content": system}, *base["messages"]]
    body.update(change)
    calls = sim_requests(sim)
    status, headers, _ = post(rt, body, key)
    assert status == 200 and headers["x-swiftclaw-cache"] == "miss"
    assert sim_requests(sim) == calls + 1


def test_cacheability_and_cache_control(cached: tuple[Proc, Proc]) -> None:
    sim, rt = cached
    # no temperature: the provider samples at its default (1.0); not cached
    loose = ask("Tell me a story.")
    assert post(rt, loose)[1]["x-swiftclaw-cache"] == "bypass"
    assert post(rt, loose)[1]["x-swiftclaw-cache"] == "bypass"
    # above maxTemperature (0.3 by default): not cached; a seed makes it cacheable
    assert post(rt, ask("Tell me a story.", temperature=0.7))[1]["x-swiftclaw-cache"] == "bypass"
    seeded = ask("Tell me a story.", temperature=0.7, seed=42)
    assert post(rt, seeded)[1]["x-swiftclaw-cache"] == "miss"
    assert post(rt, seeded)[1]["x-swiftclaw-cache"] == "exact"
    # no-store: neither looked up nor stored
    fresh = ask("Is the store open on Sunday?", temperature=0)
    assert post(rt, fresh, **{"cache-control": "no-store"})[1]["x-swiftclaw-cache"] == "bypass"
    assert post(rt, fresh)[1]["x-swiftclaw-cache"] == "miss"
    # no-cache: not looked up (a fresh answer), but stored for the next request
    calls = sim_requests(sim)
    assert post(rt, fresh, **{"cache-control": "no-cache"})[1]["x-swiftclaw-cache"] == "bypass"
    assert sim_requests(sim) == calls + 1
    assert post(rt, fresh)[1]["x-swiftclaw-cache"] == "exact"
    assert sim_requests(sim) == calls + 1
    # two without temperature, one too warm, one no-store, one no-cache
    assert metric(rt, "swiftclaw_cache_bypassed_total") == 5


def test_streamed_hit_replays_the_same_content_and_usage(cached: tuple[Proc, Proc]) -> None:
    sim, rt = cached
    c = openai.OpenAI(base_url=f"{rt.url}/v1", api_key=API_KEY, max_retries=0)
    messages: Any = [{"role": "user", "content": "Summarise the warranty."}]
    first = c.chat.completions.create(model="t", messages=messages, temperature=0)
    calls = sim_requests(sim)
    raw = c.chat.completions.with_raw_response.create(
        model="t",
        messages=messages,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    assert raw.headers["x-swiftclaw-cache"] == "exact"
    chunks = list(raw.parse())
    assert sim_requests(sim) == calls
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == first.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "stop"
    usage = [ch.usage for ch in chunks if ch.usage is not None]
    assert len(usage) == 1 and usage[0] == first.usage
    assert len({ch.id for ch in chunks}) == 1


def test_a_clean_stream_is_cached_an_interrupted_one_is_not(launch: Launcher) -> None:
    sim = launch.sim("--latency", "fixed:5", "--stream-pace-ms", "1")
    rt = launch.runtime(agent(sim))
    c = openai.OpenAI(base_url=f"{rt.url}/v1", api_key=API_KEY, max_retries=0)
    messages: Any = [{"role": "user", "content": "List the opening hours."}]
    streamed = "".join(
        ch.choices[0].delta.content or ""
        for ch in c.chat.completions.create(
            model="t", messages=messages, temperature=0, stream=True
        )
        if ch.choices
    )
    raw = c.chat.completions.with_raw_response.create(model="t", messages=messages, temperature=0)
    assert raw.headers["x-swiftclaw-cache"] == "exact"
    assert raw.parse().choices[0].message.content == streamed
    assert raw.parse().usage is not None and raw.parse().usage.completion_tokens > 0

    # a stream the provider breaks off is never cached
    control(sim, mode="cutoff", count=1)
    cut: Any = [{"role": "user", "content": "Describe the returns process."}]
    with pytest.raises(openai.APIError):
        for _ in c.chat.completions.create(model="t", messages=cut, temperature=0, stream=True):
            pass
    calls = sim_requests(sim)
    again = c.chat.completions.with_raw_response.create(model="t", messages=cut, temperature=0)
    assert again.headers["x-swiftclaw-cache"] == "miss"
    assert sim_requests(sim) == calls + 1


def test_errors_are_not_cached(launch: Launcher) -> None:
    sim = launch.sim("--latency", "fixed:5")
    rt = launch.runtime(agent(sim))
    control(sim, mode="error", count=2)  # both attempts of the first request
    body = ask("Why was I charged twice?", temperature=0)
    status, headers, _ = post(rt, body)
    assert status == 503 and headers["x-swiftclaw-cache"] == "miss"
    status, headers, _ = post(rt, body)
    assert status == 200 and headers["x-swiftclaw-cache"] == "miss"
    assert post(rt, body)[1]["x-swiftclaw-cache"] == "exact"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    text: str


async def _burst(rt: Proc, body: dict[str, Any], n: int) -> list[Reply]:
    """``n`` identical requests at once, each on its own connection."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=n)) as session:

        async def one() -> Reply:
            async with session.post(
                f"{rt.url}/v1/chat/completions",
                json=body,
                headers={"authorization": f"Bearer {API_KEY}"},
            ) as r:
                return Reply(r.status, {k.lower(): v for k, v in r.headers.items()}, await r.text())

        return list(await asyncio.gather(*(one() for _ in range(n))))


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_concurrent_identical_misses_make_one_upstream_call(launch: Launcher, stream: bool) -> None:
    sim = launch.sim("--latency", "fixed:400")
    rt = launch.runtime(agent(sim))
    body = ask("What are your support hours?", temperature=0, stream=stream)
    responses = asyncio.run(_burst(rt, body, 50))
    assert [r.status for r in responses] == [200] * 50
    assert sim_requests(sim) == 1
    outcomes = sorted(r.headers["x-swiftclaw-cache"] for r in responses)
    assert outcomes == ["exact"] * 49 + ["miss"]
    if stream:
        texts = {_stream_text(r.text) for r in responses}
    else:
        texts = {json.loads(r.text)["choices"][0]["message"]["content"] for r in responses}
    assert len(texts) == 1 and texts != {""}


def _stream_text(body: str) -> str:
    out = []
    for line in body.splitlines():
        if line.startswith("data: {"):
            chunk = json.loads(line[6:])
            for choice in chunk.get("choices") or []:
                out.append(choice["delta"].get("content") or "")
    return "".join(out)


# --- on Redis -------------------------------------------------------------------------


@pytest.fixture
def redis(launch: Launcher) -> Proc:
    proc = start_redis(log_path=launch.folder / "redis.log")
    launch.procs.insert(0, proc)  # stopped last
    return proc


def redis_agent(sim: Proc) -> dict[str, Any]:
    return agent(
        sim, cache={"redis": {"mode": "external", "urlSecretRef": {"name": "r", "key": "url"}}}
    )


def test_replicas_share_answers_and_single_flight_through_redis(
    launch: Launcher, redis: Proc
) -> None:
    sim = launch.sim("--latency", "fixed:400")
    url = f"redis://127.0.0.1:{redis.port}/0"
    a = launch.runtime(redis_agent(sim), "--redis-url", url)
    b = launch.runtime(redis_agent(sim), "--redis-url", url)
    body = ask("How do I export my data?", temperature=0)
    assert post(a, body)[1]["x-swiftclaw-cache"] == "miss"
    status, headers, _ = post(b, body)
    assert status == 200 and headers["x-swiftclaw-cache"] == "exact"
    assert sim_requests(sim) == 1

    # 25 identical requests on each replica at once: one upstream call in all
    burst = ask("How do I delete my account?", temperature=0)

    async def both() -> list[Reply]:
        ra, rb = await asyncio.gather(_burst(a, burst, 25), _burst(b, burst, 25))
        return [*ra, *rb]

    responses = asyncio.run(both())
    assert [r.status for r in responses] == [200] * 50
    assert sim_requests(sim) == 2
    assert (
        metric(a, "swiftclaw_cache_coalesced_total") + metric(b, "swiftclaw_cache_coalesced_total")
        == 49
    )


def test_hot_tier_holds_what_redis_took_bounded_and_until_the_entry_expires(
    launch: Launcher, redis: Proc
) -> None:
    """With Redis, a replica also keeps the exact answers it stored or read in memory: at
    most ``cache.local.maxEntries`` (here 4, with 12 answers), each only until the entry's
    own TTL; a hot answer is served without Redis (here after Redis lost everything)."""
    import redis as redis_py

    sim = launch.sim("--latency", "fixed:5")
    url = f"redis://127.0.0.1:{redis.port}/0"
    spec = agent(
        sim,
        cache={
            "redis": {"mode": "external", "urlSecretRef": {"name": "r", "key": "url"}},
            "exact": {"ttlSeconds": 4},
            "local": {"maxEntries": 4},
        },
    )
    a = launch.runtime(spec, "--redis-url", url)
    b = launch.runtime(spec, "--redis-url", url)
    questions = [ask(f"Hot question number {i}?", temperature=0) for i in range(12)]
    assert [post(a, q)[1]["x-swiftclaw-cache"] for q in questions] == ["miss"] * 12
    stored = time.monotonic()
    assert metric(a, "swiftclaw_cache_entries") == 4  # 12 stored in Redis, 4 kept in memory
    time.sleep(2)  # so that b keeps them for what is left of their TTL, not a TTL from now
    # the other replica reads all 12 from Redis, then holds the last 4 it read
    assert [post(b, q)[1]["x-swiftclaw-cache"] for q in questions] == ["exact"] * 12
    assert sim_requests(sim) == 12
    assert metric(b, "swiftclaw_cache_entries") == 4
    redis_py.Redis(port=redis.port).flushall()
    assert [post(b, q)[1]["x-swiftclaw-cache"] for q in questions[-4:]] == ["exact"] * 4
    assert post(b, questions[0])[1]["x-swiftclaw-cache"] == "miss"  # not hot, gone from Redis
    assert sim_requests(sim) == 13
    # every entry's TTL (4 s from when a stored it) has passed, not 4 s from b's reads
    time.sleep(max(0.0, stored + 4.3 - time.monotonic()))
    assert post(b, questions[-1])[1]["x-swiftclaw-cache"] == "miss"
    assert sim_requests(sim) == 14


def test_redis_down_under_load_bypasses_and_hits_resume_after_restart(
    launch: Launcher, redis: Proc
) -> None:
    """c=32 for 60 s, Redis killed at 10 s and restarted at 30 s. Worker 0 asks one question
    over and over: its answer is in the replica's hot tier, so it stays an exact hit while
    Redis is down. The others ask 8 questions that change every 2 s (a "round"), so each
    round's answers must be stored anew: while Redis is down they bypass the cache, and
    after the restart they are hits again (an answer enters the hot tier only once Redis
    took it, so those hits show Redis in use again)."""
    sim = launch.sim("--latency", "fixed:10")
    url = f"redis://127.0.0.1:{redis.port}/0"
    rt = launch.runtime(redis_agent(sim), "--redis-url", url)
    steady = ask("A question asked all along?", temperature=0)
    post(rt, steady)
    steady_stored = time.monotonic()
    statuses: list[int] = []
    outcomes: list[str] = []
    times: list[float] = []
    steady_outcomes: list[tuple[float, str]] = []
    started = time.monotonic()
    stop = started + 60

    async def load() -> None:
        async with aiohttp.ClientSession() as client:

            async def worker(w: int) -> None:
                i = w
                while time.monotonic() < stop:
                    now = time.monotonic()
                    round_ = int((now - started) // 2)
                    body = (
                        steady
                        if w == 0
                        else ask(f"Question {i % 8} of round {round_}?", temperature=0)
                    )
                    async with client.post(
                        f"{rt.url}/v1/chat/completions",
                        json=body,
                        headers={"authorization": f"Bearer {API_KEY}"},
                    ) as r:
                        await r.read()
                        outcome = r.headers.get("x-swiftclaw-cache", "")
                        statuses.append(r.status)
                        if w == 0:
                            steady_outcomes.append((now, outcome))
                        else:
                            outcomes.append(outcome)
                            times.append(now)
                    i += 1

            await asyncio.gather(*(worker(w) for w in range(32)))

    killed_at: list[float] = []  # when Redis was killed, and when it was started again

    async def chaos() -> float:
        await asyncio.sleep(10)
        redis.kill()
        killed_at.append(time.monotonic())
        await asyncio.sleep(20)
        killed_at.append(time.monotonic())  # Redis may answer before start_redis returns
        await asyncio.to_thread(
            lambda: launch.procs.append(start_redis(redis.port, launch.folder / "redis2.log"))
        )
        restarted = time.monotonic()
        return restarted

    async def main() -> float:
        restarted, _ = await asyncio.gather(chaos(), load())
        return restarted

    restarted = asyncio.run(main())
    assert statuses and all(s == 200 for s in statuses), {s for s in statuses if s != 200}
    # from the first round that began after the kill (an earlier round's answers are hot)
    down_from = started + 2 * (int((killed_at[0] - started) // 2) + 1) + 0.5
    down_to = killed_at[1]
    down = [o for t, o in zip(times, outcomes, strict=True) if down_from < t < down_to]
    assert down and all(o == "bypass" for o in down), set(down)  # requests went on without
    assert outcomes.count("exact") > 0
    # the hot tier's answer was served from memory, Redis down or not, for as long as the
    # hot tier keeps an answer (then it is read from Redis again: after the restart, gone)
    kept = [o for t, o in steady_outcomes if t < steady_stored + HOT_SECONDS - 1]
    assert kept and all(o == "exact" for o in kept), set(kept)
    assert any(down_from < t < down_to for t, _ in steady_outcomes)
    # after the restart (an empty Redis), answers are stored and hit again within 10 s
    assert stop - restarted > 10
    after = [(t, o) for t, o in zip(times, outcomes, strict=True) if t > restarted]
    first_hit = next(t for t, o in after if o == "exact")
    assert first_hit - restarted < 10
    later = [o for t, o in after if t > first_hit + 1]
    assert "bypass" not in later and later.count("exact") > 0.9 * len(later)
    assert metric(rt, "swiftclaw_cache_bypassed_total") > 0
    assert metric(rt, "swiftclaw_cache_backend_errors_total") > 0
    assert metric(rt, "swiftclaw_cache_backend_up") == 1
