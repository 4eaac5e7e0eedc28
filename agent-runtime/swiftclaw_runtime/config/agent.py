"""The agent's own policy: its system prompt, token limits and context sources."""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import Field

from .base import CONTEXT_URL_PATTERN, PLACEHOLDERS, Model, Name, map_list
from .rules import Issue, holds, python_only, unique_names

# The system prompt as the operator's bookkeeping stores it: kopf keeps the spec it last
# handled in an annotation, as JSON with every non-ASCII character escaped (6 bytes, 12
# outside the Basic Multilingual Plane), and Kubernetes allows 256 KiB of annotations on
# an object in all; ``kubectl apply`` (client side) keeps another copy, as UTF-8. At most
# this many bytes there leaves both copies, and the rest of the spec, room: 100,000 ASCII
# characters fit, 100,000 non-ASCII ones (600 KB to 1.2 MB stored) did not.
MAX_SYSTEM_PROMPT_STORED_BYTES = 100_000


def stored_bytes(text: str) -> int:
    """``text``'s size in kopf's annotation (its JSON, without the quotes)."""
    return len(json.dumps(text)) - 2


def _prompt_fits(spec: Any) -> list[Issue]:
    size = stored_bytes(spec.system_prompt)
    if size <= MAX_SYSTEM_PROMPT_STORED_BYTES:
        return []
    return [
        (
            ("systemPrompt",),
            f"is {size:,} bytes as the operator stores the spec (JSON with non-ASCII "
            "characters escaped: 6 bytes each, 12 outside the BMP), past "
            f"{MAX_SYSTEM_PROMPT_STORED_BYTES:,}: Kubernetes allows 256 KiB of annotations "
            "on an object in all. Shorten it",
        )
    ]


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
    """The source's name, unique in the agent; labels swiftclaw_context_failures_total{source}."""
    url: Annotated[str, Field(max_length=2048, pattern=CONTEXT_URL_PATTERN)]
    """The URL the runtime GETs for each request (no credentials are sent); {user} and {tenant} in
    its path or query are replaced by the caller's identity, each percent-encoded as one path
    segment."""
    timeout_ms: Annotated[int, Field(ge=1, le=60_000, alias="timeoutMs")] = 300
    """How long the runtime waits for the source's answer; a source that does not answer in time is
    left out of the prompt and counted, and the request goes on."""
    cache_ttl_seconds: Annotated[int, Field(ge=0, le=86_400, alias="cacheTTLSeconds")] = 0
    """How long the runtime keeps the source's answer per expanded URL (0: fetched for every
    request)."""


class AgentSpec(Model):
    """What the agent says and how much it may read."""

    rules = (unique_names("context"), python_only(_prompt_fits))

    system_prompt: Annotated[str, Field(max_length=100_000)] = ""
    """The runtime puts it first in every request to the model, as the system message. The operator
    refuses one past 100,000 bytes as it stores the spec (non-ASCII characters count 6 or 12
    bytes), with Degraded/InvalidSpec."""
    max_input_tokens: Annotated[int, Field(ge=1, le=2_000_000)] = 8_000
    """The runtime trims the history to fit: the oldest whole turns first, then the context,
    keeping the system prompts and the last turn; a request whose system prompts and last turn
    alone exceed it is a 400 context_length_exceeded."""
    max_output_tokens: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    """The output cap the runtime sends upstream (and reserves budget for) when a request names
    none; unset, 4,096."""
    context: Annotated[
        list[ContextSource], Field(max_length=16, json_schema_extra=map_list("name"))
    ] = []
    """HTTP sources the runtime fetches for each request, in parallel, into one system message
    after the system prompt."""
