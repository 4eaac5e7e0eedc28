"""``POST /v1/responses`` with the official ``openai`` client and the OpenAI Agents SDK's
``OpenAIResponsesModel``, over real HTTP, on each provider shape; the store in process and
in a real Redis."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pytest
import redis
import yaml

os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")

from agents import Agent, OpenAIResponsesModel, Runner, set_tracing_disabled
from openai import AsyncOpenAI

from swiftclaw_devtools.agent_loop import system_prompt
from swiftclaw_devtools.processes import Proc, start_redis
from swiftclaw_runtime.responses.store import MemoryStore

from .conftest import API_KEY, Launcher
from .test_agents_sdk import Calls
from .test_images_live import PNG, data_uri
from .test_resilience_live import control, metrics
from .test_tools import REPORT_SCHEMA, SHAPES, WEATHER_SCHEMA, shape_sims, shapes_manifest

set_tracing_disabled(True)

TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Weather",
        "parameters": WEATHER_SCHEMA,
    },
    {
        "type": "function",
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}},
    },
]
OTHER_KEY = "sk-other-tenant-000001"


def keys_file(folder: Path) -> str:
    path = folder / "two-tenants.yaml"
    keys = [
        {"key": API_KEY, "tenant": "acme", "user": "alice"},
        {"key": OTHER_KEY, "tenant": "globex", "user": "bob"},
    ]
    path.write_text(yaml.safe_dump({"keys": keys}))
    return str(path)


@pytest.fixture(scope="module")
def sims(module_launch: Launcher) -> dict[str, Proc]:
    return shape_sims(module_launch)


@pytest.fixture(scope="module")
def rt(module_launch: Launcher, sims: dict[str, Proc]) -> Proc:
    keys = keys_file(module_launch.folder)
    return module_launch.runtime(shapes_manifest(sims), "--api-keys", keys)


def client(rt: Proc, key: str = API_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{rt.url}/v1", api_key=key, max_retries=0)


def create(rt: Proc, stream: bool, **kw: Any) -> Any:
    """A response, made plainly or streamed through the SDK's stream helper (which checks
    that the events build the response they end with)."""
    c = client(rt)
    if not stream:
        return c.responses.create(**kw)
    with c.responses.stream(**kw) as events:
        kinds = [e.type for e in events]
        final = events.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    for item in final.output:
        assert kinds.count("response.output_item.added") >= 1
        if item.type == "function_call":
            assert "response.function_call_arguments.delta" in kinds
        else:
            assert "response.output_text.delta" in kinds
    return final


both = pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
shapes = pytest.mark.parametrize("tier", SHAPES)


@shapes
@both
def test_text_with_instructions_and_usage(rt: Proc, tier: str, stream: bool) -> None:
    r = create(rt, stream, model=tier, input="Hello there", instructions="Be brief.")
    assert r.status == "completed" and r.object == "response" and r.id.startswith("resp_")
    assert [o.type for o in r.output] == ["message"]
    assert r.output_text and r.output_text == r.output[0].content[0].text
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    assert r.instructions == "Be brief."


@shapes
@both
def test_a_function_tool_loop_with_previous_response_id(rt: Proc, tier: str, stream: bool) -> None:
    first = create(rt, stream, model=tier, input="Weather and time in Paris?", tools=TOOLS)
    calls = [o for o in first.output if o.type == "function_call"]
    assert [c.name for c in calls] == ["get_weather", "get_time"]
    jsonschema.validate(json.loads(calls[0].arguments), WEATHER_SCHEMA)
    outputs = [
        {"type": "function_call_output", "call_id": c.call_id, "output": out}
        for c, out in zip(calls, ["21 C and sunny", "14:05"], strict=True)
    ]
    final = create(
        rt, stream, model=tier, previous_response_id=first.id, input=outputs, tools=TOOLS
    )
    assert final.output_text.startswith("Tool results: ")
    assert "sunny" in final.output_text and "14:05" in final.output_text
    assert final.previous_response_id == first.id
    # The chain goes on: the conversation (question, calls, results, answer) is kept.
    third = create(rt, False, model=tier, previous_response_id=final.id, input="Thanks!")
    assert third.status == "completed" and third.output_text


@shapes
def test_a_named_tool_choice_and_a_json_schema_answer(rt: Proc, tier: str) -> None:
    r = create(
        rt,
        False,
        model=tier,
        input="Time?",
        tools=TOOLS,
        tool_choice={"type": "function", "name": "get_time"},
    )
    assert [o.name for o in r.output if o.type == "function_call"] == ["get_time"]
    fmt = {"type": "json_schema", "name": "report", "schema": REPORT_SCHEMA, "strict": True}
    for stream in (False, True):
        r = create(rt, stream, model=tier, input="Report.", text={"format": fmt})
        jsonschema.validate(json.loads(r.output_text), REPORT_SCHEMA)


@shapes
def test_input_items_messages_images_and_calls_without_the_store(rt: Proc, tier: str) -> None:
    """A client that keeps its own history (store false) sends it back as items."""
    question = {
        "role": "user",
        "content": [
            {"type": "input_text", "text": "What is on this?"},
            {"type": "input_image", "image_url": data_uri(PNG), "detail": "auto"},
        ],
    }
    seen = create(rt, False, model=tier, input=[question], store=False)
    assert seen.output_text.startswith(f"Seen image/png {len(PNG)} bytes | ")
    first = create(rt, False, model=tier, input=[question], tools=TOOLS[:1], store=False)
    (call,) = [o for o in first.output if o.type == "function_call"]
    history = [
        question,
        {
            "type": "function_call",
            "call_id": call.call_id,
            "name": call.name,
            "arguments": call.arguments,
        },
        {"type": "function_call_output", "call_id": call.call_id, "output": "a cat"},
    ]
    final = create(rt, False, model=tier, input=history, tools=TOOLS[:1], store=False)
    assert "a cat" in final.output_text
    with pytest.raises(openai.NotFoundError) as info:
        create(rt, False, model=tier, previous_response_id=final.id, input="more")
    assert isinstance(info.value.body, dict) and info.value.body["param"] == "previous_response_id"


def test_stored_responses_are_scoped_by_tenant(rt: Proc) -> None:
    mine = create(rt, False, model="openai", input="Hi")
    with pytest.raises(openai.NotFoundError):
        client(rt, OTHER_KEY).responses.create(
            model="openai", previous_response_id=mine.id, input="Hi again"
        )
    create(rt, False, model="openai", previous_response_id=mine.id, input="Hi again")


@pytest.mark.parametrize(
    ("kw", "param", "code"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools[0].type", "unsupported_parameter"),
        ({"include": ["reasoning.encrypted_content"]}, "include", "unsupported_parameter"),
        ({"truncation": "auto"}, "truncation", "unsupported_parameter"),
        ({"background": True}, "background", "unsupported_parameter"),
        ({"reasoning": {"summary": "auto"}}, "reasoning.summary", "unsupported_parameter"),
        (
            {"input": [{"type": "item_reference", "id": "x"}]},
            "input[0].type",
            "unsupported_parameter",
        ),
        ({"input": []}, "input", "invalid_value"),
        ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role", "invalid_value"),
        ({"text": {"format": {"type": "xml"}}}, "text.format.type", "invalid_value"),
        ({"temperature": 5}, "temperature", "invalid_value"),
        (
            {"stream_options": {"include_obfuscation": True}},
            "stream_options",
            "unsupported_parameter",
        ),
        ({"tools": [{"type": "function", "name": "bad name"}]}, "tools[0].name", "invalid_value"),
    ],
)
def test_what_it_cannot_serve_is_a_400_naming_it(
    rt: Proc, kw: dict[str, Any], param: str, code: str
) -> None:
    body = {"model": "openai", "input": "Hi", **kw}
    with pytest.raises(openai.BadRequestError) as info:
        client(rt).post("/responses", body=body, cast_to=object)
    err = info.value.body
    assert isinstance(err, dict) and err["param"] == param and err["code"] == code, err


def test_responses_are_counted_as_chat_requests(rt: Proc) -> None:
    raw = client(rt).responses.with_raw_response.create(model="anthropic", input="count me")
    assert raw.headers["x-swiftclaw-model"] == "ant/claude-x"
    assert 'swiftclaw_requests_total{model="ant/claude-x",outcome="ok",tier="anthropic"}' in (
        metrics(rt)
    )


# --- the store in Redis ---------------------------------------------------------------------


def test_the_redis_store_survives_a_restart_with_a_ttl(
    launch: Launcher, sims: dict[str, Proc]
) -> None:
    server = start_redis(log_path=launch.folder / "redis.log")
    launch.procs.append(server)
    url = f"redis://127.0.0.1:{server.port}/0"
    first_rt = launch.runtime(shapes_manifest(sims), "--redis-url", url)
    first = create(first_rt, False, model="gemini", input="Weather?", tools=TOOLS[:1])
    (call,) = [o for o in first.output if o.type == "function_call"]
    db = redis.Redis.from_url(url)
    key = f"swiftclaw:responses:tests/test-agent:acme/alice:{first.id}"
    assert 0 < db.ttl(key) <= 24 * 3600
    first_rt.stop()
    second_rt = launch.runtime(shapes_manifest(sims), "--redis-url", url)
    final = create(
        second_rt,
        True,
        model="anthropic",  # and on another provider shape: the ids hold
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "rain"}],
        tools=TOOLS[:1],
    )
    assert final.output_text == "Tool results: rain"
    assert db.exists(f"swiftclaw:responses:tests/test-agent:acme/alice:{final.id}")


# --- the Agents SDK's default Responses model -------------------------------------------------


@pytest.mark.parametrize("tier", ["anthropic", "gemini"])
@pytest.mark.parametrize("stream", [False, True], ids=["run", "streamed"])
async def test_an_agents_sdk_responses_agent_reaches_its_answer(
    rt: Proc, tier: str, stream: bool
) -> None:
    calls = Calls()
    async with AsyncOpenAI(base_url=f"{rt.url}/v1", api_key=API_KEY, max_retries=0) as c:
        agent = Agent(
            name="assistant",
            instructions="Use the tools, then answer.",
            tools=calls.tools(),  # type: ignore[arg-type]
            model=OpenAIResponsesModel(model=tier, openai_client=c),
        )
        if stream:
            result: Any = Runner.run_streamed(agent, "Weather and time in Paris?", max_turns=5)
            async for _ in result.stream_events():
                pass
        else:
            result = await Runner.run(agent, "Weather and time in Paris?", max_turns=5)
    assert sorted(name for name, _ in calls.seen) == ["get_time", "get_weather"]
    answer = result.final_output
    assert answer.startswith("Tool results: ") and "sunny in sim" in answer and "14:05" in answer


def test_a_stream_the_provider_breaks_off_ends_with_response_failed(
    rt: Proc, sims: dict[str, Proc]
) -> None:
    control(sims["anthropic"], mode="cutoff", count=1)
    events = list(client(rt).responses.create(model="anthropic", input="Hello", stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.failed"
    failed = events[-1].response  # type: ignore[union-attr]
    assert failed.status == "failed" and failed.error.code == "stream_interrupted"
    assert [e.sequence_number for e in events] == list(range(len(events)))


async def test_the_memory_store_expires_evicts_and_scopes() -> None:
    store = MemoryStore(ttl_seconds=60, max_entries=2, max_bytes=10_000)
    await store.put("a", "r1", {"messages": [1]})
    await store.put("a", "r2", {"messages": [2]})
    assert await store.get("b", "r1") is None  # another tenant
    assert await store.get("a", "r1") == {"messages": [1]}  # r1 now most recent
    await store.put("a", "r3", {"messages": [3]})
    assert await store.get("a", "r2") is None and len(store) == 2  # the least recent went
    await store.put("a", "big", {"messages": ["x" * 20_000]})
    assert await store.get("a", "big") is None and store.bytes <= 10_000
    expired = MemoryStore(ttl_seconds=0)
    await expired.put("a", "r", {"messages": []})
    assert await expired.get("a", "r") is None


@shapes
@both
def test_usage_carries_the_providers_cached_tokens(rt: Proc, tier: str, stream: bool) -> None:
    """A second response with the same long instructions: the provider read them from its
    prompt cache, and ``input_tokens_details.cached_tokens`` says how much."""
    instructions = f"{tier} {stream}: " + system_prompt(1500)
    first = create(rt, stream, model=tier, input="Hello there", instructions=instructions)
    assert first.usage.input_tokens_details.cached_tokens == 0
    second = create(rt, stream, model=tier, input="And again", instructions=instructions)
    cached = second.usage.input_tokens_details.cached_tokens
    assert 1024 <= cached <= second.usage.input_tokens
