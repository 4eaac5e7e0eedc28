"""What every provider adapter offers: a call and a stream, both in OpenAI's shape."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from ..embeddings import EmbeddingsRequest
from ..schemas import ChatRequest, Message

FailureKind = Literal[
    "connect", "timeout", "rate_limited", "server", "auth", "client", "protocol", "unsupported"
]

RETRYABLE: frozenset[str] = frozenset({"connect", "timeout", "rate_limited", "server", "protocol"})
# A 429 is the provider protecting itself: honour Retry-After, but it is not broken.
TRIPS_BREAKER: frozenset[str] = frozenset({"connect", "timeout", "server", "auth", "protocol"})


_SUMMARIES: dict[str, str] = {
    "connect": "connection failed",
    "timeout": "no answer in time",
    "rate_limited": "rate limited",
    "server": "server error",
    "auth": "authentication refused (check the provider's API key)",
    "client": "request refused",
    "protocol": "malformed answer",
    "unsupported": "cannot serve this request",
}


class UpstreamError(Exception):
    """A failed call to a provider, classified so that retry and fallback can decide."""

    def __init__(
        self,
        kind: FailureKind,
        message: str,
        status: int | None = None,
        retry_after: float | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.kind: FailureKind = kind
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.body = body

    @property
    def summary(self) -> str:
        """The failure as a client may read it: its kind and status, none of the provider's
        own words (they may hold account ids or internal addresses)."""
        phrase = _SUMMARIES[self.kind]
        return phrase if self.status is None else f"{phrase} (HTTP {self.status})"

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE

    @property
    def trips_breaker(self) -> bool:
        return self.kind in TRIPS_BREAKER

    def __str__(self) -> str:
        return (
            f"{self.kind}: {self.message}"
            if self.status is None
            else (f"{self.kind} (HTTP {self.status}): {self.message}")
        )


class Unsupported(UpstreamError):
    """The provider's API cannot express the request (a schema keyword, a content part, a
    parameter it lacks): found while translating, before anything is sent. Not the
    provider's fault and not the client's either while another model of the chain can
    serve it, so the dispatcher skips the target without touching its breaker. The
    message is the runtime's own, so a client may read it; ``param`` names the parameter."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__("unsupported", message)
        self.param = param


def stream_event(data: bytes) -> dict[str, Any]:
    """One server-sent event's data as the JSON object every provider streams."""
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise UpstreamError("protocol", "stream event is not JSON") from None
    if not isinstance(event, dict):
        raise UpstreamError("protocol", "stream event is not a JSON object")
    return event


def turns(
    request: ChatRequest,
    items: str,
    system_text: Callable[[Message, str], Iterable[str]],
    turn: Callable[[int, Message, str], tuple[str, list[dict[str, Any]]]],
) -> tuple[list[str], list[dict[str, Any]]]:
    """The texts of the system and developer messages, and the other messages as turns
    ``{"role": role, items: [...]}`` where ``turn(i, message, param)`` gives the role and
    the items (``param`` names the message's content). Consecutive messages of one role join
    one turn, for the APIs (Anthropic, Gemini) that want the roles to alternate."""
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for i, m in enumerate(request.messages):
        param = f"messages[{i}].content"
        if m.role in ("system", "developer"):
            system.extend(system_text(m, param))
            continue
        role, parts = turn(i, m, param)
        if out and out[-1]["role"] == role:
            out[-1][items].extend(parts)
        else:
            out.append({"role": role, items: parts})
    return system, out


@dataclass(frozen=True)
class Call:
    """One request as sent to one target: the upstream model's name, the validated request,
    and its JSON as the client sent it (so that parameters the runtime does not interpret
    still reach OpenAI-compatible providers)."""

    model: str
    request: ChatRequest
    payload: dict[str, Any]
    # The request in the provider's own shape, set once by :meth:`Provider.prepare`.
    upstream: dict[str, Any] | None = None


@dataclass(frozen=True)
class Completion:
    """A finished chat completion in OpenAI's ``chat.completion`` shape, with its usage.

    Usage is counted the OpenAI way whatever the provider: ``prompt_tokens`` is every input
    token, ``cached_input_tokens`` (read from the provider's prompt cache) and
    ``cache_write_tokens`` (written to it) are parts of it, priced at their own rates
    (Anthropic's ``input_tokens`` is ``prompt_tokens`` less both)."""

    body: dict[str, Any]
    prompt_tokens: int
    completion_tokens: int
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0


@dataclass(frozen=True)
class EmbedCall:
    """One embeddings request as sent to one target (see :class:`Call`)."""

    model: str
    request: EmbeddingsRequest
    payload: dict[str, Any]
    upstream: dict[str, Any] | None = None


def prepared(call: Call | EmbedCall) -> dict[str, Any]:
    """The request in the provider's shape, as :meth:`Provider.prepare` (or
    :meth:`Provider.prepare_embeddings`) made it: the dispatcher prepares every call
    before its first attempt, so a call reaches an adapter prepared."""
    if call.upstream is None:
        raise RuntimeError(f"a call to {call.model!r} was not prepared")
    return call.upstream


@dataclass(frozen=True)
class Embeddings:
    """An embeddings answer in OpenAI's ``list`` shape, with its input tokens."""

    body: dict[str, Any]
    prompt_tokens: int


@dataclass
class StreamUsage:
    """Filled in while a stream runs; read after it ends (the fields as :class:`Completion`'s)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0


class Provider(abc.ABC):
    """One upstream API. Implementations translate to and from OpenAI's shape."""

    name: str
    type: str

    def prepare(self, call: Call) -> Call:
        """Translate ``call`` once, before any attempt (retries reuse it); raises
        :class:`Unsupported` when this provider cannot serve it. The default sends the
        client's JSON as it is."""
        return call

    @abc.abstractmethod
    async def complete(self, call: Call) -> Completion:
        """One non-streaming call (the dispatcher bounds it by the request's deadline)."""

    @abc.abstractmethod
    def stream(
        self, call: Call, usage: StreamUsage, idle_timeout: float
    ) -> AsyncIterator[dict[str, Any]]:
        """OpenAI ``chat.completion.chunk`` dicts; fills ``usage`` as it goes."""

    def prepare_embeddings(self, call: EmbedCall) -> EmbedCall:
        """Translate an embeddings request once (see :meth:`prepare`); the default is a
        provider without an embeddings API."""
        raise Unsupported(f"{self.type} providers have no embeddings API", "model")

    async def embed(self, call: EmbedCall) -> Embeddings:
        """One embeddings call (only reached after :meth:`prepare_embeddings` accepted it)."""
        raise Unsupported(f"{self.type} providers have no embeddings API", "model")

    @abc.abstractmethod
    def use_key(self, api_key: str | None) -> None:
        """Send ``api_key`` from the next call on (a rotated Secret, re-read while running)."""

    @abc.abstractmethod
    async def probe(self, timeout: float) -> None:
        """Raise :class:`UpstreamError` if the provider cannot be reached (health checks)."""

    def connections(self) -> tuple[int, int]:
        """Connection slots in use and connections open now (exported as metrics)."""
        return 0, 0

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
