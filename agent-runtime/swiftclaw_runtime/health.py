"""Liveness, readiness and the detailed health report.

Liveness only says the event loop answers. Readiness says the process should get
traffic: started and not draining. A provider outage does not make a pod unready (that
would take every pod out at once); it shows in ``/health`` and in the breaker metrics.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from .dispatch import Dispatcher
from .providers import Provider, UpstreamError

PROBE_TIMEOUT = 2.0
CACHE_SECONDS = 2.0
MEMORY_WARN_FRACTION = 0.9


def rss_bytes() -> int:
    """Resident memory of this process, from /proc (Linux)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def memory_limit_bytes() -> int | None:
    """The cgroup v2 (or v1) memory limit, or None when unlimited."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            raw = Path(path).read_text().strip()
        except OSError:
            continue
        if raw == "max":
            return None
        try:
            value = int(raw)
        except ValueError:
            continue
        return value if value < 1 << 60 else None
    return None


def memory_check(rss: int, limit: int | None) -> dict[str, Any]:
    status = "ok"
    if limit and rss > MEMORY_WARN_FRACTION * limit:
        status = "warn"
    return {"status": status, "rssBytes": rss, "limitBytes": limit}


class Health:
    def __init__(
        self,
        providers: dict[str, Provider],
        dispatcher: Dispatcher,
        redis_url: str | None,
        state_redis_url: str | None = None,
    ) -> None:
        self.providers = providers
        self.dispatcher = dispatcher
        self.redis_url = redis_url
        # checked as "redisState" when it is a Redis of its own
        self.state_redis_url = state_redis_url if state_redis_url != redis_url else None
        self.started = False
        self.draining = False
        self._cached: tuple[float, int, dict[str, Any]] | None = None
        self._probing: asyncio.Task[tuple[int, dict[str, Any]]] | None = None

    @property
    def ready(self) -> bool:
        return self.started and not self.draining

    async def _probe_provider(self, name: str, provider: Provider) -> dict[str, Any]:
        breakers = {
            ref: b.state.name.lower()
            for ref, b in self.dispatcher.breakers.items()
            if ref.startswith(name + "/")
        }
        started = time.perf_counter()
        try:
            await provider.probe(PROBE_TIMEOUT)
        except UpstreamError as err:
            return {"status": "fail", "error": str(err), "breakers": breakers}
        return {
            "status": "ok",
            "latencyMs": round((time.perf_counter() - started) * 1000, 1),
            "breakers": breakers,
        }

    async def _probe_redis(self, url: str) -> dict[str, Any]:
        import redis.asyncio as aioredis  # imported here: only pods with Redis need it

        client = aioredis.from_url(url, socket_timeout=PROBE_TIMEOUT)
        started = time.perf_counter()
        try:
            await client.ping()
        except Exception as err:  # any failure of the probe is a failed check
            return {"status": "fail", "error": f"{type(err).__name__}: {err}"}
        finally:
            await client.aclose()
        return {"status": "ok", "latencyMs": round((time.perf_counter() - started) * 1000, 1)}

    async def detail(self) -> tuple[int, dict[str, Any]]:
        """HTTP status and JSON for ``GET /health``.

        Callers share one round of probes: a report younger than ``CACHE_SECONDS`` is
        reused, and callers arriving while probes run wait for that same round, so each
        provider is probed at most once per ``CACHE_SECONDS`` however often this is called.
        """
        now = time.monotonic()
        if self._cached and now - self._cached[0] < CACHE_SECONDS:
            return self._cached[1], self._cached[2]
        if self._probing is None or self._probing.done():
            self._probing = asyncio.get_running_loop().create_task(self._probe_all())
        # shielded: a caller that goes away does not cancel the round the others wait for
        return await asyncio.shield(self._probing)

    async def _probe_all(self) -> tuple[int, dict[str, Any]]:
        now = time.monotonic()
        names = list(self.providers)
        results = await asyncio.gather(*(self._probe_provider(n, self.providers[n]) for n in names))
        checks: dict[str, Any] = {"providers": dict(zip(names, results, strict=True))}
        if self.redis_url:
            checks["redis"] = await self._probe_redis(self.redis_url)
        if self.state_redis_url:
            checks["redisState"] = await self._probe_redis(self.state_redis_url)
        checks["memory"] = memory_check(rss_bytes(), memory_limit_bytes())
        providers_ok = [r["status"] == "ok" for r in results]
        redis_failed = any(
            checks.get(name, {}).get("status") == "fail" for name in ("redis", "redisState")
        )
        if not any(providers_ok) or redis_failed:
            status, code = "fail", 503
        elif not all(providers_ok) or checks["memory"]["status"] != "ok":
            status, code = "degraded", 200
        else:
            status, code = "ok", 200
        body = {"status": status, "ready": self.ready, "draining": self.draining, "checks": checks}
        self._cached = (now, code, body)
        return code, body
