"""Memory against the pod's limit (issue 20, item 8), over a real runtime process.

A runtime told its memory limit (``--memory-limit-bytes``, from the pod's limit through
the downward API) derives its in-flight, body and body-pool bounds from it. Flooded with
bodies held open, on the model routes and /v1/feedback alike, it refuses (503) past its
pool instead of growing; a body that would parse to many times its size is a 413.
"""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

from swiftclaw_devtools.processes import Proc
from swiftclaw_runtime.memory import MiB, derive_bounds, json_elements

from .conftest import API_KEY, Launcher
from .test_connection_lifecycle import gauge, one_upstream
from .test_resilience_live import client, metrics

LIMIT = 96 * MiB  # a small pod: a 24 MiB body pool, 3 MiB bodies at most


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def head(path: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer {API_KEY}\r\ncontent-length: {length}\r\n\r\n"
    ).encode()


def answer(s: socket.socket, wait: float) -> bytes:
    """An error answer (head and JSON body), or b"" when nothing comes within ``wait``."""
    s.settimeout(wait)
    got = b""
    try:
        while b"}}" not in got:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    except TimeoutError:
        pass
    return got


def test_bounds_follow_the_memory_limit() -> None:
    small = derive_bounds(96 * MiB, 1024, 4 * MiB)
    assert small.body_pool_bytes == 24 * MiB
    assert small.max_body_bytes == 3 * MiB
    assert small.max_in_flight == 192
    pod = derive_bounds(512 * MiB, 1024, 4 * MiB)  # the chart's default limit
    assert (pod.max_in_flight, pod.max_body_bytes) == (1024, 4 * MiB)
    assert pod.max_in_flight * pod.max_body_bytes > pod.body_pool_bytes  # the pool is the bound
    assert pod.body_pool_bytes == 128 * MiB
    tiny = derive_bounds(8 * MiB, 1024, 4 * MiB)
    assert tiny.max_in_flight == 16 and tiny.max_body_bytes == 256 * 1024
    # the flags stay upper bounds
    assert derive_bounds(8 * 1024 * MiB, 50, 1 * MiB).max_in_flight == 50


def test_elements_are_counted_outside_strings() -> None:
    assert json_elements(b'{"a":[1,2,{}]}', 100) == 6  # {, [, {, two commas, and one
    text = b'{"content":"' + b"{},[" * 1000 + b'\\"x"}'
    assert json_elements(text, 100) == 2  # past the limit counted again, without the string
    assert json_elements(b"[" + b"{}," * 1000 + b"{}]", 100) == 2003


def flood(rt: Proc, path: str, count: int, size: int) -> tuple[list[socket.socket], int]:
    """``count`` connections each send all of a ``size`` body but its last byte; returns
    those still held and the number answered 503."""
    held, refused = [], 0
    body = b'{"model":"t","messages":[{"role":"user","content":"' + b"x" * size
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", rt.port), timeout=30)
        s.sendall(head(path, len(body) + 1) + body)  # the last byte never comes
        got = answer(s, 1.0)
        if got:
            assert got.startswith(b"HTTP/1.1 503"), got[:200]
            assert b'"code":"overloaded"' in got or b"memory" in got, got[:400]
            refused += 1
            s.close()
        else:
            held.append(s)
    return held, refused


def test_a_flood_of_held_bodies_is_refused_instead_of_growing(launch: Launcher) -> None:
    """60 connections hold 2 MiB bodies open (120 MiB: more than the pod) on the chat route
    and on /v1/feedback: past the 24 MiB pool each is refused with a 503; the process's peak
    memory grows by less than the half of the limit that is the requests', and once the
    bodies go a request is served."""
    _, rt = one_upstream(
        launch,
        "--memory-limit-bytes",
        str(LIMIT),
        "--body-timeout-seconds",
        "120",
        sim_args=("--latency", "fixed:1"),
    )
    c = client(rt)
    c.chat.completions.create(model="t", messages=[{"role": "user", "content": "warm-up"}])
    before = status_kib(rt.pid, "VmHWM")
    held_chat, refused_chat = flood(rt, "/v1/chat/completions", 30, 2 * MiB)
    held_fb, refused_fb = flood(rt, "/v1/feedback", 30, 2 * MiB)
    grown = (status_kib(rt.pid, "VmHWM") - before) * 1024
    print(
        f"held {len(held_chat)}+{len(held_fb)}, refused {refused_chat}+{refused_fb}, "
        f"peak grew {grown / MiB:.1f} MiB"
    )
    assert refused_chat >= 15 and refused_fb >= 25  # the pool holds about 11 bodies in all
    assert len(held_chat) + len(held_fb) <= 12
    assert grown < LIMIT // 2, grown / MiB
    assert gauge(metrics(rt), "swiftclaw_requests_rejected_total", reason="memory") == (
        refused_chat + refused_fb
    )
    for s in held_chat + held_fb:
        s.close()
    # the pool is given back as the bodies go (the server notices each hang-up)
    reply = c.chat.completions.create(model="t", messages=[{"role": "user", "content": "after"}])
    assert reply.choices[0].message.content
    assert rt.popen.poll() is None


def test_a_body_that_parses_to_many_times_its_size_is_a_413(launch: Launcher) -> None:
    """1 MiB of ``{}`` elements (about 350,000, some 25 MiB parsed) is refused before it is
    parsed, on every body-reading route, naming the bound."""
    _, rt = one_upstream(
        launch,
        "--memory-limit-bytes",
        str(LIMIT),
        sim_args=(),
        agent={"maxInputTokens": 2_000_000},
    )
    bomb = b'{"model":"t","messages":[' + b"{}," * 350_000 + b'{"role":"user","content":"x"}]}'
    for path in ("/v1/chat/completions", "/v1/embeddings", "/v1/responses", "/v1/feedback"):
        with socket.create_connection(("127.0.0.1", rt.port), timeout=30) as s:
            s.sendall(head(path, len(bomb)) + bomb)
            got = answer(s, 10.0)
        assert got.startswith(b"HTTP/1.1 413"), (path, got[:300])
        assert b"JSON elements" in got and b"request_too_complex" in got, got[:400]
    # the same characters inside a string are one element: a text full of them is welcome
    text = "{}," * 350_000
    reply = client(rt).chat.completions.create(
        model="t", messages=[{"role": "user", "content": text}]
    )
    assert reply.choices[0].message.content


def test_counting_a_body_of_unclosed_escaped_quotes_takes_one_pass(launch: Launcher) -> None:
    """Past the element bound a body is counted again without its strings. One pattern for a
    string with its escapes failed in linear time from every quote of '"\\"\\"\\"...', which
    never closes: hours of event loop for 2 MB. The body is refused at once, and the
    replica answers its probes meanwhile."""
    _, rt = one_upstream(launch, "--memory-limit-bytes", str(LIMIT), sim_args=())
    bomb = b"," * 200_000 + b'"' + b'\\"' * 1_000_000
    with socket.create_connection(("127.0.0.1", rt.port), timeout=30) as s:
        s.sendall(head("/v1/chat/completions", len(bomb)) + bomb)
        got = answer(s, 60.0)
    assert got.startswith(b"HTTP/1.1 413"), got[:300]
    with urllib.request.urlopen(f"{rt.url}/healthz", timeout=30) as r:
        assert r.status == 200
