"""The semantic cache and the degraded answer over real processes: the simulator, the
runtime with the local all-MiniLM-L6-v2, and RediSearch (redis-stack) or process memory."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from swiftclaw_devtools.processes import Proc, start_redis

from .conftest import API_KEY, Launcher, manifest, openai_provider
from .test_cache_exact import (
    OTHER_TENANT_KEY,
    Reply,
    ask,
    control,
    keys_file,
    metric,
    post,
    sim_requests,
)
from .test_resilience_live import metrics

QUESTION = "Can I return an item after 30 days?"
PARAPHRASE = "Is it possible to return something after 30 days?"  # cosine 0.95
NEAR_MISS = "Can I return an item after 60 days?"  # cosine 0.93: refused by verification


def semantic_agent(
    sims: list[Proc], redis: Proc | None, semantic: dict[str, Any] | None = None
) -> dict[str, Any]:
    providers = [openai_provider(f"p{i}", s) for i, s in enumerate(sims)]
    tier = {
        "name": "t",
        "model": "p0/m",
        "fallbacks": [f"p{i}/m" for i in range(1, len(sims))],
        "inputPer1M": 1.0,
        "outputPer1M": 4.0,
    }
    redis_spec: dict[str, Any] = (
        {"mode": "external", "urlSecretRef": {"name": "r", "key": "url"}}
        if redis
        else {"mode": "none"}
    )
    # serving by meaning without a measured precision (shadow mode: test_cache_shadow)
    serve = {"enabled": True, "mode": "serve", "requirePrecision": None}
    spec = {"semantic": {**serve, **(semantic or {})}, "redis": redis_spec}
    return manifest(providers, [tier], cache=spec)


@pytest.fixture(params=["redis", "memory"])
def backend(request: pytest.FixtureRequest, launch: Launcher) -> Iterator[Proc | None]:
    if request.param == "memory":
        yield None
        return
    proc = start_redis(log_path=launch.folder / "redis.log")
    launch.procs.insert(0, proc)
    yield proc


def run(launch: Launcher, sims: list[Proc], redis: Proc | None, **semantic: Any) -> Proc:
    args = ["--api-keys", str(keys_file(launch.folder))]
    if redis is not None:
        args += ["--redis-url", f"redis://127.0.0.1:{redis.port}/0"]
    return launch.runtime(semantic_agent(sims, redis, semantic), *args)


def test_paraphrase_hits_near_miss_and_other_tenant_do_not(
    launch: Launcher, backend: Proc | None
) -> None:
    sim = launch.sim("--latency", "fixed:5")
    rt = run(launch, [sim], backend)
    status, headers, first = post(rt, ask(QUESTION, temperature=0))
    assert status == 200 and headers["x-swiftclaw-cache"] == "miss"
    calls = sim_requests(sim)

    status, headers, again = post(rt, ask(PARAPHRASE, temperature=0))
    assert status == 200 and headers["x-swiftclaw-cache"] == "semantic"
    assert sim_requests(sim) == calls
    assert again["choices"][0]["message"] == first["choices"][0]["message"]

    # a near-miss scores high but verification refuses it; another tenant never shares
    assert post(rt, ask(NEAR_MISS, temperature=0))[1]["x-swiftclaw-cache"] == "miss"
    other = post(rt, ask(PARAPHRASE, temperature=0), OTHER_TENANT_KEY)
    assert other[1]["x-swiftclaw-cache"] == "miss"
    # different sampling settings are another scope
    assert post(rt, ask(PARAPHRASE, temperature=0.1))[1]["x-swiftclaw-cache"] == "miss"
    assert sim_requests(sim) == calls + 3
    assert metric(rt, "swiftclaw_cache_semantic_rejected_total") >= 1
    assert metric(rt, "swiftclaw_cache_embedding_duration_seconds_count") >= 5
    # conversations and tool calls are never looked up by meaning
    turns = {
        "model": "t",
        "temperature": 0,
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": PARAPHRASE},
        ],
    }
    assert post(rt, turns)[1]["x-swiftclaw-cache"] == "miss"


def test_every_provider_down_serves_a_similar_answer_marked_stale(
    launch: Launcher, backend: Proc | None
) -> None:
    a, b = launch.sim("--latency", "fixed:5"), launch.sim("--latency", "fixed:5")
    # fresh answers for 1 s; kept for outages for the default staleTTLSeconds
    rt = run(launch, [a, b], backend, ttlSeconds=1)
    status, _, cached = post(rt, ask(QUESTION, temperature=0))
    assert status == 200
    time.sleep(1.2)  # no longer fresh: a lookup before the call does not serve it
    a.kill()
    b.kill()
    status, headers, body = post(rt, ask(PARAPHRASE, temperature=0))
    assert status == 200, body
    assert headers["x-swiftclaw-cache"] == "stale-similar"
    assert body["choices"][0]["message"] == cached["choices"][0]["message"]
    # nothing similar: the 503 stands
    status, headers, body = post(rt, ask("Which countries do you ship to?", temperature=0))
    assert status == 503 and body["error"]["code"] == "upstream_unavailable"
    assert headers["x-swiftclaw-cache"] == "miss"
    # a near-miss is not served, even in an outage
    status, headers, _ = post(rt, ask(NEAR_MISS, temperature=0))
    assert status == 503 and headers["x-swiftclaw-cache"] == "miss"
    assert 'outcome="stale"' in metrics(rt)
    assert metric(rt, "swiftclaw_cache_lookups_total") > 0


def test_in_process_cache_stays_within_its_bounds(launch: Launcher) -> None:
    """Mode none, far past its limits: 600 different answers into room for 50."""
    sim = launch.sim("--latency", "fixed:1")
    doc = semantic_agent([sim], None)
    doc["spec"]["cache"].update(
        exact={"cacheable": "always"}, local={"maxEntries": 50, "maxBytes": 20_000}
    )
    rt = launch.runtime(doc)
    questions = [f"What is the status of ticket {i} for customer {i * 7}?" for i in range(600)]

    async def send_all() -> list[Reply]:
        async with aiohttp.ClientSession() as session:
            sem = asyncio.Semaphore(16)

            async def one(q: str) -> Reply:
                async with (
                    sem,
                    session.post(
                        f"{rt.url}/v1/chat/completions",
                        json=ask(q),
                        headers={"authorization": f"Bearer {API_KEY}"},
                    ) as r,
                ):
                    return Reply(r.status, dict(r.headers), await r.text())

            return list(await asyncio.gather(*(one(q) for q in questions)))

    replies = asyncio.run(send_all())
    assert {r.status for r in replies} == {200}
    text = metrics(rt)
    for kind in ("exact", "semantic"):
        entries = metric_line(text, f'swiftclaw_cache_entries{{kind="{kind}"}}')
        size = metric_line(text, f'swiftclaw_cache_bytes{{kind="{kind}"}}')
        assert 0 < entries <= 50, (kind, entries)
        assert 0 < size <= 20_000, (kind, size)
    # the newest answers are still there, the oldest were evicted
    assert post(rt, ask(questions[-1]))[1]["x-swiftclaw-cache"] == "exact"
    assert post(rt, ask(questions[0]))[1]["x-swiftclaw-cache"] == "miss"


def metric_line(text: str, sample: str) -> float:
    line = next(x for x in text.splitlines() if x.startswith(sample + " "))
    return float(line.split()[-1])


def test_embeddings_from_the_embeddings_model(launch: Launcher) -> None:
    """``embeddings: models``: questions embedded by the model of ``spec.models.embeddings``
    through its provider (the simulator's vectors are seeded by the text, so only the same
    question is similar)."""
    sim = launch.sim("--latency", "fixed:2")
    doc = semantic_agent([sim], None, {"embeddings": "models"})
    doc["spec"]["models"]["embeddings"] = {"model": "p0/emb", "dimensions": 64}
    doc["spec"]["cache"]["exact"] = {"enabled": False}
    rt = launch.runtime(doc)
    assert post(rt, ask(QUESTION, temperature=0))[1]["x-swiftclaw-cache"] == "miss"
    calls = sim_requests(sim)  # one chat call and the embedding calls so far
    status, headers, _ = post(rt, ask(QUESTION, temperature=0))
    assert status == 200 and headers["x-swiftclaw-cache"] == "semantic"
    assert sim_requests(sim) == calls  # the embedding was remembered, no chat call
    assert post(rt, ask(NEAR_MISS, temperature=0))[1]["x-swiftclaw-cache"] == "miss"
    assert metric(rt, "swiftclaw_cache_embedding_duration_seconds_count") >= 2


def test_failing_embeddings_are_logged_when_they_start_and_stop(launch: Launcher) -> None:
    """An embeddings provider that fails fails every request's lookup: the log says so
    once when it starts and once when it stops, the metric counts each one, and a request
    asks the failing provider once (not again when its answer is stored)."""
    chat_sim, emb_sim = launch.sim("--latency", "fixed:1"), launch.sim("--latency", "fixed:1")
    doc = semantic_agent([chat_sim, emb_sim], None, {"embeddings": "models"})
    doc["spec"]["models"]["embeddings"] = {"model": "p1/emb", "dimensions": 64}
    doc["spec"]["models"]["tiers"][0]["fallbacks"] = []
    doc["spec"]["cache"]["exact"] = {"enabled": False}
    doc["spec"]["reliability"]["circuitBreaker"]["failureThreshold"] = 10_000
    rt = launch.runtime(doc)
    control(emb_sim, mode="error")
    before = sim_requests(emb_sim)
    for i in range(12):
        status, headers, _ = post(rt, ask(f"question number {i}", temperature=0))
        assert status == 200 and headers["x-swiftclaw-cache"] == "miss"
    assert sim_requests(emb_sim) - before == 12
    control(emb_sim, mode="normal")
    assert post(rt, ask("one more question", temperature=0))[0] == 200
    assert post(rt, ask("and another one", temperature=0))[0] == 200
    log = rt.log()
    assert log.count("semantic cache skipped: embeddings fail") == 1, log
    assert log.count("embeddings work again") == 1, log
    assert metric(rt, 'swiftclaw_cache_backend_errors_total{operation="embedding"}') == 12


def test_search_replies_are_read_in_resp3_and_resp2() -> None:
    """The index reads ``FT.SEARCH`` replies itself: both protocols give the same fields."""
    from swiftclaw_runtime.cache.semantic import _documents

    resp3 = {
        b"total_results": 2,
        b"results": [
            {b"id": b"k1", b"extra_attributes": {b"dist": b"0.1", b"answer": b"a1"}},
            {b"id": b"k2", b"extra_attributes": {b"dist": b"0.2", b"answer": b"a2"}},
        ],
    }
    resp2 = [2, b"k1", [b"dist", b"0.1", b"answer", b"a1"]]
    resp2 += [b"k2", [b"dist", b"0.2", b"answer", b"a2"]]
    expected = [{b"dist": b"0.1", b"answer": b"a1"}, {b"dist": b"0.2", b"answer": b"a2"}]
    assert _documents(resp3) == _documents(resp2) == expected
    assert _documents({b"total_results": 0, b"results": []}) == _documents([0]) == []
