"""Putting the prompt together and fitting it into ``agent.maxInputTokens``.

Order: the agent's system prompt, the context sources' answers (one system message), the
client's own leading system/developer messages, then the conversation. When it does not
fit, whole turns are dropped oldest first (a turn: a user message and everything up to
the next one, so tool calls and their results go together); then the context. Only when
the system prompts and the last turn alone do not fit is the request refused (400
``context_length_exceeded``): trimming by default keeps long chats working, and the
client learns what was dropped from ``x-swiftclaw-trimmed-tokens``. The estimate counts
what a provider reads as input: the messages' text, their tool calls, and the tools'
definitions (sent with every request, never trimmed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from ..config import AgentSpec
from ..errors import invalid_request
from ..schemas import ChatRequest, Message, message_text
from ..tokens import estimate_tokens

FRAMING = 2  # tokens of the reply's framing; each message adds 4 (see tokens.py)


@dataclass(frozen=True)
class Prompt:
    request: ChatRequest
    payload: dict[str, Any]
    input_tokens: int  # the estimate of what is sent
    trimmed_tokens: int  # the estimate of what was dropped


def _cost(m: Message) -> int:
    """A message's input tokens: its text and its tool calls (a provider reads their
    names and arguments as input too)."""
    calls = sum(
        estimate_tokens(c.function.name) + estimate_tokens(c.function.arguments)
        for c in m.tool_calls or ()
    )
    return estimate_tokens(message_text(m)) + calls + 4


def _tools_cost(payload: dict[str, Any]) -> int:
    """The tools' definitions (names, descriptions, schemas): input on every provider."""
    tools = payload.get("tools")
    return estimate_tokens(orjson.dumps(tools).decode()) if tools else 0


def context_message(context: list[tuple[str, str]]) -> str:
    parts = [f"[{name}]\n{text}" for name, text in context]
    return "Context for this request:\n\n" + "\n\n".join(parts)


def build_prompt(
    agent: AgentSpec,
    request: ChatRequest,
    payload: dict[str, Any],
    context: list[tuple[str, str]] | None = None,
) -> Prompt:
    """The request as sent upstream (and its JSON, kept in step), trimmed to fit."""
    sent = list(zip(request.messages, payload["messages"], strict=True))
    lead = 0
    while lead < len(sent) and sent[lead][0].role in ("system", "developer"):
        lead += 1
    own: list[tuple[Message, dict[str, Any]]] = []  # the agent's system prompt
    if agent.system_prompt:
        own.append(
            (
                Message(role="system", content=agent.system_prompt),
                {"role": "system", "content": agent.system_prompt},
            )
        )
    extra: list[tuple[Message, dict[str, Any]]] = []  # the context, as one system message
    if context:
        text = context_message(context)
        extra.append((Message(role="system", content=text), {"role": "system", "content": text}))
    head = own + sent[:lead]  # the agent's and the client's system messages: never dropped
    turns: list[list[tuple[Message, dict[str, Any]]]] = []
    for pair in sent[lead:]:
        if pair[0].role == "user" or not turns:
            turns.append([])
        turns[-1].append(pair)
    budget = agent.max_input_tokens
    fixed = sum(_cost(m) for m, _ in head) + _tools_cost(payload) + FRAMING
    sizes = [sum(_cost(m) for m, _ in t) for t in turns]
    context_cost = sum(_cost(m) for m, _ in extra)
    kept, first = sum(sizes), 0  # the turns' tokens from turns[first] on
    while len(turns) - first > 1 and fixed + context_cost + kept > budget:
        kept -= sizes[first]
        first += 1
    trimmed = sum(sizes[:first])
    if extra and fixed + context_cost + kept > budget:
        trimmed += context_cost
        extra, context_cost = [], 0
    total = fixed + context_cost + kept
    if total > budget:
        raise invalid_request(
            f"The system prompt and the last turn hold about {total} tokens; this agent "
            f"accepts at most {budget} (spec.agent.maxInputTokens), so no trimming of older "
            "turns can make the request fit.",
            param="messages",
            code="context_length_exceeded",
        )
    pairs = own + extra + sent[:lead] + [p for t in turns[first:] for p in t]
    messages = [m for m, _ in pairs]
    if len(messages) != len(request.messages) or trimmed:
        request = request.model_copy(update={"messages": messages})
        payload = dict(payload, messages=[j for _, j in pairs])
    # (agent.maxOutputTokens is applied with the budget's cut, after admission: see
    # providers.params.with_output_cap)
    return Prompt(request, payload, total, trimmed)
