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
from .breakpoints import PromptCaching
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


def build_provider(
    spec: ProviderSpec, api_key: str | None, prompt_caching: PromptCaching = "auto"
) -> Provider:
    """The adapter for a provider spec; ``api_key`` comes from :mod:`credentials`,
    ``prompt_caching`` from ``cache.promptCaching`` (see :mod:`.breakpoints`)."""
    if spec.type in ("openai", "openai-compatible"):
        return OpenAIProvider(spec.name, spec.type, spec.base_url, api_key, spec.max_connections)
    if spec.type == "anthropic":
        return AnthropicProvider(
            spec.name, spec.base_url, api_key, spec.max_connections, prompt_caching
        )
    return GeminiProvider(spec.name, spec.base_url, api_key, spec.max_connections)
