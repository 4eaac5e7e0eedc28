"""The official OpenAI SDK against the runtime, over real HTTP to simulated providers."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from swiftclaw_devtools.processes import Proc
from swiftclaw_devtools.sim import answer_for

from .conftest import API_KEY, Launcher, manifest

SYSTEM = "You are terse."


@pytest.fixture(scope="module")
def three_shapes(module_launch: Launcher) -> Proc:
    """One provider per API shape, each behind its own tier; the provider needs a key."""
    o, a, g = (
        module_launch.sim("--require-key-env", "SIM_KEY", "--latency", "fixed:1") for _ in range(3)
    )
    doc = manifest(
        [
            {
                "name": "oai",
                "type": "openai-compatible",
                "baseURL": f"{o.url}/v1",
                "apiKeyEnv": "K",
            },
            {"name": "ant", "type": "anthropic", "baseURL": f"{a.url}/v1", "apiKeyEnv": "K"},
            {"name": "gem", "type": "gemini", "baseURL": f"{g.url}/v1beta", "apiKeyEnv": "K"},
        ],
        [
            {"name": "openai", "model": "oai/gpt-x"},
            {"name": "anthropic", "model": "ant/claude-x"},
            {"name": "gemini", "model": "gem/gemini-x"},
        ],
        agent={"systemPrompt": SYSTEM},
    )
    return module_launch.runtime(doc, env={"K": "upstream-secret-1"})


def client(rt: Proc, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{rt.url}/v1", api_key=API_KEY, max_retries=0, **kw)


def expected_text(model: str, prompt: str) -> str:
    return " ".join(answer_for(model, prompt, None))


@pytest.mark.parametrize(
    ("tier", "model"), [("openai", "gpt-x"), ("anthropic", "claude-x"), ("gemini", "gemini-x")]
)
def test_plain_completion_for_each_provider_shape(
    three_shapes: Proc, tier: str, model: str
) -> None:
    resp = client(three_shapes).chat.completions.with_raw_response.create(
        model=tier, messages=[{"role": "user", "content": "What is SwiftClaw?"}]
    )
    completion = resp.parse()
    assert completion.choices[0].message.content == expected_text(model, "What is SwiftClaw?")
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    # The system prompt was sent: the prompt tokens count it (≈ len/4 + framing).
    assert completion.usage.prompt_tokens >= 10
    assert resp.headers["x-swiftclaw-tier"] == tier
    assert resp.headers["x-swiftclaw-fallback"] == "false"


@pytest.mark.parametrize(
    ("tier", "model"), [("openai", "gpt-x"), ("anthropic", "claude-x"), ("gemini", "gemini-x")]
)
def test_streamed_completion_for_each_provider_shape(
    three_shapes: Proc, tier: str, model: str
) -> None:
    stream = client(three_shapes).chat.completions.create(
        model=tier,
        messages=[{"role": "user", "content": "Stream please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage, chunks = "", None, None, 0
    for chunk in stream:
        chunks += 1
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    assert text == expected_text(model, "Stream please")
    assert finish == "stop"
    assert chunks > 3
    assert usage is not None and usage.completion_tokens == len(text.split())


def test_stream_without_usage_request_gets_no_usage_chunk(three_shapes: Proc) -> None:
    chunks = list(
        client(three_shapes).chat.completions.create(
            model="openai", messages=[{"role": "user", "content": "x"}], stream=True
        )
    )
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


def test_models_lists_auto_agent_and_tiers(three_shapes: Proc) -> None:
    ids = [m.id for m in client(three_shapes).models.list()]
    assert ids == ["auto", "test-agent", "openai", "anthropic", "gemini"]


def test_auto_and_model_refs_route_to_tiers(three_shapes: Proc) -> None:
    c = client(three_shapes)
    for requested, tier in [
        ("auto", "openai"),
        ("test-agent", "openai"),
        ("ant/claude-x", "anthropic"),
    ]:
        r = c.chat.completions.with_raw_response.create(
            model=requested, messages=[{"role": "user", "content": "hi"}]
        )
        assert r.headers["x-swiftclaw-tier"] == tier


def test_wrong_key_is_401_for_the_sdk(three_shapes: Proc) -> None:
    bad = openai.OpenAI(base_url=f"{three_shapes.url}/v1", api_key="sk-nope-000000", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        bad.chat.completions.create(model="auto", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 401
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_upstream_key_reaches_the_provider_and_never_the_logs(three_shapes: Proc) -> None:
    # The simulators refuse calls without the key, so a success proves it was sent.
    client(three_shapes).chat.completions.create(
        model="gemini", messages=[{"role": "user", "content": "a private question"}]
    )
    log = three_shapes.log()
    assert "upstream-secret-1" not in log
    assert API_KEY not in log
    assert "a private question" not in log
