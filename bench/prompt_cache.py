"""What a 20-step agent loop costs on an Anthropic-backed tier with ``cache.promptCaching``
``auto`` (the runtime places ``cache_control`` breakpoints) against ``off`` (it places
none, as an OpenAI-shaped client cannot), with Claude Sonnet's prices.

One ``swiftclaw sim`` per mode plays Anthropic (its prompt cache in Anthropic's rules:
:mod:`swiftclaw_devtools.sim_prompt_cache`); the runtime serves the loop of
:mod:`swiftclaw_devtools.agent_loop` (a 2,000-token system prompt, two tools, each answer
and its tool results appended). Printed per mode: the cost the runtime recorded
(``/v1/usage``), the provider's own price of the usage it billed, and the tokens by kind.
Not a CPU benchmark: the figures are token counts and prices, the same on any machine.

    python -m bench.prompt_cache [--steps 20] [--stream]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from swiftclaw_devtools.agent_loop import run_loop
from swiftclaw_devtools.processes import start_sim

from .run import KEY, start_swiftclaw

PRICES = {  # Claude Sonnet 4.x, USD per 1M tokens
    "inputPer1M": 3.0,
    "outputPer1M": 15.0,
    "cachedInputPer1M": 0.3,
    "cacheWritePer1M": 3.75,
}


def _get(url: str, key: str | None = None) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
        return dict(json.load(r))


def provider_price(stats: dict[str, Any]) -> float:
    read, written = stats["billed_cache_read_tokens"], stats["billed_cache_write_tokens"]
    plain = stats["billed_prompt_tokens"] - read - written
    return (
        plain * PRICES["inputPer1M"]
        + read * PRICES["cachedInputPer1M"]
        + written * PRICES["cacheWritePer1M"]
        + stats["billed_completion_tokens"] * PRICES["outputPer1M"]
    ) / 1_000_000


def one_mode(folder: Path, mode: str, steps: int, stream: bool) -> dict[str, Any]:
    sim = start_sim(None, "--latency", "fixed:5", log_path=folder / f"sim-{mode}.log")
    target = None
    try:
        spec = {
            "providers": [{"name": "ant", "type": "anthropic", "baseURL": f"{sim.url}/v1"}],
            "models": {"tiers": [{"name": "main", "model": "ant/claude-sonnet-x", **PRICES}]},
            "agent": {"maxInputTokens": 200_000},
            "cache": {"redis": {"mode": "none"}, "promptCaching": mode},
        }
        target = start_swiftclaw(folder, spec, name=f"swiftclaw-{mode}")
        base = target.url.removesuffix("/v1")
        run_loop(base, KEY, "main", steps=steps, stream=stream)
        usage = _get(f"{base}/v1/usage", KEY)
        stats = _get(f"{sim.url}/_sim/stats")
        return {
            "mode": mode,
            "recorded": usage["spend"]["tenantTodayUSD"],
            "provider": provider_price(stats),
            "input": stats["billed_prompt_tokens"],
            "read": stats["billed_cache_read_tokens"],
            "written": stats["billed_cache_write_tokens"],
            "output": stats["billed_completion_tokens"],
        }
    finally:
        if target is not None:
            for p in target.procs:
                p.stop()
        sim.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--stream", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [one_mode(Path(tmp), mode, args.steps, args.stream) for mode in ("auto", "off")]
    print(
        "| promptCaching | recorded USD | provider's price USD | input tokens "
        "| of which cache reads | cache writes | output tokens |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['mode']} | {r['recorded']:.6f} | {r['provider']:.6f} | {r['input']} "
            f"| {r['read']} | {r['written']} | {r['output']} |"
        )
    auto, off = rows
    print(f"\nauto costs {auto['recorded'] / off['recorded']:.1%} of off")


if __name__ == "__main__":
    main()
