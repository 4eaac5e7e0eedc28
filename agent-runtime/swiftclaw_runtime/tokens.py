"""Token estimates without a tokenizer download (tiktoken fetches its tables at first use).

About four characters of English per token is the figure OpenAI publishes; the
estimate is used for limits and for providers that do not report usage, never billed
where the provider reports real counts.
"""

from __future__ import annotations

import math


def estimate_tokens(text: str) -> int:
    """Roughly how many tokens ``text`` holds (at least 1 for non-empty text)."""
    if not text:
        return 0
    return max(1, math.ceil(len(text) / 4))


def estimate_message_tokens(texts: list[str]) -> int:
    """Prompt tokens for a list of message texts, with OpenAI's ~4 tokens of framing each."""
    return sum(estimate_tokens(t) + 4 for t in texts) + 2
