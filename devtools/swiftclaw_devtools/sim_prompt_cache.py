"""The simulated providers' prompt caches: which part of a prompt each provider would
bill as read from (or written to) its cache, in each provider's own rules.

A prompt is a list of :class:`Item` (tools, system prompt, then each message, as the
provider's request lists them), each with its tokens (as :func:`.sim.estimate_message_tokens`
counts them: a prompt's tokens are 2 plus its items'). A prefix is identified by a chained
hash of the model and its items (``cache_control`` marks left out: they do not change what
is cached), so only a request that repeats a prefix exactly can hit it.

- OpenAI: automatic; the longest prefix seen before, from 1024 tokens, counted in 128-token
  steps (``prompt_tokens_details.cached_tokens``, a part of ``prompt_tokens``).
- Anthropic: only up to the request's ``cache_control`` breakpoints: a read is the longest
  prefix cached by an earlier request, found at a breakpoint or up to 20 items before one
  (``cache_read_input_tokens``); the prefix up to the last breakpoint, beyond the read, is
  written (``cache_creation_input_tokens``) when it reaches the model's minimum (1024
  tokens, 2048 for Haiku models). Neither is a part of ``input_tokens``.
- Gemini: implicit; the longest prefix seen before, from 1024 tokens (4096 for Pro models)
  (``cachedContentTokenCount``, a part of ``promptTokenCount``).

The store is bounded (least recently used prefixes go first).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson

OPENAI_MIN, OPENAI_STEP = 1024, 128
ANTHROPIC_LOOKBACK = 20
FRAMING = 2  # the tokens a prompt counts beyond its items'
MAX_PREFIXES = 100_000


@dataclass(frozen=True)
class Item:
    """One part of a prompt: what identifies it, its tokens, whether it ends at a breakpoint."""

    material: bytes
    tokens: int
    breakpoint: bool = False


def _bare(obj: Any) -> Any:
    """``obj`` without its ``cache_control`` marks."""
    if isinstance(obj, dict):
        return {k: _bare(v) for k, v in obj.items() if k != "cache_control"}
    if isinstance(obj, list):
        return [_bare(v) for v in obj]
    return obj


def _marked(obj: Any) -> bool:
    if isinstance(obj, dict):
        return "cache_control" in obj or any(_marked(v) for v in obj.values())
    if isinstance(obj, list):
        return any(_marked(v) for v in obj)
    return False


def item(obj: Any, tokens: int) -> Item:
    return Item(orjson.dumps(_bare(obj), option=orjson.OPT_SORT_KEYS), tokens, _marked(obj))


@dataclass(frozen=True)
class CacheUsage:
    read: int = 0
    written: int = 0


def anthropic_minimum(model: str) -> int:
    return 2048 if "haiku" in model else 1024


def gemini_minimum(model: str) -> int:
    return 4096 if "pro" in model else 1024


class PromptCache:
    """The prefixes one simulated provider has cached (all models, bounded)."""

    def __init__(self, capacity: int = MAX_PREFIXES) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    def _has(self, key: bytes) -> bool:
        if key in self._seen:
            self._seen.move_to_end(key)
            return True
        return False

    def _add(self, key: bytes) -> None:
        self._seen[key] = None
        self._seen.move_to_end(key)
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)

    @staticmethod
    def _prefixes(model: str, items: list[Item]) -> list[tuple[bytes, int]]:
        """Each prefix's key and tokens, the first item's first."""
        h = hashlib.sha256(model.encode()).digest()
        total = FRAMING
        out = []
        for it in items:
            h = hashlib.sha256(h + it.material).digest()
            total += it.tokens
            out.append((h, total))
        return out

    def automatic(self, model: str, items: list[Item], minimum: int, step: int = 1) -> CacheUsage:
        """OpenAI's and Gemini's caching: every prompt is cached; a prompt reads the
        longest prefix cached before, from ``minimum`` tokens, in ``step``-token steps."""
        prefixes = self._prefixes(model, items)
        best = max((n for key, n in prefixes if n >= minimum and self._has(key)), default=0)
        for key, n in prefixes:
            if n >= minimum:
                self._add(key)
        if not best:
            return CacheUsage()
        return CacheUsage(minimum + (best - minimum) // step * step)

    def anthropic(self, model: str, items: list[Item]) -> CacheUsage:
        """Anthropic's caching: reads and writes only at the request's breakpoints."""
        prefixes = self._prefixes(model, items)
        marks = [i for i, it in enumerate(items) if it.breakpoint]
        if not marks:
            return CacheUsage()
        minimum = anthropic_minimum(model)
        read = 0
        for mark in marks:
            for i in range(mark, max(-1, mark - ANTHROPIC_LOOKBACK - 1), -1):
                key, n = prefixes[i]
                if n >= minimum and self._has(key):
                    read = max(read, n)
                    break
        last = prefixes[marks[-1]][1]
        written = last - read if last >= minimum and last > read else 0
        for mark in marks:
            key, n = prefixes[mark]
            if n >= minimum:
                self._add(key)
        return CacheUsage(read, written)
