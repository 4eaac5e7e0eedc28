"""Context sources over real HTTP (parallel, per-source timeout, failures left out and
counted, placeholders encoded) and the prompt's trimming to maxInputTokens."""

from __future__ import annotations

import statistics
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from bench.spend import Sources

from swiftclaw_runtime.config import AgentSpec
from swiftclaw_runtime.errors import ApiError
from swiftclaw_runtime.prompt import build_prompt
from swiftclaw_runtime.schemas import parse_chat_request

from .conftest import API_KEY, Launcher, manifest, openai_provider


@pytest.fixture
def sources() -> Iterator[Sources]:
    s = Sources()
    yield s
    s.close()


def _timed(client: openai.OpenAI, n: int, **extra: Any) -> tuple[float, Any]:
    times, out = [], None
    for i in range(n):
        started = time.perf_counter()
        out = client.chat.completions.create(
            model="t", messages=[{"role": "user", "content": f"question {i}"}], **extra
        )
        times.append(time.perf_counter() - started)
    return statistics.median(times), out


def test_three_sources_are_fetched_in_parallel(launch: Launcher, sources: Sources) -> None:
    up = launch.sim("--latency", "fixed:1")
    ctx = [
        {"name": f"s{i}", "url": f"{sources.url}/slow/{i}/{{tenant}}/{{user}}", "timeoutMs": 1000}
        for i in range(3)
    ]
    rt = launch.runtime(
        manifest(
            [openai_provider("up", up)],
            [{"name": "t", "model": "up/m"}],
            agent={"context": ctx},
            auth={"userFromRequest": True},
        )
    )
    plain = launch.runtime(manifest([openai_provider("up", up)], [{"name": "t", "model": "up/m"}]))
    with_ctx = openai.OpenAI(base_url=f"{rt.url}/v1", api_key=API_KEY, max_retries=0)
    without = openai.OpenAI(base_url=f"{plain.url}/v1", api_key=API_KEY, max_retries=0)
    _timed(with_ctx, 1)  # warm up both
    _timed(without, 1)
    ctx_seconds, out = _timed(with_ctx, 5, user="bob smith/x")
    base_seconds, base = _timed(without, 5)
    # three 100 ms sources: ~100 ms, not the 300 ms of fetching them one after the other
    assert ctx_seconds < 0.25, ctx_seconds
    assert ctx_seconds - base_seconds >= 0.095
    assert out.usage.prompt_tokens > base.usage.prompt_tokens + 20  # the context is in the prompt
    assert "/slow/0/acme/bob%20smith%2Fx" in sources.paths  # encoded, scoped by tenant


def test_a_failing_source_is_left_out_and_counted(launch: Launcher, sources: Sources) -> None:
    up = launch.sim("--latency", "fixed:1")
    ctx = [
        {"name": "ok", "url": f"{sources.url}/slow/{{user}}", "timeoutMs": 1000},
        {"name": "broken", "url": f"{sources.url}/fail", "timeoutMs": 1000},
        {"name": "hung", "url": f"{sources.url}/hang", "timeoutMs": 200},
        {
            "name": "cached",
            "url": f"{sources.url}/slow/cached/{{user}}",
            "timeoutMs": 1000,
            "cacheTTLSeconds": 60,
        },
    ]
    rt = launch.runtime(
        manifest(
            [openai_provider("up", up)], [{"name": "t", "model": "up/m"}], agent={"context": ctx}
        )
    )
    client = openai.OpenAI(base_url=f"{rt.url}/v1", api_key=API_KEY, max_retries=0)
    seconds, out = _timed(client, 2)
    assert out.choices[0].message.content
    assert seconds < 0.6  # the hung source costs its 200 ms timeout, no more
    with urllib.request.urlopen(f"{rt.url}/metrics", timeout=10) as r:
        metrics = r.read().decode()
    assert 'swiftclaw_context_failures_total{source="broken"} 2.0' in metrics
    assert 'swiftclaw_context_failures_total{source="hung"} 2.0' in metrics
    assert 'swiftclaw_context_failures_total{source="ok"}' not in metrics
    assert sources.paths.count("/slow/cached/alice") == 1  # the second came from the cache
    assert sources.paths.count("/slow/alice") == 2


# --- trimming (no I/O) -------------------------------------------------------------------


def _request(messages: list[dict[str, Any]]) -> tuple[Any, dict[str, Any]]:
    payload = {"model": "auto", "messages": messages}
    return parse_chat_request(payload), payload


def _turn(i: int, words: int = 40) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": f"question {i} " + "word " * words},
        {"role": "assistant", "content": f"answer {i} " + "word " * words},
    ]


def test_history_is_trimmed_oldest_turns_first_keeping_the_system_prompt() -> None:
    agent = AgentSpec(system_prompt="Be brief.", max_input_tokens=200)
    history = [m for i in range(6) for m in _turn(i)]
    request, payload = _request(
        [
            {"role": "system", "content": "client rules"},
            *history,
            {"role": "user", "content": "now?"},
        ]
    )
    prompt = build_prompt(agent, request, payload)
    texts = [m["content"] for m in prompt.payload["messages"]]
    assert texts[:2] == ["Be brief.", "client rules"]
    assert texts[-1] == "now?"
    assert prompt.trimmed_tokens > 0 and prompt.input_tokens <= 200
    kept = [t for t in texts if t.startswith(("question", "answer"))]
    # whole turns, the newest ones, in order
    assert kept and kept[0].startswith("question") and kept[-1].startswith("answer 5")
    assert len(prompt.request.messages) == len(prompt.payload["messages"])


def test_tool_calls_and_results_are_dropped_together() -> None:
    agent = AgentSpec(max_input_tokens=60)
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "look it up " + "word " * 60},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "result"},
        {"role": "assistant", "content": "done"},
        {"role": "user", "content": "thanks, and now?"},
    ]
    prompt = build_prompt(agent, *_request(messages))
    assert [m["role"] for m in prompt.payload["messages"]] == ["user"]


def test_context_goes_before_refusal_and_a_prompt_that_cannot_fit_is_a_400() -> None:
    agent = AgentSpec(system_prompt="S", max_input_tokens=60)
    request, payload = _request([{"role": "user", "content": "short question"}])
    prompt = build_prompt(agent, request, payload, [("profile", "x " * 400)])
    assert [m["content"] for m in prompt.payload["messages"]] == ["S", "short question"]
    with pytest.raises(ApiError) as info:
        build_prompt(agent, *_request([{"role": "user", "content": "word " * 400}]))
    assert info.value.status == 400 and info.value.code == "context_length_exceeded"
    assert info.value.param == "messages"
    fits = build_prompt(AgentSpec(), request, payload, [("profile", "plan: gold")])
    assert fits.payload["messages"][0]["content"].startswith("Context for this request")
