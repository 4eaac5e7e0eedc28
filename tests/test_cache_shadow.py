"""Shadow mode over real processes (issue 25): the simulator, the runtime with the local
all-MiniLM-L6-v2, questions from the labelled pairs.

The simulator answers a question by a key (``--answer-keys``): a question and its
paraphrase share one, so they get one answer; a near-miss has its own. A would-be hit of
a paraphrase is then right, and its cached answer agrees with the fresh one; a would-be
hit of a near-miss is wrong, and its answers differ. The runtime does not know the keys:
what it publishes is its own estimate."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from swiftclaw_devtools.processes import Proc
from swiftclaw_runtime.cache.evaluate import PAIRS, Pair, load_pairs
from swiftclaw_runtime.cache.onnx_minilm import OnnxMiniLM
from swiftclaw_runtime.cache.safety import never_by_meaning

from .conftest import API_KEY, Launcher, manifest, openai_provider
from .test_cache_exact import ask, post
from .test_resilience_live import metrics

SHADOW = re.compile(
    r'^swiftclaw_cache_semantic_shadow_total\{agrees="(\w+)",tier="t"\} (\S+)$', re.M
)


@pytest.fixture(scope="module")
def model() -> OnnxMiniLM:
    return OnnxMiniLM()


def distinct_pairs(n: int) -> list[Pair]:
    """``n`` labelled pairs in which no question appears twice (a question has one key)."""
    seen: set[str] = set()
    out = []
    for p in load_pairs(PAIRS):
        if p.a in seen or p.b in seen or p.a == p.b:
            continue
        seen |= {p.a, p.b}
        out.append(p)
        if len(out) == n:
            break
    assert len(out) == n
    return out


def answer_keys(folder: Path, pairs: list[Pair]) -> Path:
    keys: dict[str, str] = {}
    for i, p in enumerate(pairs):
        keys[p.a] = f"q{i}"
        keys[p.b] = f"q{i}" if p.same else f"q{i}-other"
    path = folder / "answer-keys.json"
    path.write_text(json.dumps(keys))
    return path


def agent(sim: Proc, semantic: dict[str, Any]) -> dict[str, Any]:
    tier = {"name": "t", "model": "p0/m", "inputPer1M": 1.0, "outputPer1M": 4.0}
    doc = manifest(
        [openai_provider("p0", sim)],
        [tier],
        cache={"semantic": {"enabled": True, **semantic}, "redis": {"mode": "none"}},
    )
    doc["spec"]["auth"] = {"userFromRequest": True}  # one user, one scope, per pair
    return doc


def shadow_counts(rt: Proc) -> tuple[int, int]:
    """(agreed, disagreed) on /metrics."""
    found = {m.group(1): int(float(m.group(2))) for m in SHADOW.finditer(metrics(rt))}
    return found.get("true", 0), found.get("false", 0)


def usage(rt: Proc) -> dict[str, Any]:
    req = urllib.request.Request(
        f"{rt.url}/v1/usage", headers={"authorization": f"Bearer {API_KEY}"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return dict(json.load(r)["semanticCache"]["tiers"]["t"])


def test_shadow_mode_estimates_the_precision_of_the_hits_it_would_have_served(
    launch: Launcher,
) -> None:
    """1,000 questions (500 pairs, half paraphrases, half near-misses, the first of each
    asked first). With the near-miss checks off, many would-be hits are wrong; none is
    served, and the precision the runtime publishes is within 5 points of the true one
    (which the test knows from the labels, request by request from the counter's step)."""
    pairs = distinct_pairs(500)
    sim = launch.sim(
        "--latency", "fixed:1", "--answer-keys", str(answer_keys(launch.folder, pairs))
    )
    rt = launch.runtime(agent(sim, {"threshold": 0.8, "verify": False}))
    right = wrong = 0
    agreed_before = disagreed_before = 0
    for i, p in enumerate(pairs):
        user = f"user-{i}"
        status, headers, _ = post(rt, {**ask(p.a, temperature=0), "user": user})
        assert status == 200 and headers["x-swiftclaw-cache"] == "miss"
        status, headers, _ = post(rt, {**ask(p.b, temperature=0), "user": user})
        assert status == 200 and headers["x-swiftclaw-cache"] == "miss"  # never served
        agreed, disagreed = shadow_counts(rt)
        if (agreed, disagreed) != (agreed_before, disagreed_before):  # a would-be hit
            assert agreed + disagreed == agreed_before + disagreed_before + 1
            right += p.same
            wrong += not p.same
        agreed_before, disagreed_before = agreed, disagreed
    hits = right + wrong
    true_precision = right / hits
    published = usage(rt)
    assert published["checked"] == hits and published["wouldBeHits"] == hits
    assert published["lookups"] >= 1000 - sum(
        bool(never_by_meaning(q)) for p in pairs for q in (p.a, p.b)
    )
    assert published["serving"] is False
    estimate = published["estimatedPrecision"]
    # a mix worth measuring: many would-be hits, many of them wrong
    assert hits >= 100 and wrong >= 30, (hits, wrong)
    print(
        f"would-be hits {hits} ({wrong} wrong): true {true_precision:.3f}, published {estimate:.3f}"
    )
    assert abs(estimate - true_precision) <= 0.05, (estimate, true_precision, hits)
    assert abs(published["wouldBeHitRate"] - hits / published["lookups"]) < 1e-9


def test_serve_mode_serves_once_measured_and_goes_back_to_shadow_when_precision_drops(
    launch: Launcher, model: OnnxMiniLM
) -> None:
    """``requirePrecision: 0.9`` over ``minSamples: 20``: paraphrases only, the first 20
    would-be hits are checked, not served; then the tier serves (one in ten still
    checked). Near-misses then: the checked ones disagree, and the tier stops serving."""
    pairs = distinct_pairs(700)
    close = [p for p in pairs if model.encode(p.a) @ model.encode(p.b) >= 0.8]
    close = [p for p in close if not (never_by_meaning(p.a) or never_by_meaning(p.b))]
    same, near = [p for p in close if p.same], [p for p in close if not p.same]
    assert len(same) >= 40 and len(near) >= 60, (len(same), len(near))
    sim = launch.sim(
        "--latency", "fixed:1", "--answer-keys", str(answer_keys(launch.folder, pairs))
    )
    semantic = {
        "threshold": 0.8,
        "verify": False,
        "mode": "serve",
        "requirePrecision": 0.9,
        "minSamples": 20,
    }
    rt = launch.runtime(agent(sim, semantic))

    def ask_pair(i: int, p: Pair) -> str:
        user = f"user-{i}"
        assert post(rt, {**ask(p.a, temperature=0), "user": user})[0] == 200
        status, headers, _ = post(rt, {**ask(p.b, temperature=0), "user": user})
        assert status == 200
        return headers["x-swiftclaw-cache"]

    outcomes = [ask_pair(i, p) for i, p in enumerate(same[:40])]
    assert "semantic" not in outcomes[:20]  # measured first
    assert outcomes.count("semantic") >= 10
    assert usage(rt)["serving"] is True
    for j, p in enumerate(near[:60]):
        ask_pair(1000 + j, p)
    after = usage(rt)
    assert after["serving"] is False, after
    assert after["recentPrecision"] < 0.9
    # back in shadow: a would-be hit is checked, not served
    assert all(ask_pair(2000 + k, p) != "semantic" for k, p in enumerate(same[40:45]))
