"""UsageSampler: the last hour of GPU usage in memory, one NVML reading (hub.gpus.nvml) every
few seconds.

Where the hub cannot read NVML (docs/gpus.md: the ``utility`` capability), every figure is
honestly ``None`` ("n/a" on the page) and ``reason`` says why.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Callable

from hub.gpus.nvml import NVMLReader, Reading, Unavailable


class UsageSampler:
    """Keeps the last ``window`` seconds of readings, one every ``interval`` seconds, in memory.

    ``sample()`` blocks (NVML calls): run it off the event loop. ``source`` is "nvml" while
    readings arrive and "n/a" otherwise, with ``reason``.
    """

    def __init__(self, reader: Any = None, interval: float = 10.0, window: float = 3600.0,
                 clock: Callable[[], float] = time.time):
        self.reader = reader if reader is not None else NVMLReader()
        self.interval, self.window, self.clock = interval, window, clock
        self.source, self.reason = "n/a", "not sampled yet"
        self._latest: dict[str, tuple[float, Reading]] = {}
        self._series: dict[str, deque] = {}
        self._lock = threading.Lock()

    def sample(self) -> None:
        now = self.clock()
        try:
            readings = self.reader.read()
        except Unavailable as exc:
            with self._lock:
                self.source, self.reason = "n/a", str(exc)
            return
        with self._lock:
            self.source, self.reason = "nvml", ""
            for r in readings:
                self._latest[r.uuid] = (now, r)
                series = self._series.setdefault(r.uuid, deque())
                series.append((round(now, 1), r.utilization_pct, r.memory_used_mib))
            for series in self._series.values():
                while series and series[0][0] < now - self.window:
                    series.popleft()

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
