"""Conversation affinity: the steps of one conversation stay on the model that served it
last while that model is healthy (its prompt cache is there), and each request says what
affinity did (``x-swiftclaw-affinity``, ``swiftclaw_affinity``)."""

from __future__ import annotations

import re
from typing import Any

from swiftclaw_devtools.agent_loop import system_prompt
from swiftclaw_runtime.routing.affinity import CAPACITY, Affinity, conversation_key
from swiftclaw_runtime.schemas import parse_chat_request
from swiftclaw_runtime.spend.identity import Identity

from .conftest import Launcher, manifest, openai_provider
from .test_resilience_live import control, metrics
from .test_spend_live import call

SYSTEM = system_prompt(1500)


def step(url: str, first: str, n: int, model: str = "main") -> tuple[str, str, bool, int]:
    """Step ``n`` of the conversation that began with ``first``: the model that answered,
    the affinity header, the fallback header, and the cached tokens reported."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": first},
    ]
    for i in range(n):
        messages += [
            {"role": "assistant", "content": f"answer {i}"},
            {"role": "user", "content": f"and then {i}?"},
        ]
    r = call(url, "/v1/chat/completions", {"model": model, "messages": messages})
    assert r.status_code == 200, r.body
    headers = {k.lower(): v for k, v in r.headers.items()}
    cached = r.body["usage"]["prompt_tokens_details"]["cached_tokens"]
    return (
        headers["x-swiftclaw-model"],
        headers.get("x-swiftclaw-affinity", ""),
        headers["x-swiftclaw-fallback"] == "true",
        cached,
    )


def counted(text: str, outcome: str, reason: str) -> float:
    found = re.search(
        rf'swiftclaw_affinity_total\{{outcome="{outcome}",reason="{reason}",tier="main"\}} (\S+)',
        text,
    )
    return float(found.group(1)) if found else 0.0


def test_a_conversation_stays_on_the_model_that_served_it_while_healthy(
    launch: Launcher,
) -> None:
    a, b = launch.sim("--latency", "fixed:5"), launch.sim("--latency", "fixed:5")
    rt = launch.runtime(
        manifest(
            [openai_provider("a", a), openai_provider("b", b)],
            [
                {"name": "main", "model": "a/m", "fallbacks": ["b/m"]},
                {"name": "other", "model": "b/m2"},
            ],
            agent={"maxInputTokens": 100_000},
        )
    )
    url = rt.url
    assert step(url, "fix the parser", 0)[:3] == ("a/m", "new", False)
    assert step(url, "fix the parser", 1)[:3] == ("a/m", "kept", False)
    control(a, mode="error", count=2)  # both attempts at a fail: b stands in
    assert step(url, "fix the parser", 2)[:3] == ("b/m", "broken; reason=failed", True)
    # a is healthy again, but the conversation's prefix is cached at b: it stays there
    model, affinity, fallback, cached = step(url, "fix the parser", 3)
    assert (model, affinity, fallback) == ("b/m", "kept", True)
    assert cached > 0  # b's cache holds the prefix it saw at step 2
    # another conversation (another first message) starts at the tier's model
    assert step(url, "write the docs", 0)[:3] == ("a/m", "new", False)
    # routed to another tier: affinity broken, and the decision says why
    assert step(url, "fix the parser", 4, model="other")[:2] == (
        "b/m2",
        "broken; reason=tier_changed",
    )
    text = metrics(rt)
    assert counted(text, "broken", "failed") == 1
    assert counted(text, "kept", "") == 2
    assert counted(text, "new", "") == 2


def test_prompt_caching_off_keeps_no_affinity(launch: Launcher) -> None:
    a, b = launch.sim("--latency", "fixed:5"), launch.sim("--latency", "fixed:5")
    rt = launch.runtime(
        manifest(
            [openai_provider("a", a), openai_provider("b", b)],
            [{"name": "main", "model": "a/m", "fallbacks": ["b/m"]}],
            cache={"redis": {"mode": "none"}, "promptCaching": "off"},
        )
    )
    control(a, mode="error", count=2)
    assert step(rt.url, "fix the parser", 0)[:3] == ("b/m", "", True)
    assert step(rt.url, "fix the parser", 1)[:3] == ("a/m", "", False)  # back to the tier's model


def test_conversations_are_known_by_tenant_user_and_prompt_start() -> None:
    def key(tenant: str, user: str, *messages: tuple[str, str]) -> bytes:
        body = {"model": "m", "messages": [{"role": r, "content": c} for r, c in messages]}
        return conversation_key(Identity(tenant, user), parse_chat_request(body))

    base = key("t", "u", ("system", "s"), ("user", "q"))
    assert key("t", "u", ("system", "s"), ("user", "q"), ("assistant", "a"), ("user", "b")) == base
    assert key("t", "v", ("system", "s"), ("user", "q")) != base
    assert key("x", "u", ("system", "s"), ("user", "q")) != base
    assert key("t", "u", ("system", "s2"), ("user", "q")) != base
    assert key("t", "u", ("system", "s"), ("user", "q2")) != base


def test_the_affinity_map_is_bounded() -> None:
    """Well past its capacity (a client inventing conversations): the oldest go first."""
    memory = Affinity()
    for i in range(CAPACITY * 3):
        memory.remember(i.to_bytes(16, "big"), "main", "a/m")
    assert len(memory) == CAPACITY
    assert memory.recall((0).to_bytes(16, "big")) is None
    assert memory.recall((CAPACITY * 3 - 1).to_bytes(16, "big")) == ("main", "a/m")
