"""The command line of the generated reference pages: print one, or ``--check`` that the
committed page is what the code generates now (``make docs`` runs the checks)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str], page: str, render: Callable[[], str]) -> int:
    """Print the page, or with ``--check`` exit 1 when ``page`` is stale."""
    text = render()
    if argv == ["--check"]:
        if (ROOT / page).read_text() != text:
            print(f"{page} is stale: run `make docs-ref`", file=sys.stderr)
            return 1
        return 0
    if argv:
        print("usage: [--check]", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0
