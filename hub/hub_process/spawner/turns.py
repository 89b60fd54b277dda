"""Start turns: at most N servers start at once in this hub process; the others wait in order.

A server start is CPU-bound (Python importing JupyterLab), so 30 at once on a 2-CPU host take
longer, all of them, than 2 or 3 at a time (docs/performance.md)."""
from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import AsyncIterator, Callable


class StartTurns:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._turns: asyncio.Semaphore | None = None
        self.waiting = 0  # starts waiting for a turn now

    def _semaphore(self, limit: int) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._turns is None or self._loop is not loop:  # a new loop (tests): new turns
            self._loop, self._turns = loop, asyncio.Semaphore(limit)
        return self._turns

    @asynccontextmanager
    async def turn(self, limit: int, on_wait: Callable[[int], None]) -> AsyncIterator[None]:
        """Hold one of `limit` turns; ``on_wait(ahead)`` is called first if all are taken."""
        turns = self._semaphore(limit)
        if turns.locked():
            ahead = self.waiting
            self.waiting += 1
            on_wait(ahead)
            try:
                await turns.acquire()
            finally:
                self.waiting -= 1
        else:
            await turns.acquire()
        try:
            yield
        finally:
            turns.release()
