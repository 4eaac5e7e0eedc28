"""A chat answer as a Responses ``response`` object, or as its stream of events.

Output items: the text as one ``message`` with an ``output_text`` part, then one
``function_call`` item per tool call (``call_id`` is the chat tool call's id, so a
``function_call_output`` answers it on any provider). Streams emit ``response.created``,
``response.in_progress``, then per item ``response.output_item.added``, its deltas
(``response.content_part.added``, ``response.output_text.delta``/``.done``,
``response.content_part.done``, or ``response.function_call_arguments.delta``/``.done``)
and ``response.output_item.done``, and last ``response.completed`` with the whole response
(or ``response.failed`` when the provider broke off). Each event has its
``sequence_number``, as the official SDKs' stream helpers expect.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from ..errors import ApiError
from ..ids import random_hex


def new_id(prefix: str) -> str:
    return f"{prefix}_{random_hex()}"


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> dict[str, Any]:
    """The Responses ``usage`` block; ``cached_tokens``: the part of the input the provider
    read from its prompt cache."""
    return {
        "input_tokens": prompt_tokens,
        "input_tokens_details": {"cached_tokens": cached_tokens},
        "output_tokens": completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt_tokens + completion_tokens,
    }


def response_object(
    response_id: str,
    model: str,
    echo: dict[str, Any],
    output: list[dict[str, Any]],
    status: str,
    store: bool,
    used: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    incomplete: str | None = None,
) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": model,
        "output": output,
        "usage": used,
        "error": error,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "store": store,
        "truncation": "disabled",
        "reasoning": {"effort": None, "summary": None},
        **echo,
    }


def message_item(
    text: str, status: str = "completed", item_id: str | None = None
) -> dict[str, Any]:
    return {
        "type": "message",
        "id": item_id or new_id("msg"),
        "status": status,
        "role": "assistant",
        "content": [output_text(text)] if status == "completed" else [],
    }


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def call_item(
    call_id: str, name: str, arguments: str, status: str = "completed", item_id: str | None = None
) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id or new_id("fc"),
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def output_of(message: dict[str, Any]) -> list[dict[str, Any]]:
    """A chat completion's assistant message as output items."""
    items = []
    if message.get("content"):
        items.append(message_item(str(message["content"])))
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        items.append(call_item(str(call.get("id")), str(fn.get("name")), str(fn.get("arguments"))))
    return items


def incomplete_reason(finish: str | None) -> str | None:
    return {"length": "max_output_tokens", "content_filter": "content_filter"}.get(finish or "")


def event(kind: str, seq: int, **fields: Any) -> bytes:
    body = orjson.dumps({"type": kind, "sequence_number": seq, **fields})
    return b"event: " + kind.encode() + b"\ndata: " + body + b"\n\n"


class EventStream:
    """Chat chunks in, Responses events out; keeps the output and the assistant message."""

    def __init__(self, response_id: str, model: str, echo: dict[str, Any], store: bool) -> None:
        self.id = response_id
        self.model = model
        self.echo = echo
        self.store = store
        self.seq = 0
        self.output: list[dict[str, Any]] = []
        self.text: list[str] = []  # of the open message item
        self.tool_calls: list[dict[str, Any]] = []  # the chat tool calls, for the store
        self.finish: str | None = None
        self._open: dict[str, Any] | None = None  # the item being streamed
        # chat tool call index -> its output item and its entry of ``tool_calls``
        self._calls: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}

    def _event(self, kind: str, **fields: Any) -> bytes:
        out = event(kind, self.seq, **fields)
        self.seq += 1
        return out

    def _part_event(self, kind: str, item_id: str, index: int, **fields: Any) -> bytes:
        """An event about the one text part of message item ``item_id`` at ``index``."""
        return self._event(kind, item_id=item_id, output_index=index, content_index=0, **fields)

    def start(self) -> list[bytes]:
        head = response_object(self.id, self.model, self.echo, [], "in_progress", self.store)
        return [
            self._event("response.created", response=head),
            self._event("response.in_progress", response=head),
        ]

    def feed(self, chunk: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        for choice in chunk.get("choices") or []:
            self.finish = choice.get("finish_reason") or self.finish
            delta = choice.get("delta") or {}
            if delta.get("content"):
                out += self._text(str(delta["content"]))
            for frag in delta.get("tool_calls") or []:
                out += self._call(frag)
        return out

    def _text(self, piece: str) -> list[bytes]:
        out: list[bytes] = []
        if self._open is None or self._open["type"] != "message":
            out += self._close()
            item = message_item("", "in_progress")
            self._open, self.text = item, []
            index = len(self.output)
            out.append(self._event("response.output_item.added", output_index=index, item=item))
            out.append(
                self._part_event(
                    "response.content_part.added", item["id"], index, part=output_text("")
                )
            )
        self.text.append(piece)
        assert self._open is not None
        return [
            *out,
            self._part_event(
                "response.output_text.delta",
                self._open["id"],
                len(self.output),
                delta=piece,
                logprobs=[],
            ),
        ]

    def _call(self, frag: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        index = int(frag.get("index") or 0)
        fn = frag.get("function") or {}
        if index not in self._calls:
            out += self._close()
            item = call_item(str(frag.get("id")), str(fn.get("name")), "", "in_progress")
            chat_call = {k: v for k, v in frag.items() if k not in ("index", "function")} | {
                "type": "function",
                "function": {"name": item["name"], "arguments": ""},
            }
            self._calls[index] = (item, chat_call)
            self._open = item
            self.tool_calls.append(chat_call)
            out.append(
                self._event("response.output_item.added", output_index=len(self.output), item=item)
            )
        piece = str(fn.get("arguments") or "")
        if piece:
            item, chat_call = self._calls[index]
            item["arguments"] += piece
            chat_call["function"]["arguments"] += piece
            out.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=len(self.output),
                    delta=piece,
                )
            )
        return out

    def _close(self) -> list[bytes]:
        """Finish the open item: its done events, then it joins the output."""
        item, self._open = self._open, None
        if item is None:
            return []
        index = len(self.output)
        out: list[bytes] = []
        if item["type"] == "message":
            text = "".join(self.text)
            item = message_item(text, item_id=item["id"])
            out += [
                self._part_event(
                    "response.output_text.done", item["id"], index, text=text, logprobs=[]
                ),
                self._part_event(
                    "response.content_part.done", item["id"], index, part=output_text(text)
                ),
            ]
        else:
            item["status"] = "completed"
            out.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    arguments=item["arguments"],
                )
            )
        self.output.append(item)
        out.append(self._event("response.output_item.done", output_index=index, item=item))
        return out

    def completed(self, used: dict[str, Any]) -> list[bytes]:
        out = self._close()
        reason = incomplete_reason(self.finish)
        status = "incomplete" if reason else "completed"
        final = response_object(
            self.id, self.model, self.echo, self.output, status, self.store, used, None, reason
        )
        kind = "response.incomplete" if reason else "response.completed"
        return [*out, self._event(kind, response=final)]

    def failed(self, err: ApiError) -> list[bytes]:
        out = self._close()
        final = response_object(
            self.id,
            self.model,
            self.echo,
            self.output,
            "failed",
            self.store,
            error={"code": err.code or "server_error", "message": err.message},
        )
        return [*out, self._event("response.failed", response=final)]

    @property
    def assistant_message(self) -> dict[str, Any]:
        """What the stream said, as the chat message a next turn continues from."""
        text = "".join(
            c["text"] for i in self.output if i["type"] == "message" for c in i["content"]
        )
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        return message
