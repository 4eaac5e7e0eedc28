"""``POST /v1/messages`` and ``/v1/messages/count_tokens`` with the official ``anthropic``
client, unchanged, over real HTTP, on a tier of each provider shape (Anthropic-, OpenAI-
and Gemini-backed simulators): agent loops with two tools streamed and not, stop reasons,
images, count_tokens, errors in Anthropic's shape, and what reaches each provider of
Anthropic's own features (thinking blocks, cache breakpoints, betas)."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any

import anthropic
import jsonschema
import pytest

from swiftclaw_devtools.processes import Proc

from .conftest import API_KEY, Launcher, manifest, openai_provider
from .test_images_live import PNG
from .test_resilience_live import control, metrics
from .test_tools import SCHEMAS, SHAPES, shape_sims, shapes_manifest

TOOLS = [
    {"name": name, "description": f"{name} tool", "input_schema": schema}
    for name, schema in SCHEMAS.items()
]
RESULTS = {"get_weather": "21 C and sunny", "get_time": "14:05"}
SYSTEM = [
    {"type": "text", "text": "You are an agent."},
    {"type": "text", "text": "Use the tools.", "cache_control": {"type": "ephemeral"}},
]
QUESTION = {"role": "user", "content": "What is the weather and the time in Paris?"}
THOUGHT = {"type": "thinking", "thinking": "The user wants two things.", "signature": "c2lnbmVk=="}


@pytest.fixture(scope="module")
def sims(module_launch: Launcher) -> dict[str, Proc]:
    return shape_sims(module_launch)


@pytest.fixture(scope="module")
def rt(module_launch: Launcher, sims: dict[str, Proc]) -> Proc:
    return module_launch.runtime(shapes_manifest(sims))


def client(rt: Proc, key: str = API_KEY) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=rt.url, api_key=key, max_retries=0, timeout=30)


def create(rt: Proc, stream: bool, **kw: Any) -> Any:
    """A message, made plainly or streamed through the SDK's stream helper (which builds
    the message from the events); checks the events' order."""
    c = client(rt)
    if not stream:
        return c.messages.create(**kw)
    with c.messages.stream(**kw) as events:
        kinds = [e.type for e in events]
        final = events.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert kinds[-2] == "message_delta"
    assert kinds.count("content_block_start") == kinds.count("content_block_stop")
    assert kinds.count("content_block_start") == len(final.content)
    return final


def received(sim: Proc) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{sim.url}/_sim/requests", timeout=5) as r:
        return list(json.load(r))


both = pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
shapes = pytest.mark.parametrize("tier", SHAPES)


@shapes
@both
def test_a_two_tool_agent_loop_reaches_its_final_answer(rt: Proc, tier: str, stream: bool) -> None:
    messages: list[dict[str, Any]] = [QUESTION]
    first = create(
        rt, stream, model=tier, max_tokens=300, system=SYSTEM, tools=TOOLS, messages=messages
    )
    assert first.type == "message" and first.role == "assistant" and first.id.startswith("msg_")
    assert first.stop_reason == "tool_use"
    uses = [b for b in first.content if b.type == "tool_use"]
    assert [u.name for u in uses] == ["get_weather", "get_time"]
    for use in uses:
        jsonschema.validate(use.input, SCHEMAS[use.name])
    assert first.usage.input_tokens > 0 and first.usage.output_tokens > 0
    assert first.usage.cache_read_input_tokens == 0
    assert first.usage.cache_creation_input_tokens == 0
    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": u.id, "content": RESULTS[u.name]}
                for u in uses
            ],
        },
    ]
    final = create(
        rt, stream, model=tier, max_tokens=300, system=SYSTEM, tools=TOOLS, messages=messages
    )
    assert final.stop_reason == "end_turn"
    assert [b.type for b in final.content] == ["text"]
    text = final.content[0].text  # (Gemini's function responses are objects)
    assert text.startswith("Tool results: ") and all(r in text for r in RESULTS.values())


@shapes
@both
def test_max_tokens_ends_with_its_stop_reason(rt: Proc, tier: str, stream: bool) -> None:
    m = create(rt, stream, model=tier, max_tokens=3, messages=[{"role": "user", "content": "Hi"}])
    assert m.stop_reason == "max_tokens" and m.stop_sequence is None
    assert len(m.content[0].text.split()) == 3 and m.usage.output_tokens == 3


@shapes
def test_an_image_block_reaches_each_provider(rt: Proc, tier: str) -> None:
    image = {
        "type": "image",
        "source": {
            "type": "base64",
            "media_type": "image/png",
            "data": base64.b64encode(PNG).decode(),
        },
    }
    content = [image, {"type": "text", "text": "What is this?"}]
    m = create(
        rt, False, model=tier, max_tokens=100, messages=[{"role": "user", "content": content}]
    )
    assert m.content[0].text.startswith(f"Seen image/png {len(PNG)} bytes | ")


@shapes
def test_count_tokens_counts_the_conversation(rt: Proc, tier: str) -> None:
    c = client(rt)
    short = c.messages.count_tokens(model=tier, messages=[QUESTION])
    longer = c.messages.count_tokens(
        model=tier, system="Be brief. " * 50, messages=[QUESTION], tools=TOOLS
    )
    assert 0 < short.input_tokens < longer.input_tokens


def test_a_wrong_key_is_a_401_in_anthropics_shape(rt: Proc) -> None:
    with pytest.raises(anthropic.AuthenticationError) as caught:
        client(rt, key="sk-not-a-key-000000").messages.create(
            model="anthropic", max_tokens=10, messages=[QUESTION]
        )
    assert caught.value.status_code == 401
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "Incorrect API key provided."},
    }


def test_a_missing_key_is_a_401_naming_both_headers(rt: Proc) -> None:
    req = urllib.request.Request(
        f"{rt.url}/v1/messages",
        data=b"{}",
        headers={"content-type": "application/json", "anthropic-version": "2023-06-01"},
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(req, timeout=10)
    assert caught.value.code == 401
    body = json.load(caught.value)
    assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
    assert "'x-api-key'" in body["error"]["message"]


def test_the_key_may_come_as_a_bearer_token(rt: Proc) -> None:
    c = anthropic.Anthropic(base_url=rt.url, auth_token=API_KEY, max_retries=0)
    m = c.messages.create(model="openai", max_tokens=20, messages=[QUESTION])
    assert m.stop_reason in ("end_turn", "max_tokens")


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0].type"),
        ({"tools": [{"name": "bad name!", "input_schema": {}}]}, "tools[0].name"),
        ({"extra_body": {"temperature": "hot"}}, "temperature"),
        (
            {"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
            "messages[0].content[0].type",
        ),
        ({"stop_sequences": ["a", "b", "c", "d", "e"]}, "stop_sequences"),
        ({"metadata": {"user_id": "u" * 300}}, "metadata.user_id"),
    ],
    ids=["server-tool", "tool-name", "temperature", "document", "stops", "user-id"],
)
def test_bad_requests_are_400s_in_anthropics_shape_naming_the_field(
    rt: Proc, change: dict[str, Any], named: str
) -> None:
    kw: dict[str, Any] = {"model": "anthropic", "max_tokens": 10, "messages": [QUESTION], **change}
    with pytest.raises(anthropic.BadRequestError) as caught:
        client(rt).messages.create(**kw)
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert f"'{named}'" in body["error"]["message"]


def test_an_unknown_model_is_a_404_in_anthropics_shape(rt: Proc) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        client(rt).messages.create(model="claude-nope", max_tokens=10, messages=[QUESTION])
    assert caught.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]


def _thinking_turns(use_id: str) -> list[dict[str, Any]]:
    return [
        QUESTION,
        {
            "role": "assistant",
            "content": [
                THOUGHT,
                {"type": "redacted_thinking", "data": "b3BhcXVl"},
                {
                    "type": "tool_use",
                    "id": use_id,
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": use_id,
                    "content": "21 C",
                    "is_error": False,
                    "cache_control": {"type": "ephemeral"},
                },
                {
                    "type": "text",
                    "text": "And now?",
                    "cache_control": {"type": "ephemeral", "ttl": "1h"},
                },
            ],
        },
    ]


@both
def test_thinking_and_breakpoints_reach_anthropic_untouched(
    rt: Proc, sims: dict[str, Proc], stream: bool
) -> None:
    turns = _thinking_turns("toolu_01AbC")
    tools = [{**TOOLS[0], "cache_control": {"type": "ephemeral"}}, TOOLS[1]]
    thinking = {"type": "enabled", "budget_tokens": 1024}
    c = client(rt)
    kw: dict[str, Any] = {
        "model": "anthropic",
        "max_tokens": 2000,
        "system": SYSTEM,
        "tools": tools,
        "messages": turns,
        "thinking": thinking,
        "extra_body": {"top_k": 5},
        "extra_headers": {"anthropic-beta": "interleaved-thinking-2025-05-14"},
    }
    if stream:
        with c.messages.stream(**kw) as events:
            events.get_final_message()
    else:
        c.messages.create(**kw)
    sent = received(sims["anthropic"])[-1]
    assert sent["headers"]["anthropic-beta"] == ["interleaved-thinking-2025-05-14"]
    body = sent["body"]
    assert body["thinking"] == thinking and body["top_k"] == 5
    assert body["system"] == SYSTEM
    assert body["tools"][0]["cache_control"] == {"type": "ephemeral"}
    assert "cache_control" not in body["tools"][1]
    assert body["messages"] == turns  # the thinking blocks with their signatures, the ids


@both
def test_thinking_blocks_are_dropped_for_other_providers_and_thinking_refused(
    rt: Proc, sims: dict[str, Proc], stream: bool
) -> None:
    turns = _thinking_turns("toolu_01AbC")
    for tier in ("openai", "gemini"):
        m = create(rt, stream, model=tier, max_tokens=200, tools=TOOLS, messages=turns)
        assert m.content[-1].type in ("text", "tool_use")
    openai_body = received(sims["openai"])[-1]["body"]
    assistant = openai_body["messages"][1]
    assert "thinking_blocks" not in assistant and assistant["tool_calls"][0]["id"] == "toolu_01AbC"
    assert "is_error" not in openai_body["messages"][2]
    for tier in ("openai", "gemini"):
        with pytest.raises(anthropic.BadRequestError) as caught:
            create(
                rt,
                stream,
                model=tier,
                max_tokens=2000,
                messages=[QUESTION],
                thinking={"type": "enabled", "budget_tokens": 1024},
            )
        assert "(thinking)" in caught.value.body["error"]["message"]  # type: ignore[index]


def test_an_unknown_anthropic_version_is_refused(rt: Proc) -> None:
    c = anthropic.Anthropic(
        base_url=rt.url,
        api_key=API_KEY,
        max_retries=0,
        default_headers={"anthropic-version": "2099-01-01"},
    )
    with pytest.raises(anthropic.BadRequestError) as caught:
        c.messages.create(model="openai", max_tokens=10, messages=[QUESTION])
    assert "'anthropic-version'" in caught.value.body["error"]["message"]  # type: ignore[index]


def _blocks_past_the_bound() -> list[dict[str, Any]]:
    thought = [THOUGHT] * 65  # a turn carries at most 64 thinking blocks
    return [QUESTION, {"role": "assistant", "content": [*thought, {"type": "text", "text": "ok"}]}]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"tools": [dict(TOOLS[0], name=f"t{i}") for i in range(600)]}, "tools"),
        (
            {"messages": [QUESTION, {"role": "assistant", "content": "ok"}] * 2100 + [QUESTION]},
            "messages",
        ),
        ({"messages": _blocks_past_the_bound()}, "messages[1].content"),
        ({"extra_headers": {"anthropic-beta": "ok-beta,Not A Beta!"}}, "anthropic-beta"),
        (
            {"extra_headers": {"anthropic-beta": ",".join(f"b{i}" for i in range(40))}},
            "anthropic-beta",
        ),
    ],
    ids=["600-tools", "4201-turns", "65-thinking-blocks", "bad-beta", "40-betas"],
)
def test_requests_past_the_bounds_are_400s_naming_the_field(
    rt: Proc, change: dict[str, Any], named: str
) -> None:
    kw: dict[str, Any] = {"model": "anthropic", "max_tokens": 10, "messages": [QUESTION], **change}
    with pytest.raises(anthropic.BadRequestError) as caught:
        client(rt).messages.create(**kw)
    message = caught.value.body["error"]["message"]  # type: ignore[index]
    assert f"'{named}" in message, message


def test_a_body_of_too_many_elements_is_a_413_in_anthropics_shape(rt: Proc) -> None:
    blocks = [{"type": "text", "text": "x"}] * 200_000
    with pytest.raises(anthropic.APIStatusError) as caught:
        client(rt).messages.create(
            model="anthropic", max_tokens=10, messages=[{"role": "user", "content": blocks}]
        )
    assert caught.value.status_code == 413
    assert caught.value.body["error"]["type"] == "request_too_large"  # type: ignore[index]


def test_limits_metrics_and_fallbacks_are_the_chat_pipelines(launch: Launcher) -> None:
    """A tier whose Anthropic primary fails answers from its OpenAI fallback, the request
    counted as chat's are; past the per-user rate limit the answer is a 429 in Anthropic's
    shape."""
    primary, backup = launch.sim("--latency", "fixed:1"), launch.sim("--latency", "fixed:1")
    doc = manifest(
        [
            {"name": "ant", "type": "anthropic", "baseURL": f"{primary.url}/v1"},
            openai_provider("oai", backup),
        ],
        [{"name": "main", "model": "ant/claude-x", "fallbacks": ["oai/gpt-x"]}],
        rateLimits={"perUser": {"requestsPerMinute": 3}},
    )
    rt = launch.runtime(doc)
    control(primary, mode="error")
    c = client(rt)
    for stream in (False, True):
        m = create(rt, stream, model="main", max_tokens=50, messages=[QUESTION])
        assert m.stop_reason in ("end_turn", "max_tokens") and m.content[0].text
    raw = c.messages.with_raw_response.create(model="main", max_tokens=50, messages=[QUESTION])
    assert raw.headers["x-swiftclaw-fallback"] == "true"
    assert raw.headers["x-swiftclaw-model"] == "oai/gpt-x" and raw.headers["request-id"]
    counted = metrics(rt)
    fallbacks = sample(counted, "swiftclaw_requests_total", model="oai/gpt-x", outcome="fallback")
    assert fallbacks == 3.0 and sample(counted, "swiftclaw_fallbacks_total", tier="main") == 3.0
    with pytest.raises(anthropic.RateLimitError) as caught:
        c.messages.create(model="main", max_tokens=50, messages=[QUESTION])
    assert caught.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]


def sample(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@both
def test_a_repeated_request_is_answered_from_the_cache(rt: Proc, stream: bool) -> None:
    c = client(rt)
    kw: dict[str, Any] = {
        "model": "gemini",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": f"Cache me ({stream})"}],
        "extra_body": {"temperature": 0},
    }
    answers, caches = [], []
    for _ in range(2):
        raw = c.messages.with_raw_response.create(**kw, stream=stream)
        caches.append(raw.headers["x-swiftclaw-cache"])
        if stream:
            answers.append(
                "".join(e.delta.text for e in raw.parse() if e.type == "content_block_delta")
            )
        else:
            answers.append(raw.parse().content[0].text)
    assert caches == ["miss", "exact"] and answers[0] == answers[1] and answers[0]


def _tool_turns(result: list[dict[str, Any]]) -> list[dict[str, Any]]:
    use = {"type": "tool_use", "id": "toolu_01Xy", "name": "get_weather", "input": {"city": "P"}}
    return [
        QUESTION,
        {"role": "assistant", "content": [use]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use["id"], "content": result}],
        },
    ]


def test_a_breakpoint_on_a_tool_results_last_block_reaches_anthropic(
    rt: Proc, sims: dict[str, Proc]
) -> None:
    result = [
        {"type": "text", "text": "21 C"},
        {"type": "text", "text": " and sunny", "cache_control": {"type": "ephemeral"}},
    ]
    client(rt).messages.create(
        model="anthropic", max_tokens=50, tools=TOOLS, messages=_tool_turns(result)
    )
    sent = received(sims["anthropic"])[-1]["body"]["messages"][-1]["content"][0]
    assert sent["type"] == "tool_result" and sent["content"] == "21 C and sunny"
    assert sent["cache_control"] == {"type": "ephemeral"}


def test_a_breakpoint_inside_a_tool_result_is_a_400_naming_it(rt: Proc) -> None:
    result = [
        {"type": "text", "text": "21 C", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": " and sunny"},
    ]
    with pytest.raises(anthropic.BadRequestError) as caught:
        client(rt).messages.create(
            model="anthropic", max_tokens=50, tools=TOOLS, messages=_tool_turns(result)
        )
    message = caught.value.body["error"]["message"]  # type: ignore[index]
    assert "'messages[2].content[0].content[0].cache_control'" in message, message


def test_more_breakpoints_than_anthropic_takes_are_a_400_naming_cache_control(
    rt: Proc, sims: dict[str, Proc]
) -> None:
    mark = {"type": "ephemeral"}
    blocks = [{"type": "text", "text": f"part {i}", "cache_control": mark} for i in range(5)]
    before = received(sims["anthropic"])
    with pytest.raises(anthropic.BadRequestError) as caught:
        client(rt).messages.create(
            model="anthropic", max_tokens=10, messages=[{"role": "user", "content": blocks}]
        )
    message = caught.value.body["error"]["message"]  # type: ignore[index]
    assert "(cache_control)" in message and "at most 4" in message, message
    assert received(sims["anthropic"]) == before  # refused before anything was sent
    # four are taken; other providers drop them (OpenAI caches prefixes by itself)
    client(rt).messages.create(
        model="anthropic", max_tokens=10, messages=[{"role": "user", "content": blocks[:4]}]
    )
    client(rt).messages.create(
        model="openai", max_tokens=10, messages=[{"role": "user", "content": blocks}]
    )


def test_count_tokens_counts_the_tools_and_the_tool_calls(rt: Proc) -> None:
    """Tools and a turn's tool calls are input a provider bills: count_tokens counts them
    (and so do the limits, budgets and reservations, which read the same estimate)."""
    c = client(rt)
    bare = c.messages.count_tokens(model="anthropic", messages=[QUESTION]).input_tokens
    big = [{**TOOLS[0], "description": "Looks the weather up. " * 200}]
    with_tools = c.messages.count_tokens(model="anthropic", messages=[QUESTION], tools=big)
    assert with_tools.input_tokens >= bare + 1000, (bare, with_tools)
    use = {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "P"}}
    long_use = dict(use, input={"city": "Paris " * 1000})
    result = {"type": "tool_result", "tool_use_id": "toolu_01", "content": "21 C"}

    def turns(call: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            QUESTION,
            {"role": "assistant", "content": [call]},
            {"role": "user", "content": [result]},
        ]

    short = c.messages.count_tokens(model="anthropic", messages=turns(use), tools=TOOLS)
    longer = c.messages.count_tokens(model="anthropic", messages=turns(long_use), tools=TOOLS)
    assert longer.input_tokens >= short.input_tokens + 1000, (short, longer)
