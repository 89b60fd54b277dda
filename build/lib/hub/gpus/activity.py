"""GPU activity: one reading of every GPU (or MIG instance) every few seconds, each attributed
to the server that holds the GPU, kept for a while (in memory, and on the state volume where a
store is given) so that "idle for how long" survives a hub restart.

The public API (also for other readers of GPU usage, e.g. accounting):

- ``ActivitySampler(reader, interval, window, store)``; ``sample(holders)`` takes one reading
  (blocking: NVML calls and SQLite writes; run it off the event loop) and attributes each
  device to ``holders`` (uuid -> [Holder], as ``hub.gpus.claim.holders_from_containers``
  gives). ``source``/``reason``: "nvml" while readings arrive, else "n/a" and why.
- ``now(uuid)`` the latest fresh ``Reading``; ``history(uuid)`` the last ``window`` seconds,
  ``[[epoch, util %, memory MiB], ...]``.
- ``ActivityStore(path)``: SQLite, one row per device and reading with its holder;
  ``idle_since(holder, uuid, threshold_pct)`` is when the holder's GPU last went below the
  threshold and stayed there (None: busy now, or nothing to judge by).
- ``load_reader("nvml" | "module:attribute")``: where readings come from; anything with
  ``read() -> list[Reading]`` (raising ``hub.gpus.nvml.Unavailable``) will do, so tests and
  hosts without NVML can feed readings (the e2e tests read them from a file).

Where the hub cannot read NVML (docs/gpus.md: the ``utility`` capability) every figure is
``None`` ("n/a") and nothing is judged idle: no reading, no reclaim.
"""
from __future__ import annotations

import importlib
import sqlite3
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from hub.gpus.model import Holder
from hub.gpus.nvml import NVMLReader, Reading, Unavailable


@dataclass(frozen=True)
class HolderReading:
    """The latest reading of a GPU with the server that holds it."""
    time: float
    uuid: str
    user: str
    server: str
    since: float | None
    utilization_pct: int | None
    memory_used_mib: int | None
    memory_total_mib: int | None


def load_reader(spec: str) -> Any:
    """The reader named by a setting: "nvml" (the driver's library) or "module:attribute"
    (a class or factory called without arguments)."""
    if spec in ("", "nvml"):
        return NVMLReader()
    module, _, attribute = spec.partition(":")
    if not module or not attribute:
        raise ValueError(f"GPU usage reader {spec!r}: use 'nvml' or 'module:attribute'")
    return getattr(importlib.import_module(module), attribute)()


class ActivityStore:
    """Readings with their holders in SQLite (one file on the state volume), kept ``keep``
    seconds. Thread-safe."""

    def __init__(self, path: str | Path, keep: float = 6 * 3600):
        self.path, self.keep = Path(path), keep
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("""CREATE TABLE IF NOT EXISTS readings (
            time REAL NOT NULL, uuid TEXT NOT NULL, user TEXT, server TEXT, since REAL,
            util INTEGER, mem_used INTEGER, mem_total INTEGER)""")
        self._db.execute("CREATE INDEX IF NOT EXISTS readings_holder ON readings (user, server, uuid, time)")
        self._db.execute("CREATE INDEX IF NOT EXISTS readings_time ON readings (time)")

    def add(self, rows: list[HolderReading | tuple]) -> None:
        values = [(r.time, r.uuid, r.user, r.server, r.since, r.utilization_pct, r.memory_used_mib,
                   r.memory_total_mib) if isinstance(r, HolderReading) else tuple(r) for r in rows]
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT INTO readings VALUES (?,?,?,?,?,?,?,?)", values)
            self._db.execute("COMMIT")

    def prune(self, now: float) -> None:
        with self._lock:
            self._db.execute("DELETE FROM readings WHERE time < ?", (now - self.keep,))

    def latest(self, user: str, server: str, uuid: str) -> HolderReading | None:
        with self._lock:
            row = self._db.execute(
                "SELECT time, uuid, user, server, since, util, mem_used, mem_total FROM readings "
                "WHERE user=? AND server=? AND uuid=? ORDER BY time DESC LIMIT 1", (user, server, uuid)).fetchone()
        return HolderReading(*row) if row else None

    def idle_since(self, holder: Holder, uuid: str, threshold_pct: float) -> float | None:
        """Since when this holder's GPU has read under ``threshold_pct`` in every reading
        (its first reading of this holding if it never read higher); None if its latest
        reading is at or over the threshold, has no utilisation (a MIG instance), or there is
        none. Readings from before ``holder.since`` belong to an earlier holding."""
        since = holder.since or 0.0
        with self._lock:
            last = self._db.execute(
                "SELECT time, util FROM readings WHERE user=? AND server=? AND uuid=? AND time>=? "
                "ORDER BY time DESC LIMIT 1", (holder.user, holder.server, uuid, since)).fetchone()
            if last is None or last[1] is None or last[1] >= threshold_pct:
                return None
            busy = self._db.execute(
                "SELECT MAX(time) FROM readings WHERE user=? AND server=? AND uuid=? AND time>=? "
                "AND (util IS NULL OR util>=?)", (holder.user, holder.server, uuid, since, threshold_pct)).fetchone()[0]
            query = ("SELECT MIN(time) FROM readings WHERE user=? AND server=? AND uuid=? AND time>=?")
            first_idle = self._db.execute(query, (holder.user, holder.server, uuid,
                                                  busy + 1e-6 if busy is not None else since)).fetchone()[0]
        return first_idle

    def close(self) -> None:
        with self._lock:
            self._db.close()


class ActivitySampler:
    """Keeps the last ``window`` seconds of readings, one every ``interval`` seconds, in memory,
    and each reading with its holder in ``store`` (when given)."""

    def __init__(self, reader: Any = None, interval: float = 10.0, window: float = 3600.0,
                 clock: Callable[[], float] = time.time, store: ActivityStore | None = None):
        self.reader = reader if reader is not None else NVMLReader()
        self.interval, self.window, self.clock, self.store = interval, window, clock, store
        self.source, self.reason = "n/a", "not sampled yet"
        self._latest: dict[str, tuple[float, Reading]] = {}
        self._series: dict[str, deque] = {}
        self._lock = threading.Lock()

    def sample(self, holders: Mapping[str, list[Holder]] | None = None) -> list[HolderReading]:
        """One reading of every device; returns the readings of held devices, attributed."""
        now = self.clock()
        try:
            readings = self.reader.read()
        except Unavailable as exc:
            with self._lock:
                self.source, self.reason = "n/a", str(exc)
            return []
        attributed = [HolderReading(now, r.uuid, h.user, h.server, h.since, r.utilization_pct,
                                    r.memory_used_mib, r.memory_total_mib)
                      for r in readings for h in (holders or {}).get(r.uuid, [])]
        with self._lock:
            self.source, self.reason = "nvml", ""
            for r in readings:
                self._latest[r.uuid] = (now, r)
                series = self._series.setdefault(r.uuid, deque())
                series.append((round(now, 1), r.utilization_pct, r.memory_used_mib))
            for series in self._series.values():
                while series and series[0][0] < now - self.window:
                    series.popleft()
        if self.store is not None:
            self.store.add(attributed)
            self.store.prune(now)
        return attributed

    def now(self, uuid: str) -> Reading | None:
        """The latest reading of this device if it is recent (three intervals), else None."""
        with self._lock:
            found = self._latest.get(uuid)
        if found is None or self.source != "nvml" or self.clock() - found[0] > 3 * self.interval:
            return None
        return found[1]

    def history(self, uuid: str) -> list[list]:
        """[[epoch seconds, utilisation % or None, memory used MiB or None], ...], oldest first."""
        with self._lock:
            return [list(s) for s in self._series.get(uuid, ())]
