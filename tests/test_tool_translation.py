"""Tool calls and JSON answers translated to and from Anthropic and Gemini (pure functions)."""

from __future__ import annotations

from typing import Any

import jsonschema
import orjson
import pytest

from swiftclaw_devtools.sim_agent import example_value
from swiftclaw_runtime.providers.base import Unsupported
from swiftclaw_runtime.providers.gemini_schema import gemini_schema
from swiftclaw_runtime.providers.toolcalls import ANSWER_TOOL
from swiftclaw_runtime.providers.translate_anthropic import (
    AnthropicStream,
    from_anthropic,
    to_anthropic,
)
from swiftclaw_runtime.providers.translate_gemini import GeminiAnswer, from_gemini, to_gemini
from swiftclaw_runtime.schemas import ChatRequest, parse_chat_request

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time"}}
ANSWER_SCHEMA = {
    "type": "object",
    "properties": {"summary": {"type": "string"}, "mood": {"enum": ["ok", "bad"]}},
    "required": ["summary", "mood"],
    "additionalProperties": False,
}
JSON_FORMAT = {"type": "json_schema", "json_schema": {"name": "report", "schema": ANSWER_SCHEMA}}

# A whole loop in OpenAI's shape: the user asks, the assistant calls two tools, both answer.
LOOP = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather and time in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_a1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            },
            {
                "id": "call.b2",
                "type": "function",
                "function": {"name": "get_time", "arguments": ""},
            },
        ],
    },
    {"role": "tool", "tool_call_id": "call_a1", "content": '{"temp": 21}'},
    {"role": "tool", "tool_call_id": "call.b2", "content": "noon"},
]


def request(**kw: Any) -> ChatRequest:
    body: dict[str, Any] = {"model": "auto", "messages": LOOP, "tools": [WEATHER, TIME]}
    body.update(kw)
    return parse_chat_request(body)


# --- OpenAI -> Anthropic ---------------------------------------------------------------


def test_to_anthropic_tool_use_and_tool_result_blocks_keep_the_ids() -> None:
    body = to_anthropic("claude-x", request(), stream=False)
    assert body["system"] == "Be brief."
    user, assistant, results = body["messages"]
    assert user == {"role": "user", "content": "Weather and time in Paris?"}
    assert assistant == {
        "role": "assistant",
        "content": [
            {
                "type": "tool_use",
                "id": "call_a1",
                "name": "get_weather",
                "input": {"city": "Paris"},
            },
            # '.' is outside Anthropic's id alphabet: mapped, the same way for the result
            {"type": "tool_use", "id": "call_b2", "name": "get_time", "input": {}},
        ],
    }
    assert results == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "call_a1", "content": '{"temp": 21}'},
            {"type": "tool_result", "tool_use_id": "call_b2", "content": "noon"},
        ],
    }
    assert body["tools"] == [
        {
            "name": "get_weather",
            "input_schema": WEATHER["function"]["parameters"],
            "description": "Weather in a city",
        },
        {"name": "get_time", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert body["tool_choice"] == {"type": "auto"}


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("none", None, {"type": "none"}),
        ("required", None, {"type": "any"}),
        (
            {"type": "function", "function": {"name": "get_time"}},
            None,
            {"type": "tool", "name": "get_time"},
        ),
        ("auto", False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        ("none", False, {"type": "none"}),  # no calls at all: one per turn holds
    ],
)
def test_to_anthropic_tool_choice_and_parallel(
    choice: Any, parallel: bool | None, expected: dict[str, Any]
) -> None:
    kw: dict[str, Any] = {"tool_choice": choice}
    if parallel is not None:
        kw["parallel_tool_calls"] = parallel
    assert to_anthropic("m", request(**kw), False)["tool_choice"] == expected


def test_to_anthropic_json_schema_is_a_forced_answer_tool() -> None:
    plain = parse_chat_request(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "Report"}],
            "response_format": JSON_FORMAT,
        }
    )
    body = to_anthropic("m", plain, False)
    assert body["tool_choice"] == {"type": "tool", "name": ANSWER_TOOL}
    assert body["tools"][0]["name"] == ANSWER_TOOL
    assert body["tools"][0]["input_schema"] == ANSWER_SCHEMA
    # With tools of its own the model must call one of them or answer through the tool.
    with_tools = to_anthropic("m", request(response_format=JSON_FORMAT), False)
    assert [t["name"] for t in with_tools["tools"]] == ["get_weather", "get_time", ANSWER_TOOL]
    assert with_tools["tool_choice"] == {"type": "any"}
    # A named choice makes the turn a tool call: no answer tool.
    named = to_anthropic(
        "m",
        request(
            response_format=JSON_FORMAT,
            tool_choice={"type": "function", "function": {"name": "get_time"}},
        ),
        False,
    )
    assert ANSWER_TOOL not in [t["name"] for t in named["tools"]]


def test_to_anthropic_refuses_arguments_that_are_not_an_object() -> None:
    messages = [dict(m) for m in LOOP]
    messages[2] = {
        **LOOP[2],
        "tool_calls": [
            {"id": "call_a1", "type": "function", "function": {"name": "f", "arguments": "[1"}}
        ],
    }
    messages = messages[:4]
    with pytest.raises(Unsupported) as info:
        to_anthropic("m", request(messages=messages), False)
    assert info.value.param == "messages[2].tool_calls[0].function.arguments"


# --- Anthropic -> OpenAI ---------------------------------------------------------------


def test_from_anthropic_tool_use_blocks_become_tool_calls() -> None:
    c = from_anthropic(
        {
            "id": "msg_1",
            "stop_reason": "tool_use",
            "content": [
                {"type": "text", "text": "Let me check."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "P"},
                },
                {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}},
            ],
            "usage": {"input_tokens": 3, "output_tokens": 4},
        },
        "claude-x",
    )
    choice = c.body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me check."
    assert choice["message"]["tool_calls"] == [
        {
            "id": "toolu_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"P"}'},
        },
        {"id": "toolu_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
    ]


def test_from_anthropic_answer_tool_input_is_the_content() -> None:
    c = from_anthropic(
        {
            "stop_reason": "tool_use",
            "content": [
                {"type": "tool_use", "id": "t", "name": ANSWER_TOOL, "input": {"summary": "s"}}
            ],
        },
        "m",
    )
    message = c.body["choices"][0]["message"]
    assert orjson.loads(message["content"]) == {"summary": "s"}
    assert "tool_calls" not in message
    assert c.body["choices"][0]["finish_reason"] == "stop"


def tool_use_start(index: int, id_: str, name: str) -> dict[str, Any]:
    """An Anthropic stream event: a tool_use block starts at ``index``."""
    return {
        "type": "content_block_start",
        "index": index,
        "content_block": {"type": "tool_use", "id": id_, "name": name},
    }


def json_delta(index: int, partial: str) -> dict[str, Any]:
    """An Anthropic stream event: a piece of the tool_use block's input JSON."""
    return {
        "type": "content_block_delta",
        "index": index,
        "delta": {"type": "input_json_delta", "partial_json": partial},
    }


def test_anthropic_stream_tool_use_becomes_indexed_tool_call_fragments() -> None:
    s = AnthropicStream()
    events = [
        {"type": "message_start", "message": {"id": "msg_9", "usage": {"input_tokens": 7}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hm"}},
        tool_use_start(1, "toolu_a", "get_weather"),
        json_delta(1, '{"city":'),
        json_delta(1, ' "Paris"}'),
        tool_use_start(2, "toolu_b", "get_time"),
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use"},
            "usage": {"output_tokens": 9},
        },
        {"type": "message_stop"},
    ]
    deltas = [d for e in events for d in s.feed(e)]
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"content": "Hm"},
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "toolu_a",
                    "type": "function",
                    "function": {"arguments": "", "name": "get_weather"},
                }
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": ' "Paris"}'}}]},
        {
            "tool_calls": [
                {
                    "index": 1,
                    "id": "toolu_b",
                    "type": "function",
                    "function": {"arguments": "", "name": "get_time"},
                }
            ]
        },
    ]
    assert (s.id, s.finish, s.prompt_tokens, s.completion_tokens, s.stopped) == (
        "msg_9",
        "tool_calls",
        7,
        9,
        True,
    )


def test_anthropic_stream_answer_tool_streams_content() -> None:
    s = AnthropicStream()
    events = [
        tool_use_start(0, "t", ANSWER_TOOL),
        json_delta(0, '{"a":'),
        json_delta(0, "1}"),
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}},
    ]
    assert [d for e in events for d in s.feed(e)] == [{"content": '{"a":'}, {"content": "1}"}]
    assert s.finish == "stop"


# --- OpenAI -> Gemini ------------------------------------------------------------------


def test_to_gemini_function_calls_and_responses_by_name() -> None:
    body = to_gemini(request())
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    user, model, results = body["contents"]
    assert user == {"role": "user", "parts": [{"text": "Weather and time in Paris?"}]}
    assert model == {
        "role": "model",
        "parts": [
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
            {"functionCall": {"name": "get_time", "args": {}}},
        ],
    }
    assert results == {
        "role": "user",
        "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
            {"functionResponse": {"name": "get_time", "response": {"result": "noon"}}},
        ],
    }
    assert body["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Weather in a city",
                    "parameters": {
                        "type": "OBJECT",
                        "properties": {"city": {"type": "STRING"}},
                        "propertyOrdering": ["city"],
                        "required": ["city"],
                    },
                },
                {"name": "get_time"},  # no parameters: Gemini refuses an empty OBJECT
            ]
        }
    ]
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        (
            {"type": "function", "function": {"name": "get_time"}},
            {"mode": "ANY", "allowedFunctionNames": ["get_time"]},
        ),
    ],
)
def test_to_gemini_tool_choice_modes(choice: Any, expected: dict[str, Any]) -> None:
    body = to_gemini(request(tool_choice=choice))
    assert body["toolConfig"] == {"functionCallingConfig": expected}


def test_to_gemini_thought_signature_travels_back_with_its_call() -> None:
    messages = [dict(m) for m in LOOP[:4]]
    messages[2] = {
        **LOOP[2],
        "tool_calls": [
            {
                **LOOP[2]["tool_calls"][0],  # type: ignore[index]
                "extra_content": {"google": {"thought_signature": "c2ln"}},
            }
        ],
    }
    body = to_gemini(request(messages=messages))
    assert body["contents"][1]["parts"][0]["thoughtSignature"] == "c2ln"


def test_to_gemini_json_schema_is_native_without_tools_and_a_tool_with_them() -> None:
    plain = parse_chat_request(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "Report"}],
            "response_format": JSON_FORMAT,
        }
    )
    config = to_gemini(plain)["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseSchema"] == {
        "type": "OBJECT",
        "properties": {
            "summary": {"type": "STRING"},
            "mood": {"type": "STRING", "enum": ["ok", "bad"], "format": "enum"},
        },
        "propertyOrdering": ["summary", "mood"],
        "required": ["summary", "mood"],
    }
    with_tools = to_gemini(request(response_format=JSON_FORMAT))
    assert "generationConfig" not in with_tools
    names = [d["name"] for d in with_tools["tools"][0]["functionDeclarations"]]
    assert names == ["get_weather", "get_time", ANSWER_TOOL]
    assert with_tools["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}


def test_gemini_schema_translates_nullable_refs_and_const() -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$defs": {"tag": {"type": "string", "const": "x"}},
        "type": "object",
        "properties": {
            "note": {"type": ["string", "null"], "maxLength": 5},
            "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}, "minItems": 1},
            "when": {"type": "string", "format": "date-time"},
            "either": {"anyOf": [{"type": "integer"}, {"type": "boolean"}]},
        },
    }
    assert gemini_schema(schema, "p") == {
        "type": "OBJECT",
        "properties": {
            "note": {"type": "STRING", "nullable": True, "maxLength": 5},
            "tags": {
                "type": "ARRAY",
                "items": {"type": "STRING", "enum": ["x"], "format": "enum"},
                "minItems": 1,
            },
            "when": {"type": "STRING", "format": "date-time"},
            "either": {"anyOf": [{"type": "INTEGER"}, {"type": "BOOLEAN"}]},
        },
        "propertyOrdering": ["note", "tags", "when", "either"],
    }


@pytest.mark.parametrize(
    ("schema", "where"),
    [
        ({"type": "object", "additionalProperties": True}, "p.additionalProperties"),
        ({"type": "object", "additionalProperties": {"type": "string"}}, "p.additionalProperties"),
        ({"oneOf": [{"type": "string"}]}, "p.oneOf"),
        (
            {"type": "object", "properties": {"n": {"type": "integer", "multipleOf": 2}}},
            "p.properties.n.multipleOf",
        ),
        ({"type": ["string", "integer"]}, "p.type"),
        ({"type": "integer", "enum": [1, 2]}, "p.enum"),
        ({"type": "string", "format": "email"}, "p.format"),
        (
            {
                "$defs": {
                    "node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/node"}}}
                },
                "$ref": "#/$defs/node",
            },
            "p.$ref.properties.next.$ref",
        ),
    ],
)
def test_gemini_schema_refuses_what_it_cannot_honour_naming_the_keyword(
    schema: dict[str, Any], where: str
) -> None:
    with pytest.raises(Unsupported) as info:
        gemini_schema(schema, "p")
    assert info.value.param == where


# --- Gemini -> OpenAI ------------------------------------------------------------------

CALLS = {
    "responseId": "r1",
    "candidates": [
        {
            "content": {
                "role": "model",
                "parts": [
                    {
                        "functionCall": {"name": "get_weather", "args": {"city": "P"}},
                        "thoughtSignature": "sig",
                    },
                    {"functionCall": {"name": "get_time", "args": {}}},
                ],
            },
            "finishReason": "STOP",
        }
    ],
    "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 2},
}


def test_from_gemini_function_calls_get_stable_ids_and_finish_tool_calls() -> None:
    first = from_gemini(CALLS, "g", request())
    again = from_gemini(CALLS, "g", request())
    choice = first.body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    calls = choice["message"]["tool_calls"]
    assert [c["function"] for c in calls] == [
        {"name": "get_weather", "arguments": '{"city":"P"}'},
        {"name": "get_time", "arguments": "{}"},
    ]
    assert calls[0]["extra_content"] == {"google": {"thought_signature": "sig"}}
    ids = [c["id"] for c in calls]
    assert ids == [c["id"] for c in again.body["choices"][0]["message"]["tool_calls"]]
    assert len(set(ids)) == 2 and all(i.startswith("call_") for i in ids)


def test_from_gemini_keeps_one_call_when_parallel_calls_are_off() -> None:
    c = from_gemini(CALLS, "g", request(parallel_tool_calls=False))
    calls = c.body["choices"][0]["message"]["tool_calls"]
    assert [x["function"]["name"] for x in calls] == ["get_weather"]


def test_gemini_stream_events_give_whole_indexed_calls() -> None:
    answer = GeminiAnswer(request())
    first = answer.feed(
        {"responseId": "r2", "candidates": [{"content": {"parts": [{"text": "Hm"}]}}]}
    )
    second = answer.feed(CALLS)
    assert first == [{"content": "Hm"}]
    assert [d["tool_calls"][0]["index"] for d in second] == [0, 1]
    assert second[1]["tool_calls"][0]["function"] == {"arguments": "{}", "name": "get_time"}
    assert answer.finish_reason == "tool_calls"


def test_gemini_answer_tool_call_is_the_content() -> None:
    data = {
        "candidates": [
            {"content": {"parts": [{"functionCall": {"name": ANSWER_TOOL, "args": {"a": 1}}}]}}
        ]
    }
    c = from_gemini(data, "g", request(response_format=JSON_FORMAT))
    assert c.body["choices"][0]["message"]["content"] == '{"a":1}'
    assert c.body["choices"][0]["finish_reason"] == "stop"


# --- a conversation moving between shapes ---------------------------------------------


def test_ids_from_one_provider_carry_a_loop_on_another() -> None:
    """Calls made by Gemini (synthesized ids) answered on Anthropic, and the reverse."""
    gemini_calls = from_gemini(CALLS, "g", request()).body["choices"][0]["message"]
    history = [
        {"role": "user", "content": "Weather and time?"},
        {"role": "assistant", "content": None, "tool_calls": gemini_calls["tool_calls"]},
        *(
            {"role": "tool", "tool_call_id": c["id"], "content": "ok"}
            for c in gemini_calls["tool_calls"]
        ),
    ]
    body = to_anthropic("m", request(messages=history), False)
    uses = [b["id"] for b in body["messages"][1]["content"]]
    results = [b["tool_use_id"] for b in body["messages"][2]["content"]]
    assert uses == results == [c["id"] for c in gemini_calls["tool_calls"]]
    anthropic_calls = from_anthropic(
        {
            "stop_reason": "tool_use",
            "content": [{"type": "tool_use", "id": "toolu_x", "name": "get_time", "input": {}}],
        },
        "m",
    ).body["choices"][0]["message"]["tool_calls"]
    back = [
        {"role": "user", "content": "Time?"},
        {"role": "assistant", "content": None, "tool_calls": anthropic_calls},
        {"role": "tool", "tool_call_id": "toolu_x", "content": "noon"},
    ]
    parts = to_gemini(request(messages=back))["contents"][2]["parts"]
    assert parts == [{"functionResponse": {"name": "get_time", "response": {"result": "noon"}}}]


def test_to_anthropic_declares_tools_of_the_history_that_the_request_no_longer_offers() -> None:
    body = to_anthropic("m", parse_chat_request({"model": "m", "messages": LOOP}), False)
    assert [t["name"] for t in body["tools"]] == ["get_weather", "get_time"]
    assert body["tool_choice"] == {"type": "none"}
    one = to_anthropic("m", request(tools=[TIME]), False)
    assert [t["name"] for t in one["tools"]] == ["get_time", "get_weather"]
    assert one["tools"][1]["description"].startswith("Called earlier")


# --- the simulator's values for a schema ----------------------------------------------

SCHEMAS_FOR_VALUES: list[dict[str, Any]] = [
    {"type": "integer", "minimum": 5, "maximum": 9},
    {"type": "integer", "exclusiveMinimum": 5, "multipleOf": 4},
    {"type": "number", "maximum": -2.5},
    {"type": "string", "minLength": 6, "maxLength": 8},
    {"type": "string", "pattern": "^[0-9]+$"},
    {"type": "string", "format": "date-time"},
    {"type": "array", "items": {"type": "boolean"}, "minItems": 3},
    {"type": ["null", "string"]},
    {"anyOf": [{"type": "object", "properties": {"a": {"const": 1}}, "required": ["a"]}]},
    {"allOf": [{"properties": {"a": {"type": "integer"}}, "required": ["a"]}, {"required": []}]},
    {
        "$defs": {
            "leaf": {"type": "object", "properties": {"n": {"type": "string"}}, "required": ["n"]}
        },
        "type": "object",
        "properties": {"leaves": {"type": "array", "items": {"$ref": "#/$defs/leaf"}}},
        "required": ["leaves"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {"x": {"type": "string"}, "y": {"type": "string"}},
        "minProperties": 1,
    },
]


@pytest.mark.parametrize("schema", SCHEMAS_FOR_VALUES)
def test_simulated_values_validate_against_their_schema(schema: dict[str, Any]) -> None:
    jsonschema.validate(example_value(schema, "text"), schema)


def test_simulated_values_read_geminis_dialect() -> None:
    translated = gemini_schema(WEATHER["function"]["parameters"], "p")  # type: ignore[index]
    value = example_value(translated, "Paris")
    jsonschema.validate(value, WEATHER["function"]["parameters"])  # type: ignore[index]
    assert value == {"city": "Paris"}


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": "integer", "exclusiveMinimum": 0}, {"type": "INTEGER", "minimum": 1}),
        ({"type": "integer", "exclusiveMaximum": 10}, {"type": "INTEGER", "maximum": 9}),
        ({"type": "integer", "exclusiveMinimum": 0.5}, {"type": "INTEGER", "minimum": 1}),
        (  # draft 4: a flag on minimum
            {"type": "integer", "minimum": 3, "exclusiveMinimum": True},
            {"type": "INTEGER", "minimum": 4},
        ),
        (  # numbers: the bound itself, one value wider (Gemini has only inclusive bounds)
            {"type": "number", "exclusiveMaximum": 2.5, "maximum": 3},
            {"type": "NUMBER", "maximum": 2.5},
        ),
        (
            {"type": "integer", "minimum": 5, "exclusiveMinimum": 0},
            {"type": "INTEGER", "minimum": 5},
        ),
        (
            {"type": "integer", "minimum": 3, "exclusiveMinimum": False},
            {"type": "INTEGER", "minimum": 3},
        ),
    ],
)
def test_gemini_schema_turns_exclusive_bounds_into_inclusive_ones(
    schema: dict[str, Any], expected: dict[str, Any]
) -> None:
    assert gemini_schema(schema, "tools[0]") == expected


def test_gemini_schema_refuses_an_exclusive_bound_that_is_not_a_number() -> None:
    with pytest.raises(Unsupported) as err:
        gemini_schema({"type": "integer", "exclusiveMinimum": "0"}, "tools[0]")
    assert err.value.param == "tools[0].exclusiveMinimum"
