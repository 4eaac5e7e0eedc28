"""The ``POST /v1/embeddings`` request, and the vectors' wire encodings.

``input`` is a string, a list of strings, a list of token ids, or a list of token-id
lists, as OpenAI takes it (at most 2,048 inputs, none empty); ``encoding_format`` is
``float`` or ``base64`` (little-endian float32, as OpenAI encodes it); ``dimensions``
shortens the vectors on models that can. Every error names its parameter.
"""

from __future__ import annotations

import base64
import struct
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .config import format_path
from .errors import ApiError, invalid_request

MAX_INPUTS = 2048


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    model: Annotated[str, Field(min_length=1, max_length=256)]
    input: str | list[str] | list[int] | list[list[int]]  # shape checked by check_input
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Field(ge=1, le=65_536)] | None = None
    user: Annotated[str, Field(max_length=256)] | None = None

    @property
    def inputs(self) -> list[str] | list[list[int]]:
        """The inputs as a list: of strings, or of token-id lists."""
        value = self.input
        if isinstance(value, str):
            return [value]
        if value and isinstance(value[0], int):
            return [value]
        return value  # type: ignore[return-value]

    @property
    def tokens(self) -> bool:
        """The inputs are token ids, not text."""
        first = self.inputs[0]
        return isinstance(first, list)


def check_input(value: Any) -> None:
    """Raise a 400 naming the place in ``input`` that is not one of its four shapes (a
    union's own errors would name all four)."""

    def bad(loc: tuple[str | int, ...], why: str) -> ApiError:
        param = format_path("", loc)
        return invalid_request(f"Invalid value for '{param}': {why}.", param, "invalid_value")

    def token_ids(ids: Any, loc: tuple[str | int, ...]) -> None:
        if not isinstance(ids, list) or not ids:
            raise bad(loc, "must be a non-empty list of token ids")
        for j, t in enumerate(ids):
            if type(t) is not int or t < 0:
                raise bad((*loc, j), "a token id is an integer of at least 0")

    if isinstance(value, str):
        if not value:
            raise bad(("input",), "must not be empty")
        return
    if not isinstance(value, list) or not value:
        raise bad(("input",), "must be a non-empty string or a non-empty list")
    if len(value) > MAX_INPUTS:
        raise bad(("input",), f"holds {len(value)} inputs; at most {MAX_INPUTS} are allowed")
    first = value[0]
    if type(first) is int:
        token_ids(value, ("input",))
        return
    for i, item in enumerate(value):
        if isinstance(first, str):
            if not isinstance(item, str) or not item:
                raise bad(("input", i), "must be a non-empty string, as the first input is")
        elif isinstance(first, list):
            token_ids(item, ("input", i))
        else:
            raise bad(("input", i), "must be a string, a token id or a list of token ids")


def parse_embeddings_request(payload: Any) -> EmbeddingsRequest:
    """Validate a decoded JSON body, or raise a 400 naming the first bad parameter."""
    if not isinstance(payload, dict):
        raise invalid_request("The request body must be a JSON object.", code="invalid_body")
    if "input" in payload:
        check_input(payload["input"])
    try:
        return EmbeddingsRequest.model_validate(payload)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        param = format_path("", first["loc"])
        if first["type"] == "missing":
            message, code = f"Missing required parameter: '{param}'.", "missing_required_parameter"
        else:
            message, code = f"Invalid value for '{param}': {first['msg']}.", "invalid_value"
        raise invalid_request(message, param, code) from None


def encode_vector(values: list[float], encoding: str) -> list[float] | str:
    """A vector as the client asked for it: floats, or base64 of little-endian float32."""
    if encoding == "float":
        return values
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


def decode_vector(value: Any) -> list[float]:
    """A vector from an upstream answer, in either encoding."""
    if isinstance(value, str):
        raw = base64.b64decode(value)
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    if isinstance(value, list):
        return [float(x) for x in value]
    raise ValueError("an embedding is neither a list of numbers nor base64")


def embeddings_body(
    vectors: list[list[float]], model: str, encoding: str, prompt_tokens: int
) -> dict[str, Any]:
    """OpenAI's ``list`` of ``embedding`` objects."""
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encode_vector(v, encoding)}
            for i, v in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
