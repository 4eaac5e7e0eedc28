"""OpenAI chat <-> Anthropic Messages, as pure functions (the HTTP is in :mod:`.anthropic`).

Requests: system and developer turns go to ``system``; an assistant's ``tool_calls`` become
``tool_use`` blocks (ids kept, so the conversation's ids hold on any provider), ``tool``
messages ``tool_result`` blocks in the next user turn; ``tools`` become ``input_schema``
definitions, ``tool_choice`` ``auto``/``none``/``required``/named becomes
``auto``/``none``/``any``/``tool``, and ``parallel_tool_calls: false`` becomes
``disable_parallel_tool_use``. A JSON ``response_format`` is served by the forced answer
tool of :mod:`.toolcalls`. Responses and stream events come back in OpenAI's shape:
``tool_use`` blocks as ``tool_calls`` (streamed as ``delta.tool_calls`` fragments), the
answer tool's input as the content.
"""

from __future__ import annotations

import re
from typing import Any

from ..schemas import CacheMark, ChatRequest, ContentPart, Message
from .base import Completion, Unsupported, UpstreamError, turns
from .breakpoints import MAX_BREAKPOINTS, count_breakpoints
from .content import ANTHROPIC, anthropic_block, check_images, marked_parts_of
from .params import refuse_untranslated
from .shapes import completion_body, completion_id, tool_call, tool_call_delta
from .toolcalls import (
    ANSWER_TOOL,
    ToolPlan,
    arguments_object,
    call_names,
    content_text,
    dumps,
    plan_tools,
)
from .usage import PromptUsage, anthropic_prompt, count

DEFAULT_MAX_TOKENS = 4096
FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# chat finish reason -> stop_reason (a matched stop sequence: see :func:`stop_reason`)
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
STOP_REASONS["content_filter"] = "refusal"
# chat tool_choice -> Anthropic's (a named choice is {"type": "tool"})
CHOICES = {"auto": "auto", "none": "none", "required": "any"}
# Beyond the common ones (see :mod:`.params`); anything else sent is refused.
TRANSLATED = frozenset(
    {
        "user",
        "safety_identifier",
        "service_tier",
        "top_k",
        "thinking",
        "context_management",
        "reasoning_effort",
    }
)
SERVICE_TIERS = {"auto": "auto", "default": "standard_only"}
RETIRED = "Called earlier in this conversation; not available now: do not call it."
_ID_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")


def tool_use_id(call_id: str) -> str:
    """Anthropic accepts ``[a-zA-Z0-9_-]+`` ids; others' ids are mapped the same way each
    time, so a call and its result still match."""
    return _ID_UNSAFE.sub("_", call_id)


def stop_reason(finish: str | None, matched: Any, stop_sequences: list[str] | None) -> str:
    """Anthropic's ``stop_reason`` for a chat finish reason; ``matched``: the stop sequence
    the provider reported (the choice's ``stop_reason``), when it is one of the request's."""
    if finish == "stop" and isinstance(matched, str) and matched in (stop_sequences or ()):
        return "stop_sequence"
    return STOP_REASONS.get(finish or "stop", "end_turn")


def _mark(block: dict[str, Any], mark: CacheMark | None) -> dict[str, Any]:
    if mark is not None:
        block["cache_control"] = mark.model_dump(exclude_none=True)
    return block


def _blocks(
    content: str | list[ContentPart] | None, param: str, images: bool = False
) -> list[dict[str, Any]]:
    """A message's content as text and (in user turns) image blocks, with their
    breakpoints."""
    return [
        anthropic_block(piece, mark)
        for _, piece, mark in marked_parts_of(content, param, "Anthropic", images)
    ]


def _turn(i: int, m: Message, param: str) -> tuple[str, list[dict[str, Any]]]:
    """A (non-system) message's role and content blocks."""
    if m.role == "tool":
        assert m.tool_call_id is not None  # the schema requires it
        text = content_text(m.content, param, "Anthropic")
        result: dict[str, Any] = {
            "type": "tool_result",
            "tool_use_id": tool_use_id(m.tool_call_id),
        }
        if text:
            result["content"] = text
        if m.is_error is not None:
            result["is_error"] = m.is_error
        return "user", [_mark(result, m.cache_control)]
    if m.role == "assistant":
        blocks = [b.model_dump(exclude_none=True) for b in m.thinking_blocks or []]
        blocks += _blocks(m.content, param)
        for j, call in enumerate(m.tool_calls or []):
            where = f"messages[{i}].tool_calls[{j}].function.arguments"
            use = {
                "type": "tool_use",
                "id": tool_use_id(call.id),
                "name": call.function.name,
                "input": arguments_object(call.function.arguments, where),
            }
            blocks.append(_mark(use, call.cache_control))
        return "assistant", blocks
    return "user", _blocks(m.content, param, images=True)


def _messages(request: ChatRequest) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The system blocks and the turns."""
    system: list[dict[str, Any]] = []

    def system_text(m: Message, param: str) -> list[str]:
        system.extend(_blocks(m.content, param))
        return []

    _, messages = turns(request, "content", system_text, _turn)
    for msg in messages:  # plain text turns as plain strings
        blocks = msg["content"]
        if all(b.keys() == {"type", "text"} and b["type"] == "text" for b in blocks):
            msg["content"] = "\n\n".join(b["text"] for b in blocks)
    return system, messages


def _system(blocks: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """The system prompt as one string, or as its blocks when one carries a breakpoint."""
    if any("cache_control" in b for b in blocks):
        return blocks
    return "\n\n".join(b["text"] for b in blocks)


def _tools(plan: ToolPlan) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    tools = []
    for f in plan.functions:
        tool: dict[str, Any] = {"name": f.name, "input_schema": f.parameters}
        if f.description:
            tool["description"] = f.description
        tools.append(_mark(tool, f.cache_control))
    choice: dict[str, Any]
    if plan.choice == "named":
        choice = {"type": "tool", "name": plan.named}
    else:
        choice = {"type": CHOICES[plan.choice]}
    if not plan.parallel and plan.choice != "none":
        choice["disable_parallel_tool_use"] = True
    return tools, choice


def to_anthropic(model: str, request: ChatRequest, stream: bool) -> dict[str, Any]:
    """OpenAI chat request -> Messages API request; raises :class:`Unsupported` for what
    the Messages API cannot express."""
    refuse_untranslated(request, TRANSLATED, "Anthropic")
    check_images(request, ANTHROPIC)
    system, messages = _messages(request)
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": request.output_limit or DEFAULT_MAX_TOKENS,
        "stream": stream,
    }
    if system:
        body["system"] = _system(system)
    plan = plan_tools(request, answer_by_tool=True)
    tools, choice = _tools(plan) if plan is not None else ([], {"type": "none"})
    # The Messages API wants the tools of the conversation's tool_use blocks declared, and
    # OpenAI does not: a tool the request no longer offers is declared as not to be called
    # (without tools of the request, the choice is 'none' and none can be).
    declared = {t["name"] for t in tools}
    for name in dict.fromkeys(call_names(request).values()):
        if name not in declared:
            tools.append({"name": name, "description": RETIRED, "input_schema": {"type": "object"}})
    if tools:
        body["tools"], body["tool_choice"] = tools, choice
    marks = count_breakpoints(body)
    if marks > MAX_BREAKPOINTS:  # (Anthropic would refuse it: a 400 naming no field)
        raise Unsupported(
            f"Anthropic takes at most {MAX_BREAKPOINTS} cache_control breakpoints, not {marks}",
            "cache_control",
        )
    if request.temperature is not None:
        if request.temperature > 1:
            raise Unsupported("Anthropic's temperature is at most 1", "temperature")
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.top_k is not None:
        body["top_k"] = request.top_k
    if request.thinking is not None:
        body["thinking"] = request.thinking.model_dump(exclude_none=True)
    if request.context_management is not None:
        body["context_management"] = request.context_management.model_dump(exclude_none=True)
    if request.reasoning_effort is not None:
        body["output_config"] = {"effort": request.reasoning_effort}
    if request.stop is not None:
        body["stop_sequences"] = request.stop_sequences
    end_user = request.safety_identifier or request.user
    if end_user:
        body["metadata"] = {"user_id": end_user}
    if request.service_tier is not None:
        if request.service_tier not in SERVICE_TIERS:
            raise Unsupported(
                f"Anthropic has no service tier {request.service_tier!r}", "service_tier"
            )
        body["service_tier"] = SERVICE_TIERS[request.service_tier]
    return body


def from_anthropic(data: dict[str, Any], model: str) -> Completion:
    """A Messages API response in OpenAI's shape: ``tool_use`` blocks as ``tool_calls``,
    the answer tool's input as the content."""
    content = data.get("content")
    if not isinstance(content, list):
        raise UpstreamError("protocol", "response has no 'content'")
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    thinking: list[dict[str, Any]] = []
    for b in content:
        if not isinstance(b, dict):
            continue
        if b.get("type") in ("thinking", "redacted_thinking"):
            thinking.append(b)
        elif b.get("type") == "text":
            text.append(str(b.get("text", "")))
        elif b.get("type") == "tool_use":
            if b.get("name") == ANSWER_TOOL:
                text.append(dumps(b.get("input") or {}))
            else:
                calls.append(
                    tool_call(str(b.get("id")), str(b.get("name")), dumps(b.get("input") or {}))
                )
    usage = data.get("usage") or {}
    prompt, completion = anthropic_prompt(usage), count(usage, "output_tokens")
    finish = FINISH.get(str(data.get("stop_reason")), "stop")
    if finish == "tool_calls" and not calls:
        finish = "stop"  # only the answer tool was called: that is the answer
    body = completion_body(
        str(data.get("id") or completion_id()),
        str(data.get("model") or model),
        "".join(text),
        finish,
        prompt.prompt,
        completion,
        tool_calls=calls or None,
        cached_tokens=prompt.cached,
        cache_write_tokens=prompt.written,
    )
    if thinking:
        body["choices"][0]["message"]["thinking_blocks"] = thinking
    if data.get("stop_reason") == "stop_sequence":
        body["choices"][0]["stop_reason"] = data.get("stop_sequence")
    return Completion(body, prompt.prompt, completion, prompt.cached, prompt.written)


class AnthropicStream:
    """Messages API stream events -> OpenAI chunk deltas, one event at a time.

    Text deltas become ``content``; a ``tool_use`` block becomes tool call ``index`` n
    (counted over the message's tool calls), its id and name first and then its
    ``input_json_delta`` pieces as ``arguments``; the answer tool's pieces become content.
    """

    def __init__(self) -> None:
        self.id = completion_id()
        self.finish = "stop"
        self.prompt = PromptUsage(0)
        self.completion_tokens = 0
        self.stopped = False
        self.matched: str | None = None  # the stop sequence that ended the message
        self._blocks: dict[int, tuple[str, int]] = {}  # block index -> (kind, call index)
        self._calls = 0
        self._thoughts = 0

    @property
    def prompt_tokens(self) -> int:
        return self.prompt.prompt

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        kind = event.get("type")
        if kind == "message_start":
            msg = event.get("message") or {}
            self.id = str(msg.get("id") or self.id)
            self.prompt = anthropic_prompt(msg.get("usage"))
            return [{"role": "assistant", "content": ""}]
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            index = int(event.get("index") or 0)
            if block.get("type") == "tool_use" and block.get("name") == ANSWER_TOOL:
                self._blocks[index] = ("answer", -1)
            elif block.get("type") == "tool_use":
                n = self._calls
                self._calls += 1
                self._blocks[index] = ("call", n)
                return [tool_call_delta(n, str(block.get("id")), str(block.get("name")))]
            elif block.get("type") in ("thinking", "redacted_thinking"):
                n = self._thoughts
                self._thoughts += 1
                self._blocks[index] = ("thinking", n)
                if block.get("type") == "redacted_thinking":
                    return [_thought(n, type="redacted_thinking", data=block.get("data"))]
                return [_thought(n, type="thinking", thinking=str(block.get("thinking") or ""))]
            else:
                self._blocks[index] = ("text", -1)
            return []
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            block_kind, n = self._blocks.get(int(event.get("index") or 0), ("text", -1))
            if delta.get("type") == "text_delta":
                return [{"content": delta.get("text", "")}]
            if delta.get("type") == "thinking_delta" and block_kind == "thinking":
                return [_thought(n, thinking=str(delta.get("thinking", "")))]
            if delta.get("type") == "signature_delta" and block_kind == "thinking":
                return [_thought(n, signature=str(delta.get("signature", "")))]
            if delta.get("type") == "input_json_delta":
                piece = str(delta.get("partial_json", ""))
                if not piece:
                    return []
                return (
                    [{"content": piece}]
                    if block_kind == "answer"
                    else [tool_call_delta(n, arguments=piece)]
                )
            return []
        if kind == "message_delta":
            stop = (event.get("delta") or {}).get("stop_reason")
            self.finish = FINISH.get(str(stop), "stop")
            if stop == "stop_sequence":
                matched = (event.get("delta") or {}).get("stop_sequence")
                self.matched = matched if isinstance(matched, str) else None
            if self.finish == "tool_calls" and not self._calls:
                self.finish = "stop"
            usage = event.get("usage")
            if isinstance(usage, dict):
                if "output_tokens" in usage:
                    self.completion_tokens = count(usage, "output_tokens")
                if "input_tokens" in usage:  # newer API versions repeat the input counts here
                    self.prompt = anthropic_prompt(usage)
            return []
        if kind == "error":
            err = event.get("error") or {}
            raise UpstreamError("server", f"error in stream: {err.get('message')}")
        if kind == "message_stop":
            self.stopped = True
        return []


def _thought(index: int, **fields: Any) -> dict[str, Any]:
    """A stream delta carrying (a piece of) the message's thinking block ``index``."""
    return {"thinking_blocks": [{"index": index, **fields}]}
