"""Question embeddings for the semantic cache: the bundled all-MiniLM-L6-v2 on the pod's
CPU (:class:`LocalEmbedder`, offline) or a provider's ``/embeddings``
(:class:`ProviderEmbedder`). Both return unit vectors, so a dot product is the cosine.

The local model runs on onnxruntime (:mod:`.onnx_minilm`, one intra-op thread) in one
worker thread (onnxruntime releases the GIL, so the event loop keeps serving meanwhile), and the vectors of the last few thousand
questions are remembered: a repeated question is not embedded twice.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Protocol

from ..config import ProviderSpec, SemanticEmbeddingsSpec
from ..providers import UpstreamError

if TYPE_CHECKING:  # numpy (and the model's tokenizers, safetensors) only once one is built
    from .minilm import Vector
    from .onnx_minilm import OnnxMiniLM

MEMO_ENTRIES = 4096


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
    """all-MiniLM-L6-v2 on onnxruntime (:mod:`.onnx_minilm`), 384 dimensions: about
    3 ms a question on one core, where the same pass in numpy (:mod:`.minilm`) takes 6."""

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
    """``POST {baseURL}/embeddings`` of an OpenAI-compatible provider."""

    def __init__(
        self, provider: ProviderSpec, api_key: str | None, spec: SemanticEmbeddingsSpec
    ) -> None:
        from ..providers.http import HttpClient

        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = HttpClient(provider.base_url, headers, 32)
        self.model = spec.model
        self.timeout = spec.timeout_ms / 1000
        self.name = f"{provider.name}/{spec.model}"
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
        try:
            async with asyncio.timeout(self.timeout):
                data = await self.http.post_json(
                    "/embeddings", {"model": self.model, "input": text}
                )
            raw = data["data"][0]["embedding"]
            v = np.asarray(raw, dtype=np.float32)
        except (UpstreamError, TimeoutError, KeyError, IndexError, TypeError, ValueError) as err:
            raise EmbeddingFailed(f"embedding failed: {type(err).__name__}") from None
        norm = float(np.linalg.norm(v))
        if v.ndim != 1 or not v.size or norm == 0.0:
            raise EmbeddingFailed("embedding is empty")
        v = (v / norm).astype(np.float32)
        self._memo.put(text, v)
        return v

    async def close(self) -> None:
        await self.http.close()
