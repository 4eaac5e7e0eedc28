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
