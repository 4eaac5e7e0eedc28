"""Hostile expansions of client input: a schema whose ``$ref``\\ s double at every level,
nesting past any real schema, a large value referred to many times, hundreds of
thousands of text parts. Each is refused with a 400 naming the parameter (or served in
linear work), and the replica keeps answering others meanwhile."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
from typing import Any

import pytest
from bench.hostile import bomb as ref_bomb

from swiftclaw_devtools.processes import Proc
from swiftclaw_runtime.providers.base import Unsupported
from swiftclaw_runtime.providers.gemini_schema import (
    MAX_SCHEMA_CHARS,
    MAX_SCHEMA_DEPTH,
    MAX_SCHEMA_NODES,
    SchemaBudget,
    gemini_schema,
)
from swiftclaw_runtime.providers.translate_gemini import to_gemini
from swiftclaw_runtime.schemas import parse_chat_request

from .conftest import API_KEY, Launcher, manifest

AUTH = {"authorization": f"Bearer {API_KEY}", "content-type": "application/json"}
USER = [{"role": "user", "content": "fill it in"}]


def nested(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


def tool(name: str, parameters: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


def refused(schema: dict[str, Any]) -> Unsupported:
    with pytest.raises(Unsupported) as caught:
        gemini_schema(schema, "tools[0].function.parameters")
    return caught.value


# --- the bounds, as pure functions --------------------------------------------------------


def test_a_ref_bomb_is_refused_naming_the_schema_and_the_bound() -> None:
    err = refused(ref_bomb(16))  # 1.5 KB of schema; 131,071 schemas once inlined
    assert err.param == "tools[0].function.parameters"
    assert f"{MAX_SCHEMA_NODES:,} schemas" in err.message
    assert "$ref" in err.message  # where it was, cut short: the path runs through the refs


def test_a_ref_bomb_refusal_is_found_within_the_node_budget() -> None:
    """The work stops where the budget does, however many levels the bomb has (a doubling
    per level: 30 levels would be 2**30 schemas, 60 levels 2**60)."""
    budget = SchemaBudget()
    with pytest.raises(Unsupported):
        gemini_schema(ref_bomb(30), "p", budget)
    assert budget.nodes == -1  # exactly one schema past the bound, none more
    budget = SchemaBudget()
    with pytest.raises(Unsupported) as caught:
        gemini_schema(ref_bomb(60), "p", budget)
    assert f"{MAX_SCHEMA_DEPTH} levels" in caught.value.message  # the first path is deep
    assert budget.nodes > 0


def test_nesting_past_the_depth_bound_is_refused_not_a_recursion_error() -> None:
    gemini_schema(nested(MAX_SCHEMA_DEPTH), "p")  # at the bound: translated
    err = refused(nested(2_000))  # a RecursionError (a 500) before the bound
    assert f"{MAX_SCHEMA_DEPTH} levels" in err.message


def test_a_large_value_referred_to_many_times_is_bounded_by_its_characters() -> None:
    """A ``default`` of 100 KB inlined 20 times is 2 MB of output from 100 KB of input."""
    schema = {
        "type": "object",
        "properties": {f"p{i}": {"$ref": "#/$defs/big"} for i in range(20)},
        "$defs": {"big": {"type": "string", "default": "y" * 100_000}},
    }
    err = refused(schema)
    assert f"{MAX_SCHEMA_CHARS:,} characters" in err.message


def test_a_long_property_name_is_not_copied_into_every_path_below_it() -> None:
    """Paths are written for errors only, and cut: a 200 KB name does not make a 200 KB
    error message."""
    name = "n" * 200_000
    schema = {"type": "object", "properties": {name: {"type": "object", "oneOf": []}}}
    err = refused(schema)
    assert len(err.param) < 300 and "oneOf" in err.param


def test_the_budget_is_shared_by_every_schema_of_a_request() -> None:
    """Many tools each under the bound, together past it."""
    each = {
        "type": "object",
        "properties": {f"p{i}": {"type": "string"} for i in range(MAX_SCHEMA_NODES // 50)},
    }
    tools = [tool(f"t{i}", each) for i in range(60)]
    request = parse_chat_request({"model": "m", "messages": USER, "tools": tools})
    with pytest.raises(Unsupported) as caught:
        to_gemini(request)
    assert caught.value.param.startswith("tools[")
    assert caught.value.param != "tools[0].function.parameters"  # the first ones passed


def test_real_schemas_are_far_from_the_bounds() -> None:
    """A thousand properties with shared definitions and anyOf translate whole."""
    schema = {
        "type": "object",
        "properties": {
            f"p{i}": {"anyOf": [{"$ref": "#/$defs/item"}, {"type": "null"}]} for i in range(1_000)
        },
        "$defs": {
            "item": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "n": {"type": "integer"}},
                "required": ["name"],
            }
        },
    }
    out = gemini_schema(schema, "p")
    assert len(out["properties"]) == 1_000
    assert out["properties"]["p999"]["anyOf"][0]["properties"]["n"] == {"type": "INTEGER"}


def test_many_text_parts_are_joined_in_linear_work() -> None:
    """A million one-character text parts (adding each to the last copied the text once
    per part: about 10**12 bytes) translate for Gemini and Anthropic in well under a
    minute (a subprocess, so that a hang is killed at the deadline, not waited for)."""
    code = (
        "from swiftclaw_runtime.schemas import parse_chat_request\n"
        "from swiftclaw_runtime.providers.content import parts_of\n"
        "r = parse_chat_request({'model': 'm', 'messages': [{'role': 'user', 'content': "
        "[{'type': 'text', 'text': 'ab'}] * 1_000}]})\n"
        "parts = r.messages[0].content * 1_000\n"
        "out = parts_of(parts, 'messages[0].content', 'Gemini', True)\n"
        "assert out == [('messages[0].content[0]', 'ab' * 1_000_000)], out[:1]\n"
    )
    done = subprocess.run([sys.executable, "-c", code], timeout=120, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-2000:]


# --- over HTTP: a fast 400, and the replica keeps serving ---------------------------------


@pytest.fixture(scope="module")
def gemini_rt(module_launch: Launcher) -> Proc:
    gem = module_launch.sim("--latency", "fixed:1")
    doc = manifest(
        [{"name": "gem", "type": "gemini", "baseURL": f"{gem.url}/v1beta"}],
        [{"name": "main", "model": "gem/gemini-x"}],
    )
    return module_launch.runtime(doc)


def post(rt: Proc, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    c = http.client.HTTPConnection("127.0.0.1", rt.port, timeout=60)
    try:
        c.request("POST", "/v1/chat/completions", body=json.dumps(body), headers=AUTH)
        r = c.getresponse()
        return r.status, json.loads(r.read())
    finally:
        c.close()


BOMBS = {
    "response_format.json_schema.schema": {
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "bomb", "schema": ref_bomb(18)},
        }
    },
    "tools[0].function.parameters": {"tools": [tool("bomb", ref_bomb(18))]},
}


def test_schema_bombs_get_a_400_naming_the_parameter_while_healthz_answers(
    gemini_rt: Proc,
) -> None:
    stop = threading.Event()
    health: list[int | str] = []

    def poll() -> None:
        while not stop.is_set():
            c = http.client.HTTPConnection("127.0.0.1", gemini_rt.port, timeout=5)
            try:
                c.request("GET", "/healthz")
                health.append(c.getresponse().status)
            except OSError as err:  # a frozen event loop: the probe times out
                health.append(repr(err))
            finally:
                c.close()

    poller = threading.Thread(target=poll)
    poller.start()
    results: list[tuple[str, int, dict[str, Any]]] = []

    def attack(param: str, extra: dict[str, Any]) -> None:
        for _ in range(3):
            status, body = post(gemini_rt, {"model": "main", "messages": USER, **extra})
            results.append((param, status, body))

    try:
        attackers = [
            threading.Thread(target=attack, args=item) for item in BOMBS.items() for _ in (0, 1)
        ]
        for t in attackers:
            t.start()
        for t in attackers:
            t.join()
    finally:
        stop.set()
        poller.join()
    assert len(results) == 12
    for param, status, body in results:
        assert status == 400, (param, status, str(body)[:300])
        err = body["error"]
        assert err["param"] == param and err["code"] == "unsupported_parameter"
        assert "past the runtime's bound" in err["message"]
    assert health and all(s == 200 for s in health), health[:5]
    # and the replica serves a normal request on the same tier after them
    status, body = post(gemini_rt, {"model": "main", "messages": USER})
    assert status == 200, body


def test_a_root_ref_schema_is_translated_or_refused_never_dropped() -> None:
    """Parameters whose root is a ``$ref`` (no ``type`` or ``properties`` of its own) were
    declared to Gemini without parameters: accepted and ignored."""
    schema = {
        "$ref": "#/$defs/p",
        "$defs": {"p": {"type": "object", "properties": {"city": {"type": "string"}}}},
    }
    request = parse_chat_request({"model": "m", "messages": USER, "tools": [tool("f", schema)]})
    declared = to_gemini(request)["tools"][0]["functionDeclarations"][0]
    assert declared["parameters"]["properties"]["city"]["type"] == "STRING", declared
    bomb = {"$ref": "#/$defs/d0", "$defs": ref_bomb(30)["$defs"]}
    with pytest.raises(Unsupported):
        to_gemini(parse_chat_request({"model": "m", "messages": USER, "tools": [tool("b", bomb)]}))
    empty = parse_chat_request(
        {"model": "m", "messages": USER, "tools": [tool("g", {"type": "object"})]}
    )
    assert "parameters" not in to_gemini(empty)["tools"][0]["functionDeclarations"][0]
