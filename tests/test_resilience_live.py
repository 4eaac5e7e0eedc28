"""Failures of real provider processes: kill, 429 + Retry-After, hang, 5xx, broken streams."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest

from swiftclaw_devtools.processes import Proc, sim_control

from .conftest import API_KEY, Launcher, manifest, openai_provider


def client(rt: Proc, timeout: float = 30) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{rt.url}/v1", api_key=API_KEY, max_retries=0, timeout=timeout)


def control(sim: Proc, **body: Any) -> None:
    sim_control(sim.url, **body)


def sim_stats(sim: Proc) -> dict[str, Any]:
    with urllib.request.urlopen(f"{sim.url}/_sim/stats", timeout=5) as r:
        return dict(json.load(r))


def metrics(rt: Proc) -> str:
    with urllib.request.urlopen(f"{rt.url}/metrics", timeout=5) as r:
        return str(r.read().decode())


class ConnectionCounter:
    """Listens where a dead provider was; counts each TCP connection and drops it at once."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(128)
        self.sock.settimeout(0.1)
        self.times: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.times.append(time.monotonic())
            conn.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            conn.close()  # linger 0: a reset, as from a crashed host

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def two_providers(
    launch: Launcher, backup_latency: str = "fixed:2", **spec: Any
) -> tuple[Proc, Proc, Proc]:
    primary, backup = launch.sim("--latency", "fixed:2"), launch.sim("--latency", backup_latency)
    doc = manifest(
        [openai_provider("primary", primary), openai_provider("backup", backup)],
        [{"name": "main", "model": "primary/m1", "fallbacks": ["backup/m2"]}],
        **spec,
    )
    return primary, backup, launch.runtime(doc)


def test_killed_primary_fails_over_and_breaker_shields_it(launch: Launcher) -> None:
    open_seconds, threshold = 1, 3
    # A 30 ms fallback makes the 100 requests span about three open periods.
    primary, _, rt = two_providers(
        launch,
        backup_latency="fixed:30",
        reliability={
            "timeoutSeconds": 10,
            "retry": {"maxAttempts": 2, "initialBackoffMs": 10, "maxBackoffMs": 50},
            "circuitBreaker": {
                "failureThreshold": threshold,
                "windowSeconds": 30,
                "openSeconds": open_seconds,
                "halfOpenProbes": 1,
            },
        },
    )
    c = client(rt)
    for _ in range(3):  # warm: the runtime holds keep-alive connections to the primary
        c.chat.completions.create(model="main", messages=[{"role": "user", "content": "warm"}])

    primary.kill()
    counter = ConnectionCounter(primary.port)
    try:
        started = time.monotonic()
        served_by = []
        for i in range(100):
            r = c.chat.completions.with_raw_response.create(
                model="main", messages=[{"role": "user", "content": f"question {i}"}]
            )
            assert r.parse().choices[0].message.content
            served_by.append(
                (r.headers["x-swiftclaw-model"], int(r.headers["x-swiftclaw-attempts"]))
            )
        elapsed = time.monotonic() - started
    finally:
        counter.close()

    assert all(model == "backup/m2" for model, _ in served_by)
    # Once open, requests go straight to the fallback: one attempt each.
    assert sum(1 for _, attempts in served_by if attempts == 1) >= 95
    # The dead port saw the failures that opened the breaker, then only half-open probes
    # (one per open period at most).
    probes_allowed = int(elapsed / open_seconds) + 1
    assert elapsed > 2 * open_seconds
    assert 1 <= len(counter.times) <= threshold + probes_allowed, (len(counter.times), elapsed)
    print(
        f"dead provider: {len(counter.times)} connections in {elapsed:.2f}s "
        f"(threshold {threshold}, probes allowed {probes_allowed})"
    )
    text = metrics(rt)
    assert 'swiftclaw_fallbacks_total{model="backup/m2",tier="main"}' in text
    assert (
        'swiftclaw_requests_total{model="backup/m2",outcome="fallback",tier="main"} 100.0' in text
    )


def test_breaker_state_is_exported_and_recovers(launch: Launcher) -> None:
    primary, _, rt = two_providers(
        launch,
        reliability={
            "retry": {"maxAttempts": 1, "initialBackoffMs": 10, "maxBackoffMs": 10},
            "circuitBreaker": {"failureThreshold": 2, "openSeconds": 1},
        },
    )
    c = client(rt)
    control(primary, mode="error")
    for _ in range(3):
        c.chat.completions.create(model="main", messages=[{"role": "user", "content": "x"}])
    assert 'swiftclaw_circuit_breaker_state{model="m1",provider="primary"} 1.0' in metrics(rt)
    control(primary, mode="normal")
    time.sleep(1.1)
    r = c.chat.completions.with_raw_response.create(
        model="main", messages=[{"role": "user", "content": "x"}]
    )
    assert r.headers["x-swiftclaw-model"] == "primary/m1"  # the half-open probe succeeded
    assert 'swiftclaw_circuit_breaker_state{model="m1",provider="primary"} 0.0' in metrics(rt)


def test_retry_after_is_honoured_before_calling_the_provider_again(launch: Launcher) -> None:
    only = launch.sim("--latency", "fixed:1")
    rt = launch.runtime(
        manifest(
            [openai_provider("only", only)],
            [{"name": "t", "model": "only/m"}],
            reliability={
                "timeoutSeconds": 10,
                "retry": {"maxAttempts": 3, "initialBackoffMs": 10, "maxBackoffMs": 20},
            },
        )
    )
    control(only, mode="ratelimit", count=1, retryAfter=2)
    c = client(rt)

    def ask(i: int) -> str:
        out = c.chat.completions.create(model="t", messages=[{"role": "user", "content": f"q{i}"}])
        return out.choices[0].message.content or ""

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(ask, 0)
        time.sleep(0.3)
        second = pool.submit(ask, 1)  # arrives during the cooldown: must wait too
        assert first.result(timeout=15) and second.result(timeout=15)
    arrivals = sim_stats(only)["arrivals"]
    assert len(arrivals) == 3
    assert all(t - arrivals[0] >= 2.0 for t in arrivals[1:]), arrivals


def test_the_wait_a_429_asked_for_and_the_loop_lag_are_exported(launch: Launcher) -> None:
    """What the operator's autopilot reads: the Retry-After a pod still waits out per
    provider (capped by maxRetryAfterSeconds, counting down, 0 for the others) and the
    event loop's lag, sampled by the runtime itself with no request needed."""
    only, other = launch.sim(), launch.sim()
    rt = launch.runtime(
        manifest(
            [openai_provider("only", only), openai_provider("other", other)],
            [{"name": "t", "model": "only/m"}, {"name": "u", "model": "other/m"}],
            reliability={"retry": {"maxAttempts": 1, "maxRetryAfterSeconds": 300}},
        )
    )
    control(only, mode="ratelimit", count=1, retryAfter=3600)
    with pytest.raises(openai.APIStatusError):
        client(rt).chat.completions.create(model="t", messages=[{"role": "user", "content": "x"}])

    def gauge(name: str, provider: str) -> float:
        prefix = f'{name}{{provider="{provider}"}} '
        [line] = [ln for ln in metrics(rt).splitlines() if ln.startswith(prefix)]
        return float(line[len(prefix) :])

    wait = gauge("swiftclaw_upstream_retry_after_seconds", "only")
    assert 250 < wait <= 300  # the cap, counting down
    assert gauge("swiftclaw_upstream_retry_after_seconds", "other") == 0.0
    deadline = time.monotonic() + 60
    count = 0.0
    while count < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
        line = next(
            ln
            for ln in metrics(rt).splitlines()
            if ln.startswith("swiftclaw_event_loop_lag_seconds_count ")
        )
        count = float(line.split()[-1])
    assert count >= 2  # sampled every half second


def test_hanging_upstream_times_out_within_the_deadline(launch: Launcher) -> None:
    hung = launch.sim()
    rt = launch.runtime(
        manifest(
            [openai_provider("hung", hung)],
            [{"name": "t", "model": "hung/m"}],
            reliability={"timeoutSeconds": 2},
        )
    )
    control(hung, mode="hang")
    c = client(rt)
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as info:
        c.chat.completions.create(model="t", messages=[{"role": "user", "content": "x"}])
    elapsed = time.monotonic() - started
    assert info.value.status_code == 504
    assert elapsed <= 2.5, elapsed
    body = info.value.body
    assert isinstance(body, dict) and body["code"] == "upstream_timeout"
    assert "2s deadline" in body["message"]
    assert info.value.response.headers["x-should-retry"] == "false"
    # streams have the same deadline until their first chunk
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as info:
        list(
            c.chat.completions.create(
                model="t", messages=[{"role": "user", "content": "x"}], stream=True
            )
        )
    assert info.value.status_code == 504 and time.monotonic() - started <= 2.5


def test_server_errors_are_retried_then_fall_back(launch: Launcher) -> None:
    primary, _, rt = two_providers(launch)
    control(primary, mode="error", count=1)
    r = client(rt).chat.completions.with_raw_response.create(
        model="main", messages=[{"role": "user", "content": "x"}]
    )
    assert r.headers["x-swiftclaw-model"] == "primary/m1"  # second attempt succeeded
    assert r.headers["x-swiftclaw-attempts"] == "2"
    assert sim_stats(primary)["requests"] == 2
    control(primary, mode="error")
    r = client(rt).chat.completions.with_raw_response.create(
        model="main", messages=[{"role": "user", "content": "x"}]
    )
    assert r.headers["x-swiftclaw-model"] == "backup/m2"
    assert (
        'swiftclaw_upstream_retries_total{model="m1",provider="primary",reason="server"}'
        in metrics(rt)
    )


def test_everything_down_is_a_503_that_says_why(launch: Launcher) -> None:
    primary, backup, rt = two_providers(launch)
    control(primary, mode="error")
    control(backup, mode="error")
    with pytest.raises(openai.APIStatusError) as info:
        client(rt).chat.completions.create(
            model="main", messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.status_code == 503
    body = info.value.body
    assert isinstance(body, dict)
    assert body["code"] == "upstream_unavailable"
    assert "primary/m1: server error (HTTP 500)" in body["message"]
    assert "backup/m2: server error (HTTP 500)" in body["message"]
    # the providers' own words may hold account ids or addresses: the log has them, the
    # client does not
    assert "simulated upstream failure" not in body["message"]
    assert rt.log_path is not None
    assert "simulated upstream failure" in rt.log_path.read_text()


def test_stream_falls_back_transparently_before_the_first_byte(launch: Launcher) -> None:
    primary, _, rt = two_providers(launch)
    control(primary, mode="error")
    raw = client(rt).chat.completions.with_raw_response.create(
        model="main", messages=[{"role": "user", "content": "stream"}], stream=True
    )
    assert raw.headers["x-swiftclaw-model"] == "backup/m2"
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert len(text.split()) >= 8


def test_stream_broken_after_first_byte_ends_with_an_error_event(launch: Launcher) -> None:
    primary, _, rt = two_providers(launch)
    control(primary, mode="cutoff")
    got: list[str] = []
    with pytest.raises(openai.APIError) as info:
        for chunk in client(rt).chat.completions.create(
            model="main", messages=[{"role": "user", "content": "stream"}], stream=True
        ):
            got.append(chunk.choices[0].delta.content or "")
    assert got, "the stream had started before it broke"
    assert "failed after the stream started" in str(info.value)
    assert 'swiftclaw_errors_total{error_class="stream_interrupted"} 1.0' in metrics(rt)
