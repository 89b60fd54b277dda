"""The line of starts waiting for a GPU when all are taken (GPU_WHEN_FULL=queue).

One ``GPUQueue`` per hub process; every decision is still made under the GPU manager's lock
from the engine's live containers. The line only orders who may take a GPU that frees: a start
may take one when the allocator could give it one and nobody earlier in the line could
(``blocked``: a later arrival never overtakes a waiter that the free GPU suits; a waiter that
it does not suit, e.g. a GPU reserved for another course, does not hold anyone up). A waiter
stays in the line until its container exists (``done``), so nobody slips in between.

Waiters are woken (``wake``) whenever a server stops, and re-check every few seconds anyway
(a GPU undrained, a container removed behind the hub's back). The line is written to a JSON
file on the state volume at every change: the GPU console shows it, and after a hub restart
(which ends every pending start) each waiter is told why on their next page load and, joining
again within ``rejoin_window`` seconds, gets their old place.
"""
from __future__ import annotations

import asyncio
import json
import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

Key = tuple[str, str]  # (user, server)


@dataclass
class Waiter:
    user: str
    server: str
    groups: frozenset[str]
    since: float
    event: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    passed: bool = False  # may take a GPU; starting (its container does not exist yet)

    @property
    def key(self) -> Key:
        return (self.user, self.server)


class GPUQueue:
    def __init__(self, path: str | Path | None = None, clock: Callable[[], float] = time.time,
                 rejoin_window: float = 900.0):
        self.path = Path(path) if path else None
        self.clock, self.rejoin_window = clock, rejoin_window
        self.waiters: list[Waiter] = []
        self.handovers: deque[float] = deque(maxlen=20)  # when waiters got their GPU
        self.previous: dict[Key, tuple[float, int]] = {}  # left by the last hub process: since, position
        self.recovered_at = 0.0

    # -- the line ---------------------------------------------------------------------------

    def find(self, user: str, server: str) -> Waiter | None:
        return next((w for w in self.waiters if w.key == (user, server)), None)

    def join(self, user: str, server: str, groups: frozenset[str] = frozenset()) -> Waiter:
        """Into the line (at its end, or at the old place of a waiter of the last hub process)."""
        found = self.find(user, server)
        if found:
            return found
        now = self.clock()
        old = self.previous.pop((user, server), None)
        since = old[0] if old and now - self.recovered_at <= self.rejoin_window else now
        waiter = Waiter(user, server, frozenset(groups), since)
        self.waiters.append(waiter)
        self.waiters.sort(key=lambda w: w.since)
        self.save()
        return waiter

    def leave(self, waiter: Waiter) -> None:
        if waiter in self.waiters:
            self.waiters.remove(waiter)
            self.save()
        self.wake()

    def done(self, waiter: Waiter) -> None:
        """The waiter's container exists now, with its GPU: out of the line."""
        self.handovers.append(self.clock())
        self.leave(waiter)

    def position(self, waiter: Waiter) -> int:
        """1 for the first in line; 0 if not in it."""
        return self.waiters.index(waiter) + 1 if waiter in self.waiters else 0

    def blocked(self, user: str, server: str, may_take: Callable[[str, frozenset[str]], bool],
                free: int | None = None) -> bool:
        """Whether someone earlier in the line (everyone, for a start not in it) could take a
        GPU free now, or the earlier starts already let through (``passed``, their containers
        not created yet) will take all ``free`` GPUs this start could have: then it must wait,
        however free a GPU looks to it."""
        claimed = 0
        for w in self.waiters:
            if w.key == (user, server):
                break
            if w.passed:
                claimed += 1
            elif may_take(w.user, w.groups):
                return True
        # Nobody let through: the allocator itself says why nothing is free (a reservation, all in use).
        return free is not None and claimed > 0 and claimed >= free

    def wake(self) -> None:
        """A GPU may have become free: every waiter checks again."""
        for w in self.waiters:
            w.event.set()

    def estimate(self, position: int) -> float | None:
        """Seconds until this position gets a GPU, from the pace of the last hand-overs (None
        before two)."""
        if len(self.handovers) < 2 or position < 1:
            return None
        pace = (self.handovers[-1] - self.handovers[0]) / (len(self.handovers) - 1)
        return pace * position

    # -- the file on the state volume ---------------------------------------------------------

    def to_json(self) -> list[dict]:
        return [{"user": w.user, "server": w.server, "since": w.since, "position": i + 1, "starting": w.passed}
                for i, w in enumerate(self.waiters)]

    def save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps({"time": self.clock(), "waiting": self.to_json()}, indent=1))
        os.replace(tmp, self.path)

    def recover(self) -> list[dict]:
        """The line a previous hub process left (its starts ended with it); remembered so that
        those waiters get their old place back if they join again soon. Returns them."""
        if self.path is None:
            return []
        try:
            left = json.loads(self.path.read_text()).get("waiting") or []
        except (OSError, ValueError, AttributeError):
            return []
        now = self.recovered_at = self.clock()
        recovered = [e for e in left if isinstance(e, dict) and now - float(e.get("since", 0)) < 7 * 86400]
        self.previous = {(e["user"], e.get("server", "")): (float(e["since"]), int(e.get("position", 0)))
                         for e in recovered}
        self.save()  # the line is empty now
        return recovered


def read_line(path: str | Path) -> list[dict]:
    """The line as the hub last wrote it (for the GPU console)."""
    try:
        return json.loads(Path(path).read_text()).get("waiting") or []
    except (OSError, ValueError, AttributeError):
        return []
