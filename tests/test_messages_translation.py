"""The Messages API's translation, as pure functions: a Messages request through the chat
request and back out of the upstream translation is the request it was (Anthropic's own
features included); what other providers get of it; answers and streams in Anthropic's
shapes; errors naming the Messages request's fields."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from swiftclaw_runtime.cache.entry import StreamAssembler
from swiftclaw_runtime.errors import ApiError
from swiftclaw_runtime.messages.output import EventStream, message_body
from swiftclaw_runtime.messages.request import parse_messages_request
from swiftclaw_runtime.providers import Completion, StreamUsage, Unsupported
from swiftclaw_runtime.providers.extensions import for_openai
from swiftclaw_runtime.providers.shapes import (
    chunk_body,
    completion_body,
    tool_call,
    tool_call_delta,
)
from swiftclaw_runtime.providers.translate_anthropic import (
    AnthropicStream,
    from_anthropic,
    to_anthropic,
)
from swiftclaw_runtime.providers.translate_gemini import to_gemini
from swiftclaw_runtime.schemas import ChatRequest, parse_chat_request

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 56).decode()
MARK = {"type": "ephemeral"}
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
REQUEST: dict[str, Any] = {
    "model": "claude-x",
    "max_tokens": 500,
    "system": [
        {"type": "text", "text": "Be brief."},
        {"type": "text", "text": "Cite.", "cache_control": MARK},
    ],
    "tools": [
        {
            "name": "get_weather",
            "description": "Weather",
            "input_schema": SCHEMA,
            "cache_control": MARK,
        },
        {"name": "get_time", "input_schema": {"type": "object"}},
    ],
    "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
    "messages": [
        {
            "role": "user",
            "content": [
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                },
                {"type": "text", "text": "Weather here?", "cache_control": MARK},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Two calls.", "signature": "c2ln"},
                {"type": "text", "text": "Checking."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Oslo"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": "cold",
                    "is_error": True,
                },
                {"type": "text", "text": "And now?"},
            ],
        },
    ],
    "stop_sequences": ["END"],
    "temperature": 0.5,
    "top_k": 3,
    "thinking": {"type": "enabled", "budget_tokens": 1024},
    "metadata": {"user_id": "u-1"},
}


def chat(
    body: dict[str, Any], betas: list[str] | None = None
) -> tuple[ChatRequest, dict[str, Any]]:
    call = parse_messages_request(body, betas)
    return parse_chat_request(call.payload), call.payload


def test_a_request_comes_back_out_of_the_upstream_translation_as_it_was() -> None:
    request, _ = chat(REQUEST)
    sent = to_anthropic("claude-x", request, False)
    for field in (
        "system",
        "tools",
        "stop_sequences",
        "temperature",
        "top_k",
        "thinking",
        "metadata",
    ):
        assert sent[field] == REQUEST[field], field
    assert sent["tool_choice"] == REQUEST["tool_choice"]
    assert sent["messages"][1] == REQUEST["messages"][1]
    assert sent["messages"][2] == REQUEST["messages"][2]
    assert sent["messages"][0]["content"][1] == REQUEST["messages"][0]["content"][1]
    assert sent["messages"][0]["content"][0]["source"]["data"] == PNG


def test_other_providers_get_what_they_can_express() -> None:
    request, payload = chat(
        {**REQUEST, "thinking": {"type": "disabled"}, "top_k": None}, ["beta-1"]
    )
    for kind in ("openai-compatible", "openai"):
        out = for_openai(request, payload, kind)
        assert "anthropic_beta" not in out and "thinking" not in out
        assert "thinking_blocks" not in out["messages"][2] and "is_error" not in out["messages"][3]
        assert out["messages"][2]["tool_calls"][0]["id"] == "toolu_1"
        marks = "cache_control" in orjson.dumps(out).decode()
        assert marks is (kind == "openai-compatible")  # OpenAI itself refuses unknown fields
    with_k, with_k_payload = chat({**REQUEST, "thinking": {"type": "disabled"}})
    assert for_openai(with_k, with_k_payload, "openai-compatible")["top_k"] == 3  # (vLLM's)
    with pytest.raises(Unsupported) as refused:
        for_openai(with_k, with_k_payload, "openai")
    assert refused.value.param == "top_k"
    body = to_gemini(request)
    assert (
        "thinking" not in orjson.dumps(body).decode()
        and "cache_control" not in orjson.dumps(body).decode()
    )


@pytest.mark.parametrize(
    "thinking", [{"type": "enabled", "budget_tokens": 1024}, {"type": "adaptive"}]
)
def test_thinking_is_refused_by_name_for_other_providers(thinking: dict[str, Any]) -> None:
    request, payload = chat({**REQUEST, "thinking": thinking, "top_k": None})
    with pytest.raises(Unsupported) as by_openai:
        for_openai(request, payload, "openai-compatible")
    with pytest.raises(Unsupported) as by_gemini:
        to_gemini(request)
    assert by_openai.value.param == by_gemini.value.param == "thinking"


def test_an_answer_with_thinking_and_a_stop_sequence_comes_back_whole() -> None:
    upstream = {
        "id": "msg_01",
        "model": "claude-x",
        "content": [
            {"type": "thinking", "thinking": "Hm.", "signature": "sig"},
            {"type": "text", "text": "Done"},
            {"type": "tool_use", "id": "toolu_9", "name": "get_time", "input": {}},
        ],
        "stop_reason": "stop_sequence",
        "stop_sequence": "END",
        "usage": {"input_tokens": 10, "output_tokens": 3},
    }
    out = message_body(from_anthropic(upstream, "claude-x"), "claude-x", ["END"])
    assert out["content"] == upstream["content"] and out["id"] == "msg_01"
    assert (out["stop_reason"], out["stop_sequence"]) == ("stop_sequence", "END")
    assert out["usage"] == {
        "input_tokens": 10,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 3,
    }


@pytest.mark.parametrize(
    ("finish", "reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "refusal"),
    ],
)
def test_finish_reasons_map_to_stop_reasons(finish: str, reason: str) -> None:
    calls = [tool_call("call_1", "f", '{"a": 1}')] if finish == "tool_calls" else None
    body = completion_body("chatcmpl-1", "gpt-x", "hi", finish, 5, 2, tool_calls=calls)
    out = message_body(Completion(body, 5, 2), "gpt-x", None)
    assert out["stop_reason"] == reason and out["id"].startswith("msg_")
    if calls:
        assert out["content"][-1] == {
            "type": "tool_use",
            "id": "call_1",
            "name": "f",
            "input": {"a": 1},
        }


def events(frames: list[bytes]) -> list[dict[str, Any]]:
    out = []
    for frame in frames:
        name, data = frame.decode().split("\n")[:2]
        payload = orjson.loads(data.removeprefix("data: "))
        assert name == f"event: {payload['type']}"
        out.append(payload)
    return out


def test_an_anthropic_stream_comes_back_as_the_same_events() -> None:
    """Anthropic's events through the upstream translation (chat chunks) and back."""
    upstream: list[dict[str, Any]] = [
        {"type": "message_start", "message": {"id": "msg_7", "usage": {"input_tokens": 9}}},
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "thinking", "thinking": ""},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "Hm"},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "signature_delta", "signature": "s"},
        },
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hi"}},
        {"type": "content_block_stop", "index": 1},
        {
            "type": "content_block_start",
            "index": 2,
            "content_block": {"type": "tool_use", "id": "toolu_2", "name": "f", "input": {}},
        },
        {
            "type": "content_block_delta",
            "index": 2,
            "delta": {"type": "input_json_delta", "partial_json": '{"a"'},
        },
        {
            "type": "content_block_delta",
            "index": 2,
            "delta": {"type": "input_json_delta", "partial_json": ": 1}"},
        },
        {"type": "content_block_stop", "index": 2},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use"},
            "usage": {"output_tokens": 4},
        },
        {"type": "message_stop"},
    ]
    translate = AnthropicStream()
    chunks = [chunk_body("msg_7", "claude-x", 0, d) for e in upstream for d in translate.feed(e)]
    chunks.append(chunk_body("msg_7", "claude-x", 0, {}, translate.finish))
    usage = StreamUsage(translate.prompt_tokens, translate.completion_tokens)
    stream = EventStream("claude-x", None)
    frames = stream.start(chunks[0], usage)
    for chunk in chunks:
        frames += stream.feed(chunk)
    frames += stream.completed(usage)
    out = [e for e in events(frames) if e["type"] != "ping"]
    assert out[0]["message"]["id"] == "msg_7" and out[0]["message"]["usage"]["input_tokens"] == 9
    mine = [{k: v for k, v in e.items() if k != "message"} for e in out[1:-2]]
    theirs = [{k: v for k, v in e.items()} for e in upstream[1:-2]]
    theirs[0]["content_block"]["signature"] = ""  # (Anthropic's start carries it empty too)
    assert mine == theirs
    assert out[-2]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert out[-2]["usage"]["output_tokens"] == 4 and out[-1] == {"type": "message_stop"}


def test_a_stream_that_breaks_ends_with_an_error_event() -> None:
    stream = EventStream("gpt-x", None)
    frames = stream.feed(chunk_body("c", "gpt-x", 0, tool_call_delta(0, "call_1", "f", '{"a"')))
    frames += stream.failed(ApiError(502, "gone", "server_error", "stream_interrupted"))
    kinds = [e["type"] for e in events(frames)]
    assert kinds == ["content_block_start", "content_block_delta", "content_block_stop", "error"]
    assert events(frames)[-1]["error"] == {"type": "api_error", "message": "gone"}


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"tools": [{"name": "f", "input_schema": {}, "strict": True}]}, "tools[0].strict"),
        (
            {"messages": [{"role": "user", "content": [{"type": "search_result"}]}]},
            "messages[0].content[0].type",
        ),
        ({"tool_choice": {"type": "tool", "name": "nope"}}, "tool_choice"),
        ({"mcp_servers": [{"url": "x"}]}, "mcp_servers"),
        ({"output_config": {"format": {"type": "json_schema"}}}, "output_config.format"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "x"}]}
                ]
            },
            "messages[0].content[0].tool_use_id",
        ),
    ],
)
def test_what_is_not_served_is_refused_naming_the_field(change: dict[str, Any], named: str) -> None:
    body = {
        "model": "m",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "Hi"}],
        **change,
    }
    with pytest.raises(ApiError) as caught:
        call = parse_messages_request(body)
        try:
            parse_chat_request(call.payload)
        except ApiError as err:
            raise call.rename(err) from None
    assert caught.value.status == 400 and caught.value.param == named
    assert f"'{named}'" in caught.value.message


def test_tool_use_ids_past_the_bound_are_named_where_they_were() -> None:
    turns = [
        {"role": "user", "content": "Hi"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "x" * 300, "name": "f", "input": {}}],
        },
    ]
    call = parse_messages_request({"model": "m", "max_tokens": 5, "messages": turns})
    with pytest.raises(ApiError) as caught:
        try:
            parse_chat_request(call.payload)
        except ApiError as err:
            raise call.rename(err) from None
    assert caught.value.param == "messages[1].content[0].id"


def test_a_cached_stream_keeps_its_thinking_blocks() -> None:
    """A streamed answer with thinking, kept by the cache and replayed, streams the same
    blocks (signatures included) to a Messages client."""
    assembler = StreamAssembler()
    for delta in (
        {"thinking_blocks": [{"index": 0, "type": "thinking", "thinking": "Hm"}]},
        {"thinking_blocks": [{"index": 0, "thinking": "m."}]},
        {"thinking_blocks": [{"index": 0, "signature": "sig"}]},
        {"thinking_blocks": [{"index": 1, "type": "redacted_thinking", "data": "b3A="}]},
        {"content": "Hi"},
    ):
        assembler.add(chunk_body("c", "claude-x", 0, delta))
    assembler.add(chunk_body("c", "claude-x", 0, {}, "stop"))
    answer = assembler.answer("ant/claude-x", 5, 2)
    assert answer is not None
    blocks = [
        {"type": "thinking", "thinking": "Hmm.", "signature": "sig"},
        {"type": "redacted_thinking", "data": "b3A="},
    ]
    assert answer.message["thinking_blocks"] == blocks
    stream = EventStream("claude-x", None)
    chunks = answer.chunks(False)
    frames = stream.start(chunks[0], StreamUsage(5, 0))
    for chunk in chunks:
        frames += stream.feed(chunk)
    starts = [e["content_block"] for e in events(frames) if e["type"] == "content_block_start"]
    assert [b["type"] for b in starts] == ["thinking", "redacted_thinking", "text"]
    deltas = [e["delta"] for e in events(frames) if e["type"] == "content_block_delta"]
    assert deltas[:2] == [
        {"type": "thinking_delta", "thinking": "Hmm."},
        {"type": "signature_delta", "signature": "sig"},
    ]
