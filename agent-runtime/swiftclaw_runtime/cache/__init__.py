"""Response caching: an exact cache and a verified semantic cache, on Redis or in process.

One concern per module: :mod:`.keys` (what identifies a request, what may be cached,
``Cache-Control``), :mod:`.entry` (a cached answer and its replay as JSON or a stream),
:mod:`.store` (Redis or an in-process LRU, with a health flag), :mod:`.flight` (one
upstream call per key at a time), :mod:`.semantic` (vector search), :mod:`.verify`
(near-miss rejection, pure functions), :mod:`.embeddings` and :mod:`.minilm` (question
embeddings), and :mod:`.layer`, the one object the pipeline talks to.
"""

from .layer import CacheOutcome, Lookup, ResponseCache

__all__ = ["CacheOutcome", "Lookup", "ResponseCache"]
