"""Spend control figures: the classifier's cost per request, what routing saves over a
synthetic day of traffic, and what context sources add to a request.

- classifier: p50/p99 of feature extraction + decision over the labelled set and long
  inputs (the acceptance: p99 <= 1 ms).
- cost: a synthetic day (default 20,000 requests) drawn from the *held-out* queries with
  a support agent's mix (55 % simple, 30 % medium, 15 % complex), exact repeats and
  paraphrases, a 300-token system prompt, history on follow-ups and output lengths drawn
  per class; priced at the example manifest's tiers (examples/agent-in-cluster.yaml).
  Routed by the classifier, against sending everything to the premium tier and against a
  perfect router. No cache is applied (exact and semantic caching are another issue's):
  repeats are priced as calls.
- context: three sources of 100 ms each through a live runtime, against the same runtime
  without them (median and p95 over 40 requests).

    python -m bench.spend [--requests 20000] [--skip-live]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from swiftclaw_devtools.processes import Proc, start_runtime, start_sim
from swiftclaw_runtime.config import load_config
from swiftclaw_runtime.routing.classifier import default_classifier
from swiftclaw_runtime.routing.data import LabelledQuery, load_queries
from swiftclaw_runtime.routing.evaluate import evaluate
from swiftclaw_runtime.routing.features import RequestShape
from swiftclaw_runtime.tokens import estimate_tokens

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
KEY = "sk-bench-spend-0001"
MIX = {"simple": 0.55, "medium": 0.30, "complex": 0.15}
# median output tokens per class (lognormal, sigma 0.5)
OUTPUT_MEDIAN = {"simple": 90, "medium": 320, "complex": 850}
SYSTEM_TOKENS = 300
SEED_FIGURES = {"saved_by_routing": 0.87, "cache_hit_rate": 0.65}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def classifier_latency(rounds: int = 20) -> dict[str, float]:
    clf = default_classifier()
    long_code = "Please review this code.\n```python\n" + "def f(x):\n    return x * 2\n" * 300
    long_code += "```"
    shapes = [q.shape for q in load_queries()]
    shapes += [RequestShape(long_code, 4, 3, 20_000), RequestShape("word " * 3000, 1, 0, 15_000)]
    times = []
    for _ in range(rounds):
        for s in shapes:
            started = time.perf_counter_ns()
            clf.classify(s)
            times.append((time.perf_counter_ns() - started) / 1e6)
    return {
        "calls": len(times),
        "p50_ms": percentile(times, 50),
        "p99_ms": percentile(times, 99),
        "max_ms": max(times),
    }


def paraphrase(text: str, rng: random.Random) -> str:
    """A light rewording of the kind users produce: case, politeness, punctuation."""
    edits = [
        lambda t: t.lower(),
        lambda t: "Please, " + t[0].lower() + t[1:],
        lambda t: t.rstrip("?.!") + "?",
        lambda t: "Quick question: " + t,
        lambda t: t + " Thanks!",
    ]
    return rng.choice(edits)(text)


@dataclass
class Synthetic:
    query: LabelledQuery
    text: str
    history_tokens: int
    output_tokens: int
    kind: str  # new | repeat | paraphrase


def synthetic_day(n: int, seed: int = 11) -> list[Synthetic]:
    rng = random.Random(seed)
    pool = {c: [q for q in load_queries("test") if q.label == c] for c in MIX}
    day: list[Synthetic] = []
    for _ in range(n):
        r = rng.random()
        if day and r < 0.35:  # an exact repeat of an earlier request
            day.append(Synthetic(**{**rng.choice(day).__dict__, "kind": "repeat"}))
            continue
        label = rng.choices(list(MIX), weights=list(MIX.values()))[0]
        q = rng.choice(pool[label])
        text = paraphrase(q.text, rng) if r < 0.45 else q.text
        history = 0 if q.turns <= 1 else int(rng.lognormvariate(5.5, 0.6)) * (q.turns - 1)
        out = int(rng.lognormvariate(0, 0.5) * OUTPUT_MEDIAN[label])
        day.append(Synthetic(q, text, history, out, "paraphrase" if r < 0.45 else "new"))
    return day


def cost_report(n: int) -> dict[str, Any]:
    policy = load_config(REPO / "examples" / "agent-in-cluster.yaml").policy
    tiers = policy.models.tiers
    by_class = {"simple": tiers[0], "medium": policy.default_tier, "complex": tiers[-1]}
    clf = default_classifier()
    routed = perfect = premium = 0.0
    mix: Counter[str] = Counter()
    quality_misses = 0
    tokens_in_total = tokens_out_total = 0
    for s in synthetic_day(n):
        tokens_in = SYSTEM_TOKENS + s.history_tokens + estimate_tokens(s.text) + 4
        tokens_out = s.output_tokens
        tokens_in_total += tokens_in
        tokens_out_total += tokens_out
        shape = RequestShape(s.text, s.query.turns, s.query.tools, len(s.text))
        label = clf.classify(shape).label
        mix[label] += 1
        if s.query.label == "complex" and label == "simple":
            quality_misses += 1

        def price(tier: Any, i: int = tokens_in, o: int = tokens_out) -> float:
            return (i * tier.input_per_1m + o * tier.output_per_1m) / 1e6

        routed += price(by_class[label])
        perfect += price(by_class[s.query.label])
        premium += price(tiers[-1])
    return {
        "requests": n,
        "tokens_in": tokens_in_total,
        "tokens_out": tokens_out_total,
        "cost_routed_usd": round(routed, 2),
        "cost_premium_only_usd": round(premium, 2),
        "cost_perfect_router_usd": round(perfect, 2),
        "saved_vs_premium": round(1 - routed / premium, 4),
        "perfect_router_saves": round(1 - perfect / premium, 4),
        "mix": {k: round(v / n, 4) for k, v in sorted(mix.items())},
        "true_mix": MIX,
        "complex_routed_simple": quality_misses,
        "cache": "not applied (caching is issue 8's; not merged when measured)",
    }


class Sources:
    """A loopback HTTP server standing in for context sources (for this bench and
    tests/test_context_prompt.py): ``/hang/...`` answers after 3 s, ``/fail`` with 500,
    any other path after 100 ms. It records the paths asked."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.paths.append(self.path)
                if self.path.startswith("/fail"):
                    self.send_response(500)
                    self.end_headers()
                    return
                time.sleep(3.0 if self.path.startswith("/hang") else 0.1)
                body = b'{"plan": "gold", "path": "' + self.path.encode() + b'"}'
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _agent(folder: Path, sim: Proc, context: list[dict[str, Any]]) -> Path:
    doc = {
        "apiVersion": "swiftclaw.dev/v1alpha1",
        "kind": "AgentDeployment",
        "metadata": {"name": "bench", "namespace": "bench"},
        "spec": {
            "agent": {"context": context},
            "providers": [{"name": "sim", "type": "openai-compatible", "baseURL": f"{sim.url}/v1"}],
            "models": {"tiers": [{"name": "t", "model": "sim/m"}]},
            "cache": {"redis": {"mode": "none"}},
        },
    }
    path = folder / f"agent-{len(context)}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _times(url: str, n: int) -> list[float]:
    body = json.dumps({"model": "t", "messages": [{"role": "user", "content": "hi"}]}).encode()
    out = []
    for _ in range(n):
        req = urllib.request.Request(
            f"{url}/v1/chat/completions",
            data=body,
            headers={"authorization": f"Bearer {KEY}", "content-type": "application/json"},
        )
        started = time.perf_counter()
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()
        out.append((time.perf_counter() - started) * 1000)
    return out


def context_latency(folder: Path, n: int = 40) -> dict[str, float]:
    sources = Sources()
    keys = folder / "keys.yaml"
    keys.write_text(yaml.safe_dump({"keys": [{"key": KEY, "tenant": "t", "user": "u"}]}))
    procs: list[Proc] = []
    try:
        sim = start_sim(None, "--latency", "fixed:1")
        procs.append(sim)
        ctx = [
            {"name": f"s{i}", "url": f"{sources.url}/s{i}/{{user}}", "timeoutMs": 1000}
            for i in range(3)
        ]
        with_ctx = start_runtime(_agent(folder, sim, ctx), None, "--api-keys", str(keys))
        procs.append(with_ctx)
        plain = start_runtime(_agent(folder, sim, []), None, "--api-keys", str(keys))
        procs.append(plain)
        _times(with_ctx.url, 3)
        _times(plain.url, 3)
        a, b = _times(with_ctx.url, n), _times(plain.url, n)
    finally:
        for p in reversed(procs):
            p.stop()
        sources.close()
    return {
        "sources": 3,
        "source_ms": 100,
        "with_context_p50_ms": round(statistics.median(a), 1),
        "with_context_p95_ms": round(percentile(a, 95), 1),
        "without_p50_ms": round(statistics.median(b), 1),
        "added_p50_ms": round(statistics.median(a) - statistics.median(b), 1),
        "added_p95_ms": round(percentile(a, 95) - percentile(b, 95), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--skip-live", action="store_true", help="no processes (context bench)")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    held_out = evaluate(load_queries("test"))
    report: dict[str, Any] = {
        "classifier": classifier_latency(),
        "held_out": {
            "accuracy": round(held_out.accuracy, 4),
            "complex_to_simple": round(held_out.complex_to_simple, 4),
            "simple_to_complex": round(held_out.simple_to_complex, 4),
            "confusion": held_out.confusion,
        },
        "cost_day": cost_report(args.requests),
        "seed_figures": SEED_FIGURES,
    }
    if not args.skip_live:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="swiftclaw-spend-") as tmp:
            report["context"] = context_latency(Path(tmp))
    (RESULTS / "spend.json").write_text(json.dumps(report, indent=2) + "\n")
    c, d = report["classifier"], report["cost_day"]
    lines = [
        "# Spend control",
        "",
        f"Classifier: p50 {c['p50_ms']:.3f} ms, p99 {c['p99_ms']:.3f} ms, max "
        f"{c['max_ms']:.3f} ms over {c['calls']} calls.",
        "",
        f"Held out ({held_out.total} queries): {held_out.summary()}",
        "",
        held_out.table(),
        "",
        f"Synthetic day, {d['requests']} requests ({d['tokens_in']} tokens in, "
        f"{d['tokens_out']} out), example manifest prices, no cache:",
        "",
        "| | cost (USD) | saved vs premium |",
        "|---|---|---|",
        f"| everything on premium | {d['cost_premium_only_usd']} | - |",
        f"| routed by the classifier | {d['cost_routed_usd']} | {d['saved_vs_premium']:.1%} |",
        f"| perfect router | {d['cost_perfect_router_usd']} | {d['perfect_router_saves']:.1%} |",
        f"| seed's figure | | {SEED_FIGURES['saved_by_routing']:.0%} (+65 % cache hits) |",
        "",
        f"Routing mix: {d['mix']} (true mix {d['true_mix']}); complex requests routed to "
        f"simple: {d['complex_routed_simple']}.",
    ]
    if "context" in report:
        x = report["context"]
        lines += [
            "",
            f"Context: 3 sources x 100 ms add {x['added_p50_ms']} ms at p50 "
            f"({x['added_p95_ms']} ms at p95); with context p50 {x['with_context_p50_ms']} ms.",
        ]
    (RESULTS / "spend.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
