"""The complexity classifier: multinomial logistic regression over :mod:`.features`.

The weights (``weights.json``) come from :mod:`.train`, fitted on the train split of the
labelled set. The decision is not the most probable class but the one with the least
expected cost under a fixed cost matrix (also in the weights file): sending a complex
request to the simple tier costs quality, which is dearer than the money lost the other
way round, so the classifier leans up when it is unsure. The matrix is set by hand,
before any evaluation, never tuned on the held-out split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import orjson

from .features import NAMES, RequestShape, extract

WEIGHTS_FILE = Path(__file__).parent / "weights.json"


@dataclass(frozen=True)
class Classification:
    """A class, the feature that pushed hardest towards it, and the probabilities."""

    label: str
    reason: str
    probabilities: tuple[float, ...]


class Classifier:
    def __init__(self, model: dict[str, Any]) -> None:
        if tuple(model["features"]) != NAMES:
            raise ValueError("weights.json was trained on other features: run routing.train")
        self.classes: tuple[str, ...] = tuple(model["classes"])
        self.mean: list[float] = model["mean"]
        self.scale: list[float] = model["scale"]
        self.weights: list[list[float]] = model["weights"]
        self.bias: list[float] = model["bias"]
        self.cost: list[list[float]] = model["cost"]  # cost[true][predicted]
        k = len(self.classes)
        # How much more a feature speaks for one class than for the average class.
        self._lean = [
            [w[f] - sum(self.weights[j][f] for j in range(k)) / k for f in range(len(NAMES))]
            for w in self.weights
        ]

    @classmethod
    def load(cls, path: Path = WEIGHTS_FILE) -> Classifier:
        return cls(orjson.loads(path.read_bytes()))

    def standardise(self, x: list[float]) -> list[float]:
        return [(v - m) / s for v, m, s in zip(x, self.mean, self.scale, strict=True)]

    def probabilities(self, z: list[float]) -> list[float]:
        logits = [
            b + sum(wi * zi for wi, zi in zip(w, z, strict=True))
            for w, b in zip(self.weights, self.bias, strict=True)
        ]
        top = max(logits)
        exps = [math.exp(v - top) for v in logits]
        total = sum(exps)
        return [e / total for e in exps]

    def decide(self, p: list[float]) -> int:
        """The class of least expected cost."""
        k = len(self.classes)
        expected = [sum(p[t] * self.cost[t][j] for t in range(k)) for j in range(k)]
        return min(range(k), key=expected.__getitem__)

    def classify(self, shape: RequestShape) -> Classification:
        z = self.standardise(extract(shape))
        p = self.probabilities(z)
        c = self.decide(p)
        lean = self._lean[c]
        best, push = "baseline", 0.0
        for name, zi, li in zip(NAMES, z, lean, strict=True):
            if zi * li > push:
                best, push = name, zi * li
        return Classification(self.classes[c], best, tuple(p))


@cache
def default_classifier() -> Classifier:
    """The committed model, loaded once per process."""
    return Classifier.load()
