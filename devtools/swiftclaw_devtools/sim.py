"""A simulated LLM provider over real HTTP, for demos, tests and load tests.

It speaks OpenAI's chat completions, Anthropic's Messages and Gemini's generateContent
(streaming included), answers each prompt deterministically (same model and prompt, same
answer), plays an agent's model (tool calls whose arguments fit the tools' schemas, text
quoting tool results, JSON valid against a requested schema: the policy is in
:mod:`.sim_agent`), and misbehaves on demand: a latency distribution, an error rate, a hang rate,
429s with Retry-After, outage windows, and a control endpoint that flips it into error,
rate-limit or hang mode while it runs.

``POST /_sim/control`` ``{"mode": "normal|error|ratelimit|hang|cutoff", "count": N,
"retryAfter": s}``: ``cutoff`` breaks streams off after their third event; ``hang``
holds a request open without answering until the client goes away.
``GET /_sim/requests`` -> the last 20 model requests as received (``{"path", "headers"
(``anthropic-beta`` only), "body"}``), for tests of what reached the provider.
``GET /_sim/stats`` -> requests served, arrival times (seconds since start), the mode, the
:class:`Counters` of streams and hung requests (those open now and in total), the output
caps chat requests were sent (``output_caps``: the last 100, each ``[field, value]``,
``[null, null]`` for none), the SHA-256 of the last API key presented (``last_key_sha256``,
in the shape's auth header: so a test sees a rotated key arrive, never the key itself)
and the tokens it *billed* (``billed_prompt_tokens``, ``billed_completion_tokens``):
every answer it made, whether or not its client was still there to read it (as a real
provider bills a call whose caller hung up), and of a stream cut short the words it sent;
``billed_cache_read_tokens`` and ``billed_cache_write_tokens`` are the parts of the prompt
tokens it read from and wrote to its prompt cache, which each provider reports in its own
shape when a request repeats a prefix (see :mod:`.sim_prompt_cache`).
An Anthropic request with ``thinking`` enabled (or adaptive) is answered with a thinking
block first (:data:`THOUGHT_WORDS` words and a signature, billed as output as Anthropic
does, streamed as ``thinking_delta`` events and a ``signature_delta``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import orjson

from swiftclaw_runtime.asgi import Receive, Scope, Send, send_body, start_event_stream
from swiftclaw_runtime.embeddings import embeddings_body
from swiftclaw_runtime.providers.shapes import (
    chunk_body,
    completion_body,
    completion_id,
    tool_call,
    tool_call_delta,
    usage_chunk,
)
from swiftclaw_runtime.sse import DONE, encode_event
from swiftclaw_runtime.tokens import estimate_tokens

from .sim_agent import SimCall, Turn, anthropic_turn, decide, gemini_turn, openai_turn
from .sim_images import seen_images
from .sim_prompt_cache import OPENAI_MIN, OPENAI_STEP, Item, PromptCache, gemini_minimum, item

_VOCABULARY = (
    "agents answer quickly when the runtime routes each request to the cheapest model that "
    "can handle it while caches absorb repeats and breakers keep failures contained so "
    "users see steady latency and teams see predictable cost every day across regions"
)
WORDS = _VOCABULARY.split()
MODES = ("normal", "error", "ratelimit", "hang", "cutoff")
# Events of a stream before its first word (OpenAI: the role chunk; Anthropic:
# message_start and content_block_start).
STREAM_HEAD = {"openai": 1, "anthropic": 2, "gemini": 0}
# The words of the thinking block an Anthropic request with thinking on is answered with.
THOUGHT_WORDS = 40


def estimate_message_tokens(texts: list[str]) -> int:
    """Prompt tokens for a list of message texts, with OpenAI's ~4 tokens of framing each."""
    return sum(estimate_tokens(t) + 4 for t in texts) + 2


def parse_latency(spec: str) -> Callable[[random.Random], float]:
    """``fixed:50``, ``uniform:20,80``, ``normal:400,100``, ``lognormal:400,0.5`` (ms).

    ``lognormal:M,S`` has median M ms and shape S, a fair model of real LLM latency.
    """
    kind, _, args = spec.partition(":")
    try:
        nums = [float(x) for x in args.split(",")] if args else []
    except ValueError:
        raise ValueError(f"latency {spec!r}: numbers expected after ':'") from None
    if kind == "fixed" and len(nums) == 1:
        return lambda rng: nums[0] / 1000
    if kind == "uniform" and len(nums) == 2:
        return lambda rng: rng.uniform(nums[0], nums[1]) / 1000
    if kind == "normal" and len(nums) == 2:
        return lambda rng: max(0.0, rng.gauss(nums[0], nums[1])) / 1000
    if kind == "lognormal" and len(nums) == 2:
        mu = math.log(nums[0])
        return lambda rng: rng.lognormvariate(mu, nums[1]) / 1000
    raise ValueError(
        f"latency {spec!r}: use fixed:MS, uniform:LO,HI, normal:MEAN,SD or lognormal:MEDIAN,SIGMA"
    )


def parse_outage(spec: str) -> tuple[float, float]:
    """``START:DURATION`` in seconds since the simulator started."""
    start, _, duration = spec.partition(":")
    try:
        return float(start), float(duration)
    except ValueError:
        raise ValueError(f"outage {spec!r}: use START:DURATION in seconds") from None


@dataclass
class SimConfig:
    latency: str = "fixed:50"
    error_rate: float = 0.0
    hang_rate: float = 0.0
    rate_limit_rate: float = 0.0
    retry_after: float = 1.0
    outages: list[tuple[float, float]] = field(default_factory=list)
    outage_mode: str = "error"
    stream_pace_ms: float = 5.0
    require_key: str | None = None
    seed: int | None = None
    # question -> the key its answer is made from (answer_for(model, key)): questions that
    # mean the same are given one key, so they get one answer; others get their own.
    answer_keys: dict[str, str] = field(default_factory=dict)


def load_answer_keys(path: Path) -> dict[str, str]:
    """``--answer-keys``: a JSON object of question -> key, both strings."""
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ValueError(f"{path}: want a JSON object of question -> key (strings)")
    return data


def spaced(words: tuple[str, ...]) -> list[str]:
    """The words as streamed: each after the first with its leading space."""
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


@dataclass
class Counters:
    """Streams and hung requests: those open now, and how the finished ones ended.

    A stream is *aborted* when its client went away before the end, *cut off* when the
    simulator broke it (``cutoff`` mode); ``streams_started`` is always ``open_streams``
    plus the three endings.
    """

    open_streams: int = 0
    streams_started: int = 0
    streams_completed: int = 0
    streams_aborted: int = 0
    streams_cut_off: int = 0
    hanging: int = 0
    hangs: int = 0
    billed_prompt_tokens: int = 0
    billed_completion_tokens: int = 0
    # parts of billed_prompt_tokens: read from and written to the prompt cache
    billed_cache_read_tokens: int = 0
    billed_cache_write_tokens: int = 0


StreamEnd = Literal["completed", "aborted", "cut_off"]


async def until_disconnect(receive: Receive) -> None:
    """Return when the client has gone away (or its response is complete)."""
    while (await receive())["type"] != "http.disconnect":
        pass


@dataclass(frozen=True)
class Answer:
    """What a simulated answer is made of, whatever the API shape it is sent in: text (its
    words, joined by single spaces) and tool calls (see :mod:`.sim_agent`)."""

    model: str
    words: tuple[str, ...]
    finish: str
    prompt_tokens: int
    body: dict[str, Any]
    calls: tuple[SimCall, ...] = ()
    # parts of prompt_tokens: read from and written to the prompt cache
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    thoughts: tuple[str, ...] = ()  # an Anthropic thinking block's words (output too)

    @property
    def anthropic_usage(self) -> dict[str, int]:
        """Anthropic's input counts: the cache's parts are not in ``input_tokens``."""
        return {
            "input_tokens": self.prompt_tokens - self.cache_read_tokens - self.cache_write_tokens,
            "cache_creation_input_tokens": self.cache_write_tokens,
            "cache_read_input_tokens": self.cache_read_tokens,
        }

    @property
    def gemini_usage(self) -> dict[str, int]:
        meta = {
            "promptTokenCount": self.prompt_tokens,
            "candidatesTokenCount": self.completion_tokens,
        }
        if self.cache_read_tokens:
            meta["cachedContentTokenCount"] = self.cache_read_tokens
        return meta

    @property
    def text(self) -> str:
        return " ".join(self.words)

    @property
    def completion_tokens(self) -> int:
        calls = sum(estimate_tokens(c.arguments_json) for c in self.calls)
        return len(self.thoughts) + len(self.words) + calls

    @property
    def anthropic_stop(self) -> str:
        if self.calls:
            return "tool_use"
        return "max_tokens" if self.finish == "length" else "end_turn"

    @property
    def gemini_finish(self) -> str:
        return "MAX_TOKENS" if self.finish == "length" else "STOP"


def _halves(text: str) -> list[str]:
    """A call's arguments in two stream fragments, as providers split them."""
    cut = len(text) // 2
    return [text[:cut], text[cut:]]


@lru_cache(maxsize=4096)
def answer_for(model: str, prompt: str, limit: int | None) -> tuple[str, ...]:
    """The deterministic answer: 8-48 words chosen by a hash of model and prompt."""
    seed = int.from_bytes(hashlib.sha256(f"{model}\n{prompt}".encode()).digest()[:8], "big")
    rng = random.Random(seed)
    n = rng.randint(8, 48)
    if limit is not None:
        n = min(n, limit)
    return tuple(rng.choice(WORDS) for _ in range(n))


Prompt = tuple[list[Item], list[str]]


def _text_item(texts: list[str], items: list[Item], obj: Any, text: str | None) -> None:
    """``obj`` as a prompt item; ``text``, when not None, counts as a message's text."""
    if text is not None:
        texts.append(text)
    items.append(item(obj, estimate_tokens(text) + 4 if text is not None else 0))


def _prompt_openai(body: dict[str, Any]) -> Prompt:
    """The prompt's items (for the prompt cache) and its messages' texts."""
    items: list[Item] = [item(body["tools"], 0)] if body.get("tools") else []
    texts: list[str] = []
    for m in body.get("messages") or []:
        c = m.get("content") if isinstance(m, dict) else None
        text = None
        if isinstance(c, str):
            text = c
        elif isinstance(c, list):
            text = "".join(p.get("text", "") for p in c if isinstance(p, dict))
        _text_item(texts, items, m, text)
    return items, texts


def _anthropic_text(c: Any) -> str | None:
    """A string or a list of blocks' text (None: no text)."""
    if isinstance(c, str):
        return c
    if isinstance(c, list):
        text = "".join(
            str(b.get("text", "")) for b in c if isinstance(b, dict) and b.get("type") == "text"
        )
        return text or None
    return None


def _prompt_anthropic(body: dict[str, Any]) -> Prompt:
    tools = body.get("tools")
    items: list[Item] = [item(t, 0) for t in tools] if isinstance(tools, list) else []
    texts: list[str] = []
    if body.get("system"):
        _text_item(texts, items, body["system"], _anthropic_text(body["system"]))
    for m in body.get("messages") or []:
        c = m.get("content") if isinstance(m, dict) else None
        _text_item(texts, items, m, _anthropic_text(c))
    return items, texts


def _prompt_gemini(body: dict[str, Any]) -> Prompt:
    items: list[Item] = [item(body["tools"], 0)] if body.get("tools") else []
    texts: list[str] = []
    system = body.get("systemInstruction") or {}
    parts = [part.get("text", "") for part in system.get("parts") or []]
    if parts:
        texts.extend(parts)
        items.append(item(system, sum(estimate_tokens(t) + 4 for t in parts)))
    for c in body.get("contents") or []:
        text = "".join(p.get("text", "") for p in c.get("parts") or [])
        _text_item(texts, items, c, text or None)
    return items, texts


def _wants_json(shape: str, body: dict[str, Any]) -> bool:
    """A JSON answer was asked for: the text must stay JSON, without a note of images."""
    if shape == "openai":
        return (body.get("response_format") or {}).get("type") in ("json_object", "json_schema")
    generation = body.get("generationConfig") or {}
    return shape == "gemini" and generation.get("responseMimeType") == "application/json"


class Simulator:
    """ASGI app of the simulated provider."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.latency = parse_latency(config.latency)
        self.started = time.monotonic()
        self.requests = 0
        self.arrivals: deque[float] = deque(maxlen=10_000)
        self.mode = "normal"
        self.mode_count: int | None = None
        self.mode_retry_after = config.retry_after
        self.counters = Counters()
        self.output_caps: deque[tuple[str | None, Any]] = deque(maxlen=100)
        self.last_key_sha256: str | None = None
        self.prompt_cache = PromptCache()
        self.received: deque[dict[str, Any]] = deque(maxlen=20)

    # --- behaviour -----------------------------------------------------------------

    def _now(self) -> float:
        return time.monotonic() - self.started

    def _current_mode(self) -> str:
        if self.mode != "normal":
            if self.mode_count is not None:
                if self.mode_count <= 0:
                    self.mode, self.mode_count = "normal", None
                    return "normal"
                self.mode_count -= 1
            return self.mode
        t = self._now()
        for start, duration in self.config.outages:
            if start <= t < start + duration:
                return self.config.outage_mode
        if self.config.error_rate and self.rng.random() < self.config.error_rate:
            return "error"
        if self.config.hang_rate and self.rng.random() < self.config.hang_rate:
            return "hang"
        if self.config.rate_limit_rate and self.rng.random() < self.config.rate_limit_rate:
            return "ratelimit"
        return "normal"

    # --- ASGI ----------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        if path == "/_sim/stats" and method == "GET":
            await self._json(send, 200, self.stats())
            return
        if path == "/_sim/requests" and method == "GET":
            await self._json(send, 200, list(self.received))
            return
        if method == "GET" and (path.endswith("/models") or path == "/healthz"):
            await self._json(
                send,
                200,
                {
                    "object": "list",
                    "data": [
                        {"id": "sim-model", "object": "model", "created": 0, "owned_by": "sim"}
                    ],
                },
            )
            return
        body_bytes = await self._read(receive)
        if path == "/_sim/control" and method == "POST":
            await self._control(send, body_bytes)
            return
        shape = self._shape(path)
        if method != "POST" or shape is None:
            await self._json(
                send,
                404,
                {
                    "error": {
                        "message": f"no route {method} {path}",
                        "type": "invalid_request_error",
                    }
                },
            )
            return
        self.requests += 1
        self.arrivals.append(round(self._now(), 4))
        presented = self._presented_key(scope, shape)
        self.last_key_sha256 = hashlib.sha256(presented).hexdigest() if presented else None
        if self.config.require_key and not self._has_key(scope, shape):
            await self._error(send, shape, 401, "invalid api key")
            return
        try:
            body = orjson.loads(body_bytes)
            if not isinstance(body, dict):
                raise ValueError("body is not an object")
        except ValueError:
            await self._error(send, shape, 400, "invalid JSON body")
            return
        betas = [v.decode() for k, v in scope["headers"] if k == b"anthropic-beta"]
        self.received.append({"path": path, "headers": {"anthropic-beta": betas}, "body": body})
        mode = self._current_mode()
        if mode == "hang":
            await self._hang(receive)
            return
        await asyncio.sleep(self.latency(self.rng))
        if mode == "error":
            await self._error(send, shape, 500, "simulated upstream failure")
            return
        if mode == "ratelimit":
            await self._error(
                send,
                shape,
                429,
                "simulated rate limit",
                [(b"retry-after", f"{self.mode_retry_after:g}".encode())],
            )
            return
        if path.endswith(("/embeddings", ":batchEmbedContents")):
            await self._embeddings(send, shape, path, body)
            return
        await self._answer(send, receive, shape, path, body, cutoff=mode == "cutoff")

    async def _embeddings(self, send: Send, shape: str, path: str, body: dict[str, Any]) -> None:
        """Deterministic unit vectors (see :func:`sim_vector`), in OpenAI's or Gemini's shape."""
        try:
            if shape == "openai":
                out = _openai_embeddings(body)
            else:
                out = _gemini_embeddings(path.rsplit("/", 1)[-1].split(":", 1)[0], body)
        except (ValueError, TypeError, AttributeError) as err:
            await self._error(send, shape, 400, f"bad embeddings request: {err}")
            return
        await self._json(send, 200, out)

    async def _hang(self, receive: Receive) -> None:
        """Hold the request open, answering nothing, until the client goes away."""
        c = self.counters
        c.hangs += 1
        c.hanging += 1
        try:
            await until_disconnect(receive)
        finally:
            c.hanging -= 1

    async def _read(self, receive: Receive) -> bytes:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                return b"".join(chunks)

    def _shape(self, path: str) -> str | None:
        if path.endswith(("/chat/completions", "/embeddings")):
            return "openai"
        if path.endswith(":batchEmbedContents"):
            return "gemini"
        if path.endswith("/messages"):
            return "anthropic"
        if path.endswith(":generateContent") or path.endswith(":streamGenerateContent"):
            return "gemini"
        return None

    def _presented_key(self, scope: Scope, shape: str) -> bytes:
        """The API key in the shape's auth header (empty: none)."""
        headers: dict[bytes, bytes] = dict(scope["headers"])
        if shape == "openai":
            value = headers.get(b"authorization", b"")
            return value[7:] if value.startswith(b"Bearer ") else b""
        if shape == "anthropic":
            return headers.get(b"x-api-key", b"")
        return headers.get(b"x-goog-api-key", b"")

    def _has_key(self, scope: Scope, shape: str) -> bool:
        want = (self.config.require_key or "").encode()
        return self._presented_key(scope, shape) == want

    async def _control(self, send: Send, body_bytes: bytes) -> None:
        try:
            body = orjson.loads(body_bytes or b"{}")
            mode = body.get("mode", "normal")
            if mode not in MODES:
                raise ValueError(f"mode must be one of {MODES}")
            count = body.get("count")
            if count is not None and (not isinstance(count, int) or count < 0):
                raise ValueError("count must be a non-negative integer")
            retry_after = float(body.get("retryAfter", self.config.retry_after))
        except (ValueError, AttributeError, TypeError) as err:
            await self._json(send, 400, {"error": {"message": str(err)}})
            return
        self.mode, self.mode_count, self.mode_retry_after = mode, count, retry_after
        await self._json(send, 200, {"mode": mode, "count": count})

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "arrivals": list(self.arrivals),
            "mode": self.mode,
            "uptime": round(self._now(), 3),
            "output_caps": [list(c) for c in self.output_caps],
            "last_key_sha256": self.last_key_sha256,
            **asdict(self.counters),
        }

    async def _json(
        self, send: Send, status: int, obj: Any, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        await send_body(send, status, orjson.dumps(obj), headers=headers)

    async def _error(
        self,
        send: Send,
        shape: str,
        status: int,
        message: str,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        if shape == "anthropic":
            kind = {
                429: "rate_limit_error",
                401: "authentication_error",
                400: "invalid_request_error",
            }.get(status, "api_error")
            obj: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message}}
        elif shape == "gemini":
            obj = {"error": {"code": status, "message": message, "status": "UNAVAILABLE"}}
        else:
            obj = {
                "error": {
                    "message": message,
                    "type": "server_error" if status >= 500 else "invalid_request_error",
                    "param": None,
                    "code": None,
                }
            }
        await self._json(send, status, obj, headers)

    # --- answers -------------------------------------------------------------------

    async def _answer(
        self,
        send: Send,
        receive: Receive,
        shape: str,
        path: str,
        body: dict[str, Any],
        cutoff: bool = False,
    ) -> None:
        turn: Callable[[dict[str, Any], str], Turn]
        if shape == "openai":
            model = str(body.get("model", "sim-model"))
            items, texts = _prompt_openai(body)
            field: str | None = next(
                (f for f in ("max_completion_tokens", "max_tokens") if f in body), None
            )
            limit = body.get("max_completion_tokens") or body.get("max_tokens")
            stream = bool(body.get("stream"))
            turn, prefix = openai_turn, "call_"
        elif shape == "anthropic":
            model = str(body.get("model", "sim-model"))
            items, texts = _prompt_anthropic(body)
            field = "max_tokens" if "max_tokens" in body else None
            limit = body.get("max_tokens")
            stream = bool(body.get("stream"))
            turn, prefix = anthropic_turn, "toolu_"
        else:
            model = path.rsplit("/", 1)[-1].split(":", 1)[0]
            items, texts = _prompt_gemini(body)
            limit = (body.get("generationConfig") or {}).get("maxOutputTokens")
            field = None if limit is None else "generationConfig.maxOutputTokens"
            stream = path.endswith(":streamGenerateContent")
            turn, prefix = gemini_turn, "fc_"
        self.output_caps.append((field, limit))
        try:
            images = seen_images(shape, body)
        except ValueError as err:
            await self._error(send, shape, 400, str(err))
            return
        prompt = texts[-1] if texts else ""
        limit = limit if isinstance(limit, int) else None
        plain = answer_for(model, self.config.answer_keys.get(prompt, prompt), limit)
        decision = decide(turn(body, prompt), model, " ".join(plain), prefix)
        words = tuple(decision.text.split(" ")) if decision.text is not None else ()
        finish = "tool_calls" if decision.calls else "stop"
        if words == plain and limit is not None and len(words) >= limit:
            finish = "length"
        if images and words and not _wants_json(shape, body):
            words = ("Seen", *", ".join(images).split(" "), "|", *words)
        if shape == "anthropic":
            cached = self.prompt_cache.anthropic(model, items)
        elif shape == "openai":
            cached = self.prompt_cache.automatic(model, items, OPENAI_MIN, OPENAI_STEP)
        else:
            cached = self.prompt_cache.automatic(model, items, gemini_minimum(model))
        a = Answer(
            model,
            words,
            finish,
            estimate_message_tokens(texts),
            body,
            decision.calls,
            cached.read,
            cached.written,
            _thoughts(shape, body),
        )
        self.counters.billed_prompt_tokens += a.prompt_tokens
        self.counters.billed_cache_read_tokens += a.cache_read_tokens
        self.counters.billed_cache_write_tokens += a.cache_write_tokens
        if stream and shape == "anthropic":  # (billed by the events it sent: thinking too)
            tally: list[int] = []
            anthropic = self._anthropic_events(a, tally)
            await self._stream(send, receive, anthropic, cutoff, a, tally=tally)
            return
        if stream:
            events = {"openai": self._openai_events, "gemini": self._gemini_events}[shape]
            await self._stream(send, receive, events(a), cutoff, a, STREAM_HEAD[shape])
            return
        render = {
            "openai": _openai_body,
            "anthropic": _anthropic_body,
            "gemini": _gemini_body,
        }[shape]
        self.counters.billed_completion_tokens += a.completion_tokens
        await self._json(send, 200, render(a))

    async def _stream(
        self,
        send: Send,
        receive: Receive,
        events: AsyncIterator[bytes],
        cutoff: bool,
        answer: Answer | None = None,
        head: int = 0,
        tally: list[int] | None = None,
    ) -> None:
        """Send a stream, counted in :attr:`counters` whichever way it ends, and bill
        ``answer``'s output: all of it, or of a stream cut short the words sent (its
        events after the ``head`` events that carry none; with ``tally``, the output
        the events so far carried, one figure per event).

        A task waits on ``receive`` meanwhile: uvicorn reports a client that went away
        there (its ``send`` then does nothing), so the stream stops at once, even while
        it paces itself between events.
        """
        c = self.counters
        c.streams_started += 1
        c.open_streams += 1
        gone = asyncio.create_task(until_disconnect(receive))
        end: StreamEnd = "aborted"
        sent = [0]
        try:
            end = await self._send_events(send, events, gone, cutoff, sent)
        except OSError:  # some uvicorn versions raise on a send to a client that went away
            pass
        finally:
            gone.cancel()
            c.open_streams -= 1
            if answer is not None:
                words = len(answer.words)
                if end == "completed":
                    c.billed_completion_tokens += answer.completion_tokens
                elif tally is not None:
                    c.billed_completion_tokens += tally[sent[0] - 1] if sent[0] else 0
                else:
                    c.billed_completion_tokens += max(0, min(words, sent[0] - head))
            if end == "completed":
                c.streams_completed += 1
            elif end == "cut_off":
                c.streams_cut_off += 1
            else:
                c.streams_aborted += 1
        if end == "cut_off":
            raise ConnectionAbortedError("simulated provider crash mid-stream")

    async def _send_events(
        self,
        send: Send,
        events: AsyncIterator[bytes],
        gone: asyncio.Task[None],
        cutoff: bool,
        count: list[int] | None = None,
    ) -> StreamEnd:
        """``count[0]``: the events sent so far."""
        pace = self.config.stream_pace_ms / 1000
        await start_event_stream(send)
        sent = 0
        count = count if count is not None else [0]
        async for event in events:
            if sent:
                if cutoff and sent == 3:
                    return "cut_off"
                if pace:  # returns early if the client goes away meanwhile
                    await asyncio.wait((gone,), timeout=pace)
            if gone.done():
                return "aborted"
            await send({"type": "http.response.body", "body": event, "more_body": True})
            sent += 1
            count[0] = sent
        if gone.done():
            return "aborted"
        gone.cancel()  # the end of the response would wake it
        await send({"type": "http.response.body", "body": b""})
        return "completed"

    async def _openai_events(self, a: Answer) -> AsyncIterator[bytes]:
        id_, created = completion_id(), int(time.time())
        yield encode_event(chunk_body(id_, a.model, created, {"role": "assistant", "content": ""}))
        for piece in spaced(a.words):
            yield encode_event(chunk_body(id_, a.model, created, {"content": piece}))
        for i, call in enumerate(a.calls):
            yield encode_event(
                chunk_body(id_, a.model, created, tool_call_delta(i, call.id, call.name))
            )
            for piece in _halves(call.arguments_json):
                delta = tool_call_delta(i, arguments=piece)
                yield encode_event(chunk_body(id_, a.model, created, delta))
        yield encode_event(chunk_body(id_, a.model, created, {}, a.finish))
        if (a.body.get("stream_options") or {}).get("include_usage"):
            yield encode_event(
                usage_chunk(
                    id_, a.model, created, a.prompt_tokens, a.completion_tokens, a.cache_read_tokens
                )
            )
        yield DONE

    async def _anthropic_events(self, a: Answer, tally: list[int]) -> AsyncIterator[bytes]:
        """``tally``: after each event is made, the output (words) sent with it and before."""
        out = 0

        def ev(name: str, obj: dict[str, Any]) -> bytes:
            nonlocal out
            kind = (obj.get("delta") or {}).get("type")
            out += kind in ("text_delta", "thinking_delta")
            tally.append(out)
            return f"event: {name}\n".encode() + encode_event({"type": name, **obj})

        yield ev(
            "message_start",
            {
                "message": {
                    "id": "msg_" + completion_id()[9:],
                    "type": "message",
                    "role": "assistant",
                    "model": a.model,
                    "content": [],
                    "usage": {**a.anthropic_usage, "output_tokens": 0},
                },
            },
        )
        index = 0
        if a.thoughts:
            thinking = {"type": "thinking", "thinking": "", "signature": ""}
            yield ev("content_block_start", {"index": 0, "content_block": thinking})
            for piece in spaced(a.thoughts):
                delta = {"type": "thinking_delta", "thinking": piece}
                yield ev("content_block_delta", {"index": 0, "delta": delta})
            delta = {"type": "signature_delta", "signature": SIGNATURE}
            yield ev("content_block_delta", {"index": 0, "delta": delta})
            yield ev("content_block_stop", {"index": 0})
            index = 1
        if a.words:
            text_block = {"type": "text", "text": ""}
            yield ev("content_block_start", {"index": index, "content_block": text_block})
            for piece in spaced(a.words):
                delta = {"type": "text_delta", "text": piece}
                yield ev("content_block_delta", {"index": index, "delta": delta})
            yield ev("content_block_stop", {"index": index})
            index += 1
        for call in a.calls:
            block = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
            yield ev("content_block_start", {"index": index, "content_block": block})
            for piece in _halves(call.arguments_json):
                delta = {"type": "input_json_delta", "partial_json": piece}
                yield ev("content_block_delta", {"index": index, "delta": delta})
            yield ev("content_block_stop", {"index": index})
            index += 1
        yield ev(
            "message_delta",
            {
                "delta": {"stop_reason": a.anthropic_stop},
                "usage": {"output_tokens": a.completion_tokens},
            },
        )
        yield ev("message_stop", {})

    async def _gemini_events(self, a: Answer) -> AsyncIterator[bytes]:
        parts: list[dict[str, Any]] = [{"text": piece} for piece in spaced(a.words)]
        parts += [{"functionCall": {"name": c.name, "args": c.arguments}} for c in a.calls]
        for i, part in enumerate(parts):
            cand: dict[str, Any] = {"content": {"role": "model", "parts": [part]}}
            if "text" in part:
                cand.update(_gemini_logprobs(a.body, [part["text"]]))
            event: dict[str, Any] = {"candidates": [cand]}
            if i == len(parts) - 1:
                cand["finishReason"] = a.gemini_finish
                event["usageMetadata"] = a.gemini_usage
            yield encode_event(event)


def _openai_body(a: Answer) -> dict[str, Any]:
    calls = [tool_call(c.id, c.name, c.arguments_json) for c in a.calls]
    return completion_body(
        completion_id(),
        a.model,
        a.text,
        a.finish,
        a.prompt_tokens,
        a.completion_tokens,
        tool_calls=calls or None,
        cached_tokens=a.cache_read_tokens,
    )


SIGNATURE = "c2ltdWxhdGVk"  # the sim's thinking blocks' signature


def _thoughts(shape: str, body: dict[str, Any]) -> tuple[str, ...]:
    """The thinking block's words: an Anthropic request with thinking on has one."""
    thinking = body.get("thinking") if shape == "anthropic" else None
    if not isinstance(thinking, dict) or thinking.get("type") not in ("enabled", "adaptive"):
        return ()
    return tuple(WORDS[i % len(WORDS)] for i in range(THOUGHT_WORDS))


def _anthropic_body(a: Answer) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if a.thoughts:
        thought = " ".join(a.thoughts)
        content.append({"type": "thinking", "thinking": thought, "signature": SIGNATURE})
    content += [{"type": "text", "text": a.text}] if a.words else []
    content += [
        {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments} for c in a.calls
    ]
    return {
        "id": "msg_" + completion_id()[9:],
        "type": "message",
        "role": "assistant",
        "model": a.model,
        "content": content,
        "stop_reason": a.anthropic_stop,
        "usage": {**a.anthropic_usage, "output_tokens": a.completion_tokens},
    }


def _gemini_body(a: Answer) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"text": a.text}] if a.words else []
    parts += [{"functionCall": {"name": c.name, "args": c.arguments}} for c in a.calls]
    cand = {"content": {"role": "model", "parts": parts}, "finishReason": a.gemini_finish}
    cand.update(_gemini_logprobs(a.body, spaced(a.words)))
    return {
        "candidates": [cand],
        "usageMetadata": a.gemini_usage,
    }


SIM_DIMENSIONS = 1536


@lru_cache(maxsize=4096)
def sim_vector(model: str, text: str, dimensions: int = SIM_DIMENSIONS) -> tuple[float, ...]:
    """A unit vector seeded by a hash of model and text: the same text, the same vector;
    similar texts need not be near each other."""
    seed = int.from_bytes(hashlib.sha256(f"{model}\n{text}".encode()).digest()[:8], "big")
    rng = random.Random(seed)
    values = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return tuple(v / norm for v in values)


def _openai_embeddings(body: dict[str, Any]) -> dict[str, Any]:
    model = str(body.get("model", "sim-embed"))
    raw = body.get("input")
    if isinstance(raw, str) or (isinstance(raw, list) and raw and isinstance(raw[0], int)):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise ValueError("'input' must be a string or a non-empty list")
    texts = [t if isinstance(t, str) else ",".join(map(str, t)) for t in raw]
    dims = int(body.get("dimensions") or SIM_DIMENSIONS)
    encoding = str(body.get("encoding_format") or "float")
    vectors = [list(sim_vector(model, t, dims)) for t in texts]
    tokens = sum(estimate_tokens(t) for t in texts)
    return embeddings_body(vectors, model, encoding, tokens)


def _gemini_embeddings(model: str, body: dict[str, Any]) -> dict[str, Any]:
    out = []
    for r in body["requests"]:
        if r.get("model") != f"models/{model}":
            raise ValueError(f"request model {r.get('model')!r} is not models/{model}")
        text = "".join(str(p["text"]) for p in r["content"]["parts"])
        dims = int(r.get("outputDimensionality") or SIM_DIMENSIONS)
        out.append({"values": list(sim_vector(model, text, dims))})
    return {"embeddings": out}


def _gemini_logprobs(body: dict[str, Any], tokens: list[str]) -> dict[str, Any]:
    """``logprobsResult`` when asked for (``responseLogprobs``): each token at -0.5, its
    ``logprobs`` alternatives below it."""
    config = body.get("generationConfig") or {}
    if not config.get("responseLogprobs"):
        return {}
    top = int(config.get("logprobs") or 0)
    chosen = [{"token": t, "logProbability": -0.5} for t in tokens]
    alternatives = [
        {"candidates": [{"token": t, "logProbability": -0.5 - k} for k in range(top)]}
        for t in tokens
    ]
    return {"logprobsResult": {"chosenCandidates": chosen, "topCandidates": alternatives}}


def serve_simulator(config: SimConfig, host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(
        Simulator(config),
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        server_header=False,
        date_header=False,
        timeout_graceful_shutdown=1,
        backlog=4096,
        timeout_keep_alive=75,
    )
