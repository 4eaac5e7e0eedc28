"""Errors in Anthropic's shape: ``{"type": "error", "error": {"type", "message"}}``.

The runtime's errors (:class:`..errors.ApiError`) keep their status, message and headers;
the type is Anthropic's for the status (Anthropic's SDKs pick their exception class by
the status, and clients read the type).
"""

from __future__ import annotations

from typing import Any

from ..errors import ApiError

TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def anthropic_error(err: ApiError) -> dict[str, Any]:
    kind = TYPES.get(err.status, "invalid_request_error" if err.status < 500 else "api_error")
    return {"type": kind, "message": err.message}


def anthropic_body(err: ApiError) -> dict[str, Any]:
    return {"type": "error", "error": anthropic_error(err)}
