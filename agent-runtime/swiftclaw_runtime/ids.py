"""Identifiers: the server's own (request ids, completion ids, lock tokens) and the ones
clients send for correlation.

``os.urandom(n).hex()`` has the same 128 random bits as ``uuid.uuid4().hex`` (the form
these ids had), without building a UUID object: a fifth of the time, twice a request.

A client's ``x-request-id`` is for correlation only: it is echoed back (as
``x-client-request-id``) and logged, never used as a key of anything the server counts
(rate-limit ledgers, feedback, usage): those use the server's own id, which the response
carries as ``x-request-id``. Reusing one id on every request would otherwise have passed
as one request to the limits, and let one response be rated again and again.
"""

from __future__ import annotations

import os
import re

from .errors import invalid_request

CLIENT_ID_HEADER = "x-request-id"
CLIENT_ID_ECHO = "x-client-request-id"
CLIENT_ID_MAX = 128
_CLIENT_ID = re.compile(rf"[A-Za-z0-9._:@/+=-]{{1,{CLIENT_ID_MAX}}}")


def random_hex(nbytes: int = 16) -> str:
    """``2 * nbytes`` lowercase hex digits from the OS's random source."""
    return os.urandom(nbytes).hex()


def client_request_id(value: str | None) -> str | None:
    """A client's correlation id, checked: at most :data:`CLIENT_ID_MAX` characters of
    letters, digits and ``._:@/+=-`` (UUIDs, hex, base64 and the ids proxies such as
    Envoy and nginx set all fit). Anything else is a 400 naming the header rather than a
    silent replacement: the client would lose its correlation without being told."""
    if value is None:
        return None
    if _CLIENT_ID.fullmatch(value) is None:
        raise invalid_request(
            f"The '{CLIENT_ID_HEADER}' header must be 1-{CLIENT_ID_MAX} characters of "
            "letters, digits and ._:@/+=- (it is echoed back for correlation; the server "
            "issues its own request id).",
            param=CLIENT_ID_HEADER,
            code="invalid_request_id",
        )
    return value
