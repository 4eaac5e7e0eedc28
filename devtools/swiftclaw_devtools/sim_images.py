"""The images of a request to the simulator, read from any of the three API shapes.

The simulator checks each image as its real API would (a base64 source with a media type
the bytes agree with, a URL, Gemini's ``mimeType``) and names what it saw in its answer
(``Seen image/png 68 bytes, https://x/cat.png.``), so that a test over real processes can
tell that an image reached the provider, intact and in the provider's own shape.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable
from typing import Any

from swiftclaw_runtime.images import MEDIA_TYPES, sniff


def _inline(media_type: Any, data: Any) -> str:
    if media_type not in MEDIA_TYPES:
        raise ValueError(f"unsupported image media type {media_type!r}")
    try:
        raw = binascii.a2b_base64(str(data), strict_mode=True)
    except binascii.Error:
        raise ValueError("image data is not base64") from None
    if sniff(raw[:16]) != media_type:
        raise ValueError(f"image data is not {media_type}")
    return f"{media_type} {len(raw)} bytes"


def _url(url: Any) -> str:
    if not isinstance(url, str) or not url.startswith("https://"):
        raise ValueError(f"image URL {url!r} is not https")
    return url


def _openai(part: dict[str, Any]) -> str | None:
    if part.get("type") != "image_url":
        return None
    url = str((part.get("image_url") or {}).get("url", ""))
    if url.startswith("data:"):
        header, _, data = url[5:].partition(",")
        return _inline(header.partition(";")[0], data)
    return _url(url)


def _anthropic(block: dict[str, Any]) -> str | None:
    if block.get("type") != "image":
        return None
    source = block.get("source") or {}
    if source.get("type") == "base64":
        return _inline(source.get("media_type"), source.get("data"))
    if source.get("type") == "url":
        return _url(source.get("url"))
    raise ValueError(f"unknown image source type {source.get('type')!r}")


def _gemini(part: dict[str, Any]) -> str | None:
    if "inlineData" in part:
        inline = part["inlineData"] or {}
        return _inline(inline.get("mimeType"), inline.get("data"))
    if "fileData" in part:
        file = part["fileData"] or {}
        if file.get("mimeType") not in MEDIA_TYPES:
            raise ValueError(f"fileData needs an image mimeType, got {file.get('mimeType')!r}")
        return _url(file.get("fileUri"))
    return None


def seen_images(shape: str, body: dict[str, Any]) -> list[str]:
    """What each image of the conversation is; raises ValueError for a malformed one."""
    read: Callable[[dict[str, Any]], str | None]
    if shape == "gemini":
        turns = [c.get("parts") for c in body.get("contents") or [] if isinstance(c, dict)]
        read = _gemini
    else:
        turns = [m.get("content") for m in body.get("messages") or [] if isinstance(m, dict)]
        read = _openai if shape == "openai" else _anthropic
    seen = []
    for parts in turns:
        for part in parts if isinstance(parts, list) else []:
            if isinstance(part, dict) and (what := read(part)) is not None:
                seen.append(what)
    return seen
