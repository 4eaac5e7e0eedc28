"""Request and response translation for Anthropic and Gemini, and the SSE reader."""

from __future__ import annotations

import pytest

from swiftclaw_runtime.providers.base import Unsupported, UpstreamError
from swiftclaw_runtime.providers.http import classify_status, parse_retry_after
from swiftclaw_runtime.providers.translate_anthropic import from_anthropic, to_anthropic
from swiftclaw_runtime.providers.translate_gemini import from_gemini, to_gemini
from swiftclaw_runtime.schemas import parse_chat_request
from swiftclaw_runtime.sse import EventReader

REQUEST = {
    "model": "auto",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "How are "}, {"type": "text", "text": "you?"}],
        },
        {"role": "assistant", "content": "Fine."},
        {"role": "user", "content": "Good."},
    ],
    "temperature": 1.5,
    "top_p": 0.9,
    "max_tokens": 64,
    "stop": "END",
}
PLAIN = parse_chat_request(REQUEST)


def test_to_anthropic_moves_system_and_merges_turns() -> None:
    body = to_anthropic("claude-x", parse_chat_request({**REQUEST, "temperature": 0.7}), True)
    assert body["system"] == "Be brief."
    assert body["messages"] == [
        {"role": "user", "content": "Hi\n\nHow are you?"},
        {"role": "assistant", "content": "Fine."},
        {"role": "user", "content": "Good."},
    ]
    assert body["max_tokens"] == 64
    assert body["temperature"] == 0.7
    assert body["stop_sequences"] == ["END"]
    assert body["stream"] is True


def test_from_anthropic_maps_text_usage_and_stop_reason() -> None:
    c = from_anthropic(
        {
            "id": "msg_1",
            "model": "claude-x",
            "stop_reason": "max_tokens",
            "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            "usage": {"input_tokens": 11, "output_tokens": 2},
        },
        "claude-x",
    )
    assert c.body["choices"][0]["message"]["content"] == "ab"
    assert c.body["choices"][0]["finish_reason"] == "length"
    assert (c.prompt_tokens, c.completion_tokens) == (11, 2)
    assert c.body["usage"]["total_tokens"] == 13


def test_to_gemini_builds_contents_and_generation_config() -> None:
    body = to_gemini(parse_chat_request(REQUEST))
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    assert body["contents"][0]["parts"] == [{"text": "Hi"}, {"text": "How are you?"}]
    assert body["generationConfig"] == {
        "temperature": 1.5,
        "topP": 0.9,
        "maxOutputTokens": 64,
        "stopSequences": ["END"],
    }


def test_from_gemini_maps_candidates_and_blocks() -> None:
    c = from_gemini(
        {
            "candidates": [{"content": {"parts": [{"text": "hey"}]}, "finishReason": "SAFETY"}],
            "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 1},
        },
        "g",
        PLAIN,
    )
    assert c.body["choices"][0]["message"]["content"] == "hey"
    assert c.body["choices"][0]["finish_reason"] == "content_filter"
    blocked = from_gemini({"promptFeedback": {"blockReason": "SAFETY"}}, "g", PLAIN)
    assert blocked.body["choices"][0]["finish_reason"] == "content_filter"
    with pytest.raises(UpstreamError, match="candidates"):
        from_gemini({}, "g", PLAIN)


def test_audio_parts_are_unsupported_on_translated_providers_not_dropped() -> None:
    req = parse_chat_request(
        {
            "model": "auto",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
                    ],
                }
            ],
        }
    )
    for translate in (lambda: to_anthropic("m", req, False), lambda: to_gemini(req)):
        with pytest.raises(Unsupported) as info:
            translate()
        assert info.value.param == "messages[0].content[1]"
        assert "input_audio" in info.value.message


def test_status_classes_and_retry_after() -> None:
    assert [classify_status(s) for s in (400, 401, 403, 404, 408, 409, 429, 500, 503)] == [
        "client",
        "auth",
        "auth",
        "client",
        "timeout",
        "server",
        "rate_limited",
        "server",
        "server",
    ]
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


class _Chunks:
    """A body arriving in the given pieces, split anywhere (even inside a line)."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = list(pieces)

    async def next_chunk(self, idle_timeout: float | None = None) -> bytes | None:
        return self.pieces.pop(0) if self.pieces else None


async def _all_events(pieces: list[bytes]) -> list[bytes]:
    reader = EventReader(_Chunks(pieces))
    out: list[bytes] = []
    while (batch := await reader.next_batch()) is not None:
        out += batch
    return out


async def test_sse_reader_joins_multiline_data_and_skips_fields() -> None:
    body = b': comment\nevent: x\ndata: {"a":\ndata: 1}\n\ndata:[DONE]\r\n\r\ndata: tail\n'
    expected = [b'{"a":\n1}', b"[DONE]", b"tail"]
    assert await _all_events([body]) == expected
    # the same body cut into pieces of every size gives the same events
    for size in (1, 2, 3, 7, 16):
        pieces = [body[i : i + size] for i in range(0, len(body), size)]
        assert await _all_events(pieces) == expected
