"""Message content for Anthropic and Gemini: text and image parts, within each API's limits.

Images are taken in user turns only (as OpenAI does). Each API's limits are checked while
translating, so that an image one provider cannot take moves the request on to another
model of the chain (or a 400 naming the part), rather than being sent to fail there:

- Anthropic: ``image`` blocks, a ``base64`` source for a data URI and a ``url`` source
  for a URL; at most 5 MiB decoded per image and 100 images per request.
- Gemini: ``inlineData`` for a data URI, ``fileData`` with its ``mimeType`` for a URL
  (the type read from the URL's extension); inline data at most 20 MiB in total as sent
  (base64: the API's limit is on the request's size), at most 3,600 images per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..images import Image
from ..schemas import CacheMark, ChatRequest, ContentPart
from .base import Unsupported

MIB = 1024 * 1024


@dataclass(frozen=True)
class ImageLimits:
    provider: str
    max_images: int
    max_image_bytes: int | None = None  # decoded, per image
    max_inline_bytes: int | None = None  # base64 as sent, all images together


ANTHROPIC = ImageLimits("Anthropic", 100, max_image_bytes=5 * MIB)
GEMINI = ImageLimits("Gemini", 3600, max_inline_bytes=20 * MIB)


def check_images(request: ChatRequest, limits: ImageLimits) -> None:
    """Raise :class:`Unsupported` for the first image part over ``limits``."""
    count = inline = 0
    for i, m in enumerate(request.messages):
        if isinstance(m.content, str) or m.content is None:
            continue
        for j, part in enumerate(m.content):
            if part.type != "image_url":
                continue
            param = f"messages[{i}].content[{j}].image_url.url"
            count += 1
            if count > limits.max_images:
                raise Unsupported(
                    f"{limits.provider} takes at most {limits.max_images} images a request",
                    param,
                )
            image = part.image
            if limits.max_image_bytes is not None and image.size > limits.max_image_bytes:
                raise Unsupported(
                    f"{limits.provider} takes images of at most "
                    f"{limits.max_image_bytes // MIB} MiB; this one is {image.size} bytes",
                    param,
                )
            inline += len(image.data or "")
            if limits.max_inline_bytes is not None and inline > limits.max_inline_bytes:
                raise Unsupported(
                    f"{limits.provider} takes at most {limits.max_inline_bytes // MIB} MiB of "
                    "inline image data a request",
                    param,
                )


Piece = tuple[str, "str | Image", "CacheMark | None"]


def parts_of(
    content: str | list[ContentPart] | None, param: str, provider: str, images: bool
) -> list[tuple[str, str | Image]]:
    """The content as text and images in order (see :func:`marked_parts_of`)."""
    return [(where, piece) for where, piece, _ in marked_parts_of(content, param, provider, images)]


def marked_parts_of(
    content: str | list[ContentPart] | None, param: str, provider: str, images: bool
) -> list[Piece]:
    """The content as text and images in order, each with its place in the request and
    its cache breakpoint. Adjacent text parts are joined (as OpenAI reads them: in one
    join, as adding each to the last would copy the text once per part, quadratic in the
    parts), unless a part carries a breakpoint: then each part stays one piece, as it
    came (Anthropic's blocks, untouched). A part of another type (audio, a file), or an
    image where ``images`` is False, is refused rather than dropped."""
    if content is None:
        return []
    if isinstance(content, str):
        return [(param, content, None)] if content else []
    join = all(part.cache_control is None for part in content)
    out: list[Piece] = []
    run: list[str] = []  # the texts of the current run of text parts, joined once

    def close_run() -> None:
        if len(run) > 1:
            out[-1] = (out[-1][0], "".join(run), None)
        run.clear()

    for j, part in enumerate(content):
        if part.type == "text":
            if not part.text:
                continue
            if not join:
                out.append((f"{param}[{j}]", part.text, part.cache_control))
                continue
            if not run:
                out.append((f"{param}[{j}]", part.text, None))
            run.append(part.text)
        elif part.type == "image_url" and images:
            close_run()
            out.append((f"{param}[{j}].image_url.url", part.image, part.cache_control))
        else:
            scope = "in this turn" if part.type == "image_url" else "by the runtime"
            raise Unsupported(
                f"content parts of type {part.type!r} are not translated for {provider} {scope}",
                f"{param}[{j}]",
            )
    close_run()
    return out


def anthropic_block(piece: str | Image, mark: CacheMark | None = None) -> dict[str, Any]:
    block: dict[str, Any]
    if isinstance(piece, str):
        block = {"type": "text", "text": piece}
    elif piece.url is not None:
        block = {"type": "image", "source": {"type": "url", "url": piece.url}}
    else:
        source = {"type": "base64", "media_type": piece.media_type, "data": piece.data}
        block = {"type": "image", "source": source}
    if mark is not None:
        block["cache_control"] = mark.model_dump(exclude_none=True)
    return block


def gemini_part(piece: str | Image, param: str) -> dict[str, Any]:
    if isinstance(piece, str):
        return {"text": piece}
    if piece.url is None:
        return {"inlineData": {"mimeType": piece.media_type, "data": piece.data}}
    if piece.media_type is None:
        raise Unsupported(
            "Gemini needs an image URL's media type: its path must end in .png, .jpg, "
            ".jpeg, .gif or .webp (or send a data URI)",
            param,
        )
    return {"fileData": {"mimeType": piece.media_type, "fileUri": piece.url}}
