"""The prompt a model gets: the agent's system prompt, context fetched for the request,
the client's conversation trimmed to the agent's input budget, the output capped."""

from .build import Prompt, build_prompt
from .context import ContextSources

__all__ = ["ContextSources", "Prompt", "build_prompt"]
