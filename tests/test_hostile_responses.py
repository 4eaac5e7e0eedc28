"""Stored Responses conversations against hostile clients: another user's, another end
user's or another agent's ``previous_response_id`` is a 404; a conversation is bounded
(past the bound it is served and not stored, and continuing one past it is a 400 naming
``previous_response_id``); the replayed history is charged as it is sent upstream."""

from __future__ import annotations

import copy
import http.client
import json
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from swiftclaw_devtools.processes import Proc, start_redis
from swiftclaw_runtime.responses.store import MAX_CONVERSATION_BYTES, MAX_CONVERSATION_MESSAGES

from .conftest import API_KEY, Launcher, manifest, openai_provider

CAROL_KEY = "sk-acme-carol-000001"  # the same tenant as API_KEY's alice, another user


def keys_file(folder: Path) -> str:
    path = folder / "one-tenant-two-users.yaml"
    keys = [
        {"key": API_KEY, "tenant": "acme", "user": "alice"},
        {"key": CAROL_KEY, "tenant": "acme", "user": "carol"},
    ]
    path.write_text(yaml.safe_dump({"keys": keys}))
    return str(path)


def agent(sim: Proc, name: str = "test-agent", **spec: Any) -> dict[str, Any]:
    doc = manifest(
        [openai_provider("up", sim)],
        [{"name": "main", "model": "up/m"}],
        rateLimits={"perUser": {"tokensPerMinute": 100_000_000}},
        **spec,
    )
    doc["metadata"]["name"] = name
    return doc


def call(
    port: int, method: str, path: str, body: dict[str, Any] | None = None, key: str = API_KEY
) -> tuple[int, Any]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
        data = None if body is None else json.dumps(body)
        c.request(method, path, body=data, headers=headers)
        r = c.getresponse()
        return r.status, json.loads(r.read())
    finally:
        c.close()


def post(rt: Proc, body: dict[str, Any], key: str = API_KEY) -> tuple[int, dict[str, Any]]:
    return call(rt.port, "POST", "/v1/responses", {"model": "main", **body}, key)


def ok(rt: Proc, body: dict[str, Any], key: str = API_KEY) -> dict[str, Any]:
    status, out = post(rt, body, key)
    assert status == 200, out
    return out


def not_found(rt: Proc, body: dict[str, Any], key: str = API_KEY) -> None:
    status, out = post(rt, body, key)
    assert status == 404, out
    assert out["error"]["param"] == "previous_response_id"


@pytest.fixture(scope="module")
def sim(module_launch: Launcher) -> Proc:
    return module_launch.sim("--latency", "fixed:1")


@pytest.fixture(scope="module")
def rt(module_launch: Launcher, sim: Proc) -> Proc:
    doc = agent(sim, agent={"maxInputTokens": 2_000_000})  # no trimming of the history
    return module_launch.runtime(doc, "--api-keys", keys_file(module_launch.folder))


def test_another_user_of_the_same_tenant_cannot_continue_a_conversation(rt: Proc) -> None:
    mine = ok(rt, {"input": "my secret plan"})
    not_found(rt, {"previous_response_id": mine["id"], "input": "what was it?"}, CAROL_KEY)
    ok(rt, {"previous_response_id": mine["id"], "input": "what was it?"})


def test_end_users_behind_one_key_cannot_read_each_others(
    module_launch: Launcher, sim: Proc
) -> None:
    """With ``auth.userFromRequest`` the request's ``user`` is the owner."""
    doc = agent(sim, auth={"userFromRequest": True})
    shared = module_launch.runtime(doc)
    first = ok(shared, {"input": "my secret plan", "user": "u1"})
    not_found(shared, {"previous_response_id": first["id"], "input": "?", "user": "u2"})
    not_found(shared, {"previous_response_id": first["id"], "input": "?"})  # the key's user
    ok(shared, {"previous_response_id": first["id"], "input": "?", "user": "u1"})


def test_another_agent_on_the_same_redis_cannot_continue_it(launch: Launcher, sim: Proc) -> None:
    server = start_redis(log_path=launch.folder / "redis.log")
    launch.procs.append(server)
    url = f"redis://127.0.0.1:{server.port}/0"
    one = launch.runtime(agent(sim, "agent-one"), "--redis-url", url)
    two = launch.runtime(agent(sim, "agent-two"), "--redis-url", url)
    first = ok(one, {"input": "my secret plan"})
    key = f"swiftclaw:responses:tests/agent-one:acme/alice:{first['id']}"
    assert redis.Redis.from_url(url).exists(key)
    not_found(two, {"previous_response_id": first["id"], "input": "?"})
    ok(one, {"previous_response_id": first["id"], "input": "?"})


def messages(n: int, text: str = "hi") -> list[dict[str, Any]]:
    return [{"role": "user", "content": text} for _ in range(n)]


def test_a_conversation_past_the_message_bound_is_served_not_stored(rt: Proc) -> None:
    past = ok(rt, {"input": messages(MAX_CONVERSATION_MESSAGES + 10)})
    assert past["store"] is False  # said so: the next turn cannot continue it
    not_found(rt, {"previous_response_id": past["id"], "input": "and?"})
    half = ok(rt, {"input": messages(MAX_CONVERSATION_MESSAGES // 2 + 10)})
    assert half["store"] is True
    status, out = post(
        rt,
        {"previous_response_id": half["id"], "input": messages(MAX_CONVERSATION_MESSAGES // 2)},
    )
    assert status == 400, out
    assert out["error"]["param"] == "previous_response_id"
    assert out["error"]["code"] == "conversation_too_long"
    # without storing, the same turn is served (the bound is on what is kept)
    ok(rt, {"previous_response_id": half["id"], "input": "short", "store": False})


def test_a_conversation_past_the_byte_bound_is_refused_before_anything_is_spent(
    rt: Proc, sim: Proc
) -> None:
    chunk = "x " * (MAX_CONVERSATION_BYTES // 6)  # a third of the bound, in characters
    first = ok(rt, {"input": chunk})
    second = ok(rt, {"previous_response_id": first["id"], "input": chunk})
    calls = call(sim.port, "GET", "/_sim/stats")[1]["requests"]
    status, out = post(rt, {"previous_response_id": second["id"], "input": chunk + chunk})
    assert status == 400 and out["error"]["code"] == "conversation_too_long", out
    assert call(sim.port, "GET", "/_sim/stats")[1]["requests"] == calls  # nothing sent upstream


def usage_tokens(rt: Proc, key: str = API_KEY) -> int:
    status, report = call(rt.port, "GET", "/v1/usage", key=key)
    assert status == 200, report
    return int(report["rateLimits"]["perUser"]["tokens"]["used"])


def test_the_replayed_history_is_charged_as_sent(rt: Proc) -> None:
    """The history a previous_response_id brings is part of the prompt: the provider's
    input tokens (and the caller's token count) are those of the whole conversation, the
    same as when the client sends the history itself."""
    story = "word " * 3_000
    first = ok(rt, {"input": story, "store": True})
    before = usage_tokens(rt)
    replayed = ok(rt, {"previous_response_id": first["id"], "input": "and then?"})
    spent = usage_tokens(rt) - before
    history = [
        {"role": "user", "content": story},
        *copy.deepcopy(first["output"]),
        {"role": "user", "content": "and then?"},
    ]
    sent = ok(rt, {"input": history, "store": False})
    assert replayed["usage"]["input_tokens"] == sent["usage"]["input_tokens"] > 3_000
    used = replayed["usage"]["input_tokens"] + replayed["usage"]["output_tokens"]
    assert spent == used
