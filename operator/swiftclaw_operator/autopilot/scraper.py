"""Reads the runtime pods' metrics (the autopilot's only input from the pods).

aiohttp, the operator's HTTP client already (kube.py): one session for every agent, its
connector bounding the connections open at once, a semaphore bounding the reads under way
across all agents, a timeout per pod and a cap on the bytes read from each. A pod that
does not answer in time, answers other than 200, or sends more than the cap, is a failed
read (named in the result), never an empty one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import aiohttp

from swiftclaw_runtime import contract

from .exposition import PodSample, parse

MAX_BYTES = 4 * 1024 * 1024  # a runtime's exposition is tens of KB
TIMEOUT_SECONDS = 2.0
CONCURRENCY = 32
# the session does not decompress (a compressed body's size is no bound on what it holds)
IDENTITY = {"Accept-Encoding": "identity"}


@dataclass(frozen=True)
class Target:
    pod: str
    url: str


def pod_target(pod: dict[str, object]) -> Target | None:
    """Where a pod serves its metrics (its IP, the contract's port and path); None
    without an IP."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    assert isinstance(meta, dict) and isinstance(status, dict)
    ip = status.get("podIP")
    if not ip:
        return None
    host = f"[{ip}]" if ":" in str(ip) else str(ip)
    return Target(
        str(meta.get("name", "")), f"http://{host}:{contract.METRICS_PORT}{contract.METRICS_PATH}"
    )


@dataclass
class Reader:
    """The operator's one metrics reader, shared by every agent's loop."""

    timeout: float = TIMEOUT_SECONDS
    concurrency: int = CONCURRENCY
    max_bytes: int = MAX_BYTES
    clock: Callable[[], float] = time.time
    _session: aiohttp.ClientSession | None = field(default=None, init=False)
    _slots: asyncio.Semaphore | None = field(default=None, init=False)

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.concurrency),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                auto_decompress=False,
            )
            self._slots = asyncio.Semaphore(self.concurrency)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def read(self, targets: Sequence[Target]) -> tuple[dict[str, PodSample], dict[str, str]]:
        """(samples by pod, why each failed pod failed)."""
        results = await asyncio.gather(*(self._read_one(t) for t in targets))
        samples: dict[str, PodSample] = {}
        failed: dict[str, str] = {}
        for target, result in zip(targets, results, strict=True):
            if isinstance(result, PodSample):
                samples[target.pod] = result
            else:
                failed[target.pod] = result
        return samples, failed

    async def _read_one(self, t: Target) -> PodSample | str:
        body = await self.fetch(t.url)
        if isinstance(body, str):
            return body
        at = self.clock()
        try:
            return parse(t.pod, at, body.decode("utf-8", "replace"))
        except ValueError as err:
            return f"not a Prometheus exposition: {str(err)[:100]}"

    async def fetch(
        self,
        url: str,
        form: Mapping[str, str] | None = None,
        timeout: float | None = None,
        max_bytes: int | None = None,
    ) -> bytes | str:
        """The body of a GET of ``url`` (a form POST with ``form``), or why there is none:
        within one of the slots every read shares, in ``timeout`` seconds and ``max_bytes``
        bytes at most (the reader's own by default)."""
        session = self.session()
        assert self._slots is not None
        timeout = self.timeout if timeout is None else timeout
        limit = self.max_bytes if max_bytes is None else max_bytes
        async with self._slots:
            try:
                async with asyncio.timeout(timeout):
                    async with session.request(
                        "POST" if form is not None else "GET",
                        url,
                        data=form,
                        headers=IDENTITY,
                        allow_redirects=False,
                        timeout=aiohttp.ClientTimeout(total=timeout),
                    ) as resp:
                        if resp.status != 200:
                            return f"HTTP {resp.status}"
                        body = bytearray()
                        async for chunk in resp.content.iter_chunked(65_536):
                            body += chunk
                            if len(body) > limit:
                                return f"more than {limit} bytes"
            except TimeoutError:
                return f"no answer within {timeout:g}s"
            except aiohttp.ClientError as err:
                return f"{type(err).__name__}"
        return bytes(body)
