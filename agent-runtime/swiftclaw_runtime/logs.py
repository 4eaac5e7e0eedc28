"""Structured logs: one JSON object per line, or plain text for a terminal.

Prompts and answers are never logged: log records carry ids, names and figures only.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

import orjson

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def setup_logging(level: str = "info", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access",):
        logging.getLogger(noisy).setLevel(logging.WARNING)


REPEAT_SECONDS = 60.0


class FailureLog:
    """A failure that can repeat on every request, logged on its transitions: a warning
    at the first occurrence, again at most every ``repeat_seconds`` while it lasts (with how
    many occurred meanwhile), an info line when it stops. The metrics count each one."""

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        over: str,
        down_note: str,
        up_note: str,
        repeat_seconds: float = REPEAT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._what = what
        self._over = over
        self._down_note = down_note
        self._up_note = up_note
        self._repeat = repeat_seconds
        self._clock = clock
        self.failing = False
        self._logged_at = 0.0
        self._unlogged = 0

    def failed(self, detail: str) -> None:
        now = self._clock()
        if not self.failing:
            self.failing, self._logged_at, self._unlogged = True, now, 0
            self._log.warning("%s (%s): %s", self._what, detail, self._down_note)
        elif now - self._logged_at >= self._repeat:
            self._log.warning(
                "%s still (%s; %d more since the last report): %s",
                self._what,
                detail,
                self._unlogged,
                self._down_note,
            )
            self._logged_at, self._unlogged = now, 0
        else:
            self._unlogged += 1

    def worked(self) -> None:
        if self.failing:
            self.failing = False
            self._log.info("%s: %s", self._over, self._up_note)
