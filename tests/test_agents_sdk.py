"""The OpenAI Agents SDK runs agents with function tools through the runtime, offline.

``OpenAIChatCompletionsModel`` with an ``AsyncOpenAI`` client pointed at the runtime, on
each provider shape (the simulator plays the model: it calls the tools, then answers
quoting their results), with a structured ``output_type``, and across a failover from
an OpenAI-shaped primary to an Anthropic-shaped fallback.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")

# Tracing is off before the SDK loads: it would try to export traces over the network.
from agents import (
    Agent,
    OpenAIChatCompletionsModel,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from openai import AsyncOpenAI
from pydantic import BaseModel

from swiftclaw_devtools.processes import Proc

from .conftest import API_KEY, Launcher
from .test_resilience_live import control, sim_stats
from .test_tools import failover_runtime, shape_sims, shapes_manifest

set_tracing_disabled(True)


class Forecast(BaseModel):
    summary: str
    confidence: int


class Calls:
    """The tools of the agent, recording what they were called with."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def tools(self) -> list[object]:
        @function_tool
        def get_weather(city: str) -> str:
            """The weather in a city."""
            self.seen.append(("get_weather", city))
            return f"sunny in {city}"

        @function_tool
        def get_time(zone: str) -> str:
            """The time in a time zone."""
            self.seen.append(("get_time", zone))
            return "14:05"

        return [get_weather, get_time]


def connect(rt: Proc) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{rt.url}/v1", api_key=API_KEY, max_retries=0)


def agent(
    client: AsyncOpenAI, tier: str, calls: Calls, output: type[BaseModel] | None = None
) -> Agent:
    return Agent(
        name="assistant",
        instructions="Use the tools, then answer.",
        tools=calls.tools(),  # type: ignore[arg-type]
        model=OpenAIChatCompletionsModel(model=tier, openai_client=client),
        output_type=output,
    )


async def run(a: Agent, prompt: object, stream: bool) -> object:
    if not stream:
        return await Runner.run(a, prompt, max_turns=5)  # type: ignore[arg-type]
    result = Runner.run_streamed(a, prompt, max_turns=5)  # type: ignore[arg-type]
    async for _ in result.stream_events():
        pass
    return result


@pytest.fixture(scope="module")
def rt(module_launch: Launcher) -> Proc:
    return module_launch.runtime(shapes_manifest(shape_sims(module_launch)))


@pytest.mark.parametrize("tier", ["openai", "anthropic", "gemini"])
@pytest.mark.parametrize("stream", [False, True], ids=["run", "streamed"])
async def test_an_agent_with_two_tools_reaches_its_answer(
    rt: Proc, tier: str, stream: bool
) -> None:
    calls = Calls()
    async with connect(rt) as client:
        result = await run(agent(client, tier, calls), "Weather and time in Paris?", stream)
    # Both tools ran (in parallel, in one turn), then the model answered quoting them.
    assert sorted(name for name, _ in calls.seen) == ["get_time", "get_weather"]
    answer = result.final_output  # type: ignore[attr-defined]
    assert answer.startswith("Tool results: ") and "sunny in sim" in answer and "14:05" in answer


@pytest.mark.parametrize("tier", ["openai", "anthropic", "gemini"])
async def test_an_agent_with_a_structured_output(rt: Proc, tier: str) -> None:
    calls = Calls()
    async with connect(rt) as client:
        result = await run(agent(client, tier, calls, Forecast), "Forecast for Paris?", False)
    out = result.final_output  # type: ignore[attr-defined]
    assert isinstance(out, Forecast)
    assert "sunny in sim" in out.summary and "14:05" in out.summary
    assert len(calls.seen) == 2


async def test_an_agent_continues_on_the_anthropic_fallback_after_the_primary_fails(
    launch: Launcher,
) -> None:
    primary, fallback, rt = failover_runtime(launch)
    calls = Calls()
    async with connect(rt) as client:
        a = agent(client, "main", calls)
        first = await run(a, "Weather and time in Paris?", False)
        assert first.final_output == "Tool results: sunny in sim | 14:05"  # type: ignore[attr-defined]
        assert sim_stats(fallback)["requests"] == 0
        control(primary, mode="error")
        # The next turn carries the first one's tool calls (OpenAI ids) to the Anthropic shape.
        history = first.to_input_list()  # type: ignore[attr-defined]
        history.append({"role": "user", "content": "And in Rome?"})
        second = await run(a, history, True)
    assert second.final_output == "Tool results: sunny in sim | 14:05"  # type: ignore[attr-defined]
    assert len(calls.seen) == 4
    assert sim_stats(fallback)["requests"] == 2  # the tool calls, then the answer
