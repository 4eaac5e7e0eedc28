"""Context sources: HTTP GETs made for each request, in parallel, added to the prompt.

Each source has its own timeout; a source that fails, times out or answers non-2xx is
left out and counted (``swiftclaw_context_failures_total{source}``): context helps an
answer, it never blocks one. Answers are cached per source for ``cacheTTLSeconds``,
keyed by the expanded URL (so per user when the URL names ``{user}``). ``{user}`` and
``{tenant}`` are each encoded as one path segment (:func:`segment`): a user named
``../admin``, ``a/b``, ``?x`` or ``#y`` cannot change which URL is fetched, and a user
named ``.`` or ``..`` (a dot segment however it is encoded, for a server that decodes
before it resolves) leaves the source out. Connections are pooled per source, as for
providers.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import OrderedDict
from urllib.parse import quote, urlsplit

from ..asgi import watch_for_hangup
from ..config import ContextSource
from ..metrics import Metrics
from ..providers.pool import Pool, ResponseTooLarge
from ..spend.identity import Identity

log = logging.getLogger("swiftclaw.context")

MAX_BODY_BYTES = 256 * 1024  # a larger answer is a failure, not a prompt
MAX_CHARS = 16_000  # what one source may add to the prompt (about 4,000 tokens)
CACHE_ENTRIES = 10_000
# What a source's cache may hold, its paths and answers as the process holds them: keyed
# per user when the URL names ``{user}``, so many users' full-size answers would otherwise
# be 10,000 x 16,000 characters (160 MB and more) per source.
CACHE_BYTES = 16 * 1024 * 1024
HEADERS = [(b"accept", b"application/json, text/plain;q=0.9, */*;q=0.5")]


def segment(name: str) -> str | None:
    """``name`` as one path segment: every byte but letters, digits, ``-``, ``_`` and ``~``
    percent-encoded (the dots too, so that no segment of the URL sent is ``.`` or ``..``);
    None for an empty name or a dot segment, which no encoding keeps from a server that
    decodes before it resolves."""
    if name in ("", ".", ".."):
        return None
    return quote(name, safe="").replace(".", "%2E")


class _Source:
    def __init__(self, spec: ContextSource) -> None:
        self.spec = spec
        url = urlsplit(spec.url)
        self.pool = Pool(f"{url.scheme}://{url.netloc}", max_connections=64)
        self.template = (url.path or "/") + (f"?{url.query}" if url.query else "")
        self.cache: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self.cache_bytes = 0

    def path(self, who: Identity) -> str | None:
        """The path to fetch for ``who``; None when a name cannot be one segment."""
        user, tenant = segment(who.user), segment(who.tenant)
        if user is None or tenant is None:
            return None
        return self.template.replace("{user}", user).replace("{tenant}", tenant)

    def cached(self, path: str) -> str | None:
        hit = self.cache.get(path)
        if hit is None:
            return None
        if hit[0] < time.monotonic():
            self._drop(path)
            return None
        self.cache.move_to_end(path)
        return hit[1]

    def store(self, path: str, text: str) -> None:
        if self.spec.cache_ttl_seconds <= 0:
            return
        self._drop(path)
        self.cache[path] = (time.monotonic() + self.spec.cache_ttl_seconds, text)
        self.cache_bytes += _held(path, text)
        while len(self.cache) > CACHE_ENTRIES or self.cache_bytes > CACHE_BYTES:
            old, (_, gone) = self.cache.popitem(last=False)
            self.cache_bytes -= _held(old, gone)

    def _drop(self, path: str) -> None:
        hit = self.cache.pop(path, None)
        if hit is not None:
            self.cache_bytes -= _held(path, hit[1])

    async def get(self, path: str) -> str:
        resp = await self.pool.request("GET", path, HEADERS)
        try:
            body = await resp.read(MAX_BODY_BYTES)
        finally:
            resp.finish()
        if not 200 <= resp.status < 300:
            raise ConnectionError(f"HTTP {resp.status}")
        return body.decode("utf-8", "replace")[:MAX_CHARS]


def _held(path: str, text: str) -> int:
    """The bytes a cache entry holds (both strings as the process stores them)."""
    return sys.getsizeof(path) + sys.getsizeof(text)


class ContextSources:
    """The agent's context sources, fetched together for each request."""

    def __init__(self, sources: list[ContextSource], metrics: Metrics) -> None:
        self.sources = [_Source(s) for s in sources]
        self.metrics = metrics

    async def fetch(self, who: Identity) -> list[tuple[str, str]]:
        """(name, text) of each source that answered in time, in the manifest's order."""
        if not self.sources:
            return []
        watch_for_hangup()  # the sources may take their whole timeout
        started = time.perf_counter()
        texts = await asyncio.gather(*(self._one(s, who) for s in self.sources))
        self.metrics.context_seconds.observe(time.perf_counter() - started)
        return [(s.spec.name, t) for s, t in zip(self.sources, texts, strict=True) if t]

    async def _one(self, source: _Source, who: Identity) -> str | None:
        path = source.path(who)
        if path is None:
            self.metrics.context_failures.labels(source.spec.name).inc()
            log.info("context source %s left out: a name is a dot segment", source.spec.name)
            return None
        hit = source.cached(path)
        if hit is not None:
            return hit
        try:
            async with asyncio.timeout(source.spec.timeout_ms / 1000):
                text = await source.get(path)
        except (TimeoutError, OSError, ResponseTooLarge) as err:
            self.metrics.context_failures.labels(source.spec.name).inc()
            log.info("context source %s left out: %s", source.spec.name, type(err).__name__)
            return None
        source.store(path, text)
        return text

    async def close(self) -> None:
        for s in self.sources:
            await s.pool.close()
