"""Images and parameters through the runtime, over real HTTP, on each provider shape.

The simulator checks each image as its real API would and names what it saw in its
answer, so these tests see that an image reached the provider intact in its own shape.
"""

from __future__ import annotations

import base64
from typing import Any

import openai
import pytest

from swiftclaw_devtools.processes import Proc

from .conftest import API_KEY, Launcher
from .test_resilience_live import sim_stats
from .test_tools import SHAPES, shape_sims, shapes_manifest

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(56))
URL = "https://img.example/cats/tabby.png"


def data_uri(raw: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(raw).decode()


def image_message(*urls: str) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": "What is on these?"}]
    parts += [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    return {"role": "user", "content": parts}


@pytest.fixture(scope="module")
def sims(module_launch: Launcher) -> dict[str, Proc]:
    return shape_sims(module_launch)


@pytest.fixture(scope="module")
def rt(module_launch: Launcher, sims: dict[str, Proc]) -> Proc:
    doc = shapes_manifest(
        sims, {"name": "ant-then-oai", "model": "ant/claude-y", "fallbacks": ["oai/gpt-y"]}
    )
    return module_launch.runtime(doc, "--max-body-bytes", str(32 * 1024 * 1024))


def client(rt: Proc) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{rt.url}/v1", api_key=API_KEY, max_retries=0)


@pytest.mark.parametrize("tier", SHAPES)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_data_uri_and_a_url_reach_the_provider(rt: Proc, tier: str, stream: bool) -> None:
    kw: dict[str, Any] = {"model": tier, "messages": [image_message(data_uri(PNG), URL)]}
    if stream:
        text = "".join(
            c.choices[0].delta.content or ""
            for c in client(rt).chat.completions.create(stream=True, **kw)
            if c.choices
        )
    else:
        text = client(rt).chat.completions.create(**kw).choices[0].message.content or ""
    assert text.startswith(f"Seen image/png {len(PNG)} bytes, {URL} | ")


def bad_request(rt: Proc, **kw: Any) -> dict[str, Any]:
    with pytest.raises(openai.BadRequestError) as info:
        client(rt).chat.completions.create(**kw)
    body = info.value.body
    assert isinstance(body, dict)
    return body


def test_an_image_over_anthropics_limit_moves_on_or_is_a_400(
    rt: Proc, sims: dict[str, Proc]
) -> None:
    big = PNG + b"\x00" * (5 * 1024 * 1024)
    before = sim_stats(sims["anthropic"])["requests"]
    err = bad_request(rt, model="anthropic", messages=[image_message(data_uri(big))])
    assert err["code"] == "unsupported_parameter"
    assert err["param"] == "messages[0].content[1].image_url.url"
    assert "5 MiB" in err["message"]
    raw = client(rt).chat.completions.with_raw_response.create(
        model="ant-then-oai", messages=[image_message(data_uri(big))]
    )
    assert raw.headers["x-swiftclaw-model"] == "oai/gpt-y"
    assert (raw.parse().choices[0].message.content or "").startswith(
        f"Seen image/png {len(big)} bytes | "
    )
    assert sim_stats(sims["anthropic"])["requests"] == before  # never sent there
    # Gemini takes it (its limit is 20 MiB of inline data a request).
    reply = client(rt).chat.completions.create(
        model="gemini", messages=[image_message(data_uri(big))]
    )
    assert (reply.choices[0].message.content or "").startswith(f"Seen image/png {len(big)} bytes")


def test_too_many_images_and_a_bad_image(rt: Proc) -> None:
    err = bad_request(rt, model="anthropic", messages=[image_message(*[URL] * 101)])
    assert err["param"] == "messages[0].content[101].image_url.url"
    err = bad_request(rt, model="openai", messages=[image_message("http://img.example/a.png")])
    assert err["param"] == "messages[0].content[1].image_url.url"
    assert err["code"] == "invalid_value" and "https URL" in err["message"]
    mislabelled = "data:image/jpeg;base64," + base64.b64encode(PNG).decode()
    err = bad_request(rt, model="gemini", messages=[image_message(mislabelled)])
    assert "image/png, not image/jpeg" in err["message"]


USER = {"role": "user", "content": "Hi"}


def test_a_parameter_anthropic_lacks_is_served_elsewhere_or_refused_by_name(rt: Proc) -> None:
    err = bad_request(rt, model="anthropic", messages=[USER], seed=7)
    assert err["param"] == "seed" and err["code"] == "unsupported_parameter"
    assert "ant/claude-x: Anthropic has no equivalent of 'seed'" in err["message"]
    raw = client(rt).chat.completions.with_raw_response.create(
        model="ant-then-oai", messages=[USER], seed=7, logit_bias={"1": 5}
    )
    assert raw.headers["x-swiftclaw-model"] == "oai/gpt-y"
    # What it does translate goes through: user, a temperature within its range.
    raw = client(rt).chat.completions.with_raw_response.create(
        model="ant-then-oai", messages=[USER], user="alice", temperature=0.5
    )
    assert raw.headers["x-swiftclaw-model"] == "ant/claude-y"


def test_gemini_serves_seed_penalties_and_logprobs(rt: Proc) -> None:
    kw: dict[str, Any] = {
        "model": "gemini",
        "messages": [USER],
        "seed": 7,
        "presence_penalty": 0.5,
        "frequency_penalty": 0.5,
        "logprobs": True,
        "top_logprobs": 2,
    }
    done = client(rt).chat.completions.create(**kw)
    logprobs = done.choices[0].logprobs
    assert logprobs is not None and logprobs.content
    assert "".join(t.token for t in logprobs.content) == done.choices[0].message.content
    assert all(len(t.top_logprobs) == 2 for t in logprobs.content)
    streamed = [
        t
        for c in client(rt).chat.completions.create(stream=True, **kw)
        if c.choices and c.choices[0].logprobs
        for t in c.choices[0].logprobs.content or []
    ]
    assert [t.token for t in streamed] == [t.token for t in logprobs.content]
    err = bad_request(rt, model="gemini", messages=[USER], user="alice")
    assert err["param"] == "user"
