"""How well the classifier routes a labelled set: confusion matrix and the two errors that
matter (complex sent to simple costs quality; simple sent to complex costs money).

``python -m swiftclaw_runtime.routing.evaluate`` prints both splits for the committed
weights.
"""

from __future__ import annotations

from dataclasses import dataclass

from .classifier import Classifier, default_classifier
from .data import CLASSES, LabelledQuery, Split, load_queries


@dataclass(frozen=True)
class Evaluation:
    # confusion[true][predicted], in the order of CLASSES
    confusion: list[list[int]]

    @property
    def total(self) -> int:
        return sum(map(sum, self.confusion))

    @property
    def accuracy(self) -> float:
        return sum(self.confusion[i][i] for i in range(len(CLASSES))) / max(1, self.total)

    def rate(self, true: str, predicted: str) -> float:
        """Share of ``true`` requests routed to ``predicted``."""
        row = self.confusion[CLASSES.index(true)]
        return row[CLASSES.index(predicted)] / max(1, sum(row))

    @property
    def complex_to_simple(self) -> float:
        return self.rate("complex", "simple")

    @property
    def simple_to_complex(self) -> float:
        return self.rate("simple", "complex")

    def table(self) -> str:
        """The confusion matrix as a markdown table (rows: true class)."""
        lines = [
            "| true \\ routed | " + " | ".join(CLASSES) + " |",
            "|---" * (len(CLASSES) + 1) + "|",
        ]
        for name, row in zip(CLASSES, self.confusion, strict=True):
            lines.append(f"| {name} | " + " | ".join(str(n) for n in row) + " |")
        return "\n".join(lines)

    def summary(self) -> str:
        return (
            f"accuracy {self.accuracy:.1%} over {self.total}; complex->simple "
            f"{self.complex_to_simple:.1%}, simple->complex {self.simple_to_complex:.1%}, "
            f"medium->simple {self.rate('medium', 'simple'):.1%}"
        )


def evaluate(queries: list[LabelledQuery], clf: Classifier | None = None) -> Evaluation:
    clf = clf or default_classifier()
    k = len(CLASSES)
    confusion = [[0] * k for _ in range(k)]
    for q in queries:
        predicted = clf.classify(q.shape).label
        confusion[CLASSES.index(q.label)][CLASSES.index(predicted)] += 1
    return Evaluation(confusion)


def main() -> None:
    split: Split
    for split in ("train", "test"):
        result = evaluate(load_queries(split))
        print(f"{split}: {result.summary()}\n{result.table()}\n")


if __name__ == "__main__":
    main()
