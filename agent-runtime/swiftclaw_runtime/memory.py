"""The runtime's memory bounds, derived from the pod's memory limit.

Without them, 1,024 requests in flight each holding a 4 MiB body is 4 GiB against a
512 MiB limit, and a 4 MiB body of ``[{},{},...]`` parses to about 96 MiB: the kernel,
not the runtime, would refuse the next request, by killing the pod. From the limit:

- half of it is the process's own (interpreter, embedding model, caches, connections);
- the other half is the requests', at most ``PER_REQUEST_BYTES`` each on average: that
  bounds the requests in flight;
- a quarter of the limit is the *body pool*: the request bodies held at once, counted as
  they arrive, plus what parsing them is estimated to add (``ELEMENT_BYTES`` per JSON
  element). A request past it is refused (503, retry) rather than the pod growing;
- the largest body is an eighth of the pool, so that eight of them fit at once;
- a body may hold at most one JSON element per ``BYTES_PER_ELEMENT`` of the largest body
  (413 past it), which bounds parsing's blow-up to a few times the body's size. JSON
  nesting is bounded by the parser (orjson refuses more than 1,024 levels).

The flags ``--max-in-flight`` and ``--max-body-bytes`` are upper bounds on top of these.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MiB = 1024 * 1024
# Assumed when the limit is unknown (no --memory-limit-bytes and no downward API value).
DEFAULT_LIMIT_BYTES = 1024 * MiB
PER_REQUEST_BYTES = 256 * 1024
ELEMENT_BYTES = 96  # a parsed JSON element: an object or a list, a number, a string's header
BYTES_PER_ELEMENT = 16


@dataclass(frozen=True)
class MemoryBounds:
    max_in_flight: int
    max_body_bytes: int
    body_pool_bytes: int
    max_json_elements: int


def derive_bounds(limit_bytes: int | None, max_in_flight: int, max_body_bytes: int) -> MemoryBounds:
    """The bounds for a process allowed ``limit_bytes``, capped by the two flags."""
    limit = limit_bytes or DEFAULT_LIMIT_BYTES
    pool = limit // 4
    body = max(1024, min(max_body_bytes, pool // 8))
    return MemoryBounds(
        max_in_flight=max(1, min(max_in_flight, (limit // 2) // PER_REQUEST_BYTES)),
        max_body_bytes=body,
        body_pool_bytes=pool,
        max_json_elements=max(1024, body // BYTES_PER_ELEMENT),
    )


# A string, once its escaped quotes are gone. One pattern for a string with its escapes
# ('"(?:[^"\\]|\\.)*"') failed in linear time from every quote of '"\\"\\"\\"...', which
# never closes: quadratic, seconds of event loop for a few kilobytes.
_STRING = re.compile(rb'"[^"]*"')


def _without_escaped_quotes(body: bytes) -> bytes:
    """``body`` without its escaped backslashes and escaped quotes, at memchr speed: pairs
    of backslashes go first (left to right, as a JSON reader pairs them), then every
    backslash left escapes the character after it."""
    return body.replace(b"\\\\", b"").replace(b'\\"', b"")


def _structure(body: bytes) -> int:
    return body.count(b"{") + body.count(b"[") + body.count(b",") + 1


def json_elements(body: bytes, limit: int) -> int:
    """An upper estimate of the values a JSON body parses to: each one opens an object or a
    list or follows a comma. Counted at memchr speed over the whole body, strings included;
    only a body that seems past ``limit`` is counted again without its strings' contents (a
    long text full of commas and braces is one element)."""
    n = _structure(body)
    if n <= limit:
        return n
    return _structure(_STRING.sub(b'""', _without_escaped_quotes(body)))


class BodyLedger:
    """The body pool: bytes held by request bodies (and their parse) across requests."""

    __slots__ = ("capacity", "used")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0


class BodyClaim:
    """One request's share of the pool, given back at once when the request ends."""

    __slots__ = ("held", "ledger")

    def __init__(self, ledger: BodyLedger) -> None:
        self.ledger = ledger
        self.held = 0

    def take(self, n: int) -> bool:
        """Hold ``n`` more bytes; False (nothing held) when the pool lacks them."""
        ledger = self.ledger
        if ledger.used + n > ledger.capacity:
            return False
        ledger.used += n
        self.held += n
        return True

    def release(self) -> None:
        self.ledger.used -= self.held
        self.held = 0
