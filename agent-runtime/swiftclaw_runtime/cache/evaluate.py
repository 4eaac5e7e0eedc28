"""``python -m swiftclaw_runtime.cache.evaluate``: how well the semantic cache tells a
paraphrase from a near-miss, on the labelled pairs of ``eval/pairs.jsonl``.

For each split (``dev`` and ``dev2``: what the threshold and the rules were developed on,
``dev2`` being a first held-out split that was scored once and then tuned on;
``heldout``: written before the last round of tuning and never looked at during it;
``heldout2``: 160 pairs written blind (no model run) after that split had been scored,
committed before any configuration was scored on it, scored once, and since then tuned on:
the role-swap rule of :mod:`.verify` came from its wrong hits; ``adversarial``, in
``eval/adversarial.jsonl``: a question and the same question carrying instructions,
"ignore previous", a URL, an e-mail address or an appended command, as one user would
write it to poison another's answer (kinds ``instruction``, ``override``, ``url``,
``email``, ``appended_command``), with paraphrases as controls) it prints the precision of
semantic hits (hits that were paraphrases / all hits) and the recall of paraphrases
(paraphrases hit / all paraphrases) for plain cosine at 0.85 and 0.95 and for the
default: ``cache.semantic.threshold`` with the verification stage (the near-miss checks
and the refusal of questions that carry instructions or payloads, as the runtime does
them). ``--latency`` also
times the local encoder, the verification and a whole lookup over a numpy index of
``--index-size`` entries, on one core.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

PAIRS = Path(__file__).parent / "eval" / "pairs.jsonl"
ADVERSARIAL = Path(__file__).parent / "eval" / "adversarial.jsonl"
SPLITS = ("dev", "dev2", "heldout", "heldout2", "adversarial")


@dataclass(frozen=True)
class Pair:
    a: str
    b: str
    same: bool
    kind: str
    domain: str
    split: str


def load_pairs(path: Path = PAIRS) -> list[Pair]:
    """Labelled pairs, one JSON object a line: ``a``, ``b``, ``same`` (true for a
    paraphrase); ``kind``, ``domain`` and ``split`` may be left out (the split is then
    the file's name, ``blind3`` for ``blind3.jsonl``)."""
    out = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        out.append(
            Pair(
                a=str(row["a"]),
                b=str(row["b"]),
                same=bool(row["same"]),
                kind=str(row.get("kind") or ""),
                domain=str(row.get("domain") or ""),
                split=str(row.get("split") or path.stem),
            )
        )
    return out


@dataclass
class Score:
    hits: int = 0
    wrong: int = 0
    paraphrases: int = 0
    found: int = 0

    @property
    def precision(self) -> float:
        return (self.hits - self.wrong) / self.hits if self.hits else 1.0

    @property
    def recall(self) -> float:
        return self.found / self.paraphrases if self.paraphrases else 0.0


def refusal(a: str, b: str) -> str | None:
    """Why the runtime would not serve ``b``'s answer for ``a`` by meaning (whatever the
    similarity): either question never answered by meaning (:mod:`.safety`), what they
    carry, or a near-miss check; None when it would."""
    from .safety import never_by_meaning
    from .verify import injected, mismatch

    return never_by_meaning(a) or never_by_meaning(b) or injected(a, b) or mismatch(a, b)


def score(pairs: list[Pair], sims: list[float], threshold: float, verified: bool) -> Score:
    s = Score()
    for pair, sim in zip(pairs, sims, strict=True):
        s.paraphrases += pair.same
        refused = verified and refusal(pair.a, pair.b)
        hit = sim >= threshold and not refused
        if hit:
            s.hits += 1
            s.wrong += not pair.same
            s.found += pair.same
    return s


def _text(row: dict[str, object], *names: str) -> str | None:
    for name in names:
        value = row.get(name)
        if isinstance(value, str) and value.strip():
            return value
    return None


def _is_safety(row: dict[str, object]) -> bool:
    """A row of a safety set is a safety question unless it says it is ordinary."""
    for name in ("safety", "sensitive", "unsafe"):
        if isinstance(row.get(name), bool):
            return bool(row[name])
    kind = str(row.get("kind") or row.get("category") or row.get("label") or "").lower()
    return kind not in ("ordinary", "control", "benign", "safe", "none", "normal")


def safety_report(path: Path, model: object, threshold: float) -> list[str]:
    """A safety set scored: rows with ``a`` and ``b`` are pairs (a hit is a pair the
    runtime would answer by meaning: cosine at the threshold and nothing refusing it);
    rows with one question (``question``, ``q``, ``text`` or ``prompt``) are judged by
    :func:`.safety.never_by_meaning` alone. A row is a safety row unless its ``kind``
    (or ``category``, ``label``) says ordinary/control/benign, or ``safety: false``."""
    from .safety import never_by_meaning

    encode = model.encode  # type: ignore[attr-defined]
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    pair_hits: Counter[str] = Counter()
    pair_total: Counter[str] = Counter()
    flagged: Counter[str] = Counter()
    single: Counter[str] = Counter()
    served: list[str] = []
    for row in rows:
        group = "safety" if _is_safety(row) else "ordinary"
        a, b = _text(row, "a", "question_a"), _text(row, "b", "question_b")
        if a is not None and b is not None:
            pair_total[group] += 1
            sim = float(encode(a) @ encode(b))
            if sim >= threshold and refusal(a, b) is None:
                pair_hits[group] += 1
                if group == "safety":
                    served.append(f"  served by meaning: {a!r} / {b!r} ({sim:.3f})")
            continue
        q = _text(row, "question", "q", "text", "prompt")
        if q is None:
            continue
        single[group] += 1
        refused = never_by_meaning(q) is not None
        flagged[group] += refused
        if group == "safety" and not refused:
            served.append(f"  not flagged: {q!r}")
    out = [f"{path}: {len(rows)} rows"]
    if pair_total:
        out.append(
            f"pairs: safety {pair_hits['safety']} of {pair_total['safety']} answered by meaning; "
            f"ordinary {pair_hits['ordinary']} of {pair_total['ordinary']} answered by meaning"
        )
    if single:
        out.append(
            f"questions: safety {flagged['safety']} of {single['safety']} never answered by "
            f"meaning; ordinary {flagged['ordinary']} of {single['ordinary']} refused "
            f"(false positives: {flagged['ordinary'] / max(1, single['ordinary']):.1%})"
        )
    return out + served


def _p50_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def latency(texts: list[str], index_size: int) -> list[str]:
    """Encoder, verification and whole-lookup times (one core: run with one BLAS thread)."""
    import asyncio

    import numpy as np

    from ..config import SemanticCacheSpec
    from .entry import CachedAnswer
    from .keys import Scope
    from .onnx_minilm import OnnxMiniLM
    from .semantic import MemoryIndex
    from .verify import facts, mismatch

    model = OnnxMiniLM()
    for t in texts[:20]:
        model.encode(t)
    enc = []
    for t in texts:
        started = time.perf_counter()
        model.encode(t)
        enc.append(time.perf_counter() - started)
    ver = []
    for a, b in zip(texts, reversed(texts), strict=True):
        facts.cache_clear()
        started = time.perf_counter()
        mismatch(a, b)
        ver.append(time.perf_counter() - started)

    threshold = SemanticCacheSpec().threshold
    scope = Scope("t", "a", "p", "x", "s")
    index = MemoryIndex(index_size + 1, 1 << 40)
    rng = np.random.default_rng(1)
    answer = CachedAnswer({"role": "assistant", "content": "ok"}, "stop", "m", "p/m", 10, 10)

    async def fill_and_look() -> list[float]:
        for i in range(index_size):
            v = rng.standard_normal(384).astype(np.float32)
            await index.add(v / np.linalg.norm(v), scope, answer.with_question(f"q{i}"), 3600)
        for t in texts:
            await index.add(model.encode(t), scope, answer.with_question(t), 3600)
        out = []
        for t in texts:
            facts.cache_clear()
            started = time.perf_counter()
            v = model.encode(t + " please")
            for c in await index.search(v, scope, 4, 0.0):
                if c.similarity >= threshold and mismatch(t, c.answer.question) is None:
                    break
            out.append(time.perf_counter() - started)
        return out

    whole = asyncio.run(fill_and_look())
    return [
        f"local encoder (all-MiniLM-L6-v2, onnxruntime)  p50 {_p50_ms(enc):.2f} ms  "
        f"p95 {sorted(enc)[int(len(enc) * 0.95)] * 1000:.2f} ms",
        f"verification                              p50 {_p50_ms(ver) * 1000:.0f} us",
        f"whole lookup (embed + search {index_size} + verify)  p50 {_p50_ms(whole):.2f} ms",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m swiftclaw_runtime.cache.evaluate")
    parser.add_argument("--pairs", type=Path, default=PAIRS)
    parser.add_argument("--adversarial", type=Path, default=ADVERSARIAL)
    parser.add_argument("--threshold", type=float, help="default: the config default")
    parser.add_argument("--latency", action="store_true", help="also time encoder and lookup")
    parser.add_argument("--index-size", type=int, default=5000)
    parser.add_argument(
        "--split", action="append", help="score only these splits (default: every one found)"
    )
    parser.add_argument(
        "--safety",
        type=Path,
        action="append",
        default=[],
        help="a safety set (JSON lines: pairs, or questions with a kind): how many of its "
        "safety questions would be answered by meaning (must be none), and the share of its "
        "ordinary questions refused",
    )
    parser.add_argument(
        "--show-wrong", action="store_true", help="list the default's wrong hits, by kind"
    )
    args = parser.parse_args(argv)

    from ..config import SemanticCacheSpec
    from .onnx_minilm import OnnxMiniLM

    threshold = args.threshold or SemanticCacheSpec().threshold
    model = OnnxMiniLM()
    for path in args.safety:
        for line in safety_report(path, model, threshold):
            print(line)
        print()
    if args.safety and args.split is None and args.pairs == PAIRS:
        return 0
    every = load_pairs(args.pairs) + (
        load_pairs(args.adversarial) if args.adversarial.exists() else []
    )
    found = list(dict.fromkeys(p.split for p in every))
    splits = args.split or [s for s in SPLITS if s in found] + [s for s in found if s not in SPLITS]
    pairs = [p for p in every if p.split in splits]
    sims = [float(model.encode(p.a) @ model.encode(p.b)) for p in pairs]
    counts = Counter((p.split, p.same) for p in pairs)
    print(
        f"{len(pairs)} pairs: "
        + ", ".join(
            f"{split} {counts[(split, True)]} paraphrases + {counts[(split, False)]} near-misses"
            for split in splits
        )
    )
    print()
    print("| split | method | precision of hits | recall of paraphrases | hits | wrong hits |")
    print("| --- | --- | --- | --- | --- | --- |")
    for split in splits:
        chosen = [(p, s) for p, s in zip(pairs, sims, strict=True) if p.split == split]
        ps, ss = [p for p, _ in chosen], [s for _, s in chosen]
        for name, t, verified in (
            ("cosine >= 0.85", 0.85, False),
            ("cosine >= 0.95", 0.95, False),
            (f"default: cosine >= {threshold:g} + verification", threshold, True),
        ):
            r = score(ps, ss, t, verified)
            print(
                f"| {split} | {name} | {r.precision:.1%} | {r.recall:.1%} | {r.hits} | {r.wrong} |"
            )
    if args.show_wrong:
        print()
        for p, sim in zip(pairs, sims, strict=True):
            if not p.same and sim >= threshold and refusal(p.a, p.b) is None:
                print(f"wrong hit [{p.split}/{p.kind}] {sim:.3f}: {p.a!r} / {p.b!r}")
    if args.latency:
        print()
        for line in latency([p.a for p in pairs[:200]], args.index_size):
            print(line)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    raise SystemExit(main())
