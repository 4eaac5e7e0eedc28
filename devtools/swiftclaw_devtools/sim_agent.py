"""The simulator's agent policy: what a deterministic "model" does with tools and JSON.

The same request in any of the three API shapes (OpenAI chat, Anthropic Messages, Gemini
generateContent) is read into a :class:`Turn`, and :func:`decide` answers it:

1. Tools offered and the tool choice allows calls (not ``none``):
   - a named choice (OpenAI ``{"type": "function", ...}``, Anthropic ``{"type": "tool"}``,
     Gemini ``ANY`` with one allowed name) calls that tool;
   - when the last message is the user's, it calls the first tool, or the first two (one
     call each) when parallel calls are allowed (OpenAI ``parallel_tool_calls`` not false,
     Anthropic no ``disable_parallel_tool_use``; Gemini always) and two or more tools are
     offered;
   - after tool results, a forced choice (``required``, ``any``, ``ANY``) calls the tools
     not called yet in the conversation (one, or two in parallel), else the last tool
     offered; ``auto`` answers in text.
   The arguments of each call satisfy the tool's JSON schema (:func:`example_value`);
   their free strings are ``sim``, or after tool results the text of rule 2 (so a forced
   answer tool quotes the results too).
2. Otherwise it answers in text: after tool results, ``Tool results: r1 | r2`` quoting
   them; else 8-48 words chosen by a hash of the model and the last prompt.
3. A JSON answer is asked for (OpenAI ``response_format`` ``json_object``/``json_schema``,
   Gemini ``responseMimeType: application/json`` with its ``responseSchema``): the text is
   JSON valid against the schema, its free strings holding the text of rule 2. Anthropic
   has no JSON mode: a runtime forces a tool call there, which rule 1 answers.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

Choice = Literal["auto", "none", "required", "named"]


@dataclass(frozen=True)
class Turn:
    """One request, whatever its API shape, as the policy reads it."""

    prompt: str  # the last text of the conversation (seeds the plain answer)
    tools: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # name, schema
    choice: Choice = "auto"
    named: str | None = None
    parallel: bool = True
    results: list[str] | None = None  # the last message holds tool results: their text
    called: frozenset[str] = frozenset()  # tools called earlier in the conversation
    json_schema: dict[str, Any] | None = None  # a text answer must be JSON valid against it


@dataclass(frozen=True)
class SimCall:
    id: str
    name: str
    arguments: dict[str, Any]

    @property
    def arguments_json(self) -> str:
        return orjson.dumps(self.arguments).decode()


@dataclass(frozen=True)
class Decision:
    text: str | None  # None: the answer is tool calls only
    calls: tuple[SimCall, ...] = ()


def decide(turn: Turn, model: str, plain_text: str, id_prefix: str) -> Decision:
    """What the simulated model answers; ``plain_text`` is its answer when no rule applies."""
    names = [name for name, _ in turn.tools]
    chosen: list[str] = []
    if turn.tools and turn.choice != "none":
        width = 2 if turn.parallel and len(names) >= 2 else 1
        if turn.choice == "named" and turn.named in names:
            chosen = [turn.named]
        elif turn.results is None:
            chosen = names[:width]
        elif turn.choice == "required":
            chosen = [n for n in names if n not in turn.called][:width] or names[-1:]
    results_text = "Tool results: " + " | ".join(turn.results) if turn.results is not None else None
    if chosen:
        schemas = dict(turn.tools)
        seed = hashlib.sha256(f"{model}\n{turn.prompt}\n{turn.results}".encode()).hexdigest()
        strings = results_text or "sim"  # a call after results passes them on
        calls = tuple(
            SimCall(
                f"{id_prefix}{seed[:20]}{i}",
                name,
                _object(example_value(schemas[name], strings)),
            )
            for i, name in enumerate(chosen)
        )
        return Decision(None, calls)
    text = results_text if results_text is not None else plain_text
    if turn.json_schema is not None:
        text = orjson.dumps(example_value(turn.json_schema, text)).decode()
    return Decision(text)


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


# --- minimal values that satisfy a JSON schema ------------------------------------------

_FORMATS = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00Z",
    "email": "sim@example.com",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "uri": "https://example.com/",
    "hostname": "example.com",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "duration": "P1D",
}


def example_value(schema: Any, text: str, root: dict[str, Any] | None = None) -> Any:
    """A small value valid against ``schema`` (JSON Schema, or Gemini's dialect with its
    upper-case types): required properties only, the first enum value or anyOf branch,
    bounds respected, one item per array; free strings hold ``text``."""
    if not isinstance(schema, dict):
        return text
    root = root if root is not None else schema
    if "$ref" in schema:
        target: Any = root
        for key in str(schema["$ref"]).lstrip("#/").split("/"):
            target = target.get(key, {}) if isinstance(target, dict) else {}
        return example_value(target, text, root)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return example_value(schema[key][0], text, root)
    if isinstance(schema.get("allOf"), list):
        merged: dict[str, Any] = {}
        for sub in schema["allOf"]:
            for k, v in sub.items():
                if k in ("properties", "required") and k in merged:
                    merged[k] = {**merged[k], **v} if k == "properties" else merged[k] + v
                else:
                    merged[k] = v
        return example_value(merged, text, root)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((t for t in kind if str(t).lower() != "null"), "null")
    kind = str(kind).lower() if kind else ("object" if "properties" in schema else "string")
    if kind == "object":
        props: dict[str, Any] = schema.get("properties") or {}
        required = [k for k in schema.get("required") or [] if k in props]
        wanted = int(schema.get("minProperties") or 0)
        keys = required + [k for k in props if k not in required][: max(0, wanted - len(required))]
        return {k: example_value(props[k], text, root) for k in keys}
    if kind == "array":
        low = int(schema.get("minItems") or 0)
        high = schema.get("maxItems")
        n = max(low, 1) if high is None else min(max(low, 1), int(high))
        return [example_value(schema.get("items") or {}, text, root) for _ in range(n)]
    if kind in ("integer", "number"):
        return _number(schema, kind == "integer")
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _string(schema, text)


def _number(schema: dict[str, Any], integer: bool) -> int | float:
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    value: float = 0
    if low is not None:
        value = low + (1 if "exclusiveMinimum" in schema and "minimum" not in schema else 0)
    elif high is not None and high < 0:
        value = high - (1 if "exclusiveMaximum" in schema and "maximum" not in schema else 0)
    step = schema.get("multipleOf")
    if step:
        value = -(-value // step) * step
    return int(value) if integer else float(value)


def _string(schema: dict[str, Any], text: str) -> str:
    value = _FORMATS.get(str(schema.get("format")), text)
    pattern = schema.get("pattern")
    if isinstance(pattern, str) and not re.search(pattern, value):
        # A few candidates; a pattern none of them meets gets the text (the simulator's
        # schemas are the tests' own).
        value = next((c for c in ("a", "A", "0", "a1", "sim") if re.search(pattern, c)), value)
    low, high = int(schema.get("minLength") or 0), schema.get("maxLength")
    value = value.ljust(low, "x")
    return value[: int(high)] if high is not None else value


# --- reading the three request shapes ---------------------------------------------------


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p
        )
    return ""


def openai_turn(body: dict[str, Any], prompt: str) -> Turn:
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    tools = [
        (str(t["function"].get("name")), t["function"].get("parameters") or {})
        for t in body.get("tools") or []
        if isinstance(t, dict) and isinstance(t.get("function"), dict)
    ]
    raw = body.get("tool_choice")
    choice: Choice = "auto"
    named = None
    if isinstance(raw, dict):
        choice, named = "named", str((raw.get("function") or {}).get("name"))
    elif raw in ("none", "required"):
        choice = raw
    results: list[str] = []
    for m in reversed(messages):  # the tool messages that end the conversation
        if m.get("role") != "tool":
            break
        results.insert(0, _text(m.get("content")))
    called = {
        str((c.get("function") or {}).get("name"))
        for m in messages
        for c in m.get("tool_calls") or []
        if isinstance(c, dict)
    }
    fmt = body.get("response_format") or {}
    schema: dict[str, Any] | None = None
    if fmt.get("type") == "json_object":
        schema = {"type": "object"}
    elif fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema") or {"type": "object"}
    return Turn(
        prompt,
        tools,
        choice,
        named,
        body.get("parallel_tool_calls") is not False,
        results or None,
        frozenset(called),
        schema,
    )


def anthropic_turn(body: dict[str, Any], prompt: str) -> Turn:
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    tools = [
        (str(t.get("name")), t.get("input_schema") or {})
        for t in body.get("tools") or []
        if isinstance(t, dict)
    ]
    raw = body.get("tool_choice") or {}
    kind = raw.get("type", "auto")
    choice: Choice = "auto"
    if kind in ("any", "tool", "none"):
        choice = "required" if kind == "any" else "named" if kind == "tool" else "none"
    results = None
    last = messages[-1] if messages else {}
    if last.get("role") == "user" and isinstance(last.get("content"), list):
        found = [
            _text(b.get("content"))
            for b in last["content"]
            if isinstance(b, dict) and b.get("type") == "tool_result"
        ]
        results = found or None
    called = {
        str(b.get("name"))
        for m in messages
        if m.get("role") == "assistant" and isinstance(m.get("content"), list)
        for b in m["content"]
        if isinstance(b, dict) and b.get("type") == "tool_use"
    }
    return Turn(
        prompt,
        tools,
        choice,
        raw.get("name"),
        not raw.get("disable_parallel_tool_use"),
        results,
        frozenset(called),
    )


def gemini_turn(body: dict[str, Any], prompt: str) -> Turn:
    contents = [c for c in body.get("contents") or [] if isinstance(c, dict)]
    tools = [
        (str(d.get("name")), d.get("parameters") or {})
        for t in body.get("tools") or []
        if isinstance(t, dict)
        for d in t.get("functionDeclarations") or []
    ]
    config = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
    mode = config.get("mode", "AUTO")
    allowed = config.get("allowedFunctionNames") or []
    choice: Choice = "auto"
    named = None
    if mode == "NONE":
        choice = "none"
    elif mode == "ANY" and len(allowed) == 1:
        choice, named = "named", str(allowed[0])
    elif mode == "ANY":
        choice = "required"
    parts = (contents[-1].get("parts") or []) if contents else []
    responses = [
        p["functionResponse"] for p in parts if isinstance(p, dict) and "functionResponse" in p
    ]
    results = [orjson.dumps(r.get("response")).decode() for r in responses] or None
    called = {
        str(p["functionCall"].get("name"))
        for c in contents
        if c.get("role") == "model"
        for p in c.get("parts") or []
        if isinstance(p, dict) and isinstance(p.get("functionCall"), dict)
    }
    generation = body.get("generationConfig") or {}
    schema = None
    if generation.get("responseMimeType") == "application/json":
        schema = generation.get("responseSchema") or {"type": "object"}
    return Turn(prompt, tools, choice, named, True, results, frozenset(called), schema)
