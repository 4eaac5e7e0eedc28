"""An agent loop as a coding agent runs one: a long system prompt and two tools resent on
every step with the growing conversation (each answer, its tool calls' results, or a new
user turn), in OpenAI's chat shape over HTTP. The prompt-cache tests and
``bench/prompt_cache.py`` drive the runtime with it; each step's ``usage`` is returned as
the runtime reported it.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from typing import Any

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "Read a file of the repository.",
            "parameters": {
                "type": "object",
                "properties": {"path": {"type": "string"}},
                "required": ["path"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "run_tests",
            "description": "Run the test suite and report failures.",
            "parameters": {
                "type": "object",
                "properties": {"pattern": {"type": "string"}},
                "required": ["pattern"],
            },
        },
    },
]


def system_prompt(tokens: int = 2000) -> str:
    """A coding agent's instructions, about ``tokens`` tokens long (4 characters a token)."""
    rules = [
        f"Rule {i}: read the code before changing it, keep each change small, run the tests "
        f"after every edit and report what failed with its file and line number {i * 7}."
        for i in range(1, 200)
    ]
    return " ".join(rules)[: tokens * 4]


@dataclass
class Step:
    """One step's usage as the runtime reported it (OpenAI's ``usage``), and its headers."""

    usage: dict[str, Any]
    headers: dict[str, str]

    @property
    def cached(self) -> int:
        return int((self.usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)


def _post(url: str, key: str, body: dict[str, Any], timeout: float) -> tuple[Any, dict[str, str]]:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
    )
    r = urllib.request.urlopen(req, timeout=timeout)
    return r, {k.lower(): v for k, v in r.headers.items()}


def _streamed(resp: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A streamed answer assembled: the assistant message and the usage chunk's usage."""
    text: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    usage: dict[str, Any] = {}
    for raw in resp:
        line = raw.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        if "error" in chunk:
            raise RuntimeError(f"stream failed: {chunk['error']}")
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            text.append(delta.get("content") or "")
            for c in delta.get("tool_calls") or []:
                call = calls.setdefault(
                    c["index"],
                    {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
                )
                call["id"] = c.get("id") or call["id"]
                fn = c.get("function") or {}
                call["function"]["name"] += fn.get("name") or ""
                call["function"]["arguments"] += fn.get("arguments") or ""
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None}
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    return message, usage


def run_loop(
    base_url: str,
    key: str,
    model: str,
    steps: int = 20,
    stream: bool = False,
    system_tokens: int = 2000,
    user: str | None = None,
    timeout: float = 60,
) -> list[Step]:
    """Run ``steps`` steps of the loop against ``base_url`` (the runtime's, without /v1)."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": system_prompt(system_tokens)},
        {"role": "user", "content": "The tests of the parser fail; find out why and fix it."},
    ]
    out: list[Step] = []
    for n in range(steps):
        body: dict[str, Any] = {"model": model, "messages": messages, "tools": TOOLS}
        if user is not None:
            body["user"] = user
        if stream:
            body.update(stream=True, stream_options={"include_usage": True})
        resp, headers = _post(f"{base_url}/v1/chat/completions", key, body, timeout)
        with resp:
            if stream:
                message, usage = _streamed(resp)
            else:
                answer = json.loads(resp.read())
                message = answer["choices"][0]["message"]
                message = {
                    k: v for k, v in message.items() if k in ("role", "content", "tool_calls")
                }
                usage = answer["usage"]
        out.append(Step(usage, headers))
        messages.append(message)
        if message.get("tool_calls"):
            for call in message["tool_calls"]:
                result = f"step {n}: {call['function']['name']} found nothing unusual"
                messages.append({"role": "tool", "tool_call_id": call["id"], "content": result})
        else:
            messages.append({"role": "user", "content": f"Step {n}: go on with the next file."})
    return out
