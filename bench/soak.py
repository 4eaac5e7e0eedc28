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

import yaml

from swiftclaw_devtools.processes import Proc, start_runtime, start_sim, swiftclaw

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
KEY = "sk-soak-0000000001"
PROVIDERS = ("primary", "backup", "spare")
SLOTS = "swiftclaw_upstream_connections_in_use"
OPEN = "swiftclaw_upstream_connections_open"
TASKS = "swiftclaw_asyncio_tasks"


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


@dataclass(frozen=True)
class Limits:
    """The runtime's deadline, per-attempt timeout (when its manifest has the field) and pool."""

    timeout_seconds: float = 5.0
    attempt_timeout_seconds: float = 1.0
    max_connections: int = 64


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


def manifest(sims: dict[str, Proc], limits: Limits, attempt_timeout: bool) -> dict[str, Any]:
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
    return {
        "apiVersion": "swiftclaw.dev/v1alpha1",
        "kind": "AgentDeployment",
        "metadata": {"name": "soak", "namespace": "bench"},
        "spec": {
            "providers": [
                {
                    "name": name,
                    "type": "openai-compatible",
                    "baseURL": f"{sim.url}/v1",
                    "maxConnections": limits.max_connections,
                }
                for name, sim in sims.items()
            ],
            "models": {
                "tiers": [
                    {"name": "main", "model": "primary/m1", "fallbacks": ["backup/m2", "spare/m3"]}
                ],
                "routing": {"strategy": "fixed", "default": "main"},
            },
            "cache": {"exact": {"enabled": False}, "redis": {"mode": "none"}},
            "reliability": reliability,
        },
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


def start_stack(folder: Path, mix: Mix, limits: Limits, runtime_src: Path | None = None) -> Stack:
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
    try:
        for i, name in enumerate(PROVIDERS):
            sims[name] = start_sim(
                None, *sim_args, "--seed", str(i + 1), log_path=folder / f"sim-{name}.log"
            )
        env = runtime_env(runtime_src)
        path = folder / "agent.yaml"
        attempt_timeout = accepts(manifest(sims, limits, True), path, env)
        path.write_text(yaml.safe_dump(manifest(sims, limits, attempt_timeout)))
        keys = folder / "keys.yaml"
        keys.write_text(yaml.safe_dump({"keys": [{"key": KEY, "tenant": "bench", "user": "soak"}]}))
        runtime = start_runtime(
            path,
            None,
            "--api-keys",
            str(keys),
            "--log-level",
            "warning",
            "--log-format",
            "text",
            log_path=folder / "runtime.log",
            env=env,
        )
    except BaseException:
        for sim in sims.values():
            sim.stop()
        raise
    return Stack(folder, runtime, sims, sim_args, runtime_src, attempt_timeout)


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


@dataclass
class Result:
    counts: Counts
    samples: list[Sample]
    seconds: float
    restart_seconds: float | None
    sim_stats: dict[str, dict[str, Any]]  # at the end (the primary's since its restart)
    sim_hangs: int  # requests the simulators held open, before and after the restart
    stopped_early: str | None = None


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


async def sample(stack: Stack, label: str, started: float, done: int) -> Sample:
    rss, fds, sockets = proc_figures(stack.runtime.pid)
    text = await runtime_metrics(stack)
    sims = await sim_stats(stack)
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


async def quiet(stack: Stack, started: float, done: int, settle: float, wait: float) -> Sample:
    """The sample once the load has stopped: after ``settle`` s, then until nothing is held
    (slots, open streams, hung requests) or ``wait`` more seconds have passed."""
    await asyncio.sleep(settle)
    deadline = time.monotonic() + wait
    while True:
        s = await sample(stack, "after the load", started, done)
        held = (s.slots_in_use or 0) + s.sim_open_streams + s.sim_hanging
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
    kinds: list[str | int] = []  # "plain", "stream", or the chunks a hang-up reads (2 or 3)
    for _ in range(requests):
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
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        b"authorization: Bearer " + KEY.encode() + b"\r\ncontent-type: application/json\r\n"
    )
    started = time.monotonic()

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
            samples.append(await sample(stack, marks[i], started, counts.requests))
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
        reached.put_nowait(None)  # the controller takes the samples due, then ends
        await asyncio.wait((control,), timeout=60)
    finally:
        report.cancel()
        if not control.done():
            control.cancel()
    samples.append(await quiet(stack, started, counts.requests, settle, 5.0))
    stats = await sim_stats(stack)
    hangs = hangs_before_restart + sum(int(s.get("hangs", 0)) for s in stats.values())
    return Result(counts, samples, seconds, restart_seconds, stats, hangs, stopped_early)


# --- the report ------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


START, MIDDLE, END = "after warm-up", "halfway", "last request sent"


def drift(samples: list[Sample], attr: str, labels: tuple[str, ...] | None = None) -> float | None:
    """Largest relative change of a figure against its first value, over the samples with
    these labels (default: every sample under load)."""
    values: list[float] = [
        getattr(s, attr)
        for s in samples
        if (s.label in labels if labels else s.label != "after the load") and getattr(s, attr)
    ]
    if len(values) < 2:
        return None
    return max(abs(x - values[0]) / values[0] for x in values[1:])


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
        "success_rate": round(c.ok / expected, 5) if expected else None,
        "ok": c.ok,
        "aborted_by_client": c.aborted,
        "failures": c.failures,
        "outcomes": dict(c.outcomes.most_common()),
        "statuses": {str(k): v for k, v in sorted(c.statuses.items())},
        "latency_ms": latency,
        "restart_seconds": _round(result.restart_seconds),
        "upstream_hangs": result.sim_hangs,
        "samples": [asdict(s) for s in result.samples],
        "verdict": {
            **{k: _round(x, 4) for k, x in judged.items()},
            "rss_flat_within_5pct": rss is not None and rss <= 0.05,
            "fds_flat_within_5pct": fds is not None and fds <= 0.05,
            "slots_held_at_end": end.slots_in_use,
            "zero_slots_at_end": None if end.slots_in_use is None else end.slots_in_use == 0,
            "sim_open_streams_at_end": end.sim_open_streams,
            "sim_hanging_at_end": end.sim_hanging,
        },
        "sim_stats_at_end": result.sim_stats,
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


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
    for kind in ("all", "plain", "stream"):
        q = lat[kind]
        out.append(
            f"| latency {kind} p50 / p95 / p99 (ms) | "
            f"{_na(q['p50'])} / {_na(q['p95'])} / {_na(q['p99'])} |"
        )
    out += [
        "",
        "| sample | s | requests | RSS MiB | fds | sockets | slots in use | conns open "
        "| asyncio tasks | sim open streams | sim hanging |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for x in s["samples"]:
        rss = "n/a" if x["rss_kib"] is None else f"{x['rss_kib'] / 1024:.1f}"
        out.append(
            f"| {x['label']} | {x['seconds']} | {x['requests_done']} | {rss} | {_na(x['fds'])} "
            f"| {_na(x['sockets'])} | {_na(x['slots_in_use'])} | {_na(x['connections_open'])} "
            f"| {_na(x['asyncio_tasks'])} | {x['sim_open_streams']} | {x['sim_hanging']} |"
        )

    def yes(flag: bool | None) -> str:
        return "n/a" if flag is None else "yes" if flag else "**no**"

    def pct(d: float | None) -> str:
        return "n/a" if d is None else f"{100 * d:.1f} %"

    out.append("")
    for figure, name in (("rss", "RSS"), ("fds", "descriptors")):
        out.append(
            f"- {name} flat within 5 % after warm-up (samples {START!r}, {MIDDLE!r}, {END!r}): "
            f"{yes(v[f'{figure}_flat_within_5pct'])} (drift {pct(v[f'{figure}_drift'])}; "
            f"halfway to end {pct(v[f'{figure}_drift_second_half'])}; "
            f"largest at any sample {pct(v[f'{figure}_drift_any_sample'])})"
        )
    out += [
        f"- zero slots held after the load: {yes(v['zero_slots_at_end'])} "
        f"(held: {_na(v['slots_held_at_end'])})",
        f"- simulators after the load: {v['sim_open_streams_at_end']} open streams, "
        f"{v['sim_hanging_at_end']} hung requests",
        "",
    ]
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
        "--runtime-src",
        type=Path,
        help="run the runtime from this agent-runtime folder (e.g. another checkout's)",
    )
    ap.add_argument("--label", default="", help="file name part: soak-LABEL-DATE")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    args.max_connections = args.max_connections or args.concurrency
    mix = Mix()
    limits = Limits(args.timeout, args.attempt_timeout, args.max_connections)
    runtime_src = args.runtime_src.resolve() if args.runtime_src else None
    runtime = git_describe(runtime_src.parent if runtime_src else REPO)
    with tempfile.TemporaryDirectory(prefix="swiftclaw-soak-") as tmp:
        stack = start_stack(Path(tmp), mix, limits, runtime_src)
        try:
            print(
                f"soak: {args.requests} requests at c={args.concurrency}, "
                f"maxConnections {args.max_connections}, runtime pid {stack.runtime.pid}"
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
