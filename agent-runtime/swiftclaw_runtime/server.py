"""Running the app under uvicorn (uvloop + httptools), with a graceful drain.

On SIGTERM (or SIGINT) readiness turns false at once; after ``drain_seconds`` (time for
Kubernetes to take the pod out of its Service) the listener closes, and requests in
flight, streams included, get ``grace_seconds`` to finish. A second signal stops at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import threading
from collections.abc import Generator
from types import FrameType

import uvicorn

from .app import App
from .contract import GC_TUNING_ENV
from .edge import EdgeLimits, protocol_class
from .runtime import Runtime

log = logging.getLogger("swiftclaw.server")
# The metrics port serves Prometheus and the kubelet's probes: a few connections.
ADMIN_MAX_CONNECTIONS = 64


class AdminServer(uvicorn.Server):
    """The metrics port's server, run beside the main one (which owns the signals)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class DrainingServer(uvicorn.Server):
    def __init__(
        self, config: uvicorn.Config, runtime: Runtime, admin: AdminServer | None = None
    ) -> None:
        super().__init__(config)
        self.runtime = runtime
        self.admin = admin
        self._admin_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        if self.admin is not None:
            # The metrics port (the probes') listens before the service port does: whoever
            # finds the runtime ready finds its probes and metrics answering too.
            self._admin_task = self._loop.create_task(self.admin.serve())
            while not self.admin.started:
                if self._admin_task.done():
                    raise RuntimeError("the metrics port could not be opened (see the log)")
                await asyncio.sleep(0.01)
        await super().startup(sockets)
        tune_gc()
        tune_malloc()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets)
        if self.admin is not None and self._admin_task is not None:
            self.admin.should_exit = True
            await self._admin_task

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """Like uvicorn's, but a drained shutdown exits 0 instead of re-raising the signal."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        health = self.runtime.health
        delay = self.runtime.options.drain_seconds
        if health.draining or delay <= 0 or self._loop is None:
            health.draining = True
            super().handle_exit(sig, frame)
            return
        health.draining = True
        log.info("signal %d: draining, not ready; closing the listener in %.1fs", sig, delay)
        loop = self._loop
        loop.call_soon_threadsafe(loop.call_later, delay, super().handle_exit, sig, None)


# glibc's mallopt parameter: allocations of at least this many bytes are mmapped.
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 128 * 1024


def tune_malloc() -> bool:
    """Large buffers (request bodies, streamed answers) straight from the OS and back.

    glibc starts with a 128 KiB mmap threshold but raises it to the size of each mmapped
    block freed (up to 32 MiB): after the first large body, large buffers come from the
    heap, which keeps the pages of whatever sits below its top. Under a soak with hostile
    bodies the runtime's RSS moved by 20+ MiB with no object held (tracemalloc: the heap
    grew 0.6 MB); with the threshold fixed it stayed within 1 %. Setting it also turns the
    raising off. True when applied (glibc), False elsewhere (musl has no mallopt)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def tune_gc() -> None:
    """Fewer, shorter collector pauses: the long tail of latency, not the median, pays for them.

    Objects alive after startup (config, modules, pools) are frozen out of collection,
    and the youngest generation is collected after 50 000 allocations instead of 700:
    a request allocates short-lived objects that reference counting frees anyway.
    """
    if os.environ.get(GC_TUNING_ENV, "1") == "0":
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def make_server(runtime: Runtime, host: str, port: int) -> DrainingServer:
    opts = runtime.options
    limits = EdgeLimits(
        header_timeout=opts.header_timeout_seconds,
        max_header_bytes=opts.max_header_bytes,
        max_connections=opts.max_connections,
        write_timeout=opts.write_timeout_seconds,
    )
    config = uvicorn.Config(
        App(runtime),
        host=host,
        port=port,
        loop="uvloop",
        http=protocol_class(limits, runtime.metrics.rejected),  # httptools, with the edge's limits
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
        proxy_headers=False,
        date_header=False,
        timeout_keep_alive=75,
        backlog=4096,
        timeout_graceful_shutdown=int(runtime.options.grace_seconds),
    )
    admin = None
    if opts.metrics_port is not None:
        admin_limits = EdgeLimits(
            header_timeout=opts.header_timeout_seconds,
            max_header_bytes=opts.max_header_bytes,
            max_connections=ADMIN_MAX_CONNECTIONS,
            write_timeout=opts.write_timeout_seconds,
        )
        admin = AdminServer(
            uvicorn.Config(
                App(runtime, admin=True),
                host=host,
                port=opts.metrics_port,
                loop="uvloop",
                http=protocol_class(admin_limits, runtime.metrics.rejected),
                lifespan="off",  # the main server's lifespan starts and stops the runtime
                access_log=False,
                log_config=None,
                server_header=False,
                date_header=False,
                timeout_keep_alive=75,
            )
        )
    server = DrainingServer(config, runtime, admin)
    connections = server.server_state.connections
    runtime.metrics.client_connections.set_function(lambda: len(connections))
    return server


def serve(runtime: Runtime, host: str, port: int) -> None:
    make_server(runtime, host, port).run()
