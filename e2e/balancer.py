"""Reaching a Service from the tests: round robin over its ready pods, found through the API.

A Service normally gets its endpoints from EndpointSlices, but EndpointSlice (and
Endpoints) validation refuses loopback addresses, and every pod of the local cluster has one
(127.64.0.0/16: the network rule keeps all traffic on loopback). So the Services the operator
creates are there but have no endpoints, and nothing that dials their cluster IP from outside
the pod runner would reach a pod. The tests therefore balance on the client side, as a
headless-Service client would: they watch the Service's pods, keep those that are Ready and
not terminating (what an EndpointSlice calls ``ready``), and send each request to the next.

In a cluster a pod's removal reaches the Service's clients late (EndpointSlice controller,
then kube-proxy or the client's own watch): that is what the runtime's drain after SIGTERM
covers. The balancer learns of it in the same process as the pod runner, so it applies every
change only ``propagation_seconds`` later (1 s by default), so that a runtime that stopped
accepting connections without draining would fail requests here as it would in a cluster.
"""

from __future__ import annotations

import itertools
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2 as httpx
import openai

from .kubeapi import Informer, KubeAPI, pod_ready, record_dial


class PodBalancer:
    """The ready pods behind a Service's selector, refreshed on every change."""

    def __init__(
        self,
        api: KubeAPI,
        namespace: str,
        selector: dict[str, str],
        port: int,
        propagation_seconds: float = 1.0,
    ) -> None:
        self.port = port
        self.propagation_seconds = propagation_seconds
        self._pending: list[tuple[float, str, str | None]] = []  # (due, uid, IP or None)
        self._closed = threading.Event()
        self._pods: dict[str, str] = {}  # uid -> IP of ready pods
        self._ready: list[str] = []
        self._turn = itertools.count()
        self._lock = threading.Lock()
        self.changed = threading.Condition(self._lock)
        self.sent: Counter[str] = Counter()
        query = ",".join(f"{k}={v}" for k, v in selector.items())
        self._informer = Informer(
            api, f"/api/v1/namespaces/{namespace}/pods", self._on_pod, labelSelector=query
        )

    def start(self) -> PodBalancer:
        threading.Thread(target=self._propagate, name="balancer", daemon=True).start()
        self._informer.start()
        self._informer.synced.wait(30)
        return self

    def stop(self) -> None:
        self._informer.stop()
        self._closed.set()

    def _on_pod(self, type_: str, pod: dict[str, Any]) -> None:
        uid, ip = pod["metadata"]["uid"], (pod.get("status") or {}).get("podIP")
        ready = type_ != "DELETED" and pod_ready(pod) and ip
        with self._lock:
            due = time.monotonic() + self.propagation_seconds
            self._pending.append((due, uid, ip if ready else None))

    def _propagate(self) -> None:
        """Applies each change once its propagation delay is over, in the order seen."""
        while not self._closed.wait(0.02):
            with self._lock:
                now, changed = time.monotonic(), False
                while self._pending and self._pending[0][0] <= now:
                    _, uid, ip = self._pending.pop(0)
                    if ip:
                        self._pods[uid] = ip
                    else:
                        self._pods.pop(uid, None)
                    changed = True
                if changed:
                    self._ready = sorted(self._pods.values())
                    self.changed.notify_all()

    def ready(self) -> list[str]:
        with self._lock:
            return list(self._ready)

    def wait_ready(self, n: int, timeout: float = 60) -> list[str]:
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._ready) != n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self._ready)} ready pods, expected {n}")
                self.changed.wait(left)
            return list(self._ready)

    def pick(self) -> str:
        with self._lock:
            if not self._ready:
                raise httpx.ConnectError("no ready pod behind the Service")
            ip = self._ready[next(self._turn) % len(self._ready)]
            self.sent[ip] += 1
        record_dial(ip, self.port)
        return ip


class BalancingTransport(httpx.BaseTransport):
    """Sends each request to the balancer's next ready pod (kept-alive connections per pod)."""

    def __init__(self, balancer: PodBalancer) -> None:
        self.balancer = balancer
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        ip = self.balancer.pick()
        request.url = request.url.copy_with(host=ip, port=self.balancer.port)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def openai_client(balancer: PodBalancer, api_key: str, service_host: str) -> openai.OpenAI:
    """The official SDK, no retries (every failure counts), through the balancer."""
    return openai.OpenAI(
        base_url=f"http://{service_host}/v1",
        api_key=api_key,
        max_retries=0,
        timeout=30,
        http_client=httpx.Client(transport=BalancingTransport(balancer)),
    )


@dataclass
class Load:
    """Steady traffic from a few threads, plain and streamed, every answer checked.

    ``check(message, completion)`` gets each plain completion to assert on; any exception,
    failed check or unfinished stream counts as a failed request. ``samples`` holds each
    request's end (wall clock, as the operator's ``readAt``), duration and whether it
    succeeded, for figures over a window (:func:`window_figures`).
    """

    client: openai.OpenAI
    threads: int = 3
    pause: float = 0.05
    check: Callable[[str, Any], None] | None = None
    streamed: float = 0.3  # the share of requests streamed
    ok: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    samples: list[tuple[float, float, bool]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Load:
        for i in range(self.threads):
            t = threading.Thread(target=self._run, args=(i,), name=f"load-{i}", daemon=True)
            self._workers.append(t)
            t.start()
        return self

    def stop(self) -> Load:
        self._stop.set()
        for t in self._workers:
            t.join(60)
        return self

    @property
    def total(self) -> int:
        return self.ok + self.failed

    def wait_requests(self, n: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        start = self.total
        while self.total - start < n and time.monotonic() < deadline:
            time.sleep(0.05)

    def _run(self, index: int) -> None:
        rng = random.Random(index)
        n = 0
        while not self._stop.is_set():
            n += 1
            started = time.perf_counter()
            try:
                if rng.random() < self.streamed:
                    one_stream(self.client, f"stream {index}-{n}")
                else:
                    message = f"hello {index}-{n}"
                    answer = self.client.chat.completions.create(
                        model="t", messages=[{"role": "user", "content": message}]
                    )
                    if not answer.choices[0].message.content:
                        raise AssertionError("empty answer")
                    if self.check is not None:
                        self.check(message, answer)
            except Exception as err:  # every failure is counted and kept
                with self._lock:
                    self.samples.append((time.time(), time.perf_counter() - started, False))
                    self.failed += 1
                    if len(self.errors) < 20:
                        self.errors.append(f"{type(err).__name__}: {err}")
            else:
                with self._lock:
                    self.samples.append((time.time(), time.perf_counter() - started, True))
                    self.ok += 1
            self._stop.wait(self.pause)


def window_figures(
    samples: list[tuple[float, float, bool]], start: float, end: float
) -> tuple[float, float | None, int]:
    """(requests a second, p95 in ms of those that succeeded, how many) of the requests that
    ended within (start, end]: what a server's counters see between two reads."""
    inside = [(d, ok) for t, d, ok in samples if start < t <= end]
    durations = sorted(d for d, ok in inside if ok)
    p95 = None
    if durations:
        p95 = 1000 * durations[min(len(durations) - 1, math.ceil(0.95 * len(durations)) - 1)]
    return len(inside) / (end - start), p95, len(inside)


def one_stream(client: openai.OpenAI, prompt: str) -> str:
    """A streamed completion; its text, or an AssertionError when it did not finish."""
    text, finish = "", None
    for chunk in client.chat.completions.create(
        model="t", messages=[{"role": "user", "content": prompt}], stream=True
    ):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
    if finish != "stop" or not text:
        raise AssertionError(f"stream ended with finish={finish!r}, {len(text)} characters")
    return text
