"""Soak: a long mixed workload through the runtime, watching for anything that leaks.

Three simulated providers (``swiftclaw sim``) behind one runtime (``swiftclaw run``) whose
tier falls back primary -> backup -> spare. Every provider answers 2 % of calls with a 500
(``--error-rate``) and holds 1 % open without answering (``--hang-rate``). The load: C
clients on keep-alive connections (raw HTTP/1.1 over asyncio streams), each sending its
next request when the last one ends; 40 % of requests are streams, of which an eighth
(5 % of all requests) hang up after two or three chunks. Halfway, the primary is stopped
by pid and started again on the same port.

Sampled after a warm-up (start), every tenth of the run (halfway, before the restart:
middle), as the last request is sent (end), and once the load has stopped and settled: the
runtime's RSS, open file descriptors and sockets, and from its ``/metrics`` (when present)
the upstream connection slots in use, the connections open and the asyncio tasks; from each
simulator its open streams and hung requests. Judged: RSS and descriptors flat within 5 %
over start, middle and end (the other samples show transients, e.g. connections opened to
the fallbacks during the restart), and no slot held, stream open or request hung once the
load has stopped.

    python -m bench.soak [--requests 100000] [--concurrency 64] [--max-connections 64]
                         [--runtime-src DIR] [--label NAME] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis as sync_redis
import redis.asyncio as aioredis
import yaml

from bench import hostile
from swiftclaw_devtools.processes import Proc, start_redis, start_runtime, start_sim, swiftclaw

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
KEY = "sk-soak-0000000001"
HOSTILE_KEY = "sk-soak-0000000666"  # a valid key of the same tenant, another user
PROVIDERS = ("primary", "backup", "spare")
SLOTS = "swiftclaw_upstream_connections_in_use"
OPEN = "swiftclaw_upstream_connections_open"
TASKS = "swiftclaw_asyncio_tasks"
CACHE_REDIS_BYTES = 256 * 1024 * 1024  # the cache Redis's maxmemory (allkeys-lru)
SLOW_AT_ONCE = 32  # hostile clients holding a socket for an edge's deadline at once


@dataclass(frozen=True)
class Mix:
    """What the workload is made of (fractions of all requests) and how providers misbehave."""

    streams: float = 0.40  # streams, the hang-ups included
    hangups: float = 0.05  # streams whose client closes the connection after 2-3 chunks
    error_rate: float = 0.02  # each provider's 500s
    hang_rate: float = 0.01  # each provider's requests held open unanswered
    latency: str = "uniform:5,25"
    stream_pace_ms: float = 2.0
    restart: bool = True  # stop and start the primary halfway
    hostile: float = 0.0  # requests sent by hostile clients (see HOSTILE), beside the rest


@dataclass(frozen=True)
class Limits:
    """The runtime's deadline, per-attempt timeout (when its manifest has the field) and pool."""

    timeout_seconds: float = 5.0
    attempt_timeout_seconds: float = 1.0
    max_connections: int = 64
    # the edge's deadlines (run flags) with shared state: small, so that slowloris senders
    # and stalled readers are cut off within the run
    header_timeout_seconds: float = 2.0
    write_timeout_seconds: float = 1.0


# --- the processes ---------------------------------------------------------------------


@dataclass
class Stack:
    """The simulators and the runtime, each stopped by its pid."""

    folder: Path
    runtime: Proc
    sims: dict[str, Proc]
    sim_args: list[str]
    runtime_src: Path | None
    attempt_timeout: bool  # whether the runtime's manifest took attemptTimeoutSeconds
    redis: Proc | None = None  # the state Redis (limits, budgets, spend), with shared state
    limits: Limits = Limits()
    cache_redis: Proc | None = None  # the evictable one (the responses' owners), beside it

    def restart_sim(self, name: str) -> float:
        """Stop a simulator by pid and start it again on its port; the seconds it took."""
        started = time.monotonic()
        old = self.sims[name]
        old.stop()
        self.sims[name] = start_sim(
            old.port,
            *self.sim_args,
            "--seed",
            str(PROVIDERS.index(name) + 100),
            log_path=self.folder / f"sim-{name}-restarted.log",
        )
        return time.monotonic() - started

    def stop(self) -> None:
        self.runtime.stop()
        for sim in self.sims.values():
            sim.stop()
        for r in (self.redis, self.cache_redis):
            if r is not None:
                r.stop()


def manifest(
    sims: dict[str, Proc], limits: Limits, attempt_timeout: bool, shared_state: bool = False
) -> dict[str, Any]:
    """The soak's agent; with ``shared_state``, also per-user limits and a budget (counted in
    Redis), end users named by the request, and a Gemini-shaped tier for schema bombs."""
    reliability: dict[str, Any] = {
        "timeoutSeconds": limits.timeout_seconds,
        "retry": {"maxAttempts": 2, "initialBackoffMs": 10, "maxBackoffMs": 100},
        # Background errors (2 % of a busy provider) must not open a breaker; a stopped
        # provider (every call failing at once) must.
        "circuitBreaker": {
            "failureThreshold": 100,
            "windowSeconds": 1,
            "openSeconds": 1,
            "halfOpenProbes": 1,
        },
    }
    if attempt_timeout:
        reliability["attemptTimeoutSeconds"] = limits.attempt_timeout_seconds
    providers: list[dict[str, Any]] = [
        {
            "name": name,
            "type": "openai-compatible",
            "baseURL": f"{sim.url}/v1",
            "maxConnections": limits.max_connections,
        }
        for name, sim in sims.items()
    ]
    tiers: list[dict[str, Any]] = [
        {"name": "main", "model": "primary/m1", "fallbacks": ["backup/m2", "spare/m3"]}
    ]
    spec: dict[str, Any] = {
        "providers": providers,
        "models": {"tiers": tiers, "routing": {"strategy": "fixed", "default": "main"}},
        "cache": {"exact": {"enabled": False}, "redis": {"mode": "none"}},
        "reliability": reliability,
    }
    if shared_state:
        # The spare simulator answers Gemini's shape too; the tier has no fallback, so a
        # schema it refuses is the client's 400, not another model's answer.
        providers.append(
            {"name": "gem", "type": "gemini", "baseURL": f"{sims['spare'].url}/v1beta"}
        )
        tiers.append({"name": "gem", "model": "gem/g1"})
        for tier in tiers:
            tier.update(inputPer1M=1.0, outputPer1M=2.0)
        spec["auth"] = {"userFromRequest": True}
        # Far above what the normal clients send (one user, ~1,000 requests a second):
        # counted per user and per request in Redis, never refusing them.
        spec["rateLimits"] = {
            "perUser": {"requestsPerMinute": 1_000_000, "tokensPerMinute": 1_000_000_000}
        }
        spec["budget"] = {"dailyUSD": 100_000, "perUserDailyUSD": 10_000, "onExceeded": "reject"}
    return {
        "apiVersion": "swiftclaw.dev/v1alpha1",
        "kind": "AgentDeployment",
        "metadata": {"name": "soak", "namespace": "bench"},
        "spec": spec,
    }


def runtime_env(runtime_src: Path | None) -> dict[str, str]:
    """The runtime's environment: its code from ``runtime_src`` (an ``agent-runtime``) if given."""
    return {"PYTHONPATH": str(runtime_src)} if runtime_src else {}


def accepts(doc: dict[str, Any], path: Path, env: dict[str, str]) -> bool:
    """Whether ``swiftclaw validate`` (of the runtime under test) accepts a manifest."""
    path.write_text(yaml.safe_dump(doc))
    done = subprocess.run(
        swiftclaw("validate", str(path)),
        env={**os.environ, **env},
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


def start_stack(
    folder: Path,
    mix: Mix,
    limits: Limits,
    runtime_src: Path | None = None,
    shared_state: bool = False,
) -> Stack:
    """The simulators and the runtime; with ``shared_state`` (which a hostile mix needs) a
    Redis for the runtime's limits and budgets, and the edge's deadlines of ``limits``."""
    sim_args = [
        "--latency",
        mix.latency,
        "--stream-pace-ms",
        f"{mix.stream_pace_ms:g}",
        "--error-rate",
        f"{mix.error_rate:g}",
        "--hang-rate",
        f"{mix.hang_rate:g}",
    ]
    sims: dict[str, Proc] = {}
    redis: Proc | None = None
    cache_redis: Proc | None = None
    try:
        for i, name in enumerate(PROVIDERS):
            sims[name] = start_sim(
                None, *sim_args, "--seed", str(i + 1), log_path=folder / f"sim-{name}.log"
            )
        env = runtime_env(runtime_src)
        path = folder / "agent.yaml"
        attempt_timeout = accepts(manifest(sims, limits, True, shared_state), path, env)
        path.write_text(yaml.safe_dump(manifest(sims, limits, attempt_timeout, shared_state)))
        keys = folder / "keys.yaml"
        keys.write_text(
            yaml.safe_dump(
                {
                    "keys": [
                        {"key": KEY, "tenant": "bench", "user": "soak"},
                        {"key": HOSTILE_KEY, "tenant": "bench", "user": "mallory"},
                    ]
                }
            )
        )
        extra: list[str] = []
        if shared_state:
            # As the operator runs them: a state Redis (noeviction, Redis's default) for
            # the counters and spend, and an evictable cache one for the responses' owners.
            redis = start_redis(log_path=folder / "redis.log")
            cache_redis = start_redis(log_path=folder / "redis-cache.log")
            with sync_redis.Redis(port=cache_redis.port) as client:
                client.config_set("maxmemory", str(CACHE_REDIS_BYTES))
                client.config_set("maxmemory-policy", "allkeys-lru")
            extra = [
                "--redis-url",
                f"redis://127.0.0.1:{cache_redis.port}/0",
                "--state-redis-url",
                f"redis://127.0.0.1:{redis.port}/0",
                "--header-timeout-seconds",
                f"{limits.header_timeout_seconds:g}",
                "--write-timeout-seconds",
                f"{limits.write_timeout_seconds:g}",
            ]
        runtime = start_runtime(
            path,
            None,
            "--api-keys",
            str(keys),
            "--log-level",
            "warning",
            "--log-format",
            "text",
            *extra,
            log_path=folder / "runtime.log",
            env=env,
        )
    except BaseException:
        for sim in sims.values():
            sim.stop()
        for r in (redis, cache_redis):
            if r is not None:
                r.stop()
        raise
    return Stack(
        folder, runtime, sims, sim_args, runtime_src, attempt_timeout, redis, limits, cache_redis
    )


# --- the client ------------------------------------------------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection, reopened after anything that breaks it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(
        self, head: bytes, body: bytes, hangup_after: int | None = None
    ) -> tuple[int, bytes, bool]:
        """Send a request; returns (status, body, hung up). Raises on a broken connection.

        With ``hangup_after``, a chunked answer is read for that many chunks, then the
        connection is closed (the client goes away mid-stream).
        """
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
        reader, writer = self._reader, self._writer
        assert reader is not None
        try:
            writer.write(head + b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            status_line, headers = await _read_head(reader)
            status = int(status_line.split(b" ", 2)[1])
            if b"content-length" in headers:
                data = await reader.readexactly(int(headers[b"content-length"]))
            elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
                data, complete = await _read_chunked(reader, hangup_after)
                if not complete:
                    self.close()
                    return status, data, True
            else:
                data = await reader.read()
                self.close()
            if headers.get(b"connection", b"").lower() == b"close":
                self.close()
            return status, data, False
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


async def _read_head(reader: asyncio.StreamReader) -> tuple[bytes, dict[bytes, bytes]]:
    raw = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = raw[:-4].split(b"\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return status_line, headers


async def _read_chunked(
    reader: asyncio.StreamReader, hangup_after: int | None
) -> tuple[bytes, bool]:
    """The body and whether it was read to its end (False: hung up after some chunks)."""
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                pass
            return b"".join(parts), True
        parts.append((await reader.readexactly(size + 2))[:-2])
        if hangup_after is not None and len(parts) >= hangup_after:
            return b"".join(parts), False


async def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """A GET on a connection of its own (for /metrics and /_sim/stats)."""
    conn = Connection(port)
    try:
        async with asyncio.timeout(timeout):
            status, body, _ = await conn.request(
                f"GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n".encode(), b""
            )
        return status, body
    finally:
        conn.close()


# --- the workload ----------------------------------------------------------------------


@dataclass
class Counts:
    """How the requests ended. ``outcomes``: ``ok``, ``aborted`` (the client hung up on
    purpose), ``interrupted`` (a 200 stream that ended with an error event), ``incomplete``
    (a stream without ``[DONE]``), a non-2xx status (``"504"``), or ``error:<exception>``."""

    requests: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"plain": [], "stream": []})
    # the hostile clients' requests, apart: "kind:ending" (see bench.hostile.EXPECTED)
    hostile: Counter[str] = field(default_factory=Counter)
    hostile_latencies: dict[str, list[float]] = field(default_factory=dict)
    users_named: int = 0  # end users named by hostile requests (a new one each)

    @property
    def ok(self) -> int:
        return self.outcomes["ok"]

    @property
    def aborted(self) -> int:
        return self.outcomes["aborted"]

    @property
    def failures(self) -> int:
        """Requests that should have succeeded and did not."""
        return self.requests - self.ok - self.aborted


@dataclass
class Sample:
    label: str
    seconds: float  # since the load started
    requests_done: int
    rss_kib: int | None
    fds: int | None
    sockets: int | None
    slots_in_use: float | None  # None: the runtime has no such metric
    connections_open: float | None
    asyncio_tasks: float | None
    sim_open_streams: int
    sim_hanging: int
    redis_used_memory: int | None = None  # bytes (INFO memory), with shared state
    redis_keys: int | None = None  # DBSIZE
    cache_redis_used_memory: int | None = None  # the cache Redis's (evictable)
    cache_redis_keys: int | None = None
    hostile_done: int = 0
    users_named: int = 0  # end users named so far by hostile requests
    # TCP connections to the runtime's port it holds (established, or closed by the client
    # and not yet by the runtime): none once every client has gone
    client_connections: int | None = None


@dataclass
class Result:
    counts: Counts
    samples: list[Sample]
    seconds: float
    restart_seconds: float | None
    sim_stats: dict[str, dict[str, Any]]  # at the end (the primary's since its restart)
    sim_hangs: int  # requests the simulators held open, before and after the restart
    stopped_early: str | None = None
    rejected: dict[str, float] = field(default_factory=dict)  # the runtime's, by reason


def proc_figures(pid: int) -> tuple[int | None, int | None, int | None]:
    """RSS (KiB), open descriptors and sockets of a process, from /proc."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        match = re.search(r"VmRSS:\s+(\d+)", status)
        rss = int(match.group(1)) if match else None
        fds = sockets = 0
        for fd in os.listdir(f"/proc/{pid}/fd"):
            fds += 1
            try:
                sockets += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
            except OSError:  # closed meanwhile
                continue
    except OSError:
        return None, None, None
    return rss, fds, sockets


def client_connections(port: int) -> int | None:
    """Connections to ``port`` on loopback that its server holds: ESTABLISHED (01) or
    CLOSE_WAIT (08, the client has closed), from /proc/net/tcp{,6}."""
    held = 0
    try:
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with open(table) as f:
                next(f)
                for line in f:
                    local, _, state = line.split()[1:4]
                    if int(local.rsplit(":", 1)[1], 16) == port and state in ("01", "08"):
                        held += 1
    except (OSError, ValueError, IndexError):
        return None
    return held


def metric_sum(text: str, name: str) -> float | None:
    """Sum of a metric's samples over its labels; None when the runtime does not export it."""
    if f"# TYPE {name} " not in text:
        return None
    total = 0.0
    for m in re.finditer(rf"^{name}(?:\{{[^}}]*\}})? ([-+0-9.eE]+|NaN)$", text, re.M):
        total += float(m.group(1))
    return total


async def runtime_metrics(stack: Stack) -> str:
    try:
        _, body = await http_get(stack.runtime.port, "/metrics")
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return ""
    return body.decode()


async def sim_stats(stack: Stack) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, sim in stack.sims.items():
        try:
            _, body = await http_get(sim.port, "/_sim/stats")
            stats = json.loads(body)
            stats.pop("arrivals", None)
            out[name] = stats
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
            out[name] = {}
    return out


async def redis_figures(proc: Proc | None) -> tuple[int | None, int | None]:
    """A Redis's used_memory (bytes) and its number of keys."""
    if proc is None:
        return None, None
    client = aioredis.Redis(port=proc.port)
    try:
        info = await client.info("memory")
        return int(info["used_memory"]), int(await client.dbsize())
    except (OSError, aioredis.RedisError):
        return None, None
    finally:
        await client.aclose()


def rejected(text: str) -> dict[str, float]:
    """swiftclaw_requests_rejected_total by reason."""
    out: dict[str, float] = {}
    pattern = r'^swiftclaw_requests_rejected_total\{reason="([^"]*)"\} ([-+0-9.eE]+)$'
    for m in re.finditer(pattern, text, re.M):
        out[m.group(1)] = float(m.group(2))
    return out


async def sample(
    stack: Stack, label: str, started: float, done: int, counts: Counts | None = None
) -> Sample:
    rss, fds, sockets = proc_figures(stack.runtime.pid)
    text = await runtime_metrics(stack)
    sims = await sim_stats(stack)
    memory, keys = await redis_figures(stack.redis)
    cache_memory, cache_keys = await redis_figures(stack.cache_redis)
    return Sample(
        label,
        round(time.monotonic() - started, 2),
        done,
        rss,
        fds,
        sockets,
        metric_sum(text, SLOTS),
        metric_sum(text, OPEN),
        metric_sum(text, TASKS),
        sum(int(s.get("open_streams", 0)) for s in sims.values()),
        sum(int(s.get("hanging", 0)) for s in sims.values()),
        memory,
        keys,
        cache_memory,
        cache_keys,
        sum(counts.hostile.values()) if counts else 0,
        counts.users_named if counts else 0,
        client_connections(stack.runtime.port),
    )


def classify(status: int, body: bytes, stream: bool, hung_up: bool) -> str:
    if hung_up:
        return "aborted"
    if not 200 <= status < 300:
        return str(status)
    if stream:
        if b'"stream_interrupted"' in body:
            return "interrupted"
        if not body.endswith(b"data: [DONE]\n\n"):
            return "incomplete"
    return "ok"


async def quiet(
    stack: Stack, started: float, done: int, settle: float, wait: float, counts: Counts
) -> Sample:
    """The sample once the load has stopped: after ``settle`` s, then until nothing is held
    (slots, open streams, hung requests) or ``wait`` more seconds have passed."""
    await asyncio.sleep(settle)
    deadline = time.monotonic() + wait
    while True:
        s = await sample(stack, AFTER, started, done, counts)
        held = (s.slots_in_use or 0) + s.sim_open_streams + s.sim_hanging
        held += s.client_connections or 0
        if held == 0 or time.monotonic() >= deadline:
            return s
        await asyncio.sleep(0.25)


async def run_mix(
    stack: Stack,
    requests: int,
    concurrency: int,
    mix: Mix | None = None,
    warmup: int = 2000,
    max_failures: int | None = None,
    settle: float = 2.0,
    client_timeout: float = 60.0,
    progress: Callable[[str], None] | None = None,
) -> Result:
    """Send ``requests`` requests from ``concurrency`` clients; sample; count the outcomes.

    Stops sending early once more than ``max_failures`` requests failed (a broken runtime
    would otherwise make each wait out its deadline).
    """
    mix = mix or Mix()
    rng = random.Random(7)
    # The hostile requests are drawn apart, so the others follow the same sequence as
    # without them.
    hostile_rng = random.Random(11)
    names, weights = list(hostile.HOSTILE), list(hostile.HOSTILE.values())
    # "plain", "stream", the chunks a hang-up reads (2 or 3), or a hostile kind
    kinds: list[str | int] = []
    for _ in range(requests):
        if mix.hostile and hostile_rng.random() < mix.hostile:
            kinds.append(hostile_rng.choices(names, weights)[0])
            continue
        r = rng.random()
        if r < mix.hangups:
            kinds.append(rng.choice((2, 3)))
        else:
            kinds.append("stream" if r < mix.streams else "plain")
    counts = Counts()
    samples: list[Sample] = []
    restart_seconds: float | None = None
    hangs_before_restart = 0
    next_index = 0
    stopped_early: str | None = None
    # Samples are taken when these requests are sent: after the warm-up, every tenth of
    # the run (halfway, before the restart), and the last one.
    warm_at, half_at = min(warmup, requests // 4), requests // 2
    marks = {warm_at: "after warm-up", half_at: "halfway", requests - 1: "last request sent"}
    for k in range(1, 10):
        if (at := k * requests // 10) > warm_at:
            marks.setdefault(at, f"at {10 * k} %")
    reached: asyncio.Queue[int | None] = asyncio.Queue()
    head, hostile_head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        b"authorization: Bearer " + key.encode() + b"\r\ncontent-type: application/json\r\n"
        for key in (KEY, HOSTILE_KEY)
    )
    edge = stack.limits
    deadline = max(edge.header_timeout_seconds, edge.write_timeout_seconds)
    hostile_conns: list[Connection] = []  # idle keep-alive connections of hostile clients
    hostile_tasks: set[asyncio.Task[None]] = set()
    slow_gate = asyncio.Semaphore(SLOW_AT_ONCE)
    started = time.monotonic()
    samples.append(await sample(stack, BEFORE, started, 0, counts))

    async def hostile_one(kind: str, i: int) -> None:
        t0 = time.monotonic()
        try:
            async with asyncio.timeout(client_timeout):
                if kind in hostile.REQUESTS:
                    extra, body = hostile.request(kind, i)
                    if kind == "new_user":
                        counts.users_named += 1
                    conn = hostile_conns.pop() if hostile_conns else Connection(stack.runtime.port)
                    try:
                        status, _, _ = await conn.request(hostile_head + extra, body)
                    finally:
                        hostile_conns.append(conn)
                    ending = str(status)
                else:
                    async with slow_gate if kind in hostile.SLOW else contextlib.nullcontext():
                        if kind == "slow_reader":
                            counts.users_named += 1
                        ending = await hostile.raw(
                            kind, stack.runtime.port, hostile_head, i, deadline
                        )
        except TimeoutError:
            ending = "error:client-timeout"
        except (
            OSError,
            ValueError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ) as err:
            ending = f"error:{type(err).__name__}"
        counts.hostile[f"{kind}:{ending}"] += 1
        counts.hostile_latencies.setdefault(kind, []).append(time.monotonic() - t0)

    async def client() -> None:
        nonlocal next_index, stopped_early
        conn = Connection(stack.runtime.port)
        try:
            while next_index < requests and stopped_early is None:
                i = next_index
                next_index += 1
                if i in marks:
                    reached.put_nowait(i)
                kind = kinds[i]
                if isinstance(kind, str) and kind in hostile.HOSTILE:
                    # sent beside the normal clients, which go on at once
                    task = asyncio.create_task(hostile_one(kind, i))
                    hostile_tasks.add(task)
                    task.add_done_callback(hostile_tasks.discard)
                    continue
                stream = kind != "plain"
                body = json.dumps(
                    {
                        "model": "main",
                        "messages": [{"role": "user", "content": f"soak question {i % 997}"}],
                        "stream": stream,
                    }
                ).encode()
                t0 = time.monotonic()
                try:
                    async with asyncio.timeout(client_timeout):
                        status, data, hung_up = await conn.request(
                            head, body, kind if isinstance(kind, int) else None
                        )
                    outcome = classify(status, data, stream, hung_up)
                    counts.statuses[status] += 1
                except TimeoutError:
                    outcome = "error:client-timeout"
                except (
                    OSError,
                    ValueError,
                    asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError,
                ) as err:
                    outcome = f"error:{type(err).__name__}"
                counts.requests += 1
                counts.outcomes[outcome] += 1
                if outcome == "ok":
                    counts.latencies["stream" if stream else "plain"].append(time.monotonic() - t0)
                if max_failures is not None and counts.failures > max_failures:
                    stopped_early = f"more than {max_failures} failures"
        finally:
            conn.close()

    async def restart() -> None:
        nonlocal restart_seconds, hangs_before_restart
        stats = await sim_stats(stack)
        hangs_before_restart = int(stats["primary"].get("hangs", 0))
        restart_seconds = await asyncio.to_thread(stack.restart_sim, "primary")
        if progress:
            progress(f"primary restarted in {restart_seconds:.1f}s")

    async def controller() -> None:
        restarting: asyncio.Task[None] | None = None
        while (i := await reached.get()) is not None:
            samples.append(await sample(stack, marks[i], started, counts.requests, counts))
            if i == warm_at and progress:
                progress(f"warm-up done: {counts.requests} requests, {counts.failures} failed")
            if i == half_at and mix.restart:
                restarting = asyncio.create_task(restart())
        if restarting is not None:
            await restarting

    async def reporter() -> None:
        while True:
            await asyncio.sleep(15)
            if progress:
                rate = counts.requests / (time.monotonic() - started)
                progress(
                    f"{counts.requests}/{requests} ({rate:.0f}/s), failures {counts.failures}, "
                    f"{dict(counts.outcomes.most_common(4))}"
                )

    control = asyncio.create_task(controller())
    report = asyncio.create_task(reporter())
    try:
        await asyncio.gather(*(client() for _ in range(concurrency)))
        seconds = time.monotonic() - started
        if hostile_tasks:  # the slow ones end at the edge's deadlines
            await asyncio.wait(set(hostile_tasks), timeout=client_timeout + 10)
        for conn in hostile_conns:
            conn.close()
        reached.put_nowait(None)  # the controller takes the samples due, then ends
        await asyncio.wait((control,), timeout=60)
    finally:
        report.cancel()
        if not control.done():
            control.cancel()
        for task in hostile_tasks:
            task.cancel()
    samples.append(await quiet(stack, started, counts.requests, settle, 5.0, counts))
    stats = await sim_stats(stack)
    hangs = hangs_before_restart + sum(int(s.get("hangs", 0)) for s in stats.values())
    refused = rejected(await runtime_metrics(stack))
    return Result(counts, samples, seconds, restart_seconds, stats, hangs, stopped_early, refused)


# --- the report ------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


START, MIDDLE, END = "after warm-up", "halfway", "last request sent"
BEFORE, AFTER = "before the load", "after the load"
# What the state Redis may hold per end user (limits for a minute, the budget and the
# day's spend for up to three days: tests/test_hostile_users.py measures under 2,000).
REDIS_BYTES_PER_USER = 2_000
WINDOW_SECONDS = 60  # the rate limits' sliding window


def drift(samples: list[Sample], attr: str, labels: tuple[str, ...] | None = None) -> float | None:
    """Largest relative change of a figure against its first value, over the samples with
    these labels (default: every sample under load)."""
    values: list[float] = [
        getattr(s, attr)
        for s in samples
        if (s.label in labels if labels else s.label not in (BEFORE, AFTER)) and getattr(s, attr)
    ]
    if len(values) < 2:
        return None
    return max(abs(x - values[0]) / values[0] for x in values[1:])


def redis_verdict(samples: list[Sample]) -> dict[str, Any]:
    """The state Redis over the second half (halfway to the last request), once the limits'
    sliding windows (a minute) are full: its growth against what may grow, 5 % of its size
    halfway plus ``REDIS_BYTES_PER_USER`` for each end user named meanwhile (their keys
    expire, the budget's within three days, but are all there during a soak)."""
    by_label = {x.label: x for x in samples}
    middle, end = by_label.get(MIDDLE), by_label.get(END)
    if middle is None or end is None or middle.redis_used_memory is None:
        return {"redis_bounded": None, "redis_judged": "no state Redis"}
    if middle.seconds < WINDOW_SECONDS:
        return {
            "redis_bounded": None,
            "redis_judged": f"not judged: halfway came {middle.seconds:g} s into the load, "
            f"before the limits' {WINDOW_SECONDS} s windows were full",
        }
    users = end.users_named - middle.users_named
    grown = (end.redis_used_memory or 0) - middle.redis_used_memory
    allowed = 0.05 * middle.redis_used_memory + REDIS_BYTES_PER_USER * users
    return {
        "redis_bounded": grown <= allowed,
        "redis_judged": f"grew {grown / 1024:.0f} KiB from halfway to the last request, "
        f"{users} new end users meanwhile; allowed {allowed / 1024:.0f} KiB",
    }


def git_describe(src: Path) -> dict[str, str]:
    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(src), *args], capture_output=True, text=True, check=False
        )
        return done.stdout.rstrip()  # not strip: porcelain lines start with a space

    changed = [
        line[3:] for line in git("status", "--porcelain", "--", "agent-runtime").splitlines()
    ]
    return {
        "path": str(src),
        "commit": git("log", "-1", "--oneline"),
        "runtime_code": f"with uncommitted changes to {', '.join(changed)}"
        if changed
        else "as committed",
    }


def summarize(
    result: Result, args: argparse.Namespace, stack: Stack, runtime: dict[str, str]
) -> dict[str, Any]:
    c = result.counts
    every = c.latencies["plain"] + c.latencies["stream"]
    latency = {
        kind: {f"p{q}": _ms(percentile(values, q)) for q in (50, 95, 99)}
        for kind, values in (("all", every), *c.latencies.items())
    }
    judged: dict[str, float | None] = {}
    for attr in ("rss_kib", "fds"):
        figure = attr.removesuffix("_kib")
        judged[f"{figure}_drift"] = drift(result.samples, attr, (START, MIDDLE, END))
        judged[f"{figure}_drift_second_half"] = drift(result.samples, attr, (MIDDLE, END))
        judged[f"{figure}_drift_any_sample"] = drift(result.samples, attr)
    rss, fds = judged["rss_drift"], judged["fds_drift"]
    end = result.samples[-1]
    expected = c.requests - c.aborted
    hostile_kinds: dict[str, Any] = {}
    for kind in hostile.HOSTILE:
        endings = {
            k.split(":", 1)[1]: n for k, n in c.hostile.most_common() if k.startswith(f"{kind}:")
        }
        if not endings:
            continue
        times = c.hostile_latencies.get(kind, [])
        hostile_kinds[kind] = {
            "sent": sum(endings.values()),
            "endings": endings,
            "as_expected": sum(n for e, n in endings.items() if e in hostile.EXPECTED[kind]),
            "p50_ms": _ms(percentile(times, 50)),
            "p95_ms": _ms(percentile(times, 95)),
        }
    unexpected = sum(k["sent"] - k["as_expected"] for k in hostile_kinds.values())
    redis_drift = drift(result.samples, "redis_used_memory", (START, MIDDLE, END))
    redis = redis_verdict(result.samples)
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "runtime": runtime,
        "requests": c.requests,
        "requests_planned": args.requests,
        "stopped_early": result.stopped_early,
        "concurrency": args.concurrency,
        "max_connections": args.max_connections,
        "timeout_seconds": args.timeout,
        "attempt_timeout_seconds": args.attempt_timeout if stack.attempt_timeout else None,
        "seconds": round(result.seconds, 1),
        "rps": round(c.requests / result.seconds, 1) if result.seconds else 0.0,
        "hostile_share": args.hostile,
        "shared_state": stack.redis is not None,
        "header_timeout_seconds": stack.limits.header_timeout_seconds if stack.redis else None,
        "write_timeout_seconds": stack.limits.write_timeout_seconds if stack.redis else None,
        "success_rate": round(c.ok / expected, 5) if expected else None,
        "ok": c.ok,
        "aborted_by_client": c.aborted,
        "failures": c.failures,
        "outcomes": dict(c.outcomes.most_common()),
        "statuses": {str(k): v for k, v in sorted(c.statuses.items())},
        "latency_ms": latency,
        "restart_seconds": _round(result.restart_seconds),
        "upstream_hangs": result.sim_hangs,
        "hostile_requests": sum(c.hostile.values()),
        "hostile": hostile_kinds,
        "rejected_by_reason": result.rejected,
        "samples": [asdict(s) for s in result.samples],
        "verdict": {
            **{k: _round(x, 4) for k, x in judged.items()},
            "rss_flat_within_5pct": rss is not None and rss <= 0.05,
            "fds_flat_within_5pct": fds is not None and fds <= 0.05,
            "client_connections_at_end": end.client_connections,
            "slots_held_at_end": end.slots_in_use,
            "zero_slots_at_end": None if end.slots_in_use is None else end.slots_in_use == 0,
            "sim_open_streams_at_end": end.sim_open_streams,
            "sim_hanging_at_end": end.sim_hanging,
            "hostile_unexpected": unexpected,
            "hostile_all_as_expected": unexpected == 0 if hostile_kinds else None,
            "redis_memory_drift": _round(redis_drift, 4),
            **redis,
        },
        "sim_stats_at_end": result.sim_stats,
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _mib(x: int | None) -> str:
    return "n/a" if x is None else f"{x / 1024 / 1024:.1f}"


def _round(x: float | None, digits: int = 2) -> float | None:
    return None if x is None else round(x, digits)


def _na(x: object) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:g}"
    return str(x)


def markdown(s: dict[str, Any]) -> str:
    v = s["verdict"]
    lat = s["latency_ms"]
    rate = "n/a" if s["success_rate"] is None else f"{100 * s['success_rate']:.3f} %"
    attempt = _na(s["attempt_timeout_seconds"])
    out = [
        f"# Soak {s['date']}",
        "",
        f"Runtime: `{s['runtime']['commit']}` ({s['runtime']['runtime_code']}) "
        f"from `{s['runtime']['path']}`.",
        f"Load: {s['requests']} requests (planned {s['requests_planned']}) at concurrency "
        f"{s['concurrency']}, maxConnections {s['max_connections']} per provider, "
        f"timeoutSeconds {s['timeout_seconds']:g}, attemptTimeoutSeconds {attempt}; "
        f"{s['seconds']} s, {s['rps']} req/s."
        + (f" **Stopped early: {s['stopped_early']}.**" if s["stopped_early"] else ""),
        "",
        "| figure | value |",
        "|---|---|",
        f"| success rate (2xx, client hang-ups excluded) | {rate} ({s['ok']} ok) |",
        f"| streams the client hung up on purpose | {s['aborted_by_client']} |",
        f"| failures | {s['failures']} |",
        f"| outcomes | {', '.join(f'{k}: {n}' for k, n in s['outcomes'].items())} |",
        f"| status codes | {', '.join(f'{k}: {n}' for k, n in s['statuses'].items())} |",
        f"| upstream hangs (requests the simulators held open) | {s['upstream_hangs']} |",
        f"| primary restart took | {_na(s['restart_seconds'])} s |",
    ]
    if s["hostile"]:
        out.insert(
            out.index("| figure | value |") - 1,
            f"Hostile share {100 * s['hostile_share']:g} % ({s['hostile_requests']} requests "
            "beside the normal clients', not in the figures below but the last rows); edge "
            f"deadlines: headers {s['header_timeout_seconds']:g} s, writes "
            f"{s['write_timeout_seconds']:g} s.",
        )
        for kind, k in s["hostile"].items():
            endings = ", ".join(f"{e}: {n}" for e, n in k["endings"].items())
            out.append(
                f"| hostile {kind}: as expected / sent (endings; p50 / p95 ms) | "
                f"{k['as_expected']} / {k['sent']} ({endings}; {_na(k['p50_ms'])} / "
                f"{_na(k['p95_ms'])}) |"
            )
        refused = ", ".join(f"{r}: {n:g}" for r, n in s["rejected_by_reason"].items())
        out.append(f"| runtime's refusals by reason | {refused or 'none'} |")
    for kind in ("all", "plain", "stream"):
        q = lat[kind]
        out.append(
            f"| latency {kind} p50 / p95 / p99 (ms) | "
            f"{_na(q['p50'])} / {_na(q['p95'])} / {_na(q['p99'])} |"
        )
    out += [
        "",
        "| sample | s | requests | RSS MiB | fds | sockets | slots in use | conns open "
        "| asyncio tasks | sim open streams | sim hanging | state Redis MiB | keys "
        "| cache Redis MiB | keys | users named |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for x in s["samples"]:
        rss = "n/a" if x["rss_kib"] is None else f"{x['rss_kib'] / 1024:.1f}"
        out.append(
            f"| {x['label']} | {x['seconds']} | {x['requests_done']} | {rss} | {_na(x['fds'])} "
            f"| {_na(x['sockets'])} | {_na(x['slots_in_use'])} | {_na(x['connections_open'])} "
            f"| {_na(x['asyncio_tasks'])} | {x['sim_open_streams']} | {x['sim_hanging']} "
            f"| {_mib(x['redis_used_memory'])} | {_na(x['redis_keys'])} "
            f"| {_mib(x['cache_redis_used_memory'])} | {_na(x['cache_redis_keys'])} "
            f"| {x['users_named']} |"
        )

    def yes(flag: bool | None) -> str:
        return "n/a" if flag is None else "yes" if flag else "**no**"

    def pct(d: float | None) -> str:
        return "n/a" if d is None else f"{100 * d:.1f} %"

    out.append("")
    for figure, name in (("rss", "RSS"), ("fds", "descriptors")):
        if figure == "fds" and s["hostile"]:
            name = "descriptors (not judged with a hostile share: its sockets come and go)"
        out.append(
            f"- {name} flat within 5 % after warm-up (samples {START!r}, {MIDDLE!r}, {END!r}): "
            f"{yes(v[f'{figure}_flat_within_5pct'])} (drift {pct(v[f'{figure}_drift'])}; "
            f"halfway to end {pct(v[f'{figure}_drift_second_half'])}; "
            f"largest at any sample {pct(v[f'{figure}_drift_any_sample'])})"
        )
    out += [
        f"- client connections the runtime holds after the load: "
        f"{_na(v['client_connections_at_end'])}",
        f"- zero slots held after the load: {yes(v['zero_slots_at_end'])} "
        f"(held: {_na(v['slots_held_at_end'])})",
        f"- simulators after the load: {v['sim_open_streams_at_end']} open streams, "
        f"{v['sim_hanging_at_end']} hung requests",
    ]
    if v["redis_judged"] != "no state Redis":
        out.append(
            f"- state Redis bounded (from halfway to the last request: at most 5 % more, plus "
            f"{REDIS_BYTES_PER_USER} bytes per new end user): {yes(v['redis_bounded'])} "
            f"({v['redis_judged']}; drift after warm-up {pct(v['redis_memory_drift'])})"
        )
    if v["hostile_all_as_expected"] is not None:
        out.append(
            f"- every hostile request ended as expected: {yes(v['hostile_all_as_expected'])} "
            f"({v['hostile_unexpected']} did not)"
        )
    out.append("")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument(
        "--max-connections",
        type=int,
        help="each provider's maxConnections (default: the concurrency)",
    )
    ap.add_argument("--timeout", type=float, default=5.0, help="timeoutSeconds")
    ap.add_argument(
        "--attempt-timeout",
        type=float,
        default=1.0,
        help="attemptTimeoutSeconds, if the runtime's manifest has the field",
    )
    ap.add_argument("--warmup", type=int, default=2000, help="requests before the first sample")
    ap.add_argument(
        "--hostile",
        type=float,
        default=0.10,
        help="share of the requests sent by hostile clients (bench/hostile.py); 0: none",
    )
    ap.add_argument(
        "--state",
        choices=("redis", "none"),
        default="redis",
        help="redis: a Redis for per-user limits and a budget, end users from the request and "
        "the edge's deadlines (a hostile mix needs it); none: the figures of record's setup",
    )
    ap.add_argument("--header-timeout", type=float, default=2.0, help="--header-timeout-seconds")
    ap.add_argument("--write-timeout", type=float, default=1.0, help="--write-timeout-seconds")
    ap.add_argument(
        "--runtime-src",
        type=Path,
        help="run the runtime from this agent-runtime folder (e.g. another checkout's)",
    )
    ap.add_argument("--label", default="", help="file name part: soak-LABEL-DATE")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    args.max_connections = args.max_connections or args.concurrency
    if args.hostile and args.state == "none":
        ap.error("a hostile mix needs --state redis")
    mix = Mix(hostile=args.hostile)
    limits = Limits(
        args.timeout,
        args.attempt_timeout,
        args.max_connections,
        args.header_timeout,
        args.write_timeout,
    )
    runtime_src = args.runtime_src.resolve() if args.runtime_src else None
    runtime = git_describe(runtime_src.parent if runtime_src else REPO)
    with tempfile.TemporaryDirectory(prefix="swiftclaw-soak-") as tmp:
        stack = start_stack(Path(tmp), mix, limits, runtime_src, args.state == "redis")
        try:
            print(
                f"soak: {args.requests} requests at c={args.concurrency}, "
                f"maxConnections {args.max_connections}, hostile {100 * args.hostile:g} %, "
                f"state {args.state}, runtime pid {stack.runtime.pid}"
                + (f" from {runtime_src}" if runtime_src else ""),
                flush=True,
            )
            result = asyncio.run(
                run_mix(
                    stack,
                    args.requests,
                    args.concurrency,
                    mix,
                    args.warmup,
                    progress=lambda line: print(f"  {line}", flush=True),
                )
            )
        finally:
            stack.stop()
    summary = summarize(result, args, stack, runtime)
    text = markdown(summary)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "-".join(x for x in ("soak", args.label, time.strftime("%Y-%m-%dT%H%M")) if x)
    (args.out / f"{stem}.md").write_text(text)
    (args.out / f"{stem}.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(text)
    print(f"written: {args.out / stem}.md, .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
