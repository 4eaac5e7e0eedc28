"""The autopilot's adapters against real processes: the metrics reader against real
runtime processes (one restarted between reads) and against broken pods (a real local HTTP
server that stalls, floods, refuses or talks nonsense), and the webhook against a real
local HTTP server: one message per episode start and end, each with its runbook."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest
from aiohttp import web

from swiftclaw_devtools.processes import Proc, free_port
from swiftclaw_operator.autopilot import episodes, webhook
from swiftclaw_operator.autopilot.aggregate import interval
from swiftclaw_operator.autopilot.loop import Shared, notify
from swiftclaw_operator.autopilot.scraper import Reader, Target

from .conftest import API_KEY, Launcher, manifest, openai_provider

REPO = Path(__file__).resolve().parent.parent


def agent_doc(sim: Proc) -> dict[str, object]:
    return manifest([openai_provider("sim", sim)], [{"name": "chat", "model": "sim/fast"}])


def chat(rt: Proc, n: int) -> None:
    client = openai.OpenAI(base_url=f"{rt.url}/v1", api_key=API_KEY, max_retries=0)
    for i in range(n):
        client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": f"question {i}"}]
        )


async def test_reads_real_runtimes_and_counts_across_a_restart(launch: Launcher) -> None:
    sim = launch.sim()
    a, b = launch.runtime(agent_doc(sim)), launch.runtime(agent_doc(sim))
    reader = Reader(timeout=10.0)
    try:

        def targets(b_proc: Proc) -> list[Target]:
            return [Target("a", f"{a.url}/metrics"), Target("b", f"{b_proc.url}/metrics")]

        first, failed = await reader.read(targets(b))
        assert failed == {} and set(first) == {"a", "b"}
        await asyncio.to_thread(chat, a, 7)
        await asyncio.to_thread(chat, b, 5)
        second, _ = await reader.read(targets(b))
        iv = interval(first, second, 0.0, 10.0)
        assert iv.total_requests == 12
        assert iv.success_rate == 1.0 and iv.in_flight == 0
        p95 = iv.quantile_ms(0.95)
        assert p95 is not None and p95 > 0
        assert iv.upstream_count == 12 and iv.added_latency_ms is not None

        # pod b restarts (a new process, counters from zero) and serves 3
        b.stop()
        b2 = launch.runtime(agent_doc(sim))
        await asyncio.to_thread(chat, b2, 3)
        await asyncio.to_thread(chat, a, 2)
        third, failed = await reader.read(targets(b2))
        assert failed == {}
        iv = interval(second, third, 10.0, 20.0)
        assert iv.total_requests == 5  # 2 on a, 3 on the restarted b: none lost, none twice
    finally:
        await reader.close()


@pytest.fixture
async def bad_pods() -> AsyncIterator[str]:
    """A real HTTP server whose paths misbehave as a broken pod would."""

    async def stall(_: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response(text="")

    async def flood(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        chunk = b"# " + b"x" * 65_534 + b"\n"
        for _ in range(200):  # 13 MB, past the reader's cap
            await resp.write(chunk)
        return resp

    async def refuse(_: web.Request) -> web.Response:
        return web.Response(status=503)

    async def nonsense(_: web.Request) -> web.Response:
        return web.Response(text='swiftclaw_requests_total{tier="a" 12 not prometheus\n')

    app = web.Application()
    app.router.add_get("/stall", stall)
    app.router.add_get("/flood", flood)
    app.router.add_get("/refuse", refuse)
    app.router.add_get("/nonsense", nonsense)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_a_broken_pod_is_a_failed_read_never_an_empty_one(bad_pods: str) -> None:
    reader = Reader(timeout=1.0, max_bytes=1024 * 1024)
    dead = f"http://127.0.0.1:{free_port()}/metrics"
    try:
        samples, failed = await reader.read(
            [
                Target("stall", f"{bad_pods}/stall"),
                Target("flood", f"{bad_pods}/flood"),
                Target("refuse", f"{bad_pods}/refuse"),
                Target("nonsense", f"{bad_pods}/nonsense"),
                Target("dead", dead),
            ]
        )
    finally:
        await reader.close()
    assert samples == {}
    assert failed["stall"] == "no answer within 1s"
    assert failed["flood"] == "more than 1048576 bytes"
    assert failed["refuse"] == "HTTP 503"
    assert failed["nonsense"].startswith("not a Prometheus exposition")
    assert failed["dead"] == "ClientConnectorError"


async def test_many_pods_are_read_with_bounded_concurrency(launch: Launcher) -> None:
    """Well past the concurrency bound: 200 reads of one real runtime through 8 slots."""
    sim = launch.sim()
    rt = launch.runtime(agent_doc(sim))
    reader = Reader(timeout=30.0, concurrency=8)
    try:
        samples, failed = await reader.read(
            [Target(f"p{i}", f"{rt.url}/metrics") for i in range(200)]
        )
    finally:
        await reader.close()
    assert failed == {} and len(samples) == 200


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[dict[str, object]]]]:
    got: list[dict[str, object]] = []

    async def hook(request: web.Request) -> web.Response:
        got.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook/T000/B000/secret", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}/hook/T000/B000/secret", got
    await runner.cleanup()


async def test_the_webhook_gets_each_episode_once_start_and_end(
    receiver: tuple[str, list[dict[str, object]]], tmp_path: Path
) -> None:
    url, got = receiver
    hook_file = tmp_path / "webhook-url"
    hook_file.write_text(url + "\n")
    shared = Shared(Reader(), "https://runbooks.example/runbooks", hook_file)
    key = ("FleetFailover", "sim/fast")
    active: dict[episodes.Key, float] = {}
    try:
        # ten intervals: failing from the 2nd to the 6th
        for i in range(10):
            failing = {key: "sim/fast out (timeout)"} if 1 <= i <= 5 else {}
            active, changes = episodes.track(active, failing, 1000.0 + 10 * i)
            if changes:
                await notify(shared, "team", "agent", changes)
    finally:
        await shared.reader.close()
    assert [m["swiftclaw"]["state"] for m in got] == ["started", "ended"]  # type: ignore[index]
    for m in got:
        text = str(m["text"])
        assert "team/agent" in text and "sim/fast" in text
        assert "https://runbooks.example/runbooks/fleet-failover.md" in text
        assert "secret" not in text  # the URL (a credential) is not repeated


async def test_an_unreachable_webhook_is_counted_not_raised(tmp_path: Path) -> None:
    hook_file = tmp_path / "webhook-url"
    hook_file.write_text(f"http://127.0.0.1:{free_port()}/hook")
    shared = Shared(Reader(), "https://runbooks.example", hook_file)
    try:
        change = episodes.Change(("MetricsStale", ""), True, 0.0, "0 of 3 pods read")
        await notify(shared, "team", "agent", [change])  # no exception
    finally:
        await shared.reader.close()


def test_every_episode_links_a_runbook_that_says_what_was_done() -> None:
    for kind, (page, _) in webhook.RUNBOOKS.items():
        text = (REPO / "docs" / "runbooks" / f"{page}.md").read_text()
        assert "autopilot already did" in text, (kind, page)
    payload = webhook.message("a", "n", episodes.Change(("CostSpike", ""), True, 0, "m"), "b")
    json.dumps(payload)  # JSON as Slack reads it


async def test_a_slow_provider_at_the_same_rate_is_provider_bound(launch: Launcher) -> None:
    """Open-loop load at a fixed rate through one real runtime: first to a model answering
    in 50 ms, then to one answering in 1 s (20x). In flight rises 20x with no more work for
    the gateway: no scale-out, ProviderBound."""
    from swiftclaw_operator.autopilot.loop import AgentState, evaluate
    from swiftclaw_operator.reconcile import agent_from
    from swiftclaw_operator.resources import Settings

    fast, slow = launch.sim("--latency", "fixed:50"), launch.sim("--latency", "fixed:1000")
    doc = manifest(
        [openai_provider("fast", fast), openai_provider("slow", slow)],
        [{"name": "quick", "model": "fast/m"}, {"name": "sluggish", "model": "slow/m"}],
    )
    rt = launch.runtime(doc)
    spec = {
        **doc["spec"],
        "scaling": {"minReplicas": 1, "maxReplicas": 10, "targetConcurrency": 2},
        "autopilot": {"enabled": True, "intervalSeconds": 5},
    }
    agent = agent_from(
        {"metadata": {"name": "a", "namespace": "n", "uid": "u"}, "spec": spec}, Settings()
    )
    client = openai.AsyncOpenAI(base_url=f"{rt.url}/v1", api_key=API_KEY, max_retries=0)
    reader = Reader(timeout=10.0)
    state = AgentState()
    tasks: set[asyncio.Task[object]] = set()
    decisions: dict[str, list[tuple[int, str]]] = {"quick": [], "sluggish": []}
    try:
        for tier in ("quick", "sluggish"):
            loop = asyncio.get_running_loop()
            start = loop.time()
            sent = 0
            next_read = start + 1.0
            while loop.time() - start < 10.0:
                while sent < (loop.time() - start) * 10:  # 10 requests a second, open loop
                    t = loop.create_task(
                        client.chat.completions.create(
                            model=tier, messages=[{"role": "user", "content": f"q{sent}"}]
                        )
                    )
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
                    sent += 1
                if loop.time() >= next_read:
                    samples, failed = await reader.read([Target("p0", f"{rt.url}/metrics")])
                    assert failed == {}
                    out = evaluate(agent, state, samples, 1, 0, 1, time.time())
                    if out.scale is not None:
                        decisions[tier].append((out.scale.desired, out.scale.reason))
                    next_read += 1.0
                await asyncio.sleep(0.02)
            await asyncio.gather(*tasks)
    finally:
        await reader.close()
        await client.close()
    assert all(d == (1, "Steady") for d in decisions["quick"]), decisions["quick"]
    slow_phase = decisions["sluggish"]
    assert all(desired == 1 for desired, _ in slow_phase), slow_phase  # no scale-out
    assert "ProviderBound" in {r for _, r in slow_phase}, slow_phase
