"""Provider adapters: OpenAI-compatible, Anthropic and Gemini, all seen in OpenAI's shape."""

from __future__ import annotations

from ..config import ProviderSpec
from .anthropic import AnthropicProvider
from .base import (
    Call,
    Completion,
    EmbedCall,
    Embeddings,
    Provider,
    StreamUsage,
    Unsupported,
    UpstreamError,
)
from .gemini import GeminiProvider
from .openai import OpenAIProvider

__all__ = [
    "Call",
    "Completion",
    "EmbedCall",
    "Embeddings",
    "Provider",
    "StreamUsage",
    "Unsupported",
    "UpstreamError",
    "build_provider",
]


def build_provider(spec: ProviderSpec, api_key: str | None) -> Provider:
    """The adapter for a provider spec; ``api_key`` comes from :mod:`credentials`."""
    if spec.type in ("openai", "openai-compatible"):
        return OpenAIProvider(spec.name, spec.type, spec.base_url, api_key, spec.max_connections)
    if spec.type == "anthropic":
        return AnthropicProvider(spec.name, spec.base_url, api_key, spec.max_connections)
    return GeminiProvider(spec.name, spec.base_url, api_key, spec.max_connections)
