"""The connection watch of the network rule's e2e test: what it records."""

from __future__ import annotations

import os
import socket

from e2e.netwatch import ConnectionWatch, command_line


def test_a_connection_is_recorded_with_its_address_and_command() -> None:
    watch = ConnectionWatch(lambda: {os.getpid(): "tests"})
    with (
        socket.create_server(("127.0.0.2", 0)) as server,
        socket.create_connection(server.getsockname()),
    ):
        peer, _ = server.accept()
        with peer:
            watch.sample()
    # this process holds both ends: the client's peer is 127.0.0.2, the server's 127.0.0.1
    assert {"127.0.0.2", "127.0.0.1"} <= watch.remote_ips()["tests"]
    assert watch.holders[("tests", "127.0.0.2")] == command_line(os.getpid())
