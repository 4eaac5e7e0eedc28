"""Tool calls and JSON answers through the runtime, over real HTTP, on each provider shape.

The official ``openai`` client talks to the runtime, which talks to a simulator in the
OpenAI, Anthropic or Gemini shape (the simulator plays an agent's model, see
``swiftclaw_devtools.sim_agent``); every answer is checked as a client would use it:
arguments and JSON answers validate against their schemas with ``jsonschema``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import openai
import pytest

from swiftclaw_devtools.processes import Proc

from .conftest import API_KEY, Launcher, manifest, openai_provider
from .test_resilience_live import control, metrics, sim_stats

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 2},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "unit", "days"],
    "additionalProperties": False,
}
CLOCK_SCHEMA = {
    "type": "object",
    "properties": {
        "zones": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "offset": {"type": "number"}},
                "required": ["name", "offset"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["zones"],
    "additionalProperties": False,
}
SCHEMAS = {"get_weather": WEATHER_SCHEMA, "get_time": CLOCK_SCHEMA}
TOOLS = [
    {
        "type": "function",
        "function": {"name": name, "description": f"{name} tool", "parameters": schema},
    }
    for name, schema in SCHEMAS.items()
]
REPORT_SCHEMA = {
    "type": "object",
    "properties": {
        "summary": {"type": "string"},
        "mood": {"type": "string", "enum": ["good", "bad"]},
        "scores": {"type": "array", "items": {"type": "integer", "minimum": 3}, "minItems": 2},
        "detail": {
            "type": "object",
            "properties": {"note": {"type": ["string", "null"]}},
            "required": ["note"],
            "additionalProperties": False,
        },
    },
    "required": ["summary", "mood", "scores", "detail"],
    "additionalProperties": False,
}
REPORT = {
    "type": "json_schema",
    "json_schema": {"name": "report", "strict": True, "schema": REPORT_SCHEMA},
}
SHAPES = ["openai", "anthropic", "gemini"]
USER = {"role": "user", "content": "What is the weather and the time in Paris?"}


def shape_sims(launch: Launcher) -> dict[str, Proc]:
    """A simulator per provider shape, by shape."""
    return {shape: launch.sim("--latency", "fixed:1") for shape in SHAPES}


def shapes_manifest(sims: dict[str, Proc], *tiers: dict[str, Any]) -> dict[str, Any]:
    """One tier per provider shape, named after it, on ``sims`` (then ``tiers``)."""
    return manifest(
        [
            openai_provider("oai", sims["openai"]),
            {"name": "ant", "type": "anthropic", "baseURL": f"{sims['anthropic'].url}/v1"},
            {"name": "gem", "type": "gemini", "baseURL": f"{sims['gemini'].url}/v1beta"},
        ],
        [
            {"name": "openai", "model": "oai/gpt-x"},
            {"name": "anthropic", "model": "ant/claude-x"},
            {"name": "gemini", "model": "gem/gemini-x"},
            *tiers,
        ],
    )


def failover_runtime(launch: Launcher) -> tuple[Proc, Proc, Proc]:
    """An OpenAI-shaped primary sim, an Anthropic-shaped fallback sim, and a runtime with
    tier ``main`` on the primary falling back to the other."""
    primary, fallback = launch.sim("--latency", "fixed:1"), launch.sim("--latency", "fixed:1")
    doc = manifest(
        [
            openai_provider("oai", primary),
            {"name": "ant", "type": "anthropic", "baseURL": f"{fallback.url}/v1"},
        ],
        [{"name": "main", "model": "oai/gpt-x", "fallbacks": ["ant/claude-x"]}],
    )
    return primary, fallback, launch.runtime(doc)


@pytest.fixture(scope="module")
def rt(module_launch: Launcher) -> Proc:
    """One tier per provider shape."""
    return module_launch.runtime(shapes_manifest(shape_sims(module_launch)))


def client(rt: Proc) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{rt.url}/v1", api_key=API_KEY, max_retries=0)


@dataclass
class Reply:
    content: str | None
    calls: list[dict[str, Any]] = field(default_factory=list)  # id, name, arguments
    finish: str | None = None

    def assistant_message(self) -> dict[str, Any]:
        return {
            "role": "assistant",
            "content": self.content,
            "tool_calls": [
                {
                    "id": c["id"],
                    "type": "function",
                    "function": {"name": c["name"], "arguments": c["arguments"]},
                }
                for c in self.calls
            ],
        }


def ask(rt: Proc, tier: str, stream: bool, **kw: Any) -> Reply:
    """One completion through the SDK; a stream is put together as a client would,
    checking that each call's fragments share an index and that the id comes first."""
    c = client(rt)
    if not stream:
        done = c.chat.completions.create(model=tier, **kw)
        msg = done.choices[0].message
        calls = [
            {"id": t.id, "name": t.function.name, "arguments": t.function.arguments}
            for t in msg.tool_calls or []
            if t.type == "function"
        ]
        return Reply(msg.content, calls, done.choices[0].finish_reason)
    reply = Reply(None)
    text: list[str] = []
    for chunk in c.chat.completions.create(model=tier, stream=True, **kw):
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        text.append(choice.delta.content or "")
        for frag in choice.delta.tool_calls or []:
            if frag.index == len(reply.calls):  # a new call: its id and name come first
                assert frag.id and frag.function and frag.function.name
                reply.calls.append({"id": frag.id, "name": frag.function.name, "arguments": ""})
            else:
                assert frag.index == len(reply.calls) - 1 and frag.id is None
            assert frag.function is not None
            reply.calls[frag.index]["arguments"] += frag.function.arguments or ""
        reply.finish = choice.finish_reason or reply.finish
    reply.content = "".join(text) or None
    return reply


def assert_valid_calls(reply: Reply, names: list[str]) -> None:
    assert reply.finish == "tool_calls"
    assert [c["name"] for c in reply.calls] == names
    assert len({c["id"] for c in reply.calls}) == len(names)
    for call in reply.calls:
        jsonschema.validate(json.loads(call["arguments"]), SCHEMAS[call["name"]])


both = pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
shapes = pytest.mark.parametrize("tier", SHAPES)


@shapes
@both
def test_a_tool_call(rt: Proc, tier: str, stream: bool) -> None:
    reply = ask(rt, tier, stream, messages=[USER], tools=TOOLS[:1])
    assert_valid_calls(reply, ["get_weather"])
    assert not reply.content


@shapes
@both
def test_parallel_tool_calls_and_turning_them_off(rt: Proc, tier: str, stream: bool) -> None:
    reply = ask(rt, tier, stream, messages=[USER], tools=TOOLS)
    assert_valid_calls(reply, ["get_weather", "get_time"])
    one = ask(rt, tier, stream, messages=[USER], tools=TOOLS, parallel_tool_calls=False)
    assert_valid_calls(one, ["get_weather"])


@shapes
@both
def test_a_named_tool_choice_forces_that_tool(rt: Proc, tier: str, stream: bool) -> None:
    choice = {"type": "function", "function": {"name": "get_time"}}
    reply = ask(rt, tier, stream, messages=[USER], tools=TOOLS, tool_choice=choice)
    assert_valid_calls(reply, ["get_time"])
    none = ask(rt, tier, stream, messages=[USER], tools=TOOLS, tool_choice="none")
    assert none.calls == [] and none.content and none.finish == "stop"


@shapes
@both
def test_a_loop_with_tool_results(rt: Proc, tier: str, stream: bool) -> None:
    first = ask(rt, tier, stream, messages=[USER], tools=TOOLS)
    assert_valid_calls(first, ["get_weather", "get_time"])
    results = {"get_weather": '{"temp_c": 21}', "get_time": "14:05 CET"}
    history = [
        USER,
        first.assistant_message(),
        *(
            {"role": "tool", "tool_call_id": c["id"], "content": results[c["name"]]}
            for c in first.calls
        ),
    ]
    final = ask(rt, tier, stream, messages=history, tools=TOOLS)
    assert final.finish == "stop" and final.calls == []
    assert final.content is not None
    assert "14:05 CET" in final.content
    assert "21" in final.content


@shapes
@both
def test_a_json_schema_answer_validates(rt: Proc, tier: str, stream: bool) -> None:
    reply = ask(
        rt,
        tier,
        stream,
        messages=[{"role": "user", "content": "Report on the day."}],
        response_format=REPORT,
    )
    assert reply.finish == "stop" and reply.calls == []
    assert reply.content is not None
    jsonschema.validate(json.loads(reply.content), REPORT_SCHEMA)


@shapes
def test_a_json_object_answer_is_an_object(rt: Proc, tier: str) -> None:
    reply = ask(
        rt,
        tier,
        False,
        messages=[{"role": "user", "content": "Answer in JSON."}],
        response_format={"type": "json_object"},
    )
    assert isinstance(json.loads(reply.content or ""), dict)


@shapes
def test_json_answer_after_tools_quotes_the_results(rt: Proc, tier: str) -> None:
    """An agent with tools and a structured final answer: tool calls first, then JSON
    that validates (on Anthropic and Gemini through the forced answer tool)."""
    first = ask(rt, tier, False, messages=[USER], tools=TOOLS, response_format=REPORT)
    assert_valid_calls(first, ["get_weather", "get_time"])
    history = [
        USER,
        first.assistant_message(),
        *({"role": "tool", "tool_call_id": c["id"], "content": "sunny"} for c in first.calls),
    ]
    final = ask(rt, tier, False, messages=history, tools=TOOLS, response_format=REPORT)
    assert final.finish == "stop" and final.calls == []
    answer = json.loads(final.content or "")
    jsonschema.validate(answer, REPORT_SCHEMA)
    assert "sunny" in answer["summary"]


def test_a_loop_moves_from_openai_to_anthropic_on_failover(launch: Launcher) -> None:
    """Tool calls made by the OpenAI-shaped primary are answered on the Anthropic-shaped
    fallback once the primary fails: the ids of the conversation hold across shapes."""
    primary, _, runtime = failover_runtime(launch)
    first = ask(runtime, "main", False, messages=[USER], tools=TOOLS)
    assert_valid_calls(first, ["get_weather", "get_time"])
    assert all(c["id"].startswith("call_") for c in first.calls)
    control(primary, mode="error")
    history = [
        USER,
        first.assistant_message(),
        *({"role": "tool", "tool_call_id": c["id"], "content": "fine"} for c in first.calls),
    ]
    raw = client(runtime).chat.completions.with_raw_response.create(
        model="main", messages=history, tools=TOOLS
    )
    assert raw.headers["x-swiftclaw-model"] == "ant/claude-x"
    final = raw.parse().choices[0]
    assert final.finish_reason == "stop"
    assert final.message.content == "Tool results: fine | fine"


# --- capability fallback ----------------------------------------------------------------

ONE_OF = {
    "type": "json_schema",
    "json_schema": {
        "name": "pick",
        "schema": {
            "type": "object",
            "properties": {"v": {"oneOf": [{"type": "string"}, {"type": "integer"}]}},
            "required": ["v"],
            "additionalProperties": False,
        },
    },
}


def test_a_request_gemini_cannot_express_falls_back_without_blaming_it(launch: Launcher) -> None:
    gem, oai = launch.sim("--latency", "fixed:1"), launch.sim("--latency", "fixed:1")
    doc = manifest(
        [
            {"name": "gem", "type": "gemini", "baseURL": f"{gem.url}/v1beta"},
            openai_provider("oai", oai),
        ],
        [{"name": "main", "model": "gem/gemini-x", "fallbacks": ["oai/gpt-x"]}],
        reliability={"circuitBreaker": {"failureThreshold": 1, "failureRatePercent": 1}},
    )
    runtime = launch.runtime(doc)
    c = client(runtime)
    for _ in range(3):
        raw = c.chat.completions.with_raw_response.create(
            model="main", messages=[{"role": "user", "content": "pick"}], response_format=ONE_OF
        )
        assert raw.headers["x-swiftclaw-model"] == "oai/gpt-x"
        assert raw.headers["x-swiftclaw-fallback"] == "true"
        answer = json.loads(raw.parse().choices[0].message.content or "")
        jsonschema.validate(answer, ONE_OF["json_schema"]["schema"])  # type: ignore[index]
    assert sim_stats(gem)["requests"] == 0  # skipped before any call
    # Not its fault: its breaker (threshold 1) stays closed and plain requests still go to it.
    assert 'swiftclaw_circuit_breaker_state{model="gemini-x",provider="gem"} 0.0' in metrics(
        runtime
    )
    assert 'swiftclaw_unsupported_skips_total{model="gem/gemini-x",tier="main"} 3.0' in metrics(
        runtime
    )
    raw = c.chat.completions.with_raw_response.create(
        model="main", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["x-swiftclaw-model"] == "gem/gemini-x"


def test_a_request_no_model_of_the_chain_can_express_is_a_400_naming_it(
    launch: Launcher,
) -> None:
    gem = launch.sim("--latency", "fixed:1")
    ant = launch.sim("--latency", "fixed:1")
    doc = manifest(
        [
            {"name": "gem", "type": "gemini", "baseURL": f"{gem.url}/v1beta"},
            {"name": "ant", "type": "anthropic", "baseURL": f"{ant.url}/v1"},
        ],
        [
            {"name": "gemini", "model": "gem/gemini-x"},
            {"name": "both", "model": "gem/gemini-y", "fallbacks": ["ant/claude-x"]},
        ],
    )
    c = client(launch.runtime(doc))
    with pytest.raises(openai.BadRequestError) as info:
        c.chat.completions.create(
            model="gemini", messages=[{"role": "user", "content": "pick"}], response_format=ONE_OF
        )
    err = info.value.body
    assert isinstance(err, dict)
    assert err["param"] == "response_format.json_schema.schema.properties.v.oneOf"
    assert err["code"] == "unsupported_parameter"
    assert "Gemini's schema has no 'oneOf'" in err["message"]
    audio = {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is said?"},
            {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
        ],
    }
    with pytest.raises(openai.BadRequestError) as info:
        c.chat.completions.create(model="both", messages=[audio])  # type: ignore[list-item]
    err = info.value.body
    assert isinstance(err, dict)
    assert err["param"] == "messages[0].content[1]"
    assert "gem/gemini-y" in err["message"] and "ant/claude-x" in err["message"]
    assert sim_stats(gem)["requests"] == sim_stats(ant)["requests"] == 0
