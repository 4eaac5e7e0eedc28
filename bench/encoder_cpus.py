"""The local encoder on other x86-64 CPUs: the same vectors, the same hits?

onnxruntime picks its int8 kernel by CPU: VNNI (``vpdpbusd``, exact 32-bit sums) where the
CPU has it, ``vpmaddubsw`` (pairs of products summed in a saturating 16-bit lane) on AVX2
and on AVX-512 without VNNI, SSE4.1 code below that. This benchmark encodes every question
of the evaluation set on this machine's CPU and again under ``qemu-x86_64 -cpu MODEL`` for
older CPU models (user-mode emulation: the same Python and onnxruntime, with the CPU's
feature flags of that model, so onnxruntime takes that model's kernel), and compares the
vectors and the semantic cache's decisions (cosine >= threshold and verification) split by
split. Needs ``qemu-user`` (Debian: ``apt-get install qemu-user``); a model whose run fails
is reported, not skipped silently.

    python -m bench.encoder_cpus [--cpu EPYC-Rome] [--cpu Nehalem] [--limit N]

Writes ``bench/results/encoder-cpus-<date>.json``. Under emulation a question takes tens
of milliseconds: the whole set takes a few minutes a model.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
# EPYC-Rome: AVX2, no AVX-512 (the machine); Nehalem: SSE4.2, no AVX.
DEFAULT_CPUS = ("EPYC-Rome", "Nehalem")


def questions(limit: int | None) -> list[str]:
    from swiftclaw_runtime.cache.evaluate import load_pairs

    qs = sorted({q for p in load_pairs() for q in (p.a, p.b)})
    return qs[:limit] if limit else qs


def encode_all(out: Path, limit: int | None) -> None:
    """Encode every question with the runtime's encoder; save the vectors and what it chose."""
    from swiftclaw_runtime.cache.onnx_minilm import OnnxMiniLM

    model = OnnxMiniLM()
    vectors = np.stack([model.encode(q) for q in questions(limit)])
    np.savez(out, vectors=vectors, int8=np.array(model.int8))


def decisions(vectors: dict[str, np.ndarray[Any, Any]]) -> dict[str, dict[str, int]]:
    """Per split: hits, wrong hits, paraphrases found, with the default threshold and rules."""
    from swiftclaw_runtime.cache.evaluate import SPLITS, load_pairs, score
    from swiftclaw_runtime.config import SemanticCacheSpec

    threshold = SemanticCacheSpec().threshold
    pairs = load_pairs()
    out = {}
    for split in SPLITS:
        chosen = [p for p in pairs if p.split == split and p.a in vectors and p.b in vectors]
        sims = [float(vectors[p.a] @ vectors[p.b]) for p in chosen]
        r = score(chosen, sims, threshold, verified=True)
        out[split] = {"pairs": len(chosen), "hits": r.hits, "wrong": r.wrong, "found": r.found}
    return out


def run(cpu: str | None, folder: Path, limit: int | None) -> tuple[Path, float]:
    out = folder / f"{cpu or 'native'}.npz"
    cmd = [sys.executable, "-m", "bench.encoder_cpus", "--encode", str(out)]
    if limit:
        cmd += ["--limit", str(limit)]
    if cpu:
        cmd = ["qemu-x86_64", "-cpu", cpu, *cmd]
    started = time.monotonic()
    subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL if cpu else None)
    return out, time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.encoder_cpus")
    parser.add_argument("--cpu", action="append", help=f"qemu CPU models (default {DEFAULT_CPUS})")
    parser.add_argument("--limit", type=int, help="only the first N questions")
    parser.add_argument("--encode", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.encode:
        encode_all(args.encode, args.limit)
        return 0
    if shutil.which("qemu-x86_64") is None:
        print("qemu-x86_64 not found: apt-get install qemu-user", file=sys.stderr)
        return 2
    qs = questions(args.limit)
    report: dict[str, Any] = {"date": datetime.now(UTC).isoformat(), "questions": len(qs)}
    with tempfile.TemporaryDirectory() as tmp:
        base_path, took = run(None, Path(tmp), args.limit)
        base = np.load(base_path)
        base_vectors = dict(zip(qs, base["vectors"], strict=True))
        report["native"] = {
            "int8": bool(base["int8"]),
            "seconds": round(took, 1),
            "decisions": decisions(base_vectors),
        }
        print(f"native: int8={bool(base['int8'])} {report['native']['decisions']}")
        for cpu in args.cpu or DEFAULT_CPUS:
            try:
                path, took = run(cpu, Path(tmp), args.limit)
            except subprocess.CalledProcessError as err:
                report[cpu] = {"error": str(err)}
                print(f"{cpu}: failed: {err}")
                continue
            got = np.load(path)
            vectors = dict(zip(qs, got["vectors"], strict=True))
            diff = float(np.abs(got["vectors"] - base["vectors"]).max())
            cos = float((got["vectors"] * base["vectors"]).sum(axis=1).min())
            found = decisions(vectors)
            report[cpu] = {
                "int8": bool(got["int8"]),
                "seconds": round(took, 1),
                "max_abs_diff": diff,
                "min_cosine_to_native": cos,
                "decisions": found,
                "same_decisions": found == report["native"]["decisions"],
            }
            print(
                f"{cpu}: int8={bool(got['int8'])} max |diff| {diff:.2g}, min cosine {cos:.7f},"
                f" same decisions: {found == report['native']['decisions']} {found}"
            )
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"encoder-cpus-{datetime.now(UTC):%Y%m%d-%H%M}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    raise SystemExit(main())
