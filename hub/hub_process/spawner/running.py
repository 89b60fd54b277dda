"""Which user containers run, from one engine call shared by all spawners' polls.

JupyterHub polls every server every ``poll_interval`` seconds; DockerSpawner's poll is a
``docker inspect`` of that server's container, so 100 servers polled every 10 s were 10 engine
calls a second (0.13 % of a core in the hub and as much in the engine per idle server, measured:
docs/performance.md, "Idle servers"). Here one ``docker ps`` of this hub's running containers
answers every poll for ``max_age`` seconds (15: half the poll interval of 30 s, so a server
that died is noticed within 45 s by the polls alone; and a listing costs the engine per
container listed). Only "running" is answered from it: a container it
does not list is inspected as before, so a server that stopped is reported exactly as it was.
"""
from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable

ListRunning = Callable[[], Awaitable[list[dict]]]  # docker-py's containers(): [{"Names": ["/x"], ...}]


class RunningContainers:
    def __init__(self, max_age: float = 15.0, clock: Callable[[], float] = time.monotonic):
        self.max_age, self.clock = max_age, clock
        self._names: frozenset[str] = frozenset()
        self._at: float | None = None
        self._refresh: asyncio.Future | None = None
        self.calls = 0  # engine calls made (tests, logs)

    async def names(self, list_running: ListRunning) -> frozenset[str]:
        """Names of the running containers, at most max_age seconds old; one call at a time."""
        if self._at is not None and self.clock() - self._at < self.max_age:
            return self._names
        if self._refresh is None:
            self._refresh = asyncio.ensure_future(self._list(list_running))
        refresh = self._refresh
        try:
            return await asyncio.shield(refresh)
        finally:
            if refresh.done() and self._refresh is refresh:
                self._refresh = None

    async def _list(self, list_running: ListRunning) -> frozenset[str]:
        self.calls += 1
        found = await list_running()
        self._names = frozenset(n.lstrip("/") for c in found for n in c.get("Names") or [])
        self._at = self.clock()
        return self._names

    async def is_running(self, name: str, list_running: ListRunning) -> bool:
        try:
            return name in await self.names(list_running)
        except Exception:  # the engine's answer is a shortcut; the caller inspects instead
            return False
