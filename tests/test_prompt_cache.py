"""Providers' prompt caches, end to end: a 20-step agent loop in OpenAI's shape through
the runtime to each simulated provider (Anthropic, OpenAI-compatible, Gemini), streamed and
not. From the second step the provider reports cached input in its own shape; the runtime
carries it to the client's usage, and what it records (``/v1/usage``, the metrics) is the
provider's own pricing of the usage it returned, cached tokens at their prices.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from swiftclaw_devtools.agent_loop import run_loop
from swiftclaw_runtime.providers.breakpoints import MAX_BREAKPOINTS, place_breakpoints
from swiftclaw_runtime.providers.usage import (
    PromptUsage,
    anthropic_prompt,
    gemini_prompt,
    openai_prompt,
)

from .conftest import API_KEY, Launcher, manifest, openai_provider
from .test_connection_lifecycle import wait_for
from .test_resilience_live import metrics, sim_stats
from .test_spend_live import call

SETTLED = 15.0  # seconds a settlement may take, with margin for a loaded machine
MODELS = {"anthropic": "claude-sonnet-x", "openai": "gpt-x", "gemini": "gemini-flash-x"}
PRICES: dict[str, dict[str, float]] = {
    "anthropic": {
        "inputPer1M": 3.0,
        "outputPer1M": 15.0,
        "cachedInputPer1M": 0.3,
        "cacheWritePer1M": 3.75,
    },
    "openai": {"inputPer1M": 2.5, "outputPer1M": 10.0, "cachedInputPer1M": 1.25},
    "gemini": {"inputPer1M": 1.25, "outputPer1M": 10.0, "cachedInputPer1M": 0.125},
}


def provider(shape: str, url: str) -> dict[str, Any]:
    if shape == "anthropic":
        return {"name": "up", "type": "anthropic", "baseURL": f"{url}/v1"}
    if shape == "gemini":
        return {"name": "up", "type": "gemini", "baseURL": f"{url}/v1beta"}
    return {"name": "up", "type": "openai-compatible", "baseURL": f"{url}/v1"}


def agent(launch: Launcher, shape: str, **spec: Any) -> tuple[Any, Any]:
    """A simulated provider of ``shape`` and a runtime whose one tier calls it."""
    sim = launch.sim()
    tier = {"name": "main", "model": f"up/{MODELS[shape]}", **PRICES[shape]}
    doc = manifest(
        [provider(shape, sim.url) if shape != "openai" else openai_provider("up", sim)],
        [tier],
        agent={"maxInputTokens": 200_000},
        **spec,
    )
    return sim, launch.runtime(doc)


def provider_price(shape: str, stats: dict[str, Any]) -> float:
    """What the provider charges for what it billed: its cache's parts at their prices."""
    p = PRICES[shape]
    read, written = stats["billed_cache_read_tokens"], stats["billed_cache_write_tokens"]
    plain = stats["billed_prompt_tokens"] - read - written
    return (
        plain * p["inputPer1M"]
        + read * p["cachedInputPer1M"]
        + written * p.get("cacheWritePer1M", p["inputPer1M"])
        + stats["billed_completion_tokens"] * p["outputPer1M"]
    ) / 1_000_000


def counter(text: str, direction: str) -> float:
    found = re.search(rf'swiftclaw_tokens_total\{{direction="{direction}"[^}}]*\}} (\S+)', text)
    return float(found.group(1)) if found else 0.0


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("shape", ["anthropic", "openai", "gemini"])
def test_agent_loop_pays_cached_prefix_at_cache_prices(
    launch: Launcher, shape: str, stream: bool
) -> None:
    sim, rt = agent(launch, shape)
    steps = run_loop(rt.url, API_KEY, "main", steps=20, stream=stream)

    # from the second step the provider read the repeated prefix from its cache, and the
    # client's usage says so
    assert steps[0].cached == 0
    assert all(s.cached > 0 for s in steps[1:]), [s.cached for s in steps]
    stats = sim_stats(sim)
    assert sum(s.cached for s in steps) == stats["billed_cache_read_tokens"]
    assert sum(s.usage["prompt_tokens"] for s in steps) == stats["billed_prompt_tokens"]
    if shape == "anthropic":  # written on first use, at the breakpoints the runtime placed
        assert stats["billed_cache_write_tokens"] > 0
        assert steps[0].usage["prompt_tokens_details"]["cache_write_tokens"] > 0
    else:
        assert stats["billed_cache_write_tokens"] == 0

    expected = provider_price(shape, stats)
    full = (
        stats["billed_prompt_tokens"] * PRICES[shape]["inputPer1M"]
        + stats["billed_completion_tokens"] * PRICES[shape]["outputPer1M"]
    ) / 1_000_000
    assert expected < full - 0.01  # the cache makes a difference of more than a cent

    def recorded() -> dict[str, Any]:
        return dict(call(rt.url, "/v1/usage").json())

    wait_for(lambda: recorded()["requestsToday"]["tenant"] == 20, timeout=SETTLED)
    usage = recorded()
    assert usage["spend"]["tenantTodayUSD"] == pytest.approx(expected, abs=2e-6)
    assert round(usage["spend"]["tenantTodayUSD"], 2) == round(expected, 2)
    assert usage["tokensToday"] == {
        "input": stats["billed_prompt_tokens"],
        "output": stats["billed_completion_tokens"],
        "cachedInput": stats["billed_cache_read_tokens"],
        "cacheWrite": stats["billed_cache_write_tokens"],
    }
    text = metrics(rt)
    assert counter(text, "cache_read") == stats["billed_cache_read_tokens"]
    assert counter(text, "cache_write") == stats["billed_cache_write_tokens"]


@pytest.mark.parametrize("mode", ["off", "manual"])
def test_no_breakpoints_placed_unless_auto(launch: Launcher, mode: str) -> None:
    """``off`` and ``manual`` place no breakpoint: Anthropic caches nothing of a request
    that marks none, so every step pays the full input price."""
    sim, rt = agent(launch, "anthropic", cache={"redis": {"mode": "none"}, "promptCaching": mode})
    steps = run_loop(rt.url, API_KEY, "main", steps=4)
    assert [s.cached for s in steps] == [0, 0, 0, 0]
    stats = sim_stats(sim)
    assert stats["billed_cache_read_tokens"] == stats["billed_cache_write_tokens"] == 0


def test_breakpoints_on_tools_system_and_the_turn_before_the_last() -> None:
    body = {
        "tools": [{"name": "a", "input_schema": {}}, {"name": "b", "input_schema": {}}],
        "system": "be brief",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "text", "text": "hello"}]},
            {"role": "user", "content": "go on"},
        ],
    }
    out = place_breakpoints(body, "auto")
    mark = {"type": "ephemeral"}
    assert "cache_control" not in out["tools"][0] and out["tools"][1]["cache_control"] == mark
    assert out["system"] == [{"type": "text", "text": "be brief", "cache_control": mark}]
    assert out["messages"][1]["content"][-1]["cache_control"] == mark
    assert out["messages"][0] == {"role": "user", "content": "hi"}  # the rest as it was
    assert out["messages"][2] == {"role": "user", "content": "go on"}
    assert body["system"] == "be brief" and "cache_control" not in body["tools"][1]  # a copy
    assert str(out).count("cache_control") <= MAX_BREAKPOINTS
    # the client's own breakpoints are kept as they are, and none added
    own = dict(body, system=[{"type": "text", "text": "x", "cache_control": mark}])
    assert place_breakpoints(own, "auto") is own
    for mode in ("manual", "off"):
        assert place_breakpoints(body, mode) is body  # type: ignore[arg-type]
    # a first turn: nothing before the last turn to mark
    first = {"system": "s", "messages": [{"role": "user", "content": "hi"}]}
    assert place_breakpoints(first, "auto")["messages"] == first["messages"]


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        (
            {
                "input_tokens": 10,
                "cache_read_input_tokens": 2000,
                "cache_creation_input_tokens": 300,
            },
            PromptUsage(2310, 2000, 300),
        ),
        (
            {"input_tokens": 10, "cache_read_input_tokens": -5, "cache_creation_input_tokens": "x"},
            PromptUsage(10, 0, 0),
        ),
        (None, PromptUsage(0)),
    ],
)
def test_anthropic_cache_counts_are_added_to_the_prompt(usage: Any, expected: PromptUsage) -> None:
    assert anthropic_prompt(usage) == expected


def test_cached_parts_never_exceed_the_prompt() -> None:
    assert openai_prompt(
        {"prompt_tokens": 100, "prompt_tokens_details": {"cached_tokens": 10**9}}
    ) == PromptUsage(100, 100)
    assert openai_prompt({"prompt_tokens": 100, "prompt_tokens_details": None}) == PromptUsage(100)
    assert gemini_prompt({"promptTokenCount": 50, "cachedContentTokenCount": 40}) == PromptUsage(
        50, 40
    )
    assert gemini_prompt({"promptTokenCount": True}) == PromptUsage(0)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("shape", ["anthropic", "openai", "gemini"])
def test_messages_api_usage_carries_the_providers_cache(
    launch: Launcher, shape: str, stream: bool
) -> None:
    """An Anthropic-shaped client sees the provider's cache reads and writes in Anthropic's
    usage fields, whatever provider serves the tier, and ``input_tokens`` is only the part
    that was neither (as Anthropic counts it)."""
    import anthropic

    sim, rt = agent(launch, shape)
    client = anthropic.Anthropic(base_url=rt.url, api_key=API_KEY, max_retries=0, timeout=30)
    system = " ".join(f"rule {i}: answer briefly and cite the policy." for i in range(400))
    turns: list[dict[str, Any]] = []
    usages = []
    for step in range(3):
        turns.append({"role": "user", "content": f"step {step}: what next?"})
        kw: dict[str, Any] = {"model": "main", "max_tokens": 64, "system": system}
        if stream:
            with client.messages.stream(messages=turns, **kw) as events:
                message = events.get_final_message()
        else:
            message = client.messages.create(messages=turns, **kw)
        usages.append(message.usage)
        turns.append({"role": "assistant", "content": message.content[0].text})
    stats = sim_stats(sim)
    reads = [u.cache_read_input_tokens or 0 for u in usages]
    writes = [u.cache_creation_input_tokens or 0 for u in usages]
    assert reads[0] == 0 and all(r > 0 for r in reads[1:]), reads
    assert sum(reads) == stats["billed_cache_read_tokens"]
    assert sum(writes) == stats["billed_cache_write_tokens"]
    assert sum(u.input_tokens + r + w for u, r, w in zip(usages, reads, writes, strict=True)) == (
        stats["billed_prompt_tokens"]
    )
