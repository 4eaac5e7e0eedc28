"""The decisions shown in ``status.autopilot.recent``: the newest first, at most
:data:`MAX_RECENT`, each message cut to :data:`MAX_MESSAGE` characters (a status is
rewritten whole on every change, so it stays small)."""

from __future__ import annotations

import datetime

MAX_RECENT = 20
MAX_MESSAGE = 300


def entry(now: float, kind: str, message: str) -> dict[str, str]:
    at = datetime.datetime.fromtimestamp(now, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"time": at, "decision": kind, "message": message[:MAX_MESSAGE]}


def push(recent: list[dict[str, str]], new: list[dict[str, str]]) -> list[dict[str, str]]:
    return [*reversed(new), *recent][:MAX_RECENT]
