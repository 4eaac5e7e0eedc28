"""A Messages API request as one chat request: the inverse of the upstream translation
(:mod:`..providers.translate_anthropic`), whose tables it reads.

``system`` (a string, or text blocks) becomes the first system message; each turn's
blocks become chat messages: ``text`` and ``image`` blocks content parts (an image as a
data URI or its URL), an assistant's ``tool_use`` blocks its ``tool_calls`` (ids kept)
and its ``thinking``/``redacted_thinking`` blocks its ``thinking_blocks``, a user's
``tool_result`` blocks ``tool`` messages before the rest of the turn (Anthropic wants
them first in the turn, so the order is the same either way). ``tools`` become functions,
``tool_choice`` ``auto``/``any``/``tool``/``none`` becomes ``auto``/``required``/named/
``none`` (``disable_parallel_tool_use``: ``parallel_tool_calls: false``),
``stop_sequences`` ``stop``, ``metadata.user_id`` ``safety_identifier`` (both are the
provider's abuse-tracking id; the runtime's identity is the key's);
``output_config.effort`` ``reasoning_effort``; a ``system`` message within the
conversation a system message (Anthropic's and Gemini's translations move its text into
the system prompt); ``max_tokens``, ``temperature``, ``top_p``, ``stream`` keep their
names, and ``cache_control``, ``is_error``, ``thinking``, ``context_management``,
``top_k`` and the ``anthropic-beta`` header travel as the chat request's extensions
(:mod:`..providers.extensions`). Anything else (server tools,
documents, MCP servers, containers, ...) is a 400 ``unsupported_parameter`` naming it:
never accepted and ignored. The bounds are the chat request's (it is validated as one),
with its errors renamed to this request's fields (:meth:`MessagesCall.param`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import ApiError, invalid_request
from ..providers.toolcalls import dumps
from ..providers.translate_anthropic import CHOICES, SERVICE_TIERS

# Messages request fields and what they become.
RENAMED = {"stop_sequences": "stop"}
SAME = (
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "stream",
    "thinking",
    "context_management",
)
OWN = frozenset(
    {"model", "messages", "system", "tools", "tool_choice", "metadata", "service_tier"}
    | {"output_config"}
    | set(RENAMED)
    | set(SAME)
)
# What count_tokens takes (what the count depends on, and what a request names with it).
COUNTED = frozenset(
    {"model", "messages", "system", "tools", "tool_choice", "thinking", "context_management"}
    | {"output_config"}
)
TEXT_FIELDS = frozenset({"type", "text", "cache_control", "citations"})
_CHOSEN = {v: k for k, v in CHOICES.items()}  # Anthropic's choice -> chat's
_TIERS = {v: k for k, v in SERVICE_TIERS.items()}
_SEGMENT = re.compile(r"[.\[]")


def unsupported(param: str, what: str) -> ApiError:
    return invalid_request(
        f"This runtime's Messages API does not serve {what} ('{param}').",
        param,
        "unsupported_parameter",
    )


def _bad(param: str, why: str) -> ApiError:
    return invalid_request(f"Invalid value for '{param}': {why}.", param, "invalid_value")


def _neutral(value: Any) -> bool:
    return value is None or value in ({}, [])


@dataclass
class MessagesCall:
    """A Messages request in chat terms: the chat request's JSON, and where each chat
    parameter came from (to name it in errors)."""

    model: str
    stream: bool
    stop_sequences: list[str] | None
    payload: dict[str, Any]
    where: dict[str, str] = field(default_factory=dict)

    def param(self, chat: str | None) -> str | None:
        """This request's name for a parameter of the chat request (its longest prefix
        that came from somewhere, with the rest of the path)."""
        if chat is None:
            return None
        cuts = [m.start() for m in _SEGMENT.finditer(chat)]
        for end in [len(chat), *reversed(cuts)]:
            found = self.where.get(chat[:end])
            if found is not None:
                return found + chat[end:]
        return chat

    def rename(self, err: ApiError) -> ApiError:
        """A chat validation error in this request's words."""
        if err.param is not None:
            named = self.param(err.param)
            if named is not None and named != err.param:
                for old, new in (
                    (f"'{err.param}'", f"'{named}'"),
                    (f"({err.param})", f"({named})"),
                ):
                    err.message = err.message.replace(old, new)
                err.param = named
        return err


def parse_messages_request(
    body: Any, betas: list[str] | None = None, counting: bool = False
) -> MessagesCall:
    """Translate (and check the shape of) a Messages request; ``counting``: a count_tokens
    request (no ``max_tokens``, nothing about the answer)."""
    if not isinstance(body, dict):
        raise invalid_request("The request body must be a JSON object.", code="invalid_body")
    allowed = COUNTED if counting else OWN
    for k, v in body.items():
        if k not in allowed and not _neutral(v):
            raise unsupported(k, f"'{k}'" + (" in count_tokens" if k in OWN else ""))
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid_request(
            "Missing required parameter: 'model'.", "model", "missing_required_parameter"
        )
    if not counting and body.get("max_tokens") is None:
        raise invalid_request(
            "Missing required parameter: 'max_tokens'.", "max_tokens", "missing_required_parameter"
        )
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad("stream", "must be a boolean")
    call = MessagesCall(model, stream, None, {"model": model, "stream": stream})
    out = call.payload
    call.where.update({v: k for k, v in RENAMED.items()})
    for name in SAME:
        if body.get(name) is not None:
            out[name] = body[name]
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise _bad("stop_sequences", "must be a list of strings")
        out["stop"], call.stop_sequences = stops, stops
    _metadata(body.get("metadata"), out, call.where)
    _output_config(body.get("output_config"), out, call.where)
    tier = body.get("service_tier")
    if tier is not None:
        if tier not in _TIERS:
            raise _bad("service_tier", f"must be one of {', '.join(map(repr, _TIERS))}")
        out["service_tier"] = _TIERS[tier]
    if betas:
        out["anthropic_beta"] = betas
        call.where["anthropic_beta"] = "anthropic-beta"
    messages = _system(body.get("system"), call.where)
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise invalid_request(
            "Missing required parameter: 'messages' (a non-empty list).",
            "messages",
            "missing_required_parameter",
        )
    for i, m in enumerate(raw):
        messages += _turn(i, m, len(messages), call.where)
    out["messages"] = messages
    if body.get("tools") is not None:
        out["tools"] = _tools(body["tools"], call.where)
    _tool_choice(body.get("tool_choice"), out, call.where)
    return call


def _metadata(metadata: Any, out: dict[str, Any], where: dict[str, str]) -> None:
    if metadata is None:
        return
    if not isinstance(metadata, dict):
        raise _bad("metadata", "must be an object")
    for k, v in metadata.items():
        if k != "user_id" and not _neutral(v):
            raise unsupported(f"metadata.{k}", f"'metadata.{k}'")
    user = metadata.get("user_id")
    if user is not None:
        if not isinstance(user, str):
            raise _bad("metadata.user_id", "must be a string")
        out["safety_identifier"] = user  # (the provider's abuse tracking, not an identity)
        where["safety_identifier"] = "metadata.user_id"


def _output_config(config: Any, out: dict[str, Any], where: dict[str, str]) -> None:
    """``output_config.effort`` is chat's ``reasoning_effort``."""
    if config is None:
        return
    if not isinstance(config, dict):
        raise _bad("output_config", "must be an object")
    for k, v in config.items():
        if k != "effort" and not _neutral(v):
            raise unsupported(f"output_config.{k}", f"'output_config.{k}'")
    if config.get("effort") is not None:
        out["reasoning_effort"] = config["effort"]
        where["reasoning_effort"] = "output_config.effort"


def _text_part(block: dict[str, Any], at: str) -> dict[str, Any]:
    for k, v in block.items():
        if k not in TEXT_FIELDS and not _neutral(v):
            raise unsupported(f"{at}.{k}", f"'{k}' on text blocks")
    if not _neutral(block.get("citations")):
        raise unsupported(f"{at}.citations", "citations")
    text = block.get("text")
    if not isinstance(text, str):
        raise _bad(f"{at}.text", "must be a string")
    part: dict[str, Any] = {"type": "text", "text": text}
    if block.get("cache_control") is not None:
        part["cache_control"] = block["cache_control"]
    return part


def _image_part(block: dict[str, Any], at: str) -> dict[str, Any]:
    source = block.get("source")
    if not isinstance(source, dict):
        raise _bad(f"{at}.source", "must be an object")
    kind = source.get("type")
    if kind == "base64":
        media, data = source.get("media_type"), source.get("data")
        if not isinstance(media, str) or not isinstance(data, str):
            raise _bad(f"{at}.source", "a base64 source needs 'media_type' and 'data' strings")
        url = f"data:{media};base64,{data}"
    elif kind == "url":
        link = source.get("url")
        if not isinstance(link, str):
            raise _bad(f"{at}.source.url", "must be a string")
        url = link
    else:
        raise unsupported(f"{at}.source.type", f"image sources of type {kind!r}")
    part: dict[str, Any] = {"type": "image_url", "image_url": {"url": url}}
    if block.get("cache_control") is not None:
        part["cache_control"] = block["cache_control"]
    return part


def _system(system: Any, where: dict[str, str]) -> list[dict[str, Any]]:
    if system is None or system == "" or system == []:
        return []
    where["messages[0].content"] = "system"
    if isinstance(system, str):
        return [{"role": "system", "content": system}]
    if not isinstance(system, list):
        raise _bad("system", "must be a string or a list of text blocks")
    parts = []
    for j, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise _bad(f"system[{j}]", "must be a text block")
        parts.append(_text_part(block, f"system[{j}]"))
        where[f"messages[0].content[{j}]"] = f"system[{j}]"
    return [{"role": "system", "content": parts}]


def _blocks(content: Any, at: str) -> list[tuple[int, dict[str, Any]]]:
    """A turn's content as (index, block) pairs (a string is one text block)."""
    if isinstance(content, str):
        return [(-1, {"type": "text", "text": content})]
    if not isinstance(content, list):
        raise _bad(at, "must be a string or a list of content blocks")
    out = []
    for j, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise _bad(f"{at}[{j}]", "must be a content block (an object with a 'type')")
        out.append((j, block))
    return out


def _turn(i: int, m: Any, first: int, where: dict[str, str]) -> list[dict[str, Any]]:
    """Turn ``i`` as chat messages, the first of which will be at index ``first``."""
    at = f"messages[{i}]"
    if not isinstance(m, dict):
        raise _bad(at, "must be an object with 'role' and 'content'")
    for k, v in m.items():
        if k not in ("role", "content") and not _neutral(v):
            raise unsupported(f"{at}.{k}", f"'{k}' on messages")
    role = m.get("role")
    if role not in ("user", "assistant", "system"):
        raise _bad(f"{at}.role", "must be 'user', 'assistant' or 'system'")
    blocks = _blocks(m.get("content"), f"{at}.content")
    if role == "system":  # (a beta: a system message within the conversation)
        k = f"messages[{first}]"
        where.update({k: at, f"{k}.content": f"{at}.content"})
        parts: list[dict[str, Any]] = []
        for j, block in blocks:
            here = _where_block(j, at)
            if block["type"] != "text":
                raise _bad(f"{here}.type", "a system message holds text blocks")
            where[f"{k}.content[{len(parts)}]"] = here
            parts.append(_text_part(block, here))
        return [{"role": "system", "content": parts}]
    if role == "assistant":
        return [_assistant(blocks, at, first, where)]
    return _user(blocks, at, first, where)


def _where_block(j: int, at: str) -> str:
    return f"{at}.content" if j < 0 else f"{at}.content[{j}]"


def _user(
    blocks: list[tuple[int, dict[str, Any]]], at: str, first: int, where: dict[str, str]
) -> list[dict[str, Any]]:
    tools: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    part_at: list[str] = []
    for j, block in blocks:
        here = _where_block(j, at)
        kind = block["type"]
        if kind == "tool_result":
            k = f"messages[{first + len(tools)}]"
            where.update(
                {
                    k: here,
                    f"{k}.content": f"{here}.content",
                    f"{k}.tool_call_id": f"{here}.tool_use_id",
                }
            )
            tools.append(_tool_result(block, here))
        elif kind == "text":
            parts.append(_text_part(block, here))
            part_at.append(here)
        elif kind == "image":
            parts.append(_image_part(block, here))
            part_at.append(here)
        else:
            raise unsupported(f"{here}.type", f"content blocks of type {kind!r} in user turns")
    if not parts and tools:
        return tools
    k = f"messages[{first + len(tools)}]"
    where[k] = at
    where[f"{k}.content"] = f"{at}.content"
    for p, here in enumerate(part_at):
        where[f"{k}.content[{p}]"] = here
        where[f"{k}.content[{p}].image_url.url"] = f"{here}.source"
    return [*tools, {"role": "user", "content": parts}]


def _tool_result(block: dict[str, Any], here: str) -> dict[str, Any]:
    for k, v in block.items():
        if k not in ("type", "tool_use_id", "content", "is_error", "cache_control") and not (
            _neutral(v)
        ):
            raise unsupported(f"{here}.{k}", f"'{k}' on tool results")
    use_id = block.get("tool_use_id")
    if not isinstance(use_id, str):
        raise _bad(f"{here}.tool_use_id", "must be a string")
    content = block.get("content")
    text = ""
    inner_mark: Any = None  # a breakpoint on the last text block: the result's own
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        pieces = []
        for n, inner in enumerate(content):
            if not isinstance(inner, dict) or inner.get("type") != "text":
                kind = inner.get("type") if isinstance(inner, dict) else None
                raise unsupported(
                    f"{here}.content[{n}]", f"blocks of type {kind!r} in tool results"
                )
            part = _text_part(inner, f"{here}.content[{n}]")
            if "cache_control" in part and n < len(content) - 1:
                # (the result's text goes upstream as one piece: a breakpoint inside it
                # has no place to stay)
                raise unsupported(
                    f"{here}.content[{n}].cache_control",
                    "a breakpoint before the last block of a tool result",
                )
            inner_mark = part.get("cache_control", inner_mark)
            pieces.append(part["text"])
        text = "".join(pieces)
    elif content is not None:
        raise _bad(f"{here}.content", "must be a string or a list of text blocks")
    message: dict[str, Any] = {"role": "tool", "tool_call_id": use_id, "content": text}
    if block.get("is_error") is not None:
        message["is_error"] = block["is_error"]
    mark = block.get("cache_control")
    if mark is None:
        mark = inner_mark  # the same end of the cached prefix: the result's last block
    if mark is not None:
        message["cache_control"] = mark
    return message


def _assistant(
    blocks: list[tuple[int, dict[str, Any]]], at: str, first: int, where: dict[str, str]
) -> dict[str, Any]:
    k = f"messages[{first}]"
    where[k] = at
    for chat in ("content", "tool_calls", "thinking_blocks"):
        where[f"{k}.{chat}"] = f"{at}.content"
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    thinking: list[dict[str, Any]] = []
    for j, block in blocks:
        here = _where_block(j, at)
        kind = block["type"]
        if kind == "text":
            where[f"{k}.content[{len(parts)}]"] = here
            parts.append(_text_part(block, here))
        elif kind == "tool_use":
            calls.append(_tool_use(block, here, f"{k}.tool_calls[{len(calls)}]", where))
        elif kind in ("thinking", "redacted_thinking"):
            where[f"{k}.thinking_blocks[{len(thinking)}]"] = here
            thinking.append(block)
        else:
            raise unsupported(f"{here}.type", f"content blocks of type {kind!r} in assistant turns")
    message: dict[str, Any] = {"role": "assistant"}
    if any("cache_control" in p for p in parts):
        message["content"] = parts
    else:
        message["content"] = "".join(p["text"] for p in parts) if parts else None
    if calls:
        message["tool_calls"] = calls
    if thinking:
        message["thinking_blocks"] = thinking
    return message


def _tool_use(block: dict[str, Any], here: str, chat: str, where: dict[str, str]) -> dict[str, Any]:
    for k, v in block.items():
        if k not in ("type", "id", "name", "input", "cache_control") and not _neutral(v):
            raise unsupported(f"{here}.{k}", f"'{k}' on tool_use blocks")
    arguments = block.get("input", {})
    if not isinstance(arguments, dict):
        raise _bad(f"{here}.input", "must be an object")
    where.update(
        {
            chat: here,
            f"{chat}.function.name": f"{here}.name",
            f"{chat}.function.arguments": f"{here}.input",
        }
    )
    call: dict[str, Any] = {
        "id": block.get("id"),
        "type": "function",
        "function": {"name": block.get("name"), "arguments": dumps(arguments)},
    }
    if block.get("cache_control") is not None:
        call["cache_control"] = block["cache_control"]
    return call


def _tools(tools: Any, where: dict[str, str]) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _bad("tools", "must be a list")
    out = []
    for i, t in enumerate(tools):
        at = f"tools[{i}]"
        if not isinstance(t, dict):
            raise _bad(at, "must be an object")
        kind = t.get("type")
        if kind not in (None, "custom"):
            raise unsupported(f"{at}.type", f"Anthropic's server tools (type {kind!r})")
        for k, v in t.items():
            if k not in ("type", "name", "description", "input_schema", "cache_control") and not (
                _neutral(v)
            ):
                raise unsupported(f"{at}.{k}", f"'{k}' on tools")
        function: dict[str, Any] = {"name": t.get("name")}
        if t.get("description") is not None:
            function["description"] = t["description"]
        if "input_schema" not in t:
            raise invalid_request(
                f"Missing required parameter: '{at}.input_schema'.",
                f"{at}.input_schema",
                "missing_required_parameter",
            )
        function["parameters"] = t["input_schema"]
        tool: dict[str, Any] = {"type": "function", "function": function}
        if t.get("cache_control") is not None:
            tool["cache_control"] = t["cache_control"]
        where.update(
            {
                at: at,
                f"{at}.function": at,
                f"{at}.function.parameters": f"{at}.input_schema",
            }
        )
        out.append(tool)
    return out


def _tool_choice(choice: Any, out: dict[str, Any], where: dict[str, str]) -> None:
    if choice is None:
        return
    if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
        raise _bad("tool_choice", "must be an object of 'type' auto, any, tool or none")
    for k, v in choice.items():
        if k not in ("type", "name", "disable_parallel_tool_use") and not _neutral(v):
            raise unsupported(f"tool_choice.{k}", f"'tool_choice.{k}'")
    kind = choice["type"]
    if kind == "tool":
        name = choice.get("name")
        if not isinstance(name, str):
            raise _bad("tool_choice.name", "a 'tool' choice names the tool")
        out["tool_choice"] = {"type": "function", "function": {"name": name}}
    else:
        out["tool_choice"] = _CHOSEN[kind]
    where["tool_choice"] = "tool_choice"
    disable = choice.get("disable_parallel_tool_use")
    if disable is not None:
        if not isinstance(disable, bool):
            raise _bad("tool_choice.disable_parallel_tool_use", "must be a boolean")
        if disable:
            out["parallel_tool_calls"] = False
            where["parallel_tool_calls"] = "tool_choice.disable_parallel_tool_use"
