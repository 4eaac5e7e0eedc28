"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

Every failure a client can see is an :class:`ApiError`, so routes never need to know
how a failure is rendered, and no request can end in an unshaped 500.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A failure with its HTTP status and the OpenAI error fields."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, "invalid_request_error", code or "invalid_request", param)


def unauthorized(message: str) -> ApiError:
    return ApiError(
        401,
        message,
        "authentication_error",
        "invalid_api_key",
        headers={"www-authenticate": 'Bearer realm="swiftclaw"'},
    )


def not_found(message: str, code: str = "not_found", param: str | None = None) -> ApiError:
    return ApiError(404, message, "invalid_request_error", code, param)
