"""Question embeddings for the semantic cache: the bundled all-MiniLM-L6-v2 on the pod's
CPU (:class:`LocalEmbedder`, offline) or the model of ``spec.models.embeddings``
(:class:`ProviderEmbedder`). Both return unit vectors, so a dot product is the cosine.

The local model runs on onnxruntime (:mod:`.onnx_minilm`, one intra-op thread) in one
worker thread (onnxruntime releases the GIL, so the event loop keeps serving meanwhile),
and the vectors of the last few thousand questions are remembered (within
:data:`MEMO_BYTES`): a repeated question is not embedded twice.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Protocol

from ..asgi import watch_for_hangup
from ..embeddings import EmbeddingsRequest, decode_vector
from ..providers import Provider, UpstreamError
from ..providers.base import EmbedCall

if TYPE_CHECKING:  # numpy (and the model's tokenizers, safetensors) only once one is built
    from ..dispatch import Target
    from .minilm import Vector
    from .onnx_minilm import OnnxMiniLM

# The memo of recent questions' vectors, bounded by bytes: keyed by a 16-byte digest of the
# question (not the question, which may be as long as a body), each entry counted as its
# vector's bytes plus MEMO_OVERHEAD (key, node, array header). 8 MiB: about 4,000 of the
# local model's vectors (1.5 KB each), 650 of a provider's 3,072-dimension ones.
MEMO_BYTES = 8 * 1024 * 1024
MEMO_OVERHEAD = 256
TIMEOUT_SECONDS = 1.0  # a question waits at most this for its embedding, then skips the cache


class Embedder(Protocol):
    name: str
    dim: int | None  # None: known after the first embedding

    async def start(self) -> None: ...

    async def embed(self, text: str) -> Vector: ...

    async def close(self) -> None: ...


class EmbeddingFailed(Exception):
    """The embedding could not be had: skip the semantic cache for this request."""


class _Memo:
    """The vectors of recent questions, least recently used out first, within ``limit``
    bytes (questions are client input: neither their number nor their size may grow it)."""

    def __init__(self, limit: int = MEMO_BYTES) -> None:
        self.limit = limit
        self.bytes = 0
        self._data: OrderedDict[bytes, Vector] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    @staticmethod
    def _key(text: str) -> bytes:
        return hashlib.blake2b(text.encode(), digest_size=16).digest()

    def get(self, text: str) -> Vector | None:
        key = self._key(text)
        v = self._data.get(key)
        if v is not None:
            self._data.move_to_end(key)
        return v

    def put(self, text: str, v: Vector) -> None:
        key = self._key(text)
        old = self._data.pop(key, None)
        if old is not None:
            self.bytes -= old.nbytes + MEMO_OVERHEAD
        self._data[key] = v
        self.bytes += v.nbytes + MEMO_OVERHEAD
        while self.bytes > self.limit and self._data:
            _, gone = self._data.popitem(last=False)
            self.bytes -= gone.nbytes + MEMO_OVERHEAD


class LocalEmbedder:
    """all-MiniLM-L6-v2 on onnxruntime (:mod:`.onnx_minilm`, its weight matrices in int8),
    384 dimensions: about 0.6 ms a question on one core, where the float32 graph takes 3.1
    and the same pass in numpy (:mod:`.minilm`) 6."""

    name = "local/all-MiniLM-L6-v2"
    dim: int | None = 384  # MiniLM.dim, without importing numpy before the model loads

    def __init__(self) -> None:
        self.model: OnnxMiniLM | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="embed")
        self._memo = _Memo()

    async def start(self) -> None:
        from .onnx_minilm import OnnxMiniLM

        loop = asyncio.get_running_loop()
        self.model = await loop.run_in_executor(self._pool, OnnxMiniLM)

    async def embed(self, text: str) -> Vector:
        v = self._memo.get(text)
        if v is not None:
            return v
        if self.model is None:
            raise EmbeddingFailed("the local model is not loaded")
        v = await asyncio.get_running_loop().run_in_executor(self._pool, self.model.encode, text)
        self._memo.put(text, v)
        return v

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class ProviderEmbedder:
    """The model of ``spec.models.embeddings`` (the one ``POST /v1/embeddings`` serves),
    called through its provider's adapter: the same connections, key and request shape
    (OpenAI's ``/embeddings``, Gemini's ``batchEmbedContents``) and the same ``dimensions``.
    Not its fallbacks: another model's vectors live in another space and could not be
    compared with the cached ones, so a failure skips the semantic cache instead."""

    def __init__(self, provider: Provider, target: Target, dimensions: int | None) -> None:
        self.provider = provider
        self.model = target.model
        self.dimensions = dimensions
        self.name = target.ref
        self.dim: int | None = None
        self._memo = _Memo()
        import numpy  # noqa: F401  (imported when the semantic cache is built, not per request)

    async def start(self) -> None:
        return None

    async def embed(self, text: str) -> Vector:
        import numpy as np

        v = self._memo.get(text)
        if v is not None:
            return v
        request = EmbeddingsRequest(model=self.name, input=text, dimensions=self.dimensions)
        payload = request.model_dump(exclude_none=True)
        watch_for_hangup()  # a provider call (the local model needs no watcher)
        try:
            call = self.provider.prepare_embeddings(EmbedCall(self.model, request, payload))
            async with asyncio.timeout(TIMEOUT_SECONDS):
                result = await self.provider.embed(call)
            v = np.asarray(decode_vector(result.body["data"][0]["embedding"]), dtype=np.float32)
        except (UpstreamError, TimeoutError, KeyError, IndexError, TypeError, ValueError) as err:
            raise EmbeddingFailed(f"embedding failed: {type(err).__name__}") from None
        norm = float(np.linalg.norm(v))
        if v.ndim != 1 or not v.size or norm == 0.0:
            raise EmbeddingFailed("embedding is empty")
        v = (v / norm).astype(np.float32)
        self._memo.put(text, v)
        return v

    async def close(self) -> None:
        return None  # the provider's connections are the runtime's
