"""Admission by memory: whether the host can take one more server now. Pure.

The kernel's OOM killer picks a victim when the host runs out of memory: a student's kernel
with an hour of work in it, or the hub. So a start that would take the host's available memory
below a reserve waits (or is refused, as the admin chooses) instead. What is available is the
host's own figure (``MemAvailable`` of ``/proc/meminfo``: Docker does not namespace it, so the
hub's container reads the host's); what a server will take is what servers took when their start
was over here (the median of recent ones), or an estimate until some have; starts admitted but
not yet grown count as taken already.
"""
from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field

from hub.units import format_size


def parse_meminfo(text: str) -> tuple[int, int]:
    """(total, available) bytes from ``/proc/meminfo``'s text."""
    values = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[name.strip()] = int(parts[0]) * (1024 if parts[1:2] == ["kB"] else 1)
    if "MemTotal" not in values:
        raise ValueError("no MemTotal line")
    available = values.get("MemAvailable", values.get("MemFree", 0) + values.get("Cached", 0))
    return values["MemTotal"], available


@dataclass
class ServerCost:
    """What one more server takes: the median of the last ``keep`` servers' memory when
    their start was over (``observe``), the estimate until ``least`` of them are known, never
    more than the server's own limit."""
    estimate: int
    keep: int = 50
    least: int = 3
    seen: deque = field(default_factory=deque)

    def observe(self, used: int) -> None:
        if used > 0:
            self.seen.append(used)
            while len(self.seen) > self.keep:
                self.seen.popleft()

    def of(self, limit: int | None = None) -> int:
        cost = int(statistics.median(self.seen)) if len(self.seen) >= self.least else self.estimate
        return min(cost, limit) if limit else cost


@dataclass(frozen=True)
class Decision:
    admit: bool
    message: str = ""


def decide(available: int, pending: int, cost: int, reserve: int) -> Decision:
    """Whether a server of ``cost`` bytes may start with ``available`` bytes free on the host and
    ``pending`` bytes promised to starts admitted before it, keeping ``reserve`` free."""
    left = available - pending - cost
    if left >= reserve:
        return Decision(True)
    return Decision(False, (
        f"The server's host is short of memory: {format_size(max(available - pending, 0))} free for new "
        f"servers, a server takes about {format_size(cost)}, and {format_size(reserve)} is kept in reserve "
        "so that running servers are not killed."))


def check(total: int, available: int, state: dict, reserve: int) -> dict:
    """The host's memory as a row of the console's Host health card (hub/gpus/health.py's shape);
    ``state`` is what the hub wrote of its memory line (``host-memory.json``), maybe empty."""
    waiting, server = int(state.get("waiting") or 0), int(state.get("server_bytes") or 0)
    message = (f"{format_size(available)} of {format_size(total)} available; {format_size(reserve)} kept in "
               f"reserve" + (f"; a new server takes about {format_size(server)}" if server else "")
               + (f"; {waiting} start{'s' if waiting != 1 else ''} wait for memory" if waiting else ""))
    full = waiting > 0 or available - server < reserve
    return {"name": "host.memory", "status": "warn" if full else "ok", "message": message,
            "fix": ("Stop idle servers, lower USER_MEM_LIMIT or move courses to another host; "
                    "HOST_MEMORY_RESERVE sets what is kept free (docs/servers.md#admission-by-memory)"
                    if full else ""),
            "refuses": "start" if full else "", "data": {"total": total, "available": available,
                                                          "reserve": reserve, "waiting": waiting}}
