"""OpenAI chat <-> Gemini generateContent, as pure functions (the HTTP is in :mod:`.gemini`).

Requests: system and developer turns go to ``systemInstruction``; an assistant's
``tool_calls`` become ``functionCall`` parts, ``tool`` messages ``functionResponse``
parts, named through the call ids of the conversation (Gemini has none of its own); a
thought signature that came with a call travels back with it (in the tool call's
``extra_content.google.thought_signature``, as Google's own OpenAI-compatible API does).
``tools`` become ``functionDeclarations`` with their schemas translated
(:mod:`.gemini_schema`), ``tool_choice`` ``auto``/``none``/``required``/named becomes
``functionCallingConfig`` mode ``AUTO``/``NONE``/``ANY``/``ANY`` with
``allowedFunctionNames``. A JSON ``response_format`` is native (``responseMimeType``
``application/json`` and a translated ``responseSchema``) unless the request has tools,
which Gemini models before 3 do not take together with a JSON mode: then the forced
answer tool of :mod:`.toolcalls` serves it.

``reasoning_effort`` becomes ``thinkingConfig.thinkingBudget`` (``none``/``low``/``medium``/
``high``: 0/1,024/8,192/24,576, as Google's own OpenAI-compatible API maps it);
``safety_identifier`` (an end user's id for the provider's abuse tracking) is dropped.

Responses: ``functionCall`` parts become ``tool_calls`` with ids made from the response
id, their position, name and arguments (stable, and in the ``[a-zA-Z0-9_-]`` alphabet
every provider takes); ``finish_reason`` is ``tool_calls`` when there are any. Gemini has
no switch for one call per turn: with ``parallel_tool_calls: false`` the runtime keeps
the first call of a turn and drops the others.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from ..ids import random_hex
from ..schemas import ChatRequest, JsonSchemaFormat, Message, ToolCall
from .base import Completion, Unsupported, UpstreamError, turns
from .content import GEMINI, check_images, gemini_part, parts_of
from .gemini_schema import SchemaBudget, gemini_schema
from .params import refuse_untranslated
from .shapes import completion_body, completion_id, tool_call, tool_call_delta
from .toolcalls import (
    ANSWER_TOOL,
    ToolPlan,
    arguments_object,
    call_names,
    content_text,
    dumps,
    plan_tools,
)
from .usage import count, gemini_prompt

FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
}
# Beyond the common ones (see :mod:`.params`); anything else sent is refused.
TRANSLATED = frozenset(
    {"seed", "presence_penalty", "frequency_penalty", "logprobs", "top_logprobs", "service_tier"}
    | {"reasoning_effort", "safety_identifier"}  # (Gemini has no abuse-tracking id: dropped)
)
# reasoning_effort -> thinkingConfig.thinkingBudget, as Google's own OpenAI-compatible API
# maps it
THINKING_BUDGETS = {"none": 0, "low": 1024, "medium": 8192, "high": 24576}
_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY", "named": "ANY"}


def _signature(call: ToolCall) -> str | None:
    extra = (call.model_extra or {}).get("extra_content")
    google = extra.get("google") if isinstance(extra, dict) else None
    sig = google.get("thought_signature") if isinstance(google, dict) else None
    return sig if isinstance(sig, str) else None


def _function_response(text: str) -> dict[str, Any]:
    """A tool's answer as the object Gemini wants: itself if it is a JSON object."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = None
    return value if isinstance(value, dict) else {"result": text}


def _parts(content: Any, param: str, images: bool = False) -> list[dict[str, Any]]:
    """A message's content as text and (in user turns) image parts."""
    pieces = parts_of(content, param, "Gemini", images)
    return [gemini_part(piece, where) for where, piece in pieces]


def _contents(request: ChatRequest) -> tuple[list[str], list[dict[str, Any]]]:
    names = call_names(request)

    def turn(i: int, m: Message, param: str) -> tuple[str, list[dict[str, Any]]]:
        if m.role == "tool":
            assert m.tool_call_id is not None  # the schema requires it and checks it
            response = _function_response(content_text(m.content, param, "Gemini"))
            return "user", [
                {"functionResponse": {"name": names[m.tool_call_id], "response": response}}
            ]
        if m.role == "assistant":
            parts = _parts(m.content, param)
            for j, call in enumerate(m.tool_calls or []):
                where = f"messages[{i}].tool_calls[{j}].function.arguments"
                part: dict[str, Any] = {
                    "functionCall": {
                        "name": call.function.name,
                        "args": arguments_object(call.function.arguments, where),
                    }
                }
                if (sig := _signature(call)) is not None:
                    part["thoughtSignature"] = sig
                parts.append(part)
            return "model", parts
        return "user", _parts(m.content, param, images=True)

    return turns(
        request, "parts", lambda m, param: (p["text"] for p in _parts(m.content, param)), turn
    )


# What an object schema without parameters may hold besides nothing.
_EMPTY_OBJECT_KEYS = frozenset(
    {"type", "properties", "required", "additionalProperties", "description", "title", "$schema"}
)


def _no_parameters(schema: dict[str, Any]) -> bool:
    """An object schema that declares no parameter: ``{}``, ``{"type": "object"}``, with
    empty ``properties``."""
    return (
        schema.get("type", "object") == "object"
        and not schema.get("properties")
        and set(schema) <= _EMPTY_OBJECT_KEYS
    )


def _tools(plan: ToolPlan, budget: SchemaBudget) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    declarations = []
    for f in plan.functions:
        decl: dict[str, Any] = {"name": f.name}
        if f.description:
            decl["description"] = f.description
        # Gemini refuses an OBJECT without properties: a function without parameters
        # is declared without them. Anything more (a root ``$ref``, ``anyOf``...) is
        # translated, or refused: never dropped.
        if not _no_parameters(f.parameters):
            decl["parameters"] = gemini_schema(f.parameters, f.param, budget)
        declarations.append(decl)
    config: dict[str, Any] = {"mode": _MODES[plan.choice]}
    if plan.choice == "named":
        config["allowedFunctionNames"] = [plan.named]
    return [{"functionDeclarations": declarations}], {"functionCallingConfig": config}


def to_gemini(request: ChatRequest) -> dict[str, Any]:
    """OpenAI chat request -> generateContent request; raises :class:`Unsupported` for
    what Gemini cannot express."""
    refuse_untranslated(request, TRANSLATED, "Gemini")
    check_images(request, GEMINI)
    system, contents = _contents(request)
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
    plan = plan_tools(request, answer_by_tool=bool(request.tools))
    budget = SchemaBudget()  # one for all the request's schemas
    if plan is not None:
        body["tools"], body["toolConfig"] = _tools(plan, budget)
    config = _renamed(
        request,
        temperature="temperature",
        top_p="topP",
        output_limit="maxOutputTokens",
        stop_sequences="stopSequences",
    )
    config.update(_sampling(request))
    fmt = request.json_answer
    if fmt is not None and not (plan and plan.answer_tool):
        config["responseMimeType"] = "application/json"
        if isinstance(fmt, JsonSchemaFormat) and fmt.json_schema.schema_ is not None:
            config["responseSchema"] = gemini_schema(
                fmt.json_schema.schema_, "response_format.json_schema.schema", budget
            )
    if config:
        body["generationConfig"] = config
    return body


def _renamed(request: ChatRequest, **names: str) -> dict[str, Any]:
    """The request's parameters among ``names`` that are set, each under its Gemini name."""
    values = {gemini: getattr(request, field) for field, gemini in names.items()}
    return {gemini: value for gemini, value in values.items() if value is not None}


def _sampling(request: ChatRequest) -> dict[str, Any]:
    """The sampling parameters Gemini has under its own names."""
    config = _renamed(
        request,
        seed="seed",
        presence_penalty="presencePenalty",
        frequency_penalty="frequencyPenalty",
    )
    if request.logprobs:
        config["responseLogprobs"] = True
        if request.top_logprobs:
            config["logprobs"] = request.top_logprobs
    if request.service_tier not in (None, "auto", "default"):
        raise Unsupported(f"Gemini has no service tier {request.service_tier!r}", "service_tier")
    effort = request.reasoning_effort
    if effort is not None:
        if effort not in THINKING_BUDGETS:
            raise Unsupported(f"Gemini has no reasoning effort {effort!r}", "reasoning_effort")
        config["thinkingConfig"] = {"thinkingBudget": THINKING_BUDGETS[effort]}
    return config


def logprobs_of(candidate: dict[str, Any]) -> list[dict[str, Any]]:
    """Gemini's ``logprobsResult`` as the entries of OpenAI's ``logprobs.content``."""
    result = candidate.get("logprobsResult") or {}
    chosen = result.get("chosenCandidates") or []
    tops = result.get("topCandidates") or []
    out = []
    for k, c in enumerate(chosen):
        top = (tops[k].get("candidates") if k < len(tops) else None) or []
        out.append(
            {
                **_token_logprob(c),
                "top_logprobs": [_token_logprob(t) for t in top if isinstance(t, dict)],
            }
        )
    return out


def _token_logprob(c: dict[str, Any]) -> dict[str, Any]:
    token = str(c.get("token", ""))
    return {
        "token": token,
        "logprob": float(c.get("logProbability") or 0.0),
        "bytes": list(token.encode()),
    }


class GeminiAnswer:
    """Candidates -> OpenAI content and tool calls, for one response or one stream."""

    def __init__(self, request: ChatRequest) -> None:
        self.parallel = request.parallel_tool_calls is not False
        self.calls = 0
        self.finish: str | None = None
        self._nonce: str | None = None
        self.want_logprobs = bool(request.logprobs)
        # The logprobs of the last response or event fed (OpenAI's ``logprobs.content``).
        self.logprobs: list[dict[str, Any]] | None = None

    def _id(self, index: int, name: str, args: str) -> str:
        digest = hashlib.sha256(f"{self._nonce}:{index}:{name}:{args}".encode()).hexdigest()
        return "call_" + digest[:24]

    def feed(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        """The deltas of one response (or stream event): ``content`` and whole tool calls."""
        self._nonce = self._nonce or str(data.get("responseId") or random_hex())
        self.logprobs = None
        candidates = data.get("candidates")
        if not isinstance(candidates, list) or not candidates:
            if (data.get("promptFeedback") or {}).get("blockReason"):
                self.finish = "content_filter"
                return []
            if data.get("usageMetadata"):
                return []  # a stream's closing event may carry the usage only
            raise UpstreamError("protocol", "response has no 'candidates'")
        cand = candidates[0]
        if self.want_logprobs:
            self.logprobs = logprobs_of(cand)
        out: list[dict[str, Any]] = []
        for part in (cand.get("content") or {}).get("parts") or []:
            if not isinstance(part, dict) or part.get("thought"):
                continue
            call = part.get("functionCall")
            if isinstance(call, dict):
                name, args = str(call.get("name")), dumps(call.get("args") or {})
                if name == ANSWER_TOOL:
                    out.append({"content": args})
                    continue
                if self.calls and not self.parallel:
                    continue  # parallel_tool_calls: false: the first call only
                n = self.calls
                self.calls += 1
                delta = tool_call_delta(n, self._id(n, name, args), name, args)
                if isinstance(part.get("thoughtSignature"), str):
                    delta["tool_calls"][0]["extra_content"] = {
                        "google": {"thought_signature": part["thoughtSignature"]}
                    }
                out.append(delta)
            elif "text" in part:
                out.append({"content": str(part["text"])})
        reason = cand.get("finishReason")
        if reason:
            self.finish = FINISH.get(reason, "stop")
        return out

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.calls else self.finish or "stop"


def from_gemini(data: dict[str, Any], model: str, request: ChatRequest) -> Completion:
    answer = GeminiAnswer(request)
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for delta in answer.feed(data):
        if "content" in delta:
            text.append(delta["content"])
        for c in delta.get("tool_calls", []):
            entry = tool_call(c["id"], c["function"]["name"], c["function"]["arguments"])
            if "extra_content" in c:
                entry["extra_content"] = c["extra_content"]
            calls.append(entry)
    meta = data.get("usageMetadata") or {}
    prompt = gemini_prompt(meta)
    completion = count(meta, "candidatesTokenCount")
    body = completion_body(
        completion_id(),
        model,
        "".join(text),
        answer.finish_reason,
        prompt.prompt,
        completion,
        tool_calls=calls or None,
        logprobs=answer.logprobs,
        cached_tokens=prompt.cached,
    )
    return Completion(body, prompt.prompt, completion, prompt.cached)
