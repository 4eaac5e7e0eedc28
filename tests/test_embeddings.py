"""``POST /v1/embeddings`` over real HTTP with the official ``openai`` client: Gemini-shaped
and OpenAI-shaped simulators behind the embeddings model's chain, validation naming the
parameter, failover, metrics and cost."""

from __future__ import annotations

import math
from typing import Any

import openai
import pytest

from swiftclaw_devtools.processes import Proc
from swiftclaw_devtools.sim import sim_vector
from swiftclaw_runtime.embeddings import decode_vector

from .conftest import API_KEY, Launcher, manifest, openai_provider
from .test_resilience_live import control, metrics, sim_stats


@pytest.fixture(scope="module")
def sims(module_launch: Launcher) -> dict[str, Proc]:
    return {shape: module_launch.sim("--latency", "fixed:1") for shape in ("gemini", "openai")}


@pytest.fixture(scope="module")
def rt(module_launch: Launcher, sims: dict[str, Proc]) -> Proc:
    doc = manifest(
        [
            {"name": "gem", "type": "gemini", "baseURL": f"{sims['gemini'].url}/v1beta"},
            openai_provider("oai", sims["openai"]),
        ],
        [{"name": "chat", "model": "oai/gpt-x"}],
    )
    doc["spec"]["models"]["embeddings"] = {
        "model": "gem/text-embedding-004",
        "fallbacks": ["oai/text-embedding-3-small"],
        "inputPer1M": 100.0,
        "dimensions": 256,
    }
    return module_launch.runtime(doc)


def client(rt: Proc) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{rt.url}/v1", api_key=API_KEY, max_retries=0)


def norm(v: list[float]) -> float:
    return math.sqrt(sum(x * x for x in v))


@pytest.mark.parametrize("encoding", ["float", "base64", None])
def test_vectors_are_deterministic_unit_vectors_in_order(rt: Proc, encoding: str | None) -> None:
    kw: dict[str, Any] = {} if encoding is None else {"encoding_format": encoding}
    texts = ["the cat sat", "the cat sat.", "a dog"]
    raw = client(rt).embeddings.with_raw_response.create(model="auto", input=texts, **kw)
    assert raw.headers["x-swiftclaw-model"] == "gem/text-embedding-004"
    done = raw.parse()
    assert [d.index for d in done.data] == [0, 1, 2]
    # Asked for explicitly, base64 reaches the caller as it is (the SDK decodes it only when
    # it chose base64 itself).
    vectors = [decode_vector(d.embedding) for d in done.data]
    assert all(len(v) == 256 for v in vectors)  # the manifest's dimensions
    assert all(abs(norm(v) - 1) < 1e-5 for v in vectors)
    expected = sim_vector("text-embedding-004", "the cat sat", 256)
    assert vectors[0] == pytest.approx(expected, abs=1e-6)  # float32 on the base64 path
    assert vectors[0] != pytest.approx(vectors[1])
    assert done.usage.prompt_tokens > 0
    again = client(rt).embeddings.create(model="text-embedding-004", input="the cat sat", **kw)
    assert decode_vector(again.data[0].embedding) == pytest.approx(vectors[0], abs=1e-6)


def test_dimensions_and_token_inputs_go_where_they_can(rt: Proc, sims: dict[str, Proc]) -> None:
    short = client(rt).embeddings.create(model="auto", input="hi", dimensions=8)
    assert len(short.data[0].embedding) == 8
    before = sim_stats(sims["gemini"])["requests"]
    raw = client(rt).embeddings.with_raw_response.create(
        model="auto", input=[[1, 2, 3], [4, 5]], encoding_format="float"
    )
    # Gemini embeds text only: token ids go to the OpenAI-shaped fallback, Gemini untouched.
    assert raw.headers["x-swiftclaw-model"] == "oai/text-embedding-3-small"
    assert raw.headers["x-swiftclaw-fallback"] == "true"
    done = raw.parse()
    assert done.data[1].embedding == pytest.approx(sim_vector("text-embedding-3-small", "4,5", 256))
    assert sim_stats(sims["gemini"])["requests"] == before


def bad(rt: Proc, status: int = 400, **kw: Any) -> dict[str, Any]:
    with pytest.raises(openai.APIStatusError) as info:
        client(rt).embeddings.create(**kw)
    assert info.value.status_code == status
    body = info.value.body
    assert isinstance(body, dict)
    return body


@pytest.mark.parametrize(
    ("kw", "param"),
    [
        ({"input": []}, "input"),
        ({"input": ""}, "input"),
        ({"input": ["a", ""]}, "input[1]"),
        ({"input": [[1, -2]]}, "input[0][1]"),
        ({"input": "x", "encoding_format": "hex"}, "encoding_format"),
        ({"input": "x", "dimensions": 0}, "dimensions"),
        ({"input": ["x"] * 2049}, "input"),
    ],
)
def test_bad_requests_name_the_parameter(rt: Proc, kw: dict[str, Any], param: str) -> None:
    err = bad(rt, model="auto", **kw)
    assert err["param"] == param, err
    assert err["type"] == "invalid_request_error"


def test_a_missing_input_an_unknown_model_and_no_key(rt: Proc) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client(rt).embeddings.create(model="auto", input=openai.omit)  # type: ignore[arg-type]
    assert isinstance(info.value.body, dict) and info.value.body["param"] == "input"
    err = bad(rt, 404, model="text-embedding-ada-002", input="x")
    assert err["param"] == "model" and "gem/text-embedding-004" in err["message"]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{rt.url}/v1", api_key="nope", max_retries=0).embeddings.create(
            model="auto", input="x"
        )


def test_failover_metrics_and_cost(rt: Proc, sims: dict[str, Proc]) -> None:
    control(sims["gemini"], mode="error", count=2)  # both attempts at Gemini fail
    raw = client(rt).embeddings.with_raw_response.create(model="auto", input="failover")
    assert raw.headers["x-swiftclaw-model"] == "oai/text-embedding-3-small"
    assert raw.headers["x-swiftclaw-attempts"] == "1"
    text = metrics(rt)
    assert (
        'swiftclaw_requests_total{model="oai/text-embedding-3-small",outcome="fallback",'
        'tier="(embeddings)"}' in text
    )
    assert 'swiftclaw_upstream_retries_total{model="text-embedding-004",provider="gem"' in text
    cost = next(
        line
        for line in text.splitlines()
        if line.startswith('swiftclaw_cost_usd_total{model="gem/text-embedding-004"')
    )
    assert float(cost.rsplit(" ", 1)[1]) > 0  # 100 USD per 1M input tokens


def test_an_agent_without_embeddings_answers_404(launch: Launcher) -> None:
    sim = launch.sim("--latency", "fixed:1")
    rt = launch.runtime(manifest([openai_provider("oai", sim)], [{"name": "t", "model": "oai/m"}]))
    err = bad(rt, 404, model="auto", input="x")
    assert err["code"] == "model_not_found" and err["param"] == "model"
    assert "spec.models.embeddings" in err["message"]
    assert sim_stats(sim)["requests"] == 0
