"""``python -m swiftclaw_devtools.slowproxy``: a loopback TCP proxy that delays every
reply, to make a real server slow without making it fail (a Redis that answers each
command ``--delay-ms`` late, as over a congested network).

Bytes from the client go through at once; bytes from the server are held ``--delay-ms``
from when they arrived, in order. Each accepted connection is one line on stdout
(``accepted N``), so a test can tell whether its client reconnected.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(deliver())
    try:
        while data := await reader.read(65536):
            queue.put_nowait((time.monotonic() + delay, data))
    except OSError:
        pass
    queue.put_nowait((0.0, b""))
    with contextlib.suppress(OSError):
        await sender
    with contextlib.suppress(OSError):
        writer.close()


async def serve(port: int, target: int, delay: float) -> None:
    accepted = 0

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        print(f"accepted {accepted}", flush=True)
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(_pipe(client_r, server_w, 0.0), _pipe(server_r, client_w, delay))

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m swiftclaw_devtools.slowproxy")
    parser.add_argument("--port", type=int, required=True, help="where to listen (loopback)")
    parser.add_argument("--target-port", type=int, required=True, help="the server (loopback)")
    parser.add_argument("--delay-ms", type=float, default=50.0)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, args.target_port, args.delay_ms / 1000))
    return 0


if __name__ == "__main__":
    sys.exit(main())
