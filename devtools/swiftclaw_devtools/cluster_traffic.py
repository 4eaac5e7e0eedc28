"""Open-loop chat traffic to an agent's Service on the local cluster (loopback only).

Requests leave on a fixed schedule (``rate`` per second, whatever the answers take), each
from the next of ``keys`` (one API key per user), so a slow agent shows as latency and
failures rather than as a lower rate. A share of the questions repeat from a short list
(an exact-cache hit after their first time: the cache is the tenant's, and the requests ask
for temperature 0, which the exact cache requires); the rest are unique. Each request's outcome is
kept for the load test's figures (:mod:`.loadtest_figures`).
"""

from __future__ import annotations

import http.client
import itertools
import json
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from .loadtest_figures import Outcome

FAQ = [
    "How do I reset my password?",
    "Can I return an item after 30 days?",
    "How do I enable two-factor authentication?",
    "Are you open on Sunday?",
    "Where is my order?",
    "How do I change my delivery address?",
    "Do you ship abroad?",
    "How do I cancel my subscription?",
]
REPEAT_SHARE = 0.4  # of the questions, from FAQ
TIMEOUT_SECONDS = 30.0
T = TypeVar("T")


class Traffic:
    """Sends ``rate`` chat requests/s to ``host:port`` (the Service's cluster IP) until
    stopped; ``outcomes`` holds every answered or failed request when ``keep`` is set."""

    def __init__(
        self,
        host: str,
        port: int,
        service_host: str,
        keys: list[str],
        rate: float,
        keep: bool = True,
        workers: int = 64,
        seed: int = 1,
    ) -> None:
        if not keys:
            raise ValueError("traffic needs at least one API key")
        self.host, self.port, self.service_host = host, port, service_host
        self.keys = keys
        self.rate = rate
        self.keep = keep
        self.outcomes: list[Outcome] = []
        self.ok = 0
        self.failed = 0
        self.errors: list[str] = []
        self.started = time.monotonic()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="traffic")
        self._local = threading.local()
        self._thread = threading.Thread(target=self._schedule, name="traffic", daemon=True)

    def start(self) -> Traffic:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> Traffic:
        self._stop.set()
        self._thread.join(10)
        self._pool.shutdown(wait=True, cancel_futures=True)
        return self

    def _schedule(self) -> None:
        for i in itertools.count():
            rate = self.rate
            if rate > 0:
                due = self.started + i / rate
                if self._stop.wait(max(0.0, due - time.monotonic())):
                    return
                if self._rng.random() < REPEAT_SHARE:
                    question = self._rng.choice(FAQ)
                else:
                    question = f"Question {i}: what is the status of ticket {i * 7919 % 100000}?"
                key = self.keys[i % len(self.keys)]
                self._pool.submit(self._one, key, question)
            elif self._stop.wait(0.5):
                return

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT_SECONDS)
            self._local.conn = conn
        return conn

    def _one(self, key: str, question: str) -> None:
        # temperature 0: a support answer should not vary, and only such requests are cached
        message = {"role": "user", "content": question}
        body = json.dumps({"model": "auto", "temperature": 0, "messages": [message]})
        headers = {
            "authorization": f"Bearer {key}",
            "content-type": "application/json",
            "host": self.service_host,
        }
        sent = time.monotonic()
        ok, cache, error = False, "", ""
        try:
            conn = self._connection()
            conn.request("POST", "/v1/chat/completions", body, headers)
            resp = conn.getresponse()
            payload = resp.read()
            cache = resp.getheader("x-swiftclaw-cache") or ""
            ok = resp.status == 200 and bool(json.loads(payload)["choices"][0]["message"])
            if not ok:
                error = f"HTTP {resp.status}: {payload[:200]!r}"
        except Exception as err:  # every failure is counted and kept
            error = f"{type(err).__name__}: {err}"
            self._local.conn = None  # a fresh connection for the next request
        outcome = Outcome(sent - self.started, (time.monotonic() - sent) * 1000, ok, cache)
        with self._lock:
            if ok:
                self.ok += 1
            else:
                self.failed += 1
                if len(self.errors) < 20:
                    self.errors.append(error)
            if self.keep:
                self.outcomes.append(outcome)


def wait_until(what: str, probe: Callable[[], T | None], timeout: float, every: float = 1.0) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = probe()
        if got:
            return got
        time.sleep(every)
    raise TimeoutError(f"not within {timeout:.0f}s: {what}")
