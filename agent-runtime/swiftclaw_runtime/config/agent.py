"""The agent's own policy: its system prompt, token limits and context sources."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from .base import CONTEXT_URL_PATTERN, PLACEHOLDERS, Model, Name, map_list
from .rules import holds, unique_names


def _without_placeholders(url: str) -> str:
    for placeholder in PLACEHOLDERS:
        url = url.replace(placeholder, "")
    return url


class ContextSource(Model):
    """An HTTP source fetched for each request and added to the prompt as a system message.

    ``{user}`` and ``{tenant}`` in the path or query are replaced, URL-encoded, by the
    caller's identity; the host is fixed (no placeholders), so the connection pool and the
    network policy know where each source lives.
    """

    rules = (
        holds(
            "!self.url.replace('{user}', '').replace('{tenant}', '').matches('[{}]')",
            "only the placeholders {user} and {tenant} are allowed",
            ".url",
            lambda s: not set("{}") & set(_without_placeholders(s.url)),
        ),
    )

    name: Name
    url: Annotated[str, Field(max_length=2048, pattern=CONTEXT_URL_PATTERN)]
    timeout_ms: Annotated[int, Field(ge=1, le=60_000, alias="timeoutMs")] = 300
    cache_ttl_seconds: Annotated[int, Field(ge=0, le=86_400, alias="cacheTTLSeconds")] = 0


class AgentSpec(Model):
    """What the agent says and how much it may read."""

    rules = (unique_names("context"),)

    system_prompt: Annotated[str, Field(max_length=100_000)] = ""
    max_input_tokens: Annotated[int, Field(ge=1, le=2_000_000)] = 8_000
    max_output_tokens: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    context: Annotated[
        list[ContextSource], Field(max_length=16, json_schema_extra=map_list("name"))
    ] = []
