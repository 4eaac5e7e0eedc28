"""The event loop's lag: how late one timer fires, sampled by one task.

A sleep of ``period`` that returns later than asked measures the callbacks queued ahead
of it: the loop's own backlog, which is what more pods relieve (a slow provider does not
show here: its requests wait on sockets, not on the loop). One sleep per period, one
histogram observation: nothing per request.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

PERIOD_SECONDS = 0.5


class LoopLag:
    """Observes the loop's lag into ``histogram`` every ``period`` seconds while started."""

    def __init__(self, histogram: Any, period: float = PERIOD_SECONDS) -> None:
        self.histogram = histogram
        self.period = period
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            await asyncio.sleep(self.period)
            self.histogram.observe(max(0.0, loop.time() - asked - self.period))
