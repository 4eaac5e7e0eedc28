"""Malformed requests get a 4xx in OpenAI's error shape that names the problem; a fuzz
run over the live service finds no 5xx and no crash."""

from __future__ import annotations

import http.client
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from swiftclaw_devtools.processes import Proc

from .conftest import API_KEY, Launcher, manifest, openai_provider

AUTH = {"authorization": f"Bearer {API_KEY}", "content-type": "application/json"}
VALID = {"model": "t", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def rt(module_launch: Launcher) -> Proc:
    up = module_launch.sim("--latency", "fixed:0", "--stream-pace-ms", "0")
    return module_launch.runtime(
        manifest(
            [openai_provider("up", up)],
            [{"name": "t", "model": "up/m"}],
            agent={"maxInputTokens": 50_000},
        )
    )


class Conn:
    def __init__(self, rt: Proc) -> None:
        self.port = rt.port
        self.c = http.client.HTTPConnection("127.0.0.1", rt.port, timeout=30)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes, dict[str, str]]:
        try:
            self.c.request(method, path, body=body, headers=headers or {})
            r = self.c.getresponse()
        except (ConnectionError, http.client.HTTPException):
            self.c.close()
            self.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            self.c.request(method, path, body=body, headers=headers or {})
            r = self.c.getresponse()
        return r.status, r.read(), {k.lower(): v for k, v in r.getheaders()}


def error_of(status: int, body: bytes) -> dict[str, Any]:
    assert 400 <= status < 500, (status, body[:300])
    err = json.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    return dict(err)


CASES: list[tuple[str, bytes, dict[str, str], int, str]] = [
    ("bad json", b'{"model": "t", "messages": [', AUTH, 400, "could not parse the JSON body"),
    ("empty body", b"", AUTH, 400, "body is empty"),
    ("array body", b"[1, 2]", AUTH, 400, "must be a JSON object"),
    (
        "missing messages",
        json.dumps({"model": "t"}).encode(),
        AUTH,
        400,
        "Missing required parameter: 'messages'",
    ),
    (
        "missing model",
        json.dumps({"messages": VALID["messages"]}).encode(),
        AUTH,
        400,
        "Missing required parameter: 'model'",
    ),
    (
        "messages not a list",
        json.dumps({"model": "t", "messages": "hi"}).encode(),
        AUTH,
        400,
        "'messages'",
    ),
    (
        "empty messages",
        json.dumps({"model": "t", "messages": []}).encode(),
        AUTH,
        400,
        "'messages'",
    ),
    (
        "bad role",
        json.dumps({"model": "t", "messages": [{"role": "wizard", "content": "x"}]}).encode(),
        AUTH,
        400,
        "'messages[0].role'",
    ),
    (
        "temperature string",
        json.dumps({**VALID, "temperature": "hot"}).encode(),
        AUTH,
        400,
        "'temperature'",
    ),
    (
        "temperature range",
        json.dumps({**VALID, "temperature": 3}).encode(),
        AUTH,
        400,
        "'temperature'",
    ),
    ("stream not bool", json.dumps({**VALID, "stream": "yes"}).encode(), AUTH, 400, "'stream'"),
    ("n above one", json.dumps({**VALID, "n": 2}).encode(), AUTH, 400, "'n'"),
    ("max_tokens zero", json.dumps({**VALID, "max_tokens": 0}).encode(), AUTH, 400, "'max_tokens'"),
    ("tools not a list", json.dumps({**VALID, "tools": "x"}).encode(), AUTH, 400, "'tools'"),
    (
        "tool without function",
        json.dumps({**VALID, "tools": [{"type": "function"}]}).encode(),
        AUTH,
        400,
        "'tools[0].function'",
    ),
    (
        "tool name with spaces",
        json.dumps(
            {**VALID, "tools": [{"type": "function", "function": {"name": "a b"}}]}
        ).encode(),
        AUTH,
        400,
        "'tools[0].function.name'",
    ),
    (
        "tool_choice unknown",
        json.dumps({**VALID, "tool_choice": "sometimes"}).encode(),
        AUTH,
        400,
        "'tool_choice'",
    ),
    (
        "tool_choice names a tool not offered",
        json.dumps(
            {
                **VALID,
                "tools": [{"type": "function", "function": {"name": "a"}}],
                "tool_choice": {"type": "function", "function": {"name": "b"}},
            }
        ).encode(),
        AUTH,
        400,
        "'tool_choice': no tool named 'b'",
    ),
    (
        "tool_choice required without tools",
        json.dumps({**VALID, "tool_choice": "required"}).encode(),
        AUTH,
        400,
        "'tool_choice'",
    ),
    (
        "tool message without tool_call_id",
        json.dumps({**VALID, "messages": [{"role": "tool", "content": "x"}]}).encode(),
        AUTH,
        400,
        "'messages[0].tool_call_id'",
    ),
    (
        "tool message answering no call",
        json.dumps(
            {**VALID, "messages": [{"role": "tool", "tool_call_id": "c1", "content": "x"}]}
        ).encode(),
        AUTH,
        400,
        "'messages[0].tool_call_id': no earlier assistant message made the tool call 'c1'",
    ),
    (
        "tool call without arguments",
        json.dumps(
            {
                **VALID,
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f"}}],
                    }
                ],
            }
        ).encode(),
        AUTH,
        400,
        "'messages[0].tool_calls[0].function.arguments'",
    ),
    (
        "response_format telepathy",
        json.dumps({**VALID, "response_format": {"type": "telepathy"}}).encode(),
        AUTH,
        400,
        "'response_format'",
    ),
    (
        "json_schema without its schema object",
        json.dumps({**VALID, "response_format": {"type": "json_schema"}}).encode(),
        AUTH,
        400,
        "'response_format.json_schema'",
    ),
    (
        "unknown model",
        json.dumps({**VALID, "model": "gpt-9"}).encode(),
        AUTH,
        404,
        "The model 'gpt-9' does not exist",
    ),
    (
        "form content type",
        b"model=t",
        {**AUTH, "content-type": "application/x-www-form-urlencoded"},
        415,
        "'Content-Type' header",
    ),
    (
        "no content type",
        json.dumps(VALID).encode(),
        {"authorization": AUTH["authorization"]},
        415,
        "'Content-Type' header",
    ),
    (
        "no key",
        json.dumps(VALID).encode(),
        {"content-type": "application/json"},
        401,
        "Missing API key",
    ),
    (
        "too many tokens",
        json.dumps(
            {"model": "t", "messages": [{"role": "user", "content": "word " * 60_000}]}
        ).encode(),
        AUTH,
        400,
        "spec.agent.maxInputTokens",
    ),
]


@pytest.mark.parametrize(
    ("name", "body", "headers", "status", "words"), CASES, ids=[c[0] for c in CASES]
)
def test_malformed_request_is_named(
    rt: Proc, name: str, body: bytes, headers: dict[str, str], status: int, words: str
) -> None:
    got, raw, _ = Conn(rt).request("POST", "/v1/chat/completions", body, headers)
    assert got == status, raw
    assert words in error_of(got, raw)["message"]


def test_ten_megabyte_body_is_413_without_reading_it_all(rt: Proc) -> None:
    body = (
        b'{"model": "t", "messages": [{"role": "user", "content": "' + b"x" * 10_000_000 + b'"}]}'
    )
    got, raw, _ = Conn(rt).request("POST", "/v1/chat/completions", body, AUTH)
    assert got == 413
    assert "larger than" in error_of(got, raw)["message"]


def test_wrong_method_and_unknown_path(rt: Proc) -> None:
    c = Conn(rt)
    got, raw, headers = c.request("GET", "/v1/chat/completions", headers=AUTH)
    assert got == 405 and headers["allow"] == "POST"
    assert "not allowed" in error_of(got, raw)["message"]
    got, raw, _ = c.request("POST", "/v1/completions", b"{}", AUTH)
    assert got == 404 and "Unknown path" in error_of(got, raw)["message"]


JSON_LEAF = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
)
JSON = st.recursive(
    JSON_LEAF,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant", "tool", "bogus"]) | JSON},
    optional={
        "content": st.text(max_size=50)
        | st.lists(
            st.fixed_dictionaries(
                {"type": st.sampled_from(["text", "image_url"]) | JSON},
                optional={"text": st.text(max_size=20) | JSON},
            ),
            max_size=3,
        )
        | JSON,
        "name": st.text(max_size=10) | JSON,
    },
)
REQUEST = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from(["t", "auto", "test-agent", "up/m", "nope", ""]) | JSON,
        "messages": st.lists(MESSAGE, max_size=4) | JSON,
        "stream": st.booleans() | JSON,
        "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}) | JSON,
        "max_tokens": st.integers(-5, 5000) | JSON,
        "temperature": st.floats(-1, 3, allow_nan=False) | JSON,
        "top_p": st.floats(-1, 2, allow_nan=False) | JSON,
        "n": st.integers(-1, 3) | JSON,
        "stop": st.text(max_size=5) | st.lists(st.text(max_size=5), max_size=6) | JSON,
        "user": st.text(max_size=20) | JSON,
        "tools": JSON,
        "seed": JSON,
    },
)


VALID_MESSAGE = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["system", "user", "assistant", "developer"]),
        "content": st.text(max_size=80)
        | st.lists(
            st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=20)}),
            min_size=1,
            max_size=3,
        ),
    }
)
VALID_REQUEST = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["t", "auto", "test-agent", "up/m"]),
        "messages": st.lists(VALID_MESSAGE, min_size=1, max_size=4),
    },
    optional={
        "stream": st.booleans(),
        "max_tokens": st.integers(1, 100),
        "temperature": st.floats(0, 2),
        "top_p": st.floats(0, 1),
        "stop": st.text(max_size=5),
        "user": st.text(max_size=20),
        "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
        "seed": st.integers(0, 99),
        "metadata": JSON,
    },
)


@st.composite
def mutated(draw: st.DrawFn) -> Any:
    """A valid request with one field replaced by arbitrary JSON (or removed)."""
    body = dict(draw(VALID_REQUEST))
    key = draw(st.sampled_from(sorted(body)))
    if draw(st.booleans()):
        body[key] = draw(JSON)
    else:
        del body[key]
    return body


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    body=st.one_of(VALID_REQUEST, mutated(), REQUEST, JSON),
    raw_tail=st.binary(max_size=8),
    mangle=st.integers(0, 9).map(lambda n: n == 0),
)
def test_fuzzed_requests_never_get_a_5xx(
    rt: Proc, body: Any, raw_tail: bytes, mangle: bool
) -> None:
    data = json.dumps(body).encode()
    if mangle and raw_tail:
        data += raw_tail
    got, raw, headers = Conn(rt).request("POST", "/v1/chat/completions", data, AUTH)
    assert got < 500, (got, raw[:300], data[:300])
    event(f"HTTP {got}")
    if got >= 400:
        error_of(got, raw)
    elif headers.get("content-type", "").startswith("text/event-stream"):
        assert raw.rstrip().endswith(b"data: [DONE]")
    else:
        assert json.loads(raw)["object"] == "chat.completion"


def test_service_is_alive_after_the_abuse(rt: Proc) -> None:
    got, raw, _ = Conn(rt).request("GET", "/healthz")
    assert got == 200 and raw == b'{"status":"ok"}'
    assert rt.popen.poll() is None
    assert "Traceback" not in rt.log()
