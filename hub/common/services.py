"""What the processes of the hub's own services share: each runs one or more components (the GPU
console, and gpu-reclaim in the console's process) on one event loop, each with its own HTTP
app, hub token and periodic work.

A component's periodic work is guarded (``every``): an exception is logged and the next run comes
as planned, so one component's failing work never stops another's. What still takes the whole
process down (and so every component in it) is what takes any process down: being killed, out
of memory, a crash in a C library; JupyterHub then starts the managed service again
(docs/operations.md, "Faults and recovery").
"""
from __future__ import annotations

import asyncio
import logging
import sys
from typing import Awaitable, Callable
from tornado.ioloop import PeriodicCallback

Work = Callable[[], Awaitable[object]]


def guarded(work: Work, what: str, log: logging.Logger) -> Callable[[], Awaitable[None]]:
    """``work`` that logs its exception (with ``what``) instead of raising it."""
    async def run() -> None:
        try:
            await work()
        except Exception:  # noqa: BLE001 - the engine or the hub may be restarting: next time
            log.exception(what)
    return run


async def every(seconds: float, work: Work, what: str, log: logging.Logger, now: bool = True) -> Callable:
    """Run ``work`` (guarded) now unless ``now`` is false, then every ``seconds`` on the running
    loop. Returns the guarded work, for runs at other times (an engine event)."""

    run = guarded(work, what, log)
    if now:
        await run()
    PeriodicCallback(run, seconds * 1000).start()
    return run


def serve(*starts: Work) -> None:
    """The process's main: each component's start (it listens, then does its first work and
    starts its timers) together on one event loop, which then runs until the process is
    stopped. A start that fails ends the process (a bad setting: the service's log says why)."""
    async def run() -> None:
        await asyncio.gather(*(start() for start in starts))
        await asyncio.Event().wait()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        sys.exit(0)
