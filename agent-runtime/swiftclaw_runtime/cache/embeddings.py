"""Question embeddings for the semantic cache: the bundled all-MiniLM-L6-v2 on the pod's
CPU (:class:`LocalEmbedder`, offline) or the model of ``spec.models.embeddings``
(:class:`ProviderEmbedder`). Both return unit vectors, so a dot product is the cosine.

The local model runs on onnxruntime (:mod:`.onnx_minilm`, one intra-op thread) in one
worker thread (onnxruntime releases the GIL, so the event loop keeps serving meanwhile),
and the vectors of the last few thousand questions are remembered: a repeated question is
not embedded twice.
"""

from __future__ import annotations

import asyncio
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

MEMO_ENTRIES = 4096
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
    def __init__(self, size: int = MEMO_ENTRIES) -> None:
        self.size = size
        self._data: OrderedDict[str, Vector] = OrderedDict()

    def get(self, text: str) -> Vector | None:
        v = self._data.get(text)
        if v is not None:
            self._data.move_to_end(text)
        return v

    def put(self, text: str, v: Vector) -> None:
        self._data[text] = v
        if len(self._data) > self.size:
            self._data.popitem(last=False)


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
