"""Liveness, readiness, the detailed health report (with a real Redis) and /metrics."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import openai
import pytest

from swiftclaw_devtools.processes import start_redis

from .conftest import API_KEY, Launcher, manifest, openai_provider


def get(url: str, key: str | None = None) -> tuple[int, bytes]:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return int(r.status), bytes(r.read())
    except urllib.error.HTTPError as err:
        return int(err.code), bytes(err.read())


def health(url: str, key: str | None = API_KEY) -> tuple[int, dict[str, Any]]:
    """``/health`` as an operator with an API key sees it (``key=None``: as anyone does)."""
    status, body = get(f"{url}/health", key)
    return status, dict(json.loads(body))


def test_health_reports_providers_redis_and_memory(launch: Launcher) -> None:
    redis = start_redis(log_path=launch.folder / "redis.log")
    launch.procs.append(redis)
    a, b = launch.sim(), launch.sim()
    rt = launch.runtime(
        manifest(
            [openai_provider("a", a), openai_provider("b", b)],
            [{"name": "t", "model": "a/m", "fallbacks": ["b/m"]}],
        ),
        "--redis-url",
        f"redis://127.0.0.1:{redis.port}/0",
    )

    assert get(f"{rt.url}/healthz")[0] == 200
    assert get(f"{rt.url}/readyz")[0] == 200
    status, body = health(rt.url)
    assert status == 200 and body["status"] == "ok"
    assert body["checks"]["providers"]["a"]["status"] == "ok"
    # without a key: the verdict only, nothing about the deployment's insides
    anon_status, anon = health(rt.url, key=None)
    assert anon_status == 200 and anon == {"status": "ok", "ready": True, "draining": False}
    assert body["checks"]["providers"]["a"]["breakers"] == {"a/m": "closed"}
    assert body["checks"]["redis"]["status"] == "ok"
    assert body["checks"]["memory"]["rssBytes"] > 10_000_000

    a.kill()
    redis.kill()
    import time

    time.sleep(2.1)  # the report is cached for 2 s
    status, body = health(rt.url)
    assert status == 503 and body["status"] == "fail"  # Redis down fails the report
    assert body["checks"]["providers"]["a"]["status"] == "fail"
    assert "cannot connect" in body["checks"]["providers"]["a"]["error"]
    assert body["checks"]["providers"]["b"]["status"] == "ok"
    assert body["checks"]["redis"]["status"] == "fail"
    # A provider or Redis outage never makes the pod unready or dead.
    assert get(f"{rt.url}/readyz")[0] == 200
    assert get(f"{rt.url}/healthz")[0] == 200


def test_metrics_cover_requests_latency_tokens_and_in_flight(launch: Launcher) -> None:
    up = launch.sim("--latency", "fixed:5")
    rt = launch.runtime(manifest([openai_provider("up", up)], [{"name": "t", "model": "up/m"}]))
    c = openai.OpenAI(base_url=f"{rt.url}/v1", api_key=API_KEY, max_retries=0)
    out = c.chat.completions.create(model="t", messages=[{"role": "user", "content": "count me"}])
    assert out.usage is not None
    chunks = list(
        c.chat.completions.create(
            model="t",
            messages=[{"role": "user", "content": "s"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    streamed = [x.usage for x in chunks if x.usage is not None]
    assert len(streamed) == 1 and streamed[0].completion_tokens > 0
    status, raw = get(f"{rt.url}/metrics")
    text = raw.decode()
    assert status == 200
    assert 'swiftclaw_requests_total{model="up/m",outcome="ok",tier="t"} 2.0' in text
    assert 'swiftclaw_request_duration_seconds_count{stream="false",tier="t"} 1.0' in text
    assert 'swiftclaw_request_duration_seconds_count{stream="true",tier="t"} 1.0' in text
    assert 'swiftclaw_request_duration_seconds_bucket{le="0.005",stream="false",tier="t"}' in text
    assert (
        'swiftclaw_request_duration_seconds_bucket{le="60.0",stream="false",tier="t"} 1.0' in text
    )
    assert 'swiftclaw_time_to_first_token_seconds_count{tier="t"} 1.0' in text
    assert (
        'swiftclaw_upstream_duration_seconds_count{model="m",outcome="ok",provider="up"} 2.0'
        in text
    )
    # The out-token counter is exactly the completion tokens the two responses reported.
    tokens_out = [
        line
        for line in text.splitlines()
        if line.startswith('swiftclaw_tokens_total{direction="out"')
    ]
    assert tokens_out == [
        f'swiftclaw_tokens_total{{direction="out",model="up/m",tier="t"}} '
        f"{float(out.usage.completion_tokens + streamed[0].completion_tokens)}"
    ]
    assert "swiftclaw_requests_in_flight 0.0" in text


def test_cost_is_counted_at_the_manifest_prices(launch: Launcher) -> None:
    up = launch.sim("--latency", "fixed:1")
    rt = launch.runtime(
        manifest(
            [openai_provider("up", up)],
            [{"name": "t", "model": "up/m", "inputPer1M": 2.0, "outputPer1M": 10.0}],
        )
    )
    c = openai.OpenAI(base_url=f"{rt.url}/v1", api_key=API_KEY, max_retries=0)
    out = c.chat.completions.create(model="t", messages=[{"role": "user", "content": "price"}])
    assert out.usage is not None
    expected = (out.usage.prompt_tokens * 2.0 + out.usage.completion_tokens * 10.0) / 1e6
    line = next(
        x
        for x in get(f"{rt.url}/metrics")[1].decode().splitlines()
        if x.startswith('swiftclaw_cost_usd_total{model="up/m",tier="t"}')
    )
    assert float(line.split()[-1]) == pytest.approx(expected)
