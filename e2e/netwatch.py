"""Which addresses given processes are connected to, sampled from /proc while tests run.

/proc/net/tcp{,6} lists every TCP socket of the network namespace with its inode;
/proc/<pid>/fd links name the socket inodes a process holds. Joining the two gives each
process's remote addresses, whoever opened the socket (Go's net package, aiohttp, libuv).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable

LISTEN = "0A"


def _address(hex_addr: str) -> tuple[str, int]:
    host, port = hex_addr.split(":")
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1]), int(port, 16)
    words = struct.unpack("<4I", raw)  # four 32-bit words, each in host (little-endian) order
    v6 = ipaddress.IPv6Address(struct.pack(">4I", *words))
    mapped = v6.ipv4_mapped
    return (str(mapped) if mapped else str(v6)), int(port, 16)


def socket_inodes(pid: int) -> set[int]:
    out = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                out.add(int(link[8:-1]))
    except OSError:
        pass
    return out


def command_line(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:300]
    except OSError:
        return f"pid {pid} (gone)"


def children(pid: int) -> set[int]:
    """Every descendant of ``pid`` (a shell's commands, a script's exec'd program)."""
    out: set[int] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{p}/task/{task}/children") as f:
                    kids = {int(k) for k in f.read().split()}
            except OSError:
                continue
            todo.extend(kids - out)
            out |= kids
    return out


class ConnectionWatch(threading.Thread):
    """Samples the remote addresses of the processes ``pids()`` names, every ``interval``."""

    def __init__(self, pids: Callable[[], dict[int, str]], interval: float = 0.3) -> None:
        super().__init__(name="connection-watch", daemon=True)
        self.pids = pids
        self.interval = interval
        self.seen: Counter[tuple[str, str]] = Counter()  # (who, remote ip) -> samples
        # (who, remote ip) -> the command line of a process holding such a socket
        self.holders: dict[tuple[str, str], str] = {}
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval)

    def sample(self) -> None:
        owners: dict[int, tuple[str, int]] = {}
        for pid, who in self.pids().items():
            for p in {pid, *children(pid)}:
                for inode in socket_inodes(p):
                    owners[inode] = (who, p)
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                with open(table) as f:
                    lines = f.read().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                fields = line.split()
                if len(fields) < 10 or fields[3] == LISTEN:
                    continue
                owner = owners.get(int(fields[9]))
                if owner is not None:
                    who, pid = owner
                    ip, _ = _address(fields[2])
                    self.seen[(who, ip)] += 1
                    if (who, ip) not in self.holders:
                        self.holders[(who, ip)] = command_line(pid)

    def remote_ips(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for who, ip in self.seen:
            out.setdefault(who, set()).add(ip)
        return out
