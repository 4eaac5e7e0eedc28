"""The soak's hostile clients: what each sends, and which ending is the right one.

Each kind attacks one of the runtime's edges (issue 20) with a valid key. The ones that
are ordinary requests (``REQUESTS``) go over the soak's keep-alive connections; the others
(``RAW``) on sockets of their own. Every kind has the endings that show the runtime held
its ground (``EXPECTED``): a fast 4xx for bad input, the connection closed for a client
that stalls, a 200 for a request whose only fault is a reused id or a new user.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

HOSTILE: dict[str, int] = {  # kind -> weight within the hostile share
    "reused_id": 20,  # the same x-request-id on every request
    "new_user": 25,  # auth.userFromRequest: a new end user every request
    "schema_bomb": 10,  # $defs referring to each other twice a level, to a Gemini tier
    "element_flood": 5,  # a body of a few hundred thousand {}
    "deep_json": 5,  # 20,000 nested lists
    "oversized": 5,  # a body announced past the size bound
    "hangup": 15,  # leaves as soon as its request is sent, before any answer
    "slowloris": 8,  # sends its headers a byte at a time
    "slow_reader": 3,  # asks for a big stream and reads none of it
}
REQUESTS = frozenset({"reused_id", "new_user", "schema_bomb", "element_flood", "deep_json"})
RAW = frozenset(HOSTILE) - REQUESTS
SLOW = frozenset({"slowloris", "slow_reader"})  # each holds a socket for an edge's deadline
EXPECTED: dict[str, frozenset[str]] = {
    "reused_id": frozenset({"200"}),
    "new_user": frozenset({"200"}),
    "schema_bomb": frozenset({"400"}),
    "element_flood": frozenset({"413"}),
    "deep_json": frozenset({"400", "413"}),
    "oversized": frozenset({"413"}),
    "hangup": frozenset({"sent"}),
    "slowloris": frozenset({"closed"}),
    "slow_reader": frozenset({"dropped"}),
}
REUSED_ID = "soak-the-same-id-every-time"
BOMB_LEVELS = 16  # 1.7 KB of request; 65,536 schemas (6 MB) once its $refs are inlined
SLOW_READER_BYTES = 4_000_000  # the simulator's tool call arguments: past the socket buffers
OVERSIZED_BYTES = 64 * 1024 * 1024


def bomb(levels: int = BOMB_LEVELS) -> dict[str, Any]:
    """A JSON schema whose every ``$defs`` entry refers to the next one twice."""
    defs: dict[str, Any] = {
        f"d{i}": {
            "type": "object",
            "properties": {
                "a": {"$ref": f"#/$defs/d{i + 1}"},
                "b": {"$ref": f"#/$defs/d{i + 1}"},
            },
        }
        for i in range(levels)
    }
    defs[f"d{levels}"] = {"type": "string"}
    return {"type": "object", "properties": {"x": {"$ref": "#/$defs/d0"}}, "$defs": defs}


def _chat(i: int, **extra: Any) -> dict[str, Any]:
    return {"model": "main", "messages": [{"role": "user", "content": f"hostile {i}"}], **extra}


def request(kind: str, i: int) -> tuple[bytes, bytes]:
    """Extra header lines and the body of a hostile kind that is an ordinary request."""
    if kind == "reused_id":
        return f"x-request-id: {REUSED_ID}\r\n".encode(), json.dumps(_chat(i)).encode()
    if kind == "new_user":
        return b"", json.dumps(_chat(i, user=f"rotating-{i}")).encode()
    if kind == "schema_bomb":
        tool = {"type": "function", "function": {"name": "f", "parameters": bomb()}}
        body = _chat(i, model="gem", tools=[tool])  # no user: Gemini has no such field
        return b"", json.dumps(body).encode()
    if kind == "element_flood":
        return b"", json.dumps(_chat(i, stop=[{}] * 300_000)).encode()
    if kind == "deep_json":
        return b"", b'{"model":"main","messages":' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    raise ValueError(kind)


def _slow_reader_body(i: int) -> bytes:
    big = {"type": "string", "minLength": SLOW_READER_BYTES}
    params = {"type": "object", "properties": {"s": big}, "required": ["s"]}
    tool = {"type": "function", "function": {"name": "f", "parameters": params}}
    return json.dumps(_chat(i, stream=True, tools=[tool], user=f"reader-{i}")).encode()


async def _until_closed(reader: asyncio.StreamReader, within: float) -> tuple[bool, bytes]:
    """Read until the server closes (True) or ``within`` seconds pass (False)."""
    parts: list[bytes] = []
    try:
        async with asyncio.timeout(within):
            while chunk := await reader.read(1 << 16):
                parts.append(chunk)
    except TimeoutError:
        return False, b"".join(parts)
    except OSError:  # reset: closed too
        pass
    return True, b"".join(parts)


async def raw(kind: str, port: int, head: bytes, i: int, deadline: float) -> str:
    """Run a kind on a socket of its own; its ending (see ``EXPECTED``). ``head`` is the
    request line and headers up to the content length; ``deadline`` the edge's largest
    (a stalled client still held after four times it is a failure of the runtime)."""
    sock = socket.socket()
    if kind == "slow_reader":  # a small window: the server's writes block sooner
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        if kind == "hangup":
            body = json.dumps(_chat(i)).encode()
            writer.write(head + f"content-length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()
            return "sent"
        if kind == "oversized":
            writer.write(head + f"content-length: {OVERSIZED_BYTES}\r\n\r\n".encode())
            writer.write(b'{"model":"main","messages":[' + b" " * 65_536)
            await writer.drain()
            try:  # the refusal is due before the body (it is not read)
                async with asyncio.timeout(4 * deadline):
                    return _status(await reader.readuntil(b"\r\n"))
            except TimeoutError:
                return "held"
        if kind == "slowloris":
            writer.write(head + b"x-slow: ")  # and then a header that never ends
            started = time.monotonic()
            while time.monotonic() - started < 4 * deadline:
                if reader.at_eof():
                    return "closed"
                writer.write(b"x")
                try:
                    await writer.drain()
                except OSError:
                    return "closed"
                closed, _ = await _until_closed(reader, 0.25)
                if closed:
                    return "closed"
            return "held"
        if kind == "slow_reader":
            body = _slow_reader_body(i)
            writer.write(head + f"content-length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()
            await asyncio.sleep(2 * deadline)  # reading nothing meanwhile
            closed, data = await _until_closed(reader, 4 * deadline)
            if not closed:
                return "held"
            return "completed" if b"data: [DONE]" in data else "dropped"
        raise ValueError(kind)
    finally:
        writer.close()


def _status(data: bytes) -> str:
    parts = data.split(b" ", 2)
    return parts[1].decode() if len(parts) > 1 and parts[1].isdigit() else "garbled"
