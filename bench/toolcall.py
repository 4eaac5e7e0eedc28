"""Added latency of a streamed tool-call completion through the Anthropic translation.

One ``swiftclaw sim`` (fixed 50 ms, unpaced streams) plays the model. Targets:

- ``direct``: the sim in OpenAI's shape answering the same streamed tool call (the baseline);
- ``swiftclaw``: the runtime with an ``anthropic`` provider pointing at the sim: the client
  speaks OpenAI chat, the runtime translates to Anthropic Messages and the SSE back;
- ``litellm``: the LiteLLM proxy doing the same translation (``model: anthropic/<name>``,
  ``api_base`` the sim; LiteLLM appends ``/v1/messages`` to it).

Load and placement as :mod:`bench.run` (wrk, one thread, C keep-alive connections; the proxy
on its own core, the sim and wrk on the other). wrk's latency is the whole stream's, to its
last byte. Added latency = a target's percentile minus the direct one.

    python -m bench.toolcall [--duration 8] [--warmup 2] [--concurrency 64]
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from swiftclaw_devtools.processes import Proc

from .run import (
    Target,
    arguments,
    cell_table,
    measure,
    post,
    start_litellm,
    start_swiftclaw,
    write_results,
)

BODY = json.dumps(
    {
        "model": "bench",
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "stream": True,
        "max_tokens": 64,
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "The weather in a city",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "city": {"type": "string"},
                            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                        },
                        "required": ["city", "unit"],
                    },
                },
            }
        ],
    }
)


def check(target: Target) -> None:
    """One real request first: a streamed tool call of get_weather with JSON arguments."""
    name, arguments, finish = None, "", None
    with post(target, BODY) as r:
        for line in r.read().decode().splitlines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            for choice in chunk.get("choices") or []:
                finish = choice.get("finish_reason") or finish
                for frag in (choice.get("delta") or {}).get("tool_calls") or []:
                    fn = frag.get("function") or {}
                    name = fn.get("name") or name
                    arguments += fn.get("arguments") or ""
    assert name == "get_weather" and finish == "tool_calls", (target.name, name, finish)
    assert json.loads(arguments)["unit"] == "celsius", (target.name, arguments)


def start_targets(folder: Path, sim: Proc) -> list[Target]:
    spec = {
        "providers": [{"name": "ant", "type": "anthropic", "baseURL": f"{sim.url}/v1"}],
        "models": {"tiers": [{"name": "bench", "model": "ant/claude-bench"}]},
        "cache": {"exact": {"enabled": False}, "redis": {"mode": "none"}},
    }
    targets = [Target("direct", f"{sim.url}/v1", {}, []), start_swiftclaw(folder, spec)]
    litellm = start_litellm(
        folder,
        {
            "model": "anthropic/claude-bench",
            "api_base": sim.url,  # LiteLLM appends /v1/messages
            "api_key": "sk-upstream",
        },
        False,
    )
    return targets + ([litellm] if litellm else [])


def main() -> int:
    args = arguments(__doc__, [64]).parse_args()
    m = measure(args, BODY, check, start_targets, "swiftclaw-toolcall-")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    placement = (
        "proxy pinned to its own core; sim and wrk on the other" if m.pinned else "no pinning"
    )
    md = (
        f"# Streamed tool call through the Anthropic translation, {stamp}\n\n"
        f"Upstream: `swiftclaw sim`, {args.latency} ms, unpaced stream. Load: wrk, 1 thread, "
        f"{args.duration:g} s per cell after {args.warmup:g} s warm-up. Machine: "
        f"{os.cpu_count()} cores, {placement}.\n\n" + cell_table(m.cells, m.memory) + "\n"
    )
    write_results(f"toolcall-{stamp}", md, m)
    print()
    print(md)
    print(f"written: bench/results/toolcall-{stamp}.md, .json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
