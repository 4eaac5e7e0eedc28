"""A client-named user in a context source's URL (``{user}`` with ``auth.userFromRequest``)
cannot change which URL is fetched: ``..``, ``/``, ``?`` and ``#`` stay inside one
segment, and a dot-segment name leaves the source out (the request is still served)."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import unquote

import openai
import pytest
from bench.spend import Sources

from swiftclaw_runtime.prompt.context import segment

from .conftest import API_KEY, Launcher, manifest, openai_provider

HOSTILE = ["../admin", "../../etc/passwd", "a/b", "x?admin=1", "y#frag", "%2e%2e", "a.b", "é/.."]


@pytest.fixture
def sources() -> Iterator[Sources]:
    s = Sources()
    yield s
    s.close()


@pytest.mark.parametrize("name", HOSTILE)
def test_a_name_is_one_segment_without_dots(name: str) -> None:
    seg = segment(name)
    assert seg is not None
    assert not set(seg) & set("/?#.")
    assert unquote(seg) == name


@pytest.mark.parametrize("name", ["", ".", ".."])
def test_a_dot_segment_name_has_no_segment(name: str) -> None:
    assert segment(name) is None


def test_hostile_users_cannot_move_the_context_url(launch: Launcher, sources: Sources) -> None:
    up = launch.sim("--latency", "fixed:1")
    doc = manifest(
        [openai_provider("up", up)],
        [{"name": "t", "model": "up/m"}],
        auth={"userFromRequest": True},
        agent={
            "context": [
                {"name": "profile", "url": f"{sources.url}/ctx/{{user}}/profile", "timeoutMs": 5000}
            ]
        },
    )
    rt = launch.runtime(doc)
    client = openai.OpenAI(base_url=f"{rt.url}/v1", api_key=API_KEY, max_retries=0)
    for user in [*HOSTILE, "..", "."]:
        client.chat.completions.create(
            model="t", messages=[{"role": "user", "content": "hi"}], user=user
        )
    assert len(sources.paths) == len(HOSTILE)  # the dot segments were left out, and served
    for path in sources.paths:
        parts = path.split("/")
        assert len(parts) == 4 and parts[:2] == ["", "ctx"] and parts[3] == "profile", path
        assert "." not in parts[2] and "?" not in path and "#" not in path, path
    assert sorted(unquote(p.split("/")[2]) for p in sources.paths) == sorted(HOSTILE)
