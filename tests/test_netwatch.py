"""The connection watch of the network rule's e2e test: what it counts as a dial."""

from __future__ import annotations

import os
import socket

from e2e.netwatch import ConnectionWatch, command_line


def test_a_bound_socket_is_not_a_dial_and_a_connection_is() -> None:
    watch = ConnectionWatch(lambda: {os.getpid(): "tests"})
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))  # what a free-port probe does: no peer
        watch.sample()
        assert watch.remote_ips() == {}
    with (
        socket.create_server(("127.0.0.2", 0)) as server,
        socket.create_connection(server.getsockname()),
    ):
        peer, _ = server.accept()
        with peer:
            watch.sample()
    assert watch.remote_ips() == {"tests": {"127.0.0.2", "127.0.0.1"}}
    assert watch.holders[("tests", "127.0.0.2")] == command_line(os.getpid())
