"""The labelled routing set: queries with their complexity class, domain and split.

``data/queries.jsonl`` holds one JSON object a line: ``text``, ``label`` (simple, medium,
complex), ``domain``, ``split`` (train or test) and, for follow-ups and agent turns,
``turns`` (user turns so far) and ``tools`` (tools offered). The test split (a third of
each label and domain, picked by a hash of the text) is never used to fit or tune
anything; :mod:`.train` fits on train and only reports test.

What the labels mean (what a class costs when it is wrong):
simple: a lookup, a one-line fact, a greeting, a short rewrite: a small model answers it
well. medium: an explanation, a summary, a short piece of writing, one well-scoped
function: a capable mid-tier model. complex: multi-step reasoning, design with
trade-offs, debugging across components, proofs, long-form analysis, plans under
constraints: a mistake is costly, so it goes to the best tier.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import orjson

from .features import RequestShape

DATA_FILE = Path(__file__).parent / "data" / "queries.jsonl"
CLASSES: tuple[str, ...] = ("simple", "medium", "complex")
Split = Literal["train", "test"]


@dataclass(frozen=True)
class LabelledQuery:
    text: str
    label: str
    domain: str
    split: Split
    turns: int = 1
    tools: int = 0

    @property
    def shape(self) -> RequestShape:
        return RequestShape(self.text, self.turns, self.tools, len(self.text))


def load_queries(split: Split | None = None, path: Path = DATA_FILE) -> list[LabelledQuery]:
    """The labelled queries, all or of one split."""
    out = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        row = orjson.loads(line)
        if row["label"] not in CLASSES:
            raise ValueError(f"{path}: unknown label {row['label']!r}")
        q = LabelledQuery(
            row["text"],
            row["label"],
            row["domain"],
            row["split"],
            int(row.get("turns", 1)),
            int(row.get("tools", 0)),
        )
        if split is None or q.split == split:
            out.append(q)
    return out
