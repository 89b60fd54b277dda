"""Waiting for a new server: done as soon as its port accepts connections.

JupyterHub checks a new server with exponential backoff (0.2 s, 0.4 s, 0.8 s, 1.6 s, ...), which
adds up to a second to every start; probing the port every 10 ms (a refused connection costs
the hub about 0.13 ms of CPU) means JupyterHub's first check succeeds. A container that stopped
(a broken image) ends the wait at once, so it does not hold a start turn until the timeout."""
from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable


async def wait_for_port(ip: str, port: int, timeout: float, still_running: Callable[[], Awaitable[bool]],
                        interval: float = 0.01) -> None:
    """Return when the port accepts a connection, ``still_running()`` (asked once a second)
    says no, or `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    next_state_check = time.monotonic() + 1
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), timeout=1)
        except (OSError, asyncio.TimeoutError):
            if time.monotonic() >= next_state_check:
                next_state_check = time.monotonic() + 1
                if not await still_running():
                    return
            await asyncio.sleep(interval)
            continue
        writer.close()
        return
