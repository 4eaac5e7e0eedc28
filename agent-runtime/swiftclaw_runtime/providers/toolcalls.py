"""What the Anthropic and Gemini translations share about tools and JSON answers.

OpenAI's ``tools``, ``tool_choice`` and ``parallel_tool_calls`` become a :class:`ToolPlan`,
which each translation writes in its provider's words. A JSON ``response_format`` that a
provider cannot take natively is served by a *forced answer tool*: the runtime offers one
more function, :data:`ANSWER_TOOL`, whose parameters are the requested schema, and makes
the model call a tool; the input of that call comes back as the message content, as OpenAI
returns a structured answer. With tools of the client's own, the model must call one of
them or the answer tool (``tool_choice`` ``auto`` becomes ``required``); with a named or
``required`` choice the turn is a tool call anyway and no answer tool is added.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

from ..schemas import CacheMark, ChatRequest, ContentPart, JsonSchemaFormat, NamedToolChoice
from .base import Unsupported

ANSWER_TOOL = "swiftclaw_json_answer"
EMPTY_OBJECT: dict[str, Any] = {"type": "object", "properties": {}}

ChoiceKind = Literal["auto", "none", "required", "named"]


@dataclass(frozen=True)
class FunctionDecl:
    """A function the model may call; ``param`` locates its schema in the request."""

    name: str
    description: str | None
    parameters: dict[str, Any]
    param: str
    cache_control: CacheMark | None = None  # Anthropic's breakpoint on the tool


@dataclass(frozen=True)
class ToolPlan:
    functions: list[FunctionDecl]
    choice: ChoiceKind
    named: str | None  # the function a ``named`` choice forces
    parallel: bool  # False: at most one call per turn
    answer_tool: bool  # the forced answer tool is among ``functions``


def plan_tools(request: ChatRequest, answer_by_tool: bool) -> ToolPlan | None:
    """The tools of ``request`` as the translations see them (None: no tools at all).
    ``answer_by_tool``: the provider has no native JSON mode, so a JSON
    ``response_format`` is served by the forced answer tool."""
    functions = [
        FunctionDecl(
            t.function.name,
            t.function.description,
            t.function.parameters if t.function.parameters is not None else EMPTY_OBJECT,
            f"tools[{i}].function.parameters",
            t.cache_control,
        )
        for i, t in enumerate(request.tools or [])
    ]
    choice = request.tool_choice
    kind: ChoiceKind
    named: str | None = None
    if isinstance(choice, NamedToolChoice):
        kind, named = "named", choice.function.name
    else:
        kind = choice or "auto"
    fmt = request.json_answer
    answer = answer_by_tool and fmt is not None and kind in ("auto", "none")
    if answer:
        if any(f.name == ANSWER_TOOL for f in functions):
            raise Unsupported(
                f"the tool name {ANSWER_TOOL!r} is reserved for JSON answers on this provider",
                "tools",
            )
        functions.append(answer_function(request))
        if kind == "auto" and len(functions) > 1:
            kind = "required"
        else:
            kind, named = "named", ANSWER_TOOL
    if not functions:
        return None
    return ToolPlan(functions, kind, named, request.parallel_tool_calls is not False, answer)


def answer_function(request: ChatRequest) -> FunctionDecl:
    """The forced answer tool for the request's JSON ``response_format``."""
    fmt = request.json_answer
    description = "Give your final answer by calling this function: its input is the answer."
    schema: dict[str, Any] = {"type": "object"}
    param = "response_format"
    if isinstance(fmt, JsonSchemaFormat):
        spec = fmt.json_schema
        param = "response_format.json_schema.schema"
        description += f" The answer is a {spec.name}" + (
            f": {spec.description}" if spec.description else "."
        )
        if spec.schema_ is not None:
            schema = spec.schema_
        if schema.get("type", "object") != "object":
            raise Unsupported(
                "a JSON answer through a tool must be an object ('type': 'object' at the root)",
                param + ".type",
            )
    return FunctionDecl(ANSWER_TOOL, description, schema, param)


def arguments_object(arguments: str, param: str) -> dict[str, Any]:
    """A call's JSON ``arguments`` as the object Anthropic and Gemini want back."""
    if not arguments.strip():
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise Unsupported("the arguments of this tool call are not a JSON object", param)
    return value


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def call_names(request: ChatRequest) -> dict[str, str]:
    """Tool call id -> function name, over the assistant turns of the conversation."""
    return {call.id: call.function.name for m in request.messages for call in m.tool_calls or []}


def tool_result_text(content: Any) -> str:
    """A ``tool`` message's content as text (a string, or text parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.text or "" for p in content)


def content_text(content: str | list[ContentPart] | None, param: str, provider: str) -> str:
    """A message's text for a provider that gets only text from the runtime: a part of
    another type (an image) is refused rather than dropped."""
    if content is None or isinstance(content, str):
        return content or ""
    for j, part in enumerate(content):
        if part.type != "text":
            raise Unsupported(
                f"content parts of type {part.type!r} are not translated for {provider}",
                f"{param}[{j}]",
            )
    return "".join(p.text or "" for p in content)
