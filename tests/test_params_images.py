"""Parameters and images on Anthropic and Gemini: translated, or refused, never dropped
(pure functions; the same over real processes is in ``test_images_live.py``)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from swiftclaw_runtime.errors import ApiError
from swiftclaw_runtime.providers.base import Unsupported
from swiftclaw_runtime.providers.translate_anthropic import to_anthropic
from swiftclaw_runtime.providers.translate_gemini import from_gemini, to_gemini
from swiftclaw_runtime.schemas import ChatRequest, parse_chat_request

USER = {"role": "user", "content": "Hi"}
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 56
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 60
GIF = b"GIF89a" + b"\x00" * 10
WEBP = b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"\x00" * 8


def req(**kw: Any) -> ChatRequest:
    return parse_chat_request({"model": "auto", "messages": [USER], **kw})


def anthropic(r: ChatRequest) -> dict[str, Any]:
    return to_anthropic("claude-x", r, False)


def refused(translate: Any, r: ChatRequest) -> Unsupported:
    with pytest.raises(Unsupported) as info:
        translate(r)
    return info.value


# --- parameters ---------------------------------------------------------------------------

# parameter -> a value that asks for something
ASKING: dict[str, Any] = {
    "seed": 7,
    "presence_penalty": 0.5,
    "frequency_penalty": -0.5,
    "logit_bias": {"50256": -100},
    "logprobs": True,
    "metadata": {"team": "support"},
    "store": True,
    "prediction": {"type": "content", "content": "x"},
    "reasoning_effort": "low",
    "modalities": ["text", "audio"],
    "web_search_options": {},
    "service_tier": "flex",
    "user": "u-1",
    "some_future_parameter": 1,
}
ANTHROPIC_TRANSLATES = {"user", "reasoning_effort"}
GEMINI_TRANSLATES = {"seed", "presence_penalty", "frequency_penalty", "logprobs"}
GEMINI_TRANSLATES.add("reasoning_effort")


@pytest.mark.parametrize("param", sorted(ASKING))
def test_every_parameter_is_translated_or_refused_by_name(param: str) -> None:
    r = req(**{param: ASKING[param]})
    pairs = ((anthropic, ANTHROPIC_TRANSLATES), (to_gemini, GEMINI_TRANSLATES))
    for translate, translated in pairs:
        if param in translated:
            translate(r)
        elif param == "web_search_options":
            translate(r)  # an empty object asks for nothing
        else:
            assert refused(translate, r).param == param


def test_neutral_values_ask_for_nothing_and_pass_everywhere() -> None:
    r = req(
        presence_penalty=0,
        frequency_penalty=0.0,
        logprobs=False,
        store=False,
        metadata={},
        logit_bias={},
        modalities=["text"],
        n=1,
        service_tier="auto",
    )
    assert "metadata" not in anthropic(r) and "service_tier" in anthropic(r)
    assert to_gemini(r)["generationConfig"] == {"presencePenalty": 0, "frequencyPenalty": 0}


def test_anthropic_translates_end_user_and_service_tier_and_refuses_hot_temperature() -> None:
    body = anthropic(req(user="alice", service_tier="default", temperature=1.0))
    assert body["metadata"] == {"user_id": "alice"}
    assert body["service_tier"] == "standard_only"
    assert anthropic(req(safety_identifier="h-1", user="alice"))["metadata"] == {"user_id": "h-1"}
    assert refused(anthropic, req(temperature=1.5)).param == "temperature"
    assert refused(anthropic, req(service_tier="priority")).param == "service_tier"


def test_reasoning_effort_is_anthropics_effort_and_geminis_thinking_budget() -> None:
    assert anthropic(req(reasoning_effort="high"))["output_config"] == {"effort": "high"}
    config = to_gemini(req(reasoning_effort="low"))["generationConfig"]
    assert config["thinkingConfig"] == {"thinkingBudget": 1024}
    assert refused(to_gemini, req(reasoning_effort="max")).param == "reasoning_effort"


def test_gemini_translates_sampling_parameters() -> None:
    body = to_gemini(
        req(seed=3, presence_penalty=0.25, frequency_penalty=-1, logprobs=True, top_logprobs=2)
    )
    assert body["generationConfig"] == {
        "seed": 3,
        "presencePenalty": 0.25,
        "frequencyPenalty": -1,
        "responseLogprobs": True,
        "logprobs": 2,
    }
    assert refused(to_gemini, req(user="alice")).param == "user"


def test_a_message_field_no_translation_has_is_refused() -> None:
    r = parse_chat_request({"model": "m", "messages": [{**USER, "name": "alice"}]})
    for translate in (anthropic, to_gemini):
        assert refused(translate, r).param == "messages[0].name"
    # Fields an SDK echoes back empty ask for nothing.
    echo = {"role": "assistant", "content": "Hello", "refusal": None, "annotations": []}
    r = parse_chat_request({"model": "m", "messages": [USER, echo, USER]})
    anthropic(r), to_gemini(r)


def test_gemini_logprobs_come_back_in_openai_shape() -> None:
    r = req(logprobs=True, top_logprobs=1)
    data = {
        "candidates": [
            {
                "content": {"parts": [{"text": "Hi"}]},
                "finishReason": "STOP",
                "logprobsResult": {
                    "chosenCandidates": [{"token": "Hi", "logProbability": -0.25}],
                    "topCandidates": [
                        {"candidates": [{"token": "Hi", "logProbability": -0.25}]},
                    ],
                },
            }
        ]
    }
    choice = from_gemini(data, "g", r).body["choices"][0]
    assert choice["logprobs"]["content"] == [
        {
            "token": "Hi",
            "logprob": -0.25,
            "bytes": [72, 105],
            "top_logprobs": [{"token": "Hi", "logprob": -0.25, "bytes": [72, 105]}],
        }
    ]
    assert from_gemini(data, "g", req()).body["choices"][0]["logprobs"] is None


def test_parameter_types_are_checked_for_every_provider() -> None:
    for bad, param in (
        ({"seed": "7"}, "seed"),
        ({"presence_penalty": 3}, "presence_penalty"),
        ({"top_logprobs": 2}, "top_logprobs"),  # without logprobs
        ({"logit_bias": {"1": 500}}, "logit_bias.1"),
        ({"service_tier": "fast"}, "service_tier"),
    ):
        with pytest.raises(ApiError) as info:
            req(**bad)
        assert info.value.status == 400 and info.value.param == param, bad


# --- images -------------------------------------------------------------------------------


def data_uri(raw: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(raw).decode()}"


def with_images(*urls: str) -> ChatRequest:
    parts: list[dict[str, Any]] = [{"type": "text", "text": "What is on these?"}]
    parts += [{"type": "image_url", "image_url": {"url": u, "detail": "low"}} for u in urls]
    return parse_chat_request({"model": "m", "messages": [{"role": "user", "content": parts}]})


def test_images_become_anthropic_image_blocks() -> None:
    r = with_images(data_uri(PNG), "https://img.example/cat.webp?size=2")
    (turn,) = anthropic(r)["messages"]
    assert turn["content"] == [
        {"type": "text", "text": "What is on these?"},
        {
            "type": "image",
            "source": {
                "type": "base64",
                "media_type": "image/png",
                "data": base64.b64encode(PNG).decode(),
            },
        },
        {"type": "image", "source": {"type": "url", "url": "https://img.example/cat.webp?size=2"}},
    ]


def test_images_become_gemini_inline_data_and_file_data() -> None:
    r = with_images(data_uri(JPEG, "image/jpeg"), "https://img.example/a/cat.GIF")
    (turn,) = to_gemini(r)["contents"]
    assert turn["parts"][1:] == [
        {"inlineData": {"mimeType": "image/jpeg", "data": base64.b64encode(JPEG).decode()}},
        {"fileData": {"mimeType": "image/gif", "fileUri": "https://img.example/a/cat.GIF"}},
    ]
    # Without a known extension Gemini cannot be told the type: refused, named.
    err = refused(to_gemini, with_images("https://img.example/render?id=1"))
    assert err.param == "messages[0].content[1].image_url.url"
    anthropic(with_images("https://img.example/render?id=1"))  # Anthropic needs no type


def test_image_limits_of_each_provider() -> None:
    big = PNG + b"\x00" * (5 * 1024 * 1024)
    r = with_images(data_uri(PNG), data_uri(big))
    err = refused(anthropic, r)
    assert err.param == "messages[0].content[2].image_url.url" and "5 MiB" in err.message
    to_gemini(r)  # one image of 5 MiB is within Gemini's 20 MiB of inline data
    many = with_images(*[data_uri(GIF, "image/gif")] * 101)
    assert refused(anthropic, many).param == "messages[0].content[101].image_url.url"
    to_gemini(many)
    heavy = with_images(*[data_uri(big)] * 3)  # 3 x 6.7 MiB of base64
    err = refused(to_gemini, heavy)
    assert err.param == "messages[0].content[3].image_url.url" and "20 MiB" in err.message


def test_images_only_in_user_turns() -> None:
    image = {"type": "image_url", "image_url": {"url": data_uri(WEBP, "image/webp")}}
    r = parse_chat_request(
        {"model": "m", "messages": [{"role": "system", "content": [image]}, USER]}
    )
    for translate in (anthropic, to_gemini):
        assert refused(translate, r).param == "messages[0].content[0]"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://img.example/cat.png", "https URL or a data URI"),
        ("ftp://img.example/cat.png", "https URL or a data URI"),
        ("data:image/png,rawbytes", "must be base64"),
        ("data:image/bmp;base64,Qk0=", "'image/bmp' is not one of"),
        ("data:image/png;base64,not*base64", "not valid base64"),
        (data_uri(JPEG, "image/png"), "image/jpeg, not image/png"),
        (data_uri(b"hello world", "image/gif"), "no PNG, JPEG, GIF or WebP image"),
    ],
)
def test_a_bad_image_is_a_400_naming_its_url(url: str, says: str) -> None:
    with pytest.raises(ApiError) as info:
        with_images(url)
    assert info.value.param == "messages[0].content[1].image_url.url"
    assert says in info.value.message


def test_an_image_part_needs_its_image_url() -> None:
    with pytest.raises(ApiError) as info:
        parse_chat_request(
            {"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}
        )
    assert info.value.param == "messages[0].content[0].image_url"
