"""A cached answer: what is kept of a completion, and its replay as JSON or as a stream.

An entry keeps the assistant message, the finish reason, the model names and the usage
of the call it came from, not the response's ``id`` or ``created``: a replay gets its
own. A streamed answer is assembled from its chunks (:class:`StreamAssembler`) and only
kept when the stream ended cleanly with a finish reason and its usage.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..providers.shapes import chunk_body, completion_body, completion_id, usage_chunk

# A streamed replay sends the text in pieces of about this many characters, cut at spaces.
REPLAY_PIECE_CHARS = 48
# Top-level fields of a completion that a replay gives back as they were.
KEPT_FIELDS = ("system_fingerprint", "service_tier")


@dataclass(frozen=True)
class CachedAnswer:
    """One assistant answer with its usage, as stored in the cache."""

    message: dict[str, Any]
    finish_reason: str | None
    model: str  # the model name the response carried
    model_ref: str  # provider/model that answered (for prices)
    prompt_tokens: int
    completion_tokens: int
    created: float = field(default_factory=time.time)
    question: str = ""  # the single-turn question (semantic entries), for verification
    logprobs: dict[str, Any] | None = None  # the choice's, when the request asked for them
    extra: dict[str, Any] = field(default_factory=dict)  # system_fingerprint, service_tier

    @classmethod
    def from_completion(
        cls, body: dict[str, Any], model_ref: str, prompt_tokens: int, completion_tokens: int
    ) -> CachedAnswer | None:
        """The entry for a non-streamed completion, or None when it is not one answer."""
        choices = body.get("choices")
        if not isinstance(choices, list) or len(choices) != 1:
            return None
        choice = choices[0]
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            return None
        logprobs = choice.get("logprobs")
        return cls(
            message=message,
            finish_reason=choice.get("finish_reason"),
            model=str(body.get("model") or model_ref),
            model_ref=model_ref,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            logprobs=logprobs if isinstance(logprobs, dict) else None,
            extra={k: body[k] for k in KEPT_FIELDS if body.get(k) is not None},
        )

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "m": self.message,
                "f": self.finish_reason,
                "model": self.model,
                "ref": self.model_ref,
                "pt": self.prompt_tokens,
                "ct": self.completion_tokens,
                "c": self.created,
                "q": self.question,
                "lp": self.logprobs,
                "x": self.extra,
            }
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> CachedAnswer | None:
        """Decode an entry; None for anything that is not one (a corrupt or foreign value)."""
        try:
            d = orjson.loads(raw)
            return cls(
                message=dict(d["m"]),
                finish_reason=d["f"],
                model=str(d["model"]),
                model_ref=str(d["ref"]),
                prompt_tokens=int(d["pt"]),
                completion_tokens=int(d["ct"]),
                created=float(d["c"]),
                question=str(d.get("q", "")),
                logprobs=d.get("lp"),
                extra=dict(d.get("x") or {}),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None

    def with_question(self, question: str) -> CachedAnswer:
        return dataclasses.replace(self, question=question)

    @property
    def content(self) -> str:
        text = self.message.get("content")
        return text if isinstance(text, str) else ""

    def completion(self) -> dict[str, Any]:
        """A ``chat.completion`` body with a fresh id and the cached usage."""
        body = completion_body(
            completion_id(),
            self.model,
            self.content,
            self.finish_reason,
            self.prompt_tokens,
            self.completion_tokens,
        )
        body["choices"][0]["message"] = dict(self.message)
        body["choices"][0]["logprobs"] = self.logprobs
        body.update(self.extra)
        return body

    def chunks(self, include_usage: bool) -> list[dict[str, Any]]:
        """The answer as ``chat.completion.chunk`` objects, as a provider would stream it."""
        id_, created = completion_id(), int(time.time())
        out = [chunk_body(id_, self.model, created, {"role": "assistant", "content": ""})]
        tokens = (self.logprobs or {}).get("content")
        if (
            isinstance(tokens, list)
            and tokens
            and "".join(str(t.get("token", "")) for t in tokens if isinstance(t, dict))
            == self.content
        ):
            for t in tokens:  # one chunk per token, each with its logprobs, as streamed
                chunk = chunk_body(id_, self.model, created, {"content": t["token"]})
                chunk["choices"][0]["logprobs"] = {"content": [t], "refusal": None}
                out.append(chunk)
        else:
            for piece in _pieces(self.content):
                out.append(chunk_body(id_, self.model, created, {"content": piece}))
        thinking = self.message.get("thinking_blocks")
        if isinstance(thinking, list) and thinking:  # (before the text, as Anthropic streams)
            deltas = [dict(b, index=i) for i, b in enumerate(thinking) if isinstance(b, dict)]
            out.insert(1, chunk_body(id_, self.model, created, {"thinking_blocks": deltas}))
        tool_calls = self.message.get("tool_calls")
        if isinstance(tool_calls, list) and tool_calls:
            deltas = [dict(call, index=i) for i, call in enumerate(tool_calls)]
            out.append(chunk_body(id_, self.model, created, {"tool_calls": deltas}))
        out.append(chunk_body(id_, self.model, created, {}, self.finish_reason))
        if include_usage:
            out.append(
                usage_chunk(id_, self.model, created, self.prompt_tokens, self.completion_tokens)
            )
        for chunk in out:
            chunk.update(self.extra)
        return out


def _pieces(text: str) -> list[str]:
    """``text`` cut into pieces of about :data:`REPLAY_PIECE_CHARS`, each ending before a
    space, so that joining them gives the text back exactly."""
    out: list[str] = []
    start = 0
    while start < len(text):
        end = start + REPLAY_PIECE_CHARS
        if end < len(text):
            space = text.find(" ", end)
            end = len(text) if space == -1 else space
        out.append(text[start:end])
        start = end
    return out


class StreamAssembler:
    """Builds a :class:`CachedAnswer` from the chunks of a stream as they pass.

    ``answer()`` gives None unless the stream carried exactly one choice with a finish
    reason: an interrupted stream, or one the client left, is never kept.
    """

    def __init__(self) -> None:
        self.content: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.model = ""
        self.refusal: str | None = None
        self.logprobs: list[Any] = []
        self.extra: dict[str, Any] = {}
        # Anthropic's thinking blocks by their index: the type, and the pieces of each field
        self.thinking: dict[int, tuple[str, dict[str, list[str]]]] = {}
        self.broken = False

    def add(self, chunk: dict[str, Any]) -> None:
        if self.broken:
            return
        self.model = self.model or str(chunk.get("model") or "")
        for k in KEPT_FIELDS:
            if chunk.get(k) is not None:
                self.extra[k] = chunk[k]
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            return
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                self.broken = True  # several choices: not one answer to keep
                return
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str):
                self.content.append(delta["content"])
            if isinstance(delta.get("refusal"), str):
                self.refusal = (self.refusal or "") + delta["refusal"]
            for call in delta.get("tool_calls") or []:
                self._add_tool_call(call)
            for piece in delta.get("thinking_blocks") or []:
                self._add_thinking(piece)
            lp = choice.get("logprobs")
            if isinstance(lp, dict) and isinstance(lp.get("content"), list):
                self.logprobs.extend(lp["content"])
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])

    def _add_tool_call(self, call: Any) -> None:
        if not isinstance(call, dict) or not isinstance(call.get("index"), int):
            self.broken = True
            return
        slot = self.tool_calls.setdefault(
            call["index"], {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
        )
        if call.get("id"):
            slot["id"] = call["id"]
        if call.get("type"):
            slot["type"] = call["type"]
        fn = call.get("function") or {}
        if isinstance(fn.get("name"), str):
            slot["function"]["name"] += fn["name"]
        if isinstance(fn.get("arguments"), str):
            slot["function"]["arguments"] += fn["arguments"]

    def _add_thinking(self, piece: Any) -> None:
        if not isinstance(piece, dict) or not isinstance(piece.get("index"), int):
            self.broken = True
            return
        _, fields = self.thinking.setdefault(
            piece["index"], (str(piece.get("type", "thinking")), {})
        )
        for name in ("thinking", "signature", "data"):
            if isinstance(piece.get(name), str):
                fields.setdefault(name, []).append(piece[name])

    def answer(
        self, model_ref: str, prompt_tokens: int, completion_tokens: int
    ) -> CachedAnswer | None:
        if self.broken or self.finish_reason is None or completion_tokens <= 0:
            return None
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(self.content) if self.content or not self.tool_calls else None,
            "refusal": self.refusal,
        }
        if self.tool_calls:
            message["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        if self.thinking:
            message["thinking_blocks"] = [
                {"type": kind, **{k: "".join(v) for k, v in fields.items()}}
                for kind, fields in (self.thinking[i] for i in sorted(self.thinking))
            ]
        return CachedAnswer(
            message,
            self.finish_reason,
            self.model or model_ref,
            model_ref,
            prompt_tokens,
            completion_tokens,
            logprobs={"content": self.logprobs, "refusal": None} if self.logprobs else None,
            extra=self.extra,
        )
