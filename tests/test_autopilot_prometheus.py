"""``spec.autopilot.prometheusURL``: the pods' samples read from a Prometheus server's HTTP
API. Against a real Prometheus scraping a real runtime process, the adapter's samples are
the direct read's (and an interval over two of them counts what was served); against a
real local HTTP server that answers as a broken Prometheus would, every failure is a failed
read, never an empty one."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from swiftclaw_devtools.processes import free_port
from swiftclaw_operator.autopilot import exposition as x
from swiftclaw_operator.autopilot import promapi
from swiftclaw_operator.autopilot.aggregate import interval
from swiftclaw_operator.autopilot.exposition import PodSample
from swiftclaw_operator.autopilot.loop import AgentState, evaluate
from swiftclaw_operator.autopilot.scraper import Reader, Target

from .conftest import Launcher, manifest, openai_provider
from .monitoring import prometheus
from .test_autopilot_live import chat
from .test_autopilot_loop import agent

# series that move while nobody sends a request: the process's CPU, the loop's lag samples
MOVING = frozenset({x.CPU, x.LOOP_LAG_SUM, x.LOOP_LAG_COUNT})


async def until_newer(reader: Reader, url: str, pod: str, after: float) -> PodSample:
    """Prometheus's sample of ``pod`` from a scrape later than ``after``."""
    deadline = asyncio.get_running_loop().time() + 120
    failed: dict[str, str] = {}
    while asyncio.get_running_loop().time() < deadline:
        samples, failed = await promapi.read(reader, url, "team", [pod])
        if pod in samples and samples[pod].at > after:
            return samples[pod]
        await asyncio.sleep(0.5)
    raise AssertionError(f"no scrape of {pod} after {after} within 120 s: {failed}")


@pytest.mark.monitoring
async def test_samples_from_a_real_prometheus_are_the_direct_reads(
    launch: Launcher, tmp_path: Path
) -> None:
    sim = launch.sim()
    doc = manifest([openai_provider("sim", sim)], [{"name": "chat", "model": "sim/fast"}])
    port = free_port()
    rt = launch.runtime(doc, "--metrics-port", str(port))
    target = Target("agent-0", f"http://127.0.0.1:{port}/metrics")
    scrape = [
        {
            "job_name": "serviceMonitor/team/agent/0",
            "metrics_path": "/metrics",
            "scrape_interval": "1s",
            "static_configs": [
                {
                    "targets": [f"127.0.0.1:{port}"],
                    # what the Prometheus operator puts on a ServiceMonitor's pod target
                    "labels": {
                        "namespace": "team",
                        "pod": "agent-0",
                        "service": "agent",
                        "container": "runtime",
                        "endpoint": "metrics",
                    },
                }
            ],
        }
    ]
    await asyncio.to_thread(chat, rt, 7)
    reader = Reader(timeout=10.0)
    try:
        with prometheus(tmp_path / "prom", scrape) as prom:
            direct, _ = await reader.read([target])
            before = direct["agent-0"]
            via = await until_newer(reader, prom.url, "agent-0", before.at)
            after = (await reader.read([target]))[0]["agent-0"]
            assert before.at < via.at <= after.at
            assert set(via.series) == set(after.series)
            assert any(k[0] == x.REQUEST_BUCKET for k in via.series)
            for key, value in via.series.items():
                if key[0] in MOVING:
                    assert before.series[key] <= value <= after.series[key], key
                else:
                    assert before.series[key] == value == after.series[key], key
            assert via.get(x.REQUESTS, tier="chat", model="sim/fast", outcome="ok") == 7

            # a pod Prometheus does not scrape is a failed read, named; the other is read
            samples, failed = await promapi.read(reader, prom.url, "team", ["agent-0", "agent-1"])
            assert set(samples) == {"agent-0"} and set(failed) == {"agent-1"}

            # an interval over two of its reads counts what was served in between
            await asyncio.to_thread(chat, rt, 5)
            later = await until_newer(reader, prom.url, "agent-0", after.at)
            iv = interval({"agent-0": via}, {"agent-0": later}, via.at, later.at)
            assert iv.total_requests == 5 and iv.upstream_count == 5
            assert iv.loop_lag_count > 0  # the runtime's own lag samples, read through it

            # the operator's interval step over Prometheus's reads: the figures, then a read
            # with nothing newer (Prometheus has not scraped since) is no interval at all
            a = agent(autopilot={"enabled": True, "prometheusURL": prom.url})
            state = AgentState()
            evaluate(a, state, {"agent-0": via}, 1, 0, 1, later.at)
            evaluate(a, state, {"agent-0": later}, 1, 0, 1, later.at + 1)
            assert state.last is not None and state.last.total_requests == 5
            out = evaluate(a, state, {"agent-0": later}, 1, 0, 1, later.at + 2)
            assert state.last.total_requests == 5 and out.scale is None
        # Prometheus gone: every pod's read fails, none reads as empty
        samples, failed = await promapi.read(reader, prom.url, "team", ["agent-0"])
        assert samples == {} and failed["agent-0"].startswith("Prometheus: ")
    finally:
        await reader.close()


# --- a broken Prometheus ------------------------------------------------------------------


def vector(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "vector", "result": items}}


def item(pod: str, name: str, value: float, **labels: str) -> dict[str, Any]:
    metric = {"__name__": name, "namespace": "team", "pod": pod, "job": "j", **labels}
    return {"metric": metric, "value": [1_800_000_000.0, str(value)]}


def healthy(query: str) -> Any:
    if query.startswith("timestamp("):
        return vector([item(p, "", 1_800_000_000.0) for p in ("a", "b")])
    return vector(
        [
            item("a", "up", 1),
            item("a", x.IN_FLIGHT, 3),
            item("a", x.REQUESTS, 5, tier="t", model="m", outcome="ok"),
            item("b", "up", 0),  # its last scrape failed: Prometheus still has up
            item("c", x.IN_FLIGHT, 99),  # not asked for
        ]
    )


def stopped_scraping(query: str) -> Any:
    """Every series there, and ``up`` 1, but from a scrape ten minutes old."""
    old = time.time() - 600
    if query.startswith("timestamp("):
        return vector([item(p, "", old) for p in ("a", "b")])
    return vector([item(p, n, 1) for p in ("a", "b") for n in ("up", x.IN_FLIGHT)])


@pytest.fixture
async def fake_prometheus() -> AsyncIterator[tuple[str, dict[str, Callable[[str], Any]]]]:
    """A real local HTTP server at /api/v1/query answering as ``behaviour['now']`` says."""
    behaviour: dict[str, Callable[[str], Any]] = {"now": healthy}
    released = asyncio.Event()

    async def query(request: web.Request) -> web.StreamResponse:
        form = await request.post()
        got = behaviour["now"](str(form["query"]))
        if isinstance(got, web.StreamResponse):
            return got
        if got == "stall":
            await released.wait()  # until the test is over
        if got == "flood":
            resp = web.StreamResponse()
            await resp.prepare(request)
            for _ in range(64):
                await resp.write(b" " * 65_536)
            return resp
        return web.Response(body=json.dumps(got) if not isinstance(got, bytes) else got)

    app = web.Application()
    app.router.add_post("/api/v1/query", query)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}", behaviour
    released.set()
    await runner.cleanup()


async def test_a_pod_is_read_only_from_its_own_healthy_series(
    fake_prometheus: tuple[str, dict[str, Callable[[str], Any]]],
) -> None:
    url, _ = fake_prometheus
    reader = Reader()
    try:
        samples, failed = await promapi.read(reader, url, "team", ["a", "b", "Bad/Name"])
    finally:
        await reader.close()
    assert set(samples) == {"a"}
    a = samples["a"]
    assert a.at == 1_800_000_000.0
    # the target's labels (namespace, pod, job) are gone: the pod's own exposition's keys
    assert a.series == {
        (x.IN_FLIGHT, ()): 3.0,
        (x.REQUESTS, (("model", "m"), ("outcome", "ok"), ("tier", "t"))): 5.0,
    }
    assert failed == {
        "b": "Prometheus's last scrape of it failed",
        "Bad/Name": "not a Kubernetes name",
    }


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (lambda q: web.Response(status=503), "Prometheus: HTTP 503"),
        (lambda q: b"<html>not json", "Prometheus: not JSON"),
        (lambda q: {"status": "error", "errorType": "bad_data"}, "Prometheus: not a successful"),
        (
            lambda q: {"status": "success", "data": {"resultType": "matrix", "result": []}},
            "Prometheus: not an instant vector",
        ),
        (lambda q: vector([{"metric": {}, "value": [1, {"x": 1}]}]), "Prometheus: could not"),
        (lambda q: "flood", "Prometheus: more than"),
        (lambda q: "stall", "Prometheus: no answer within"),
        (lambda q: vector([]), "no series in Prometheus"),  # nothing scraped: not zero
        (stopped_scraping, "Prometheus last scraped it 6"),  # its lookback answers
    ],
)
async def test_a_broken_prometheus_fails_every_read_never_reads_empty(
    fake_prometheus: tuple[str, dict[str, Callable[[str], Any]]], answer: Any, reason: str
) -> None:
    url, behaviour = fake_prometheus
    behaviour["now"] = answer
    reader = Reader()
    try:
        samples, failed = await promapi.read(
            reader, url, "team", ["a", "b"], timeout=1.0, max_bytes=1024 * 1024
        )
    finally:
        await reader.close()
    assert samples == {}
    assert set(failed) == {"a", "b"}
    assert all(why.startswith(reason) for why in failed.values()), failed


def test_the_selector_names_only_the_agents_pods() -> None:
    series, stamps = promapi.queries("team", ["agent-7d9.x", "agent-2"])
    assert 'namespace="team",pod=~"agent-2|agent-7d9\\\\.x"' in series
    assert stamps == 'timestamp(up{namespace="team",pod=~"agent-2|agent-7d9\\\\.x"})'
    assert all(name in series for name in x.WANTED)
