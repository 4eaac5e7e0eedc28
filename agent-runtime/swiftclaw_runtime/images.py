"""Image parts of a request: an https URL or a base64 data URI, checked once on arrival.

A data URI's media type must be one every provider shape takes (PNG, JPEG, GIF, WebP)
and its bytes must be that type (the first bytes are read), so that a mislabelled image
gets a 400 from the runtime instead of a provider's refusal. The runtime never fetches a
URL: it passes it on, and the provider fetches it.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass
from urllib.parse import urlsplit

MEDIA_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
_EXTENSIONS = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
}


@dataclass(frozen=True)
class Image:
    """An image part: ``data`` (base64, as sent) and its decoded size, or ``url``."""

    media_type: str | None  # a URL's is guessed from its extension (None: unknown)
    data: str | None = None
    size: int = 0
    url: str | None = None


def sniff(head: bytes) -> str | None:
    """The media type the first bytes of an image say it is."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def parse_image(url: str) -> Image:
    """Check an ``image_url.url``; raises ValueError with what is wrong."""
    if url.startswith("data:"):
        return _data_uri(url)
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.netloc:
        raise ValueError("must be an https URL or a data URI (data:image/png;base64,...)")
    suffix = parts.path[parts.path.rfind(".") :].lower() if "." in parts.path else ""
    return Image(_EXTENSIONS.get(suffix), url=url)


def _data_uri(url: str) -> Image:
    header, comma, data = url[5:].partition(",")
    media_type, _, encoding = header.partition(";")
    if not comma or encoding != "base64":
        raise ValueError("a data URI must be base64: data:<media type>;base64,<data>")
    media_type = media_type.lower()
    if media_type not in MEDIA_TYPES:
        raise ValueError(
            f"media type {media_type or '(none)'!r} is not one of {', '.join(MEDIA_TYPES)}"
        )
    try:
        raw = binascii.a2b_base64(data, strict_mode=True)
    except binascii.Error:
        raise ValueError("the data URI's data is not valid base64") from None
    found = sniff(raw[:16])
    if found != media_type:
        said = found or "no PNG, JPEG, GIF or WebP image"
        raise ValueError(f"the data is {said}, not {media_type}")
    return Image(media_type, data=data, size=len(raw))
