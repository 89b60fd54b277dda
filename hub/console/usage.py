"""Live GPU usage from NVML: utilisation and memory per GPU (and MIG instance), by UUID.

The hub can read NVML only when its container is given the driver's NVML library (README,
"GPUs": the ``utility`` capability); otherwise every figure is honestly ``None`` ("n/a" on the
page) and ``reason`` says why. MIG instances report memory but no utilisation (NVML does not
offer it per instance).

Needs nothing but ``pynvml`` (nvidia-ml-py), so it runs on its own on a GPU host::

    python -m hub.console.usage --json                  # one reading, JSON
    python -m hub.console.usage --repeat 10 --interval 1 # ten readings, a table each
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, Callable

_MIB = 1024 * 1024
NO_NVML = ("NVML is not available: no NVIDIA driver library here (for the hub's container: "
           "give it the 'utility' capability, README, GPUs)")


@dataclass(frozen=True)
class Reading:
    """One device at one moment; None where NVML cannot say."""
    uuid: str
    index: int
    name: str
    utilization_pct: int | None
    memory_used_mib: int | None
    memory_total_mib: int | None
    parent_uuid: str | None = None


class Unavailable(Exception):
    """NVML cannot be used here; the message says why."""


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class NVMLReader:
    """Reads every device each call; NVML is initialised once and kept (re-initialised after
    an error), since ``nvmlInit`` costs more than a reading."""

    def __init__(self, nvml: Any = None):
        self._nv, self._ready = nvml, False
        self._lock = threading.Lock()

    def _init(self) -> Any:
        if self._nv is None:
            try:
                import pynvml
            except ImportError:
                raise Unavailable("the pynvml module (nvidia-ml-py) is not installed") from None
            self._nv = pynvml
        if not self._ready:
            try:
                self._nv.nvmlInit()
            except (self._nv.NVMLError, OSError) as exc:
                raise Unavailable(f"{NO_NVML} ({exc})") from None
            self._ready = True
        return self._nv

    def read(self) -> list[Reading]:
        with self._lock:
            nv = self._init()
            try:
                readings = []
                for index in range(nv.nvmlDeviceGetCount()):
                    readings += self._device(nv, index)
                return readings
            except nv.NVMLError as exc:
                self.close_locked()
                raise Unavailable(f"NVML failed: {exc}") from None

    def _device(self, nv: Any, index: int) -> list[Reading]:
        handle = nv.nvmlDeviceGetHandleByIndex(index)
        gpu = self._reading(nv, handle, index)
        migs = []
        try:
            current, _pending = nv.nvmlDeviceGetMigMode(handle)
            if current == nv.NVML_DEVICE_MIG_ENABLE:
                for slot in range(nv.nvmlDeviceGetMaxMigDeviceCount(handle)):
                    try:
                        mig = nv.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
                    except nv.NVMLError:
                        continue  # an empty slot
                    migs.append(self._reading(nv, mig, index, parent_uuid=gpu.uuid))
        except nv.NVMLError:
            pass  # NotSupported: a GPU without MIG
        return [gpu, *migs]

    @staticmethod
    def _reading(nv: Any, handle: Any, index: int, parent_uuid: str | None = None) -> Reading:
        def optional(call: Callable[[], Any]) -> Any:
            try:
                return call()
            except nv.NVMLError:  # NotSupported (MIG instances, some GPUs), GPU lost, ...
                return None

        memory = optional(lambda: nv.nvmlDeviceGetMemoryInfo(handle))
        util = optional(lambda: nv.nvmlDeviceGetUtilizationRates(handle))
        name = optional(lambda: _text(nv.nvmlDeviceGetName(handle))) or "GPU"
        return Reading(
            uuid=_text(nv.nvmlDeviceGetUUID(handle)), index=index, name=name,
            utilization_pct=int(util.gpu) if util is not None else None,
            memory_used_mib=int(memory.used) // _MIB if memory is not None else None,
            memory_total_mib=int(memory.total) // _MIB if memory is not None else None,
            parent_uuid=parent_uuid)

    def close(self) -> None:
        with self._lock:
            self.close_locked()

    def close_locked(self) -> None:
        if self._ready:
            self._ready = False
            try:
                self._nv.nvmlShutdown()
            except Exception:  # noqa: BLE001 - shutting down after an error
                pass


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
        self.latest: dict[str, tuple[float, Reading]] = {}
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
                self.latest[r.uuid] = (now, r)
                series = self._series.setdefault(r.uuid, deque())
                series.append((round(now, 1), r.utilization_pct, r.memory_used_mib))
            for series in self._series.values():
                while series and series[0][0] < now - self.window:
                    series.popleft()

    def now(self, uuid: str) -> Reading | None:
        """The latest reading of this device if it is recent (three intervals), else None."""
        with self._lock:
            found = self.latest.get(uuid)
        if found is None or self.source != "nvml" or self.clock() - found[0] > 3 * self.interval:
            return None
        return found[1]

    def history(self, uuid: str) -> list[list]:
        """[[epoch seconds, utilisation % or None, memory used MiB or None], ...], oldest first."""
        with self._lock:
            return [list(s) for s in self._series.get(uuid, ())]


def read_usage(reader: Any = None, close: bool = True) -> dict[str, Any]:
    """One reading of every device: {"source", "reason", "time", "gpus": {uuid: {...}}}."""
    reader = reader if reader is not None else NVMLReader()
    now = time.time()
    try:
        readings = reader.read()
    except Unavailable as exc:
        return {"source": "n/a", "reason": str(exc), "time": now, "gpus": {}}
    finally:
        if close:
            reader.close()
    return {"source": "nvml", "reason": "", "time": now,
            "gpus": {r.uuid: {k: v for k, v in asdict(r).items() if k != "uuid"} for r in readings}}


def _table(usage: dict[str, Any]) -> str:
    if usage["source"] != "nvml":
        return f"n/a: {usage['reason']}"
    lines = [f"{'#':>3}  {'uuid':<44} {'util':>5} {'memory used/total MiB':>22}  name"]
    for uuid, g in sorted(usage["gpus"].items(), key=lambda kv: (kv[1]["index"], kv[0])):
        util = "n/a" if g["utilization_pct"] is None else f"{g['utilization_pct']}%"
        used = "n/a" if g["memory_used_mib"] is None else g["memory_used_mib"]
        total = "n/a" if g["memory_total_mib"] is None else g["memory_total_mib"]
        lines.append(f"{g['index']:>3}  {uuid:<44} {util:>5} {f'{used}/{total}':>22}  {g['name']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hub.console.usage",
                                     description="GPU utilisation and memory by UUID, from NVML.")
    parser.add_argument("--json", action="store_true", help="one JSON object per reading")
    parser.add_argument("--repeat", type=int, default=1, help="readings to take (default 1)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between readings")
    args = parser.parse_args(argv)
    reader = NVMLReader()
    usage: dict[str, Any] = {}
    try:
        for i in range(max(args.repeat, 1)):
            if i:
                time.sleep(args.interval)
            usage = read_usage(reader, close=False)
            print(json.dumps(usage) if args.json else _table(usage), flush=True)
    finally:
        reader.close()
    return 0 if usage.get("source") == "nvml" else 1


if __name__ == "__main__":
    sys.exit(main())
