"""The pods' samples from a Prometheus server (``spec.autopilot.prometheusURL``) instead of
from the pods: a thin adapter producing the :class:`PodSample` a direct read produces.

Two instant queries (``/api/v1/query``, form POSTs: a fleet's pod names do not fit a URL)
select the agent's ready pods by the ``namespace`` and ``pod`` labels a ServiceMonitor's
targets carry: the wanted families with ``up``, and ``timestamp(up)``, when each pod was
last scraped (a sample's time is its scrape's, not the query's: the aggregation's interval
ends there, and a read with nothing newer than the last is no interval at all). The
target's labels are dropped, so a series reads as in the pod's own exposition.

Bounded like a pod read: a timeout, a cap on the response's bytes, :data:`MAX_SERIES` per
pod. Any failure (no answer, not 200, not a query result, an error status) fails every
pod's read, and a pod without series, whose last scrape failed (``up`` 0), or whose last
scrape is older than :data:`MAX_AGE_SECONDS` (a Prometheus that stopped scraping still
answers from its 5 min lookback) fails its own: a failed read is never an empty one
(KEDA reads a failed query as 0: kedacore/keda #965, #3064), so it shows as a partial
read and then ``MetricsStale``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Any

import orjson

from .exposition import MAX_SERIES, WANTED, PodSample, SeriesKey
from .scraper import Reader

TIMEOUT_SECONDS = 5.0
MAX_BYTES = 32 * 1024 * 1024
MAX_AGE_SECONDS = 180.0
UP = "up"
# what Prometheus (and the Prometheus operator's relabelling) adds to a target's series
TARGET_LABELS = frozenset(
    {"__name__", "job", "instance", "namespace", "pod", "service", "container", "endpoint"}
)
_K8S_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")


def selector(namespace: str, pods: Sequence[str]) -> str:
    """The label matchers of the agent's pods (Kubernetes names only: their one regular
    expression character, ``.``, escaped for RE2 inside a PromQL string)."""
    names = "|".join(p.replace(".", "\\\\.") for p in sorted(pods))
    return f'namespace="{namespace}",pod=~"{names}"'


def queries(namespace: str, pods: Sequence[str]) -> tuple[str, str]:
    """(the wanted series and ``up``, when each pod was last scraped)."""
    sel = selector(namespace, pods)
    names = "|".join(sorted(WANTED | {UP}))
    return f'{{__name__=~"{names}",{sel}}}', f"timestamp(up{{{sel}}})"


def vector(body: bytes) -> list[dict[str, Any]]:
    """The result of an instant query's answer; ``ValueError`` when it is not one."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ValueError("not JSON") from None
    if not isinstance(doc, dict) or doc.get("status") != "success":
        raise ValueError("not a successful query")
    data = doc.get("data")
    if not isinstance(data, dict) or data.get("resultType") != "vector":
        raise ValueError("not an instant vector")
    result = data.get("result")
    if not isinstance(result, list):
        raise ValueError("no result")
    return result


def _point(item: Any) -> tuple[str, str, dict[str, str], float]:
    """(pod, sample name, its own labels, value) of one result item."""
    if not isinstance(item, dict):
        raise ValueError("a result item is not an object")
    metric, value = item.get("metric"), item.get("value")
    if not isinstance(metric, dict) or not isinstance(value, list) or len(value) != 2:
        raise ValueError("a result item has no metric or value")
    labels = {str(k): str(v) for k, v in metric.items() if k not in TARGET_LABELS}
    return str(metric.get("pod", "")), str(metric.get("__name__", "")), labels, float(str(value[1]))


def samples_of(
    series: list[dict[str, Any]],
    stamps: list[dict[str, Any]],
    pods: Sequence[str],
    now: float,
) -> tuple[dict[str, PodSample], dict[str, str]]:
    """The two queries' results into (samples by pod, why each failed pod failed)."""
    wanted = set(pods)
    at: dict[str, float] = {}
    for item in stamps:
        pod, _, _, value = _point(item)
        if pod in wanted:
            at[pod] = max(at.get(pod, 0.0), value)
    up: dict[str, float] = {}
    kept: dict[str, dict[SeriesKey, float]] = {p: {} for p in wanted}
    truncated: set[str] = set()
    for item in series:
        pod, name, labels, value = _point(item)
        if pod not in wanted:
            continue
        if name == UP:
            up[pod] = max(up.get(pod, 0.0), value)
            continue
        if name not in WANTED:
            continue
        mine = kept[pod]
        if len(mine) >= MAX_SERIES:
            truncated.add(pod)
            continue
        mine[(name, tuple(sorted(labels.items())))] = value
    out: dict[str, PodSample] = {}
    failed: dict[str, str] = {}
    for pod in pods:
        if up.get(pod) != 1.0 or pod not in at:
            failed[pod] = (
                "Prometheus's last scrape of it failed"
                if pod in up
                else "no series in Prometheus (not scraped yet?)"
            )
        elif now - at[pod] > MAX_AGE_SECONDS:
            failed[pod] = f"Prometheus last scraped it {now - at[pod]:.0f}s ago"
        elif not kept[pod]:
            failed[pod] = "Prometheus holds none of the wanted series for it"
        else:
            out[pod] = PodSample(pod, at[pod], kept[pod], pod in truncated)
    return out, failed


async def read(
    reader: Reader,
    url: str,
    namespace: str,
    pods: Sequence[str],
    timeout: float = TIMEOUT_SECONDS,
    max_bytes: int = MAX_BYTES,
) -> tuple[dict[str, PodSample], dict[str, str]]:
    """(samples by pod, why each failed pod failed), as :meth:`Reader.read` answers."""
    named = [p for p in pods if _K8S_NAME.fullmatch(p)]
    failed = {p: "not a Kubernetes name" for p in pods if p not in named}
    if not named:
        return {}, failed
    endpoint = url.rstrip("/") + "/api/v1/query"
    q_series, q_stamps = queries(namespace, named)
    bodies = await asyncio.gather(
        *(
            reader.fetch(endpoint, {"query": q}, timeout=timeout, max_bytes=max_bytes)
            for q in (q_series, q_stamps)
        )
    )
    try:
        answers = []
        for body in bodies:
            if isinstance(body, str):
                raise ValueError(body)
            answers.append(vector(body))
        samples, missing = samples_of(answers[0], answers[1], named, reader.clock())
    except ValueError as err:
        return {}, {**failed, **{p: f"Prometheus: {str(err)[:100]}" for p in named}}
    return samples, {**failed, **missing}
