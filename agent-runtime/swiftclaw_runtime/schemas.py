"""The OpenAI chat-completions request as the runtime accepts it.

Validation is strict (no silent string-to-number coercion, as OpenAI itself) and every
error names its parameter. The shapes of ``tools``, ``tool_choice`` and
``response_format`` are checked here, so that a malformed one gets a 400 from the runtime
instead of travelling upstream, and so are image parts (:mod:`.images`). Sampling and
account parameters (``seed``, ``logit_bias``, ``user``, ...) are typed here and forwarded
to OpenAI-compatible providers as sent; the translations for other APIs either express
each one or refuse it (:mod:`.providers.params`), never drop it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from .config import format_path
from .errors import ApiError, invalid_request
from .images import Image, parse_image

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class CacheMark(BaseModel):
    """Anthropic's prompt-cache breakpoint (``cache_control``) on a content part, a tool, a
    tool call or a tool message: sent on to Anthropic models where it was put, dropped for
    Gemini and OpenAI (which cache prefixes by themselves), forwarded as sent to
    OpenAI-compatible servers (some gateways read it)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["ephemeral"]
    ttl: Literal["5m", "1h"] | None = None


class ThinkingBlock(BaseModel):
    """An Anthropic thinking block of an assistant turn, kept verbatim (its signature is
    checked by Anthropic when the block travels back): for Anthropic models only."""

    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["thinking", "redacted_thinking"]
    thinking: Annotated[str, Field(max_length=1_000_000)] | None = None
    signature: Annotated[str, Field(max_length=100_000)] | None = None
    data: Annotated[str, Field(max_length=1_000_000)] | None = None

    @model_validator(mode="after")
    def _fields_of_its_type(self) -> ThinkingBlock:
        if self.type == "thinking" and (self.thinking is None or self.signature is None):
            raise _field_error("signature", "a 'thinking' block needs 'thinking' and 'signature'")
        if self.type == "redacted_thinking" and self.data is None:
            raise _field_error("data", "a 'redacted_thinking' block needs its 'data'")
        return self


class ThinkingConfig(BaseModel):
    """Anthropic's extended thinking switch (``thinking``)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: Annotated[int, Field(ge=1, le=1_000_000)] | None = None


class ContextEdit(BaseModel):
    """One of Anthropic's context edits (``context_management.edits``), sent as it came."""

    model_config = ConfigDict(extra="allow", strict=True)
    type: Annotated[str, Field(pattern=r"^[a-z0-9_]{1,64}$")]


class ContextManagement(BaseModel):
    """Anthropic's server-side context editing (``context_management``)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    edits: Annotated[list[ContextEdit], Field(max_length=16)]

    @property
    def only_clears_thinking(self) -> bool:
        """Whether it asks only to clear thinking blocks (which no other provider gets)."""
        return all(e.type.startswith("clear_thinking") for e in self.edits)


class ImageUrl(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    url: Annotated[str, Field(min_length=1)]
    detail: Literal["auto", "low", "high"] | None = None


class ContentPart(BaseModel):
    """A part of a message's content. Text and image parts are checked here; other types
    (audio, files) are forwarded to OpenAI-compatible providers and refused by the
    translations."""

    model_config = ConfigDict(extra="allow", strict=True)
    _image: Image | None = PrivateAttr(default=None)
    type: Annotated[str, Field(min_length=1, max_length=64)]
    text: str | None = None
    image_url: ImageUrl | None = None
    cache_control: CacheMark | None = None

    @model_validator(mode="after")
    def _fields_of_its_type(self) -> ContentPart:
        if self.type == "text" and self.text is None:
            raise _field_error("text", "a 'text' part needs its 'text'")
        if self.type == "image_url":
            if self.image_url is None:
                raise _field_error("image_url", "an 'image_url' part needs its 'image_url'")
            try:
                self._image = parse_image(self.image_url.url)
            except ValueError as err:
                raise _field_error(("image_url", "url"), str(err)) from None
        return self

    @property
    def image(self) -> Image:
        """The checked image of an ``image_url`` part."""
        if self._image is None:
            raise ValueError(f"a {self.type!r} part has no image")
        return self._image


FUNCTION_NAME = r"^[a-zA-Z0-9_-]{1,64}$"
BETA_NAME = r"^[a-z0-9][a-z0-9.-]{0,63}$"


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: Annotated[str, Field(pattern=FUNCTION_NAME)]
    arguments: str


class ToolCall(BaseModel):
    """A call an assistant message made. Extra fields (Gemini's thought signature in
    ``extra_content``) are kept, so that they can travel back to the provider."""

    model_config = ConfigDict(extra="allow", strict=True)
    id: Annotated[str, Field(min_length=1, max_length=256)]
    type: Literal["function"]
    function: FunctionCall
    cache_control: CacheMark | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    role: Role
    content: str | list[ContentPart] | None = None
    name: Annotated[str, Field(max_length=256)] | None = None
    tool_calls: Annotated[list[ToolCall], Field(max_length=512)] | None = None
    tool_call_id: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    # Anthropic's, carried by the chat request (see :mod:`.providers.extensions`)
    thinking_blocks: Annotated[list[ThinkingBlock], Field(max_length=64)] | None = None
    is_error: bool | None = None
    cache_control: CacheMark | None = None

    @model_validator(mode="after")
    def _tool_fields(self) -> Message:
        if self.role == "tool" and self.tool_call_id is None:
            raise _field_error(
                "tool_call_id", "a 'tool' message needs the id of the call it answers"
            )
        if self.tool_calls is not None and self.role != "assistant":
            raise _field_error("tool_calls", "only 'assistant' messages carry tool calls")
        if self.thinking_blocks is not None and self.role != "assistant":
            raise _field_error("thinking_blocks", "only 'assistant' messages carry thinking")
        if (self.is_error is not None or self.cache_control is not None) and self.role != "tool":
            field = "is_error" if self.is_error is not None else "cache_control"
            raise _field_error(field, "only 'tool' messages carry it (put it on a part)")
        return self


class FunctionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: Annotated[str, Field(pattern=FUNCTION_NAME)]
    description: Annotated[str, Field(max_length=100_000)] | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["function"]
    function: FunctionSpec
    cache_control: CacheMark | None = None


class FunctionName(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: Annotated[str, Field(pattern=FUNCTION_NAME)]


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["function"]
    function: FunctionName


class JsonSchemaSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: Annotated[str, Field(pattern=FUNCTION_NAME)]
    description: str | None = None
    schema_: Annotated[dict[str, Any] | None, Field(alias="schema")] = None
    strict: bool | None = None


class TextFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["text"]


class JsonObjectFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["json_object"]


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


_FORMATS = {
    "text": "TextFormat",
    "json_object": "JsonObjectFormat",
    "json_schema": "JsonSchemaFormat",
}


def _format_tag(value: Any) -> str | None:
    """The member of :data:`ResponseFormat` for a value. The tags are the class names, which
    :func:`config.format_path` leaves out of the parameter path of an error."""
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return _FORMATS.get(kind) if isinstance(kind, str) else None


ResponseFormat = Annotated[
    Annotated[TextFormat, Tag("TextFormat")]
    | Annotated[JsonObjectFormat, Tag("JsonObjectFormat")]
    | Annotated[JsonSchemaFormat, Tag("JsonSchemaFormat")],
    Discriminator(
        _format_tag,
        custom_error_type="invalid_value",
        custom_error_message="'type' must be one of 'text', 'json_object', 'json_schema'",
    ),
]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    include_usage: bool = False


class ChatRequest(BaseModel):
    """``POST /v1/chat/completions`` body."""

    model_config = ConfigDict(extra="allow", strict=True)
    model: Annotated[str, Field(min_length=1, max_length=256)]
    messages: Annotated[list[Message], Field(min_length=1, max_length=4096)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    n: Annotated[int, Field(ge=1, le=1)] | None = None
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    user: Annotated[str, Field(max_length=256)] | None = None
    safety_identifier: Annotated[str, Field(max_length=256)] | None = None
    seed: int | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    logit_bias: dict[str, Annotated[int, Field(ge=-100, le=100)]] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    metadata: Annotated[dict[str, str], Field(max_length=16)] | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority"] | None = None
    store: bool | None = None
    tools: Annotated[list[Tool], Field(max_length=512)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    # Anthropic's, carried by the chat request (see :mod:`.providers.extensions`)
    top_k: Annotated[int, Field(ge=0, le=1_000_000)] | None = None
    thinking: ThinkingConfig | None = None
    context_management: ContextManagement | None = None
    reasoning_effort: Annotated[str, Field(pattern=r"^[a-z]{1,16}$")] | None = None
    anthropic_beta: (
        Annotated[list[Annotated[str, Field(pattern=BETA_NAME)]], Field(max_length=32)] | None
    ) = None

    @model_validator(mode="after")
    def _tool_choice_names_a_tool(self) -> ChatRequest:
        """OpenAI refuses a choice that cannot be honoured; so does the runtime, rather than
        letting a translated provider guess."""
        choice = self.tool_choice
        names = {t.function.name for t in self.tools or []}
        if self.top_logprobs and not self.logprobs:
            raise _field_error("top_logprobs", "needs 'logprobs': true")
        if choice == "required" and not names:
            raise _field_error("tool_choice", "'required' needs 'tools'")
        if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
            raise _field_error("tool_choice", f"no tool named {choice.function.name!r} in 'tools'")
        called: set[str] = set()
        for i, m in enumerate(self.messages):
            called.update(c.id for c in m.tool_calls or [])
            if m.role == "tool" and m.tool_call_id not in called:
                raise _field_error(
                    ("messages", i, "tool_call_id"),
                    f"no earlier assistant message made the tool call {m.tool_call_id!r}",
                )
        return self

    @property
    def json_answer(self) -> JsonObjectFormat | JsonSchemaFormat | None:
        """The JSON ``response_format`` asked for, if any (``text`` is the default)."""
        fmt = self.response_format
        return fmt if isinstance(fmt, JsonObjectFormat | JsonSchemaFormat) else None

    @property
    def output_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def stop_sequences(self) -> list[str] | None:
        """``stop`` as a list (a single string is one sequence), as the translated APIs take it."""
        return [self.stop] if isinstance(self.stop, str) else self.stop

    @property
    def wants_stream_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


def _field_error(field: str | tuple[str | int, ...], message: str) -> ValidationError:
    """A validation error located at ``field`` (the request-level validators' way to name
    the parameter, as the field-level ones do)."""
    detail: InitErrorDetails = {
        "type": PydanticCustomError("invalid_value", message),
        "loc": field if isinstance(field, tuple) else (field,),
        "input": None,
    }
    return ValidationError.from_exception_data("ChatRequest", [detail])


def message_text(message: Message) -> str:
    """The text of a message; non-text parts (images, audio) contribute nothing."""
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.text or "" for p in content if p.type == "text")


class Feedback(BaseModel):
    """``POST /v1/feedback``: a rating of one response. ``comment`` is accepted (bounded)
    and dropped: free text from users may hold anything, so it is never stored or logged."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)
    id: Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_.:-]+$")]
    rating: Annotated[int, Field(ge=1, le=5)] | None = None
    task_completed: Annotated[bool | None, Field(alias="taskCompleted")] = None
    comment: Annotated[str, Field(max_length=10_000)] | None = None

    @model_validator(mode="after")
    def _says_something(self) -> Feedback:
        if self.rating is None and self.task_completed is None:
            raise _field_error("rating", "give 'rating' (1-5), 'taskCompleted', or both")
        return self


def _validation_error(err: ValidationError) -> ApiError:
    """A 400 naming the first bad parameter (and how many more there are)."""
    errors = err.errors(include_url=False)
    # Of a union's failed branches, the deepest error names the parameter best: an
    # image part's bad URL rather than "content should be a string".
    first = max(errors, key=lambda e: len(e["loc"]))
    param = format_path("", first["loc"])
    if first["type"] == "missing":
        message = f"Missing required parameter: '{param}'."
        code = "missing_required_parameter"
    else:
        message = f"Invalid value for '{param}': {first['msg']}."
        code = "invalid_value"
    if len(errors) > 1:
        message += f" ({len(errors) - 1} more problem(s) in the request.)"
    return ApiError(400, message, "invalid_request_error", code, param)


def parse_feedback(payload: Any) -> Feedback:
    if not isinstance(payload, dict):
        raise invalid_request("The request body must be a JSON object.", code="invalid_body")
    try:
        return Feedback.model_validate(payload)
    except ValidationError as err:
        raise _validation_error(err) from None


def parse_chat_request(payload: Any) -> ChatRequest:
    """Validate a decoded JSON body, or raise a 400 that names the first bad parameter."""
    if not isinstance(payload, dict):
        raise invalid_request("The request body must be a JSON object.", code="invalid_body")
    try:
        return ChatRequest.model_validate(payload)
    except ValidationError as err:
        raise _validation_error(err) from None
