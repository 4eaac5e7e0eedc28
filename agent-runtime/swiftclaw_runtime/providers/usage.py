"""Providers' usage blocks read into the runtime's counts (see :class:`.base.Completion`):
every input token in ``prompt_tokens``, and the parts of them read from or written to the
provider's prompt cache, which are priced at their own rates.

- OpenAI: ``prompt_tokens_details.cached_tokens``, a part of ``prompt_tokens``.
- Anthropic: ``cache_read_input_tokens`` and ``cache_creation_input_tokens``, *not* parts of
  ``input_tokens``: the prompt is the sum of the three.
- Gemini: ``cachedContentTokenCount``, a part of ``promptTokenCount``.

A count that is missing, negative or not a number reads as 0, and a cached part is never
more than the prompt, so a provider's odd answer cannot make a negative price.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def count(block: Any, key: str) -> int:
    """``block[key]`` as a token count (0 when absent or not a non-negative number)."""
    value = block.get(key) if isinstance(block, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return 0
    return int(value)


@dataclass(frozen=True)
class PromptUsage:
    """A prompt's tokens as the runtime counts them: ``cached`` and ``written`` are parts
    of ``prompt``."""

    prompt: int
    cached: int = 0
    written: int = 0


def _within(prompt: int, cached: int, written: int = 0) -> PromptUsage:
    cached = min(cached, prompt)
    return PromptUsage(prompt, cached, min(written, prompt - cached))


def openai_prompt(usage: Any) -> PromptUsage:
    details = usage.get("prompt_tokens_details") if isinstance(usage, dict) else None
    return _within(count(usage, "prompt_tokens"), count(details, "cached_tokens"))


def anthropic_prompt(usage: Any) -> PromptUsage:
    read = count(usage, "cache_read_input_tokens")
    written = count(usage, "cache_creation_input_tokens")
    return PromptUsage(count(usage, "input_tokens") + read + written, read, written)


def gemini_prompt(meta: Any) -> PromptUsage:
    return _within(count(meta, "promptTokenCount"), count(meta, "cachedContentTokenCount"))
