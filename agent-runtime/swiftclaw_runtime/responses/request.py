"""A Responses API request as one chat request, for the subset agent SDKs use.

Translated: ``input`` (a string, or items: messages with ``input_text``/``output_text``/
``input_image`` parts, ``function_call``, ``function_call_output``), ``instructions`` (a
system message first), function ``tools`` and ``tool_choice``, ``parallel_tool_calls``,
``text.format`` (``response_format``), ``max_output_tokens``, ``temperature``, ``top_p``,
``reasoning.effort`` (``reasoning_effort``), ``user``, ``safety_identifier``,
``service_tier``, ``prompt_cache_key``. The runtime's own: ``previous_response_id``,
``store``, ``metadata`` (echoed), ``stream``. Anything else that asks for something (hosted
tools, ``include`` items, ``truncation: auto``, ``background``, ...) is a 400
``unsupported_parameter`` naming it: never accepted and ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import ApiError, invalid_request
from ..providers.shapes import tool_call

# Forwarded to the chat request under the same name.
FORWARDED = (
    "temperature",
    "top_p",
    "user",
    "safety_identifier",
    "service_tier",
    "prompt_cache_key",
)
OWN = frozenset(
    {
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "text",
        "max_output_tokens",
        "reasoning",
        "previous_response_id",
        "store",
        "metadata",
        "stream",
        "include",
        "truncation",
        *FORWARDED,
    }
)


def unsupported(param: str, what: str) -> ApiError:
    return invalid_request(
        f"This runtime's Responses API does not serve {what}.", param, "unsupported_parameter"
    )


def _bad(param: str, why: str) -> ApiError:
    return invalid_request(f"Invalid value for '{param}': {why}.", param, "invalid_value")


@dataclass
class ResponsesCall:
    """What a Responses request asks for, in chat terms."""

    model: str
    stream: bool
    store: bool
    previous_response_id: str | None
    instructions: str | None
    messages: list[dict[str, Any]]  # the new input, as chat messages
    chat: dict[str, Any]  # the chat parameters other than model, messages and stream
    echo: dict[str, Any] = field(default_factory=dict)  # fields the response object repeats


def _neutral(value: Any) -> bool:
    return value is None or value in ({}, [], False, 0)


def parse_responses_request(payload: Any) -> ResponsesCall:
    if not isinstance(payload, dict):
        raise invalid_request("The request body must be a JSON object.", code="invalid_body")
    for k, v in payload.items():
        if k not in OWN and not _neutral(v):
            raise unsupported(k, f"'{k}'")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise invalid_request(
            "Missing required parameter: 'model'.", "model", "missing_required_parameter"
        )
    for name in ("stream", "store", "parallel_tool_calls"):
        if payload.get(name) is not None and not isinstance(payload[name], bool):
            raise _bad(name, "must be a boolean")
    previous = payload.get("previous_response_id")
    if previous is not None and (not isinstance(previous, str) or not previous):
        raise _bad("previous_response_id", "must be a response id")
    instructions = payload.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise _bad("instructions", "must be a string")
    metadata = payload.get("metadata")
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
    ):
        raise _bad("metadata", "must be an object of strings")
    _check_extras(payload)
    chat: dict[str, Any] = {k: payload[k] for k in FORWARDED if payload.get(k) is not None}
    if payload.get("max_output_tokens") is not None:
        chat["max_completion_tokens"] = payload["max_output_tokens"]
    effort = (payload.get("reasoning") or {}).get("effort")
    if effort is not None:
        chat["reasoning_effort"] = effort
    if payload.get("parallel_tool_calls") is not None:
        chat["parallel_tool_calls"] = payload["parallel_tool_calls"]
    if payload.get("tools"):
        chat["tools"] = _tools(payload["tools"])
    if payload.get("tool_choice") is not None:
        chat["tool_choice"] = _tool_choice(payload["tool_choice"])
    fmt = _format(payload.get("text"))
    if fmt is not None:
        chat["response_format"] = fmt
    if "input" not in payload:
        raise invalid_request(
            "Missing required parameter: 'input'.", "input", "missing_required_parameter"
        )
    echo = {
        "instructions": instructions,
        "metadata": metadata or {},
        "parallel_tool_calls": payload.get("parallel_tool_calls", True),
        "temperature": payload.get("temperature"),
        "top_p": payload.get("top_p"),
        "max_output_tokens": payload.get("max_output_tokens"),
        "tool_choice": payload.get("tool_choice", "auto"),
        "tools": payload.get("tools") or [],
        "text": payload.get("text") or {"format": {"type": "text"}},
        "previous_response_id": previous,
        "user": payload.get("user"),
    }
    return ResponsesCall(
        model=model,
        stream=bool(payload.get("stream")),
        store=payload.get("store") is not False,
        previous_response_id=previous,
        instructions=instructions,
        messages=input_messages(payload["input"]),
        chat=chat,
        echo=echo,
    )


def _check_extras(payload: dict[str, Any]) -> None:
    """The parameters the runtime takes only at values that ask for nothing."""
    include = payload.get("include")
    if include:
        raise unsupported("include", f"'include' items ({include[0]!r})")
    if payload.get("truncation") not in (None, "disabled"):
        raise unsupported("truncation", "'truncation' other than 'disabled'")
    reasoning = payload.get("reasoning")
    if reasoning is not None and not isinstance(reasoning, dict):
        raise _bad("reasoning", "must be an object")
    for k, v in (reasoning or {}).items():
        if k != "effort" and v is not None:
            raise unsupported(f"reasoning.{k}", f"'reasoning.{k}'")
    text = payload.get("text")
    if text is not None and not isinstance(text, dict):
        raise _bad("text", "must be an object")
    if (text or {}).get("verbosity") not in (None, "medium"):
        raise unsupported("text.verbosity", "'text.verbosity' other than 'medium'")


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _bad("tools", "must be a list")
    out = []
    for i, t in enumerate(tools):
        if not isinstance(t, dict):
            raise _bad(f"tools[{i}]", "must be an object")
        if t.get("type") != "function":
            raise unsupported(f"tools[{i}].type", f"tools of type {t.get('type')!r}")
        function = {k: t[k] for k in ("name", "description", "parameters", "strict") if k in t}
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    raise unsupported("tool_choice", f"the tool choice {choice!r}")


def _format(text: Any) -> dict[str, Any] | None:
    fmt = (text or {}).get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise _bad("text.format", "must be an object")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        spec = {k: fmt[k] for k in ("name", "description", "schema", "strict") if k in fmt}
        return {"type": "json_schema", "json_schema": spec}
    raise _bad("text.format.type", "must be one of 'text', 'json_object', 'json_schema'")


# --- input items -> chat messages --------------------------------------------------------


def input_messages(value: Any) -> list[dict[str, Any]]:
    """The input as chat messages: consecutive function calls (and the assistant text
    before them) make one assistant message, as a chat model would have written them."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise _bad("input", "must be a string or a non-empty list of items")
    messages: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise _bad(where, "must be an object")
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            messages.append(_message(item, where))
        elif kind == "function_call":
            call = tool_call(
                _string(item, "call_id", where),
                _string(item, "name", where),
                _string(item, "arguments", where, empty=True),
            )
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": _string(item, "call_id", where),
                    "content": _output_text(item.get("output"), f"{where}.output"),
                }
            )
        else:
            raise unsupported(f"{where}.type", f"input items of type {kind!r}")
    return messages


def _string(item: dict[str, Any], key: str, where: str, empty: bool = False) -> str:
    value = item.get(key)
    if not isinstance(value, str) or (not value and not empty):
        raise _bad(f"{where}.{key}", "must be a non-empty string")
    return value


def _message(item: dict[str, Any], where: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in ("user", "system", "developer", "assistant"):
        raise _bad(f"{where}.role", "must be one of 'user', 'system', 'developer', 'assistant'")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise _bad(f"{where}.content", "must be a string or a list of parts")
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text"):
            parts.append({"type": "text", "text": _string(part, "text", at, empty=True)})
        elif kind == "refusal":
            parts.append({"type": "text", "text": _string(part, "refusal", at, empty=True)})
        elif kind == "input_image" and role == "user":
            if part.get("image_url") is None:
                raise unsupported(f"{at}.file_id", "images by file id")
            image: dict[str, Any] = {"url": _string(part, "image_url", at)}
            if part.get("detail") is not None:
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        else:
            raise unsupported(f"{at}.type", f"content parts of type {kind!r} in {role} messages")
    if role == "assistant":  # chat takes an assistant's content as text
        return {"role": role, "content": "".join(p["text"] for p in parts)}
    return {"role": role, "content": parts}


def _output_text(output: Any, where: str) -> str:
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        texts = []
        for j, part in enumerate(output):
            if not isinstance(part, dict) or part.get("type") != "input_text":
                raise unsupported(f"{where}[{j}]", "tool outputs other than text")
            texts.append(_string(part, "text", f"{where}[{j}]", empty=True))
        return "".join(texts)
    raise _bad(where, "must be a string or a list of input_text parts")


def chat_param(param: str | None) -> str | None:
    """A chat request's parameter as the Responses request named it (for 400s that the
    chat validation raises on the translated request)."""
    if param is None:
        return None
    for chat, responses in (
        ("response_format.json_schema.", "text.format."),
        ("response_format", "text.format"),
        ("max_completion_tokens", "max_output_tokens"),
        ("reasoning_effort", "reasoning.effort"),
        ("messages", "input"),
    ):
        if param.startswith(chat):
            return responses + param[len(chat) :]
    if param.startswith("tools[") and ".function." in param:
        return param.replace(".function.", ".", 1)
    return param
