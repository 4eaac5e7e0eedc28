"""SIGTERM: readiness turns false at once, in-flight streams finish, the process exits 0."""

from __future__ import annotations

import signal
import threading
import time
import urllib.error
import urllib.request

import openai

from .conftest import API_KEY, Launcher, manifest, openai_provider


def readyz(url: str) -> int:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def test_sigterm_lets_twenty_inflight_streams_finish(launch: Launcher) -> None:
    up = launch.sim("--latency", "fixed:10", "--stream-pace-ms", "60")  # ~0.5-3 s per stream
    rt = launch.runtime(
        manifest([openai_provider("up", up)], [{"name": "t", "model": "up/m"}]),
        "--drain-seconds",
        "1",
        "--grace-seconds",
        "30",
    )
    client = openai.OpenAI(base_url=f"{rt.url}/v1", api_key=API_KEY, max_retries=0)
    first_chunk = threading.Barrier(21, timeout=30)
    results: dict[int, tuple[str, str | None]] = {}
    ended: list[float] = []
    errors: list[BaseException] = []

    def stream(i: int) -> None:
        try:
            text, finish, seen_first = "", None, False
            for chunk in client.chat.completions.create(
                model="t", messages=[{"role": "user", "content": f"long answer {i}"}], stream=True
            ):
                if not seen_first:
                    seen_first = True
                    first_chunk.wait()
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
                    finish = chunk.choices[0].finish_reason or finish
            results[i] = (text, finish)
            ended.append(time.monotonic())
        except BaseException as err:  # collected and reported below
            errors.append(err)

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    first_chunk.wait()  # all 20 streams are in flight
    rt.signal(signal.SIGTERM)
    signalled = time.monotonic()
    time.sleep(0.2)
    assert readyz(rt.url) == 503  # draining: not ready, still serving
    for t in threads:
        t.join(30)

    assert not errors, errors
    assert len(results) == 20
    for text, finish in results.values():
        assert finish in ("stop", "length")
        assert len(text.split()) >= 8
    # Some streams outlived the 1 s drain, i.e. finished after the listener had closed.
    assert max(ended) > signalled + 1.0
    assert rt.popen.wait(30) == 0


def test_large_buffers_are_mmapped_whatever_was_freed_before() -> None:
    """glibc's mmap threshold is fixed at startup (it rises with every large block freed,
    and the heap then keeps large buffers' pages: 20+ MiB of RSS drift in the hostile soak);
    applied wherever the C library is glibc."""
    import platform

    from swiftclaw_runtime.server import tune_malloc

    assert tune_malloc() == (platform.libc_ver()[0] == "glibc")
