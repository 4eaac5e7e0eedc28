"""Fit the complexity classifier on the train split and write ``weights.json``.

``python -m swiftclaw_runtime.routing.train`` (needs numpy, a dev dependency; the
runtime itself reads the JSON with plain Python). The L2 strength is chosen by 5-fold
cross-validation on the train split only, by the mean routing cost under the fixed cost
matrix; the held-out split is printed at the end and never read before.
"""

from __future__ import annotations

import json
import random
import sys
from typing import Any

import numpy as np

from .classifier import WEIGHTS_FILE, Classifier
from .data import CLASSES, LabelledQuery, load_queries
from .evaluate import evaluate
from .features import NAMES, extract

# cost[true][routed], set before any evaluation: quality lost (a complex request on a
# small model) is dearer than money lost (a simple one on the premium model).
COST = [
    [0.0, 0.5, 1.0],  # simple routed to simple, medium, complex
    [1.0, 0.0, 0.5],  # medium
    [5.0, 1.5, 0.0],  # complex
]
L2_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3)
FOLDS = 5


def _matrix(queries: list[LabelledQuery]) -> tuple[Any, Any]:
    x = np.array([extract(q.shape) for q in queries], dtype=float)
    y = np.array([CLASSES.index(q.label) for q in queries])
    return x, y


def fit(x: Any, y: Any, l2: float, steps: int = 3000, lr: float = 0.5) -> dict[str, Any]:
    """Softmax regression by full-batch gradient descent on standardised features."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    z = (x - mean) / scale
    n, f = z.shape
    k = len(CLASSES)
    onehot = np.eye(k)[y]
    w = np.zeros((k, f))
    b = np.zeros(k)
    for _ in range(steps):
        logits = z @ w.T + b
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        grad = p - onehot
        w -= lr * (grad.T @ z / n + l2 * w)
        b -= lr * grad.mean(axis=0)
    return {
        "features": list(NAMES),
        "classes": list(CLASSES),
        "mean": [round(float(v), 6) for v in mean],
        "scale": [round(float(v), 6) for v in scale],
        "weights": [[round(float(v), 6) for v in row] for row in w],
        "bias": [round(float(v), 6) for v in b],
        "cost": COST,
    }


def routing_cost(model: dict[str, Any], queries: list[LabelledQuery]) -> float:
    result = evaluate(queries, Classifier(model))
    k = len(CLASSES)
    total = sum(result.confusion[t][p] * COST[t][p] for t in range(k) for p in range(k))
    return total / max(1, result.total)


def choose_l2(train: list[LabelledQuery]) -> float:
    order = list(range(len(train)))
    random.Random(7).shuffle(order)
    folds = [order[i::FOLDS] for i in range(FOLDS)]
    best, best_cost = L2_GRID[0], float("inf")
    for l2 in L2_GRID:
        costs = []
        for fold in folds:
            held = set(fold)
            fit_on = [q for i, q in enumerate(train) if i not in held]
            check = [train[i] for i in fold]
            costs.append(routing_cost(fit(*_matrix(fit_on), l2), check))
        cost = sum(costs) / len(costs)
        print(f"  l2={l2:<6} cross-validated routing cost {cost:.3f}", file=sys.stderr)
        if cost < best_cost:
            best, best_cost = l2, cost
    return best


def main() -> None:
    train = load_queries("train")
    l2 = choose_l2(train)
    model = fit(*_matrix(train), l2)
    model["l2"] = l2
    WEIGHTS_FILE.write_text(json.dumps(model, indent=1) + "\n")
    print(f"wrote {WEIGHTS_FILE} (l2={l2}, {len(train)} training queries)")
    for split, queries in (("train", train), ("test (held out)", load_queries("test"))):
        result = evaluate(queries, Classifier(model))
        print(f"{split}: {result.summary()}\n{result.table()}\n")


if __name__ == "__main__":
    main()
