"""NVML, the NVIDIA driver's management library: which GPUs (and MIG instances) this host
has, and what each one is doing now. The one module that talks to ``pynvml``.

The hub can read NVML only where the driver's library is visible to it (docs/gpus.md: the
``utility`` capability); elsewhere ``discover_gpus`` returns None and ``NVMLReader.read``
raises ``Unavailable`` with the reason. MIG instances report memory but no utilisation (NVML
does not offer it per instance). Tests feed a fake module through ``NVMLReader(nvml=...)``.

Runs on its own on a GPU host (it needs only ``pynvml``)::

    python -m hub.gpus.nvml --json                   # one reading, JSON
    python -m hub.gpus.nvml --repeat 10 --interval 1 # ten readings, a table each
    python -m hub.gpus.nvml --xids 30                # critical Xid events for 30 s, JSON lines
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

from hub.gpus.model import GPU

log = logging.getLogger(__name__)

_MIB = 1024 * 1024
NO_NVML = ("NVML is not available: no NVIDIA driver library here (for the hub's container: "
           "give it the 'utility' capability, docs/gpus.md)")


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


@dataclass(frozen=True)
class XidEvent:
    """One Xid error NVML delivered to a registered event set: which GPU, which Xid (the
    driver's error number, docs.nvidia.com/deploy/xid-errors), when this process received it,
    and the MIG GPU instance if the driver names one."""
    uuid: str
    index: int | None
    xid: int
    time: float
    gpu_instance: int | None = None


# nvmlEventData_t's instance ids when the event is not about a MIG instance
_NO_INSTANCE = 0xFFFFFFFF
# One poll takes at most this many events (a GPU in an error storm must not hold the lock).
_MAX_EVENTS = 256


class NVMLReader:
    """NVML is initialised once and kept (re-initialised after an error), since ``nvmlInit``
    costs more than a reading. Thread-safe: samplers call it from a worker thread.

    Xid errors exist in NVML only as events: ``xid_events`` registers an event set for
    critical Xids on every GPU at its first call and keeps it, so each later call returns
    the Xids that arrived since the one before (queued by the driver meanwhile). Xids from
    before the registration (or while NVML was re-initialised) are not seen: they are in the
    kernel log (``journalctl -k | grep Xid``)."""

    def __init__(self, nvml: Any = None, clock: Callable[[], float] = time.time):
        self._nv, self._ready = nvml, False
        self._lock = threading.Lock()
        self._clock = clock
        self._events: Any = None  # the registered event set, while NVML is initialised
        self._watched: dict[str, bool] = {}  # uuid -> Xid events registered for it

    def _init(self) -> Any:
        if self._nv is None:
            try:
                # optional: hosts without NVML (and the tests) have no pynvml
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
        """Every GPU and, after a MIG-enabled GPU, its instances."""
        with self._lock:
            nv = self._init()
            try:
                return [self._reading(nv, handle, index, parent)
                        for index in range(nv.nvmlDeviceGetCount())
                        for handle, parent in self._handles(nv, index)]
            except nv.NVMLError as exc:
                self.close_locked()
                raise Unavailable(f"NVML failed: {exc}") from None

    def gpus(self) -> list[GPU]:
        """What can be allocated: whole GPUs, or for a MIG-enabled GPU its instances. A GPU
        NVML cannot read is left out, with a warning."""
        with self._lock:
            nv = self._init()
            found = []
            for index in range(nv.nvmlDeviceGetCount()):
                try:
                    (handle, _), *migs = self._handles(nv, index)
                    whole = self._gpu(nv, handle, index, None)
                    if not self._mig_enabled(nv, handle):
                        found.append(whole)
                        continue
                    if not migs:  # a MIG-enabled GPU without instances cannot run anything
                        log.warning("GPU %d (%s) has MIG enabled but no MIG instances", index, whole.uuid)
                    found += [self._gpu(nv, h, index, parent) for h, parent in migs]
                except nv.NVMLError as exc:
                    log.warning("GPU %d skipped: NVML cannot read it (%s)", index, exc)
            return found

    def _handles(self, nv: Any, index: int) -> list[tuple[Any, str | None]]:
        """(handle, parent uuid) of GPU `index`, then of each of its MIG instances."""
        handle = nv.nvmlDeviceGetHandleByIndex(index)
        found: list[tuple[Any, str | None]] = [(handle, None)]
        if not self._mig_enabled(nv, handle):
            return found
        parent = _text(nv.nvmlDeviceGetUUID(handle))
        try:
            slots = nv.nvmlDeviceGetMaxMigDeviceCount(handle)
        except nv.NVMLError:
            return found
        for slot in range(slots):
            try:
                found.append((nv.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot), parent))
            except nv.NVMLError:  # NotFound: an empty slot
                continue
        return found

    @staticmethod
    def _mig_enabled(nv: Any, handle: Any) -> bool:
        try:
            current, _pending = nv.nvmlDeviceGetMigMode(handle)
        except nv.NVMLError:  # NotSupported: a GPU without MIG
            return False
        return current == nv.NVML_DEVICE_MIG_ENABLE

    @staticmethod
    def _gpu(nv: Any, handle: Any, index: int, parent_uuid: str | None) -> GPU:
        return GPU(uuid=_text(nv.nvmlDeviceGetUUID(handle)), index=index,
                   name=_text(nv.nvmlDeviceGetName(handle)),
                   memory_total_mib=int(nv.nvmlDeviceGetMemoryInfo(handle).total) // _MIB,
                   parent_uuid=parent_uuid)

    @staticmethod
    def _reading(nv: Any, handle: Any, index: int, parent_uuid: str | None) -> Reading:
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

    def driver(self) -> dict[str, str]:
        """The driver's version and the CUDA version it supports: {"version", "cuda"}."""
        with self._lock:
            nv = self._init()
            try:
                cuda = int(nv.nvmlSystemGetCudaDriverVersion_v2())
                return {"version": _text(nv.nvmlSystemGetDriverVersion()),
                        "cuda": f"{cuda // 1000}.{cuda % 1000 // 10}"}
            except nv.NVMLError as exc:
                self.close_locked()
                raise Unavailable(f"NVML failed: {exc}") from None

    def health(self, xid_wait: float = 0.01) -> list[dict[str, Any]]:
        """Each whole GPU's health, for hub/gpus/health.py ``gpu_check``: lost, ECC errors
        (volatile: since the last reset), retired pages (count, pending), row remapping, MIG
        layout, and the Xid errors received since the last call (``xids``; waiting up to
        ``xid_wait`` seconds for the first; ``xid_watch``: whether Xids can be received for
        it at all). None where the GPU does not support a reading."""
        events = self.xid_events(xid_wait)
        with self._lock:
            nv = self._init()
            found = []
            for index in range(nv.nvmlDeviceGetCount()):
                reading = self._health(nv, index)
                reading["xid_watch"] = (self._watched.get(reading["uuid"], False)
                                         if self._events is not None else None)
                reading["xids"] = [{"xid": e.xid, "time": round(e.time, 3), "gpu_instance": e.gpu_instance}
                                   for e in events if e.uuid == reading["uuid"]]
                found.append(reading)
            return found

    def xid_events(self, wait: float = 0.0) -> list[XidEvent]:
        """The critical-Xid events received since the last call, waiting up to ``wait``
        seconds for the first (0: only those already queued; the wait holds this reader's
        lock, so keep it short where others share the reader). Registers at the first call."""
        with self._lock:
            nv = self._init()
            if self._events is None and not self._register_locked(nv):
                return []
            found: list[XidEvent] = []
            timeout_ms = max(int(round(wait * 1000)), 0)
            for _ in range(_MAX_EVENTS):
                try:
                    data = nv.nvmlEventSetWait_v2(self._events, timeout_ms)
                except nv.NVMLError as exc:
                    if getattr(exc, "value", None) == nv.NVML_ERROR_TIMEOUT:
                        break
                    log.warning("NVML Xid events: waiting failed (%s); registering again next time", exc)
                    self._free_events_locked()
                    break
                timeout_ms = 0  # after the first event, take only what is queued already
                if not int(data.eventType) & nv.nvmlEventTypeXidCriticalError:
                    continue
                found.append(self._xid_event(nv, data))
            return found

    @property
    def xid_watched(self) -> dict[str, bool]:
        """uuid -> whether Xid events are registered for that GPU (empty before the first
        ``xid_events``, or where NVML has no events)."""
        return dict(self._watched)

    def _register_locked(self, nv: Any) -> bool:
        """Register every whole GPU that supports them for critical-Xid events; False where
        this NVML (or pynvml) has no events at all."""
        if not hasattr(nv, "nvmlEventSetCreate"):
            return False
        try:
            events = nv.nvmlEventSetCreate()
        except nv.NVMLError as exc:
            log.warning("NVML Xid events not available: %s", exc)
            return False
        watched: dict[str, bool] = {}
        for index in range(nv.nvmlDeviceGetCount()):
            try:
                handle = nv.nvmlDeviceGetHandleByIndex(index)
                uuid = _text(nv.nvmlDeviceGetUUID(handle))
            except nv.NVMLError:
                continue  # a lost GPU: health() says so
            try:
                supported = int(nv.nvmlDeviceGetSupportedEventTypes(handle))
                if supported & nv.nvmlEventTypeXidCriticalError:
                    nv.nvmlDeviceRegisterEvents(handle, nv.nvmlEventTypeXidCriticalError, events)
                    watched[uuid] = True
                else:
                    watched[uuid] = False
            except nv.NVMLError as exc:  # NotSupported on some GPUs/platforms
                log.warning("GPU %d (%s): no Xid events from NVML (%s)", index, uuid, exc)
                watched[uuid] = False
        self._events, self._watched = events, watched
        return True

    def _xid_event(self, nv: Any, data: Any) -> XidEvent:
        try:
            uuid = _text(nv.nvmlDeviceGetUUID(data.device))
        except nv.NVMLError:
            uuid = "unknown"
        try:
            index = int(nv.nvmlDeviceGetIndex(data.device))
        except (nv.NVMLError, AttributeError):
            index = None
        instance = int(getattr(data, "gpuInstanceId", _NO_INSTANCE))
        return XidEvent(uuid=uuid, index=index, xid=int(data.eventData), time=self._clock(),
                        gpu_instance=None if instance == _NO_INSTANCE else instance)

    def _free_events_locked(self) -> None:
        if self._events is not None:
            try:
                self._nv.nvmlEventSetFree(self._events)
            except Exception:  # noqa: BLE001 - freeing after an error
                pass
        self._events, self._watched = None, {}

    @staticmethod
    def _health(nv: Any, index: int) -> dict[str, Any]:
        def optional(call: Callable[[], Any]) -> Any:
            try:
                return call()
            except nv.NVMLError:  # NotSupported (no ECC, no row remapping, no MIG), ...
                return None

        try:
            handle = nv.nvmlDeviceGetHandleByIndex(index)
            uuid = _text(nv.nvmlDeviceGetUUID(handle))
        except nv.NVMLError as exc:
            return {"uuid": f"index-{index}", "index": index, "name": "GPU", "lost": True, "error": str(exc)}
        try:
            nv.nvmlDeviceGetMemoryInfo(handle)
        except nv.NVMLError as exc:  # GpuIsLost and friends
            if "lost" in str(exc).lower() or "unknown" in str(exc).lower():
                return {"uuid": uuid, "index": index, "name": "GPU", "lost": True, "error": str(exc)}
        ecc = lambda kind: optional(lambda: int(nv.nvmlDeviceGetTotalEccErrors(  # noqa: E731
            handle, kind, nv.NVML_VOLATILE_ECC)))
        remap = optional(lambda: nv.nvmlDeviceGetRemappedRows(handle))  # (corr, unc, pending, failure)
        retired = optional(lambda: nv.nvmlDeviceGetRetiredPagesPendingStatus(handle))
        # Retired pages (Volta and older retire pages; Ampere and newer remap rows instead)
        retired_pages = [optional(lambda: len(nv.nvmlDeviceGetRetiredPages(handle, cause)))
                         for cause in (nv.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR,
                                       nv.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS)]
        mig = optional(lambda: tuple(nv.nvmlDeviceGetMigMode(handle)))
        instances = 0
        if mig and mig[0] == nv.NVML_DEVICE_MIG_ENABLE:
            for slot in range(optional(lambda: nv.nvmlDeviceGetMaxMigDeviceCount(handle)) or 0):
                if optional(lambda: nv.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)) is not None:
                    instances += 1
        return {"uuid": uuid, "index": index, "name": optional(lambda: _text(nv.nvmlDeviceGetName(handle))) or "GPU",
                "lost": False,
                "ecc_uncorrected": ecc(nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED),
                "ecc_corrected": ecc(nv.NVML_MEMORY_ERROR_TYPE_CORRECTED),
                "retired_pending": bool(retired) if retired is not None else None,
                "retired_pages": None if None in retired_pages else sum(retired_pages),
                "remap_pending": bool(remap[2]) if remap else None,
                "remap_failure": bool(remap[3]) if remap else None,
                "mig": [int(mig[0]), int(mig[1])] if mig else None,
                "mig_instances": instances}

    def close(self) -> None:
        with self._lock:
            self.close_locked()

    def close_locked(self) -> None:
        if self._ready:
            self._free_events_locked()
            self._ready = False
            try:
                self._nv.nvmlShutdown()
            except Exception:  # noqa: BLE001 - shutting down after an error
                pass


def discover_gpus(nvml: Any = None) -> list[GPU] | None:
    """The allocatable devices NVML sees; None without a driver or without pynvml."""
    reader = NVMLReader(nvml)
    try:
        return reader.gpus()
    except Unavailable:
        return None
    finally:
        reader.close()


def read_usage(reader: NVMLReader | None = None, close: bool = True) -> dict[str, Any]:
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
    parser = argparse.ArgumentParser(prog="python -m hub.gpus.nvml",
                                     description="GPU utilisation and memory by UUID, from NVML.")
    parser.add_argument("--json", action="store_true", help="one JSON object per reading")
    parser.add_argument("--repeat", type=int, default=1, help="readings to take (default 1)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between readings")
    parser.add_argument("--xids", type=float, metavar="SECONDS",
                        help="instead: listen this long for critical-Xid events, one JSON line each")
    args = parser.parse_args(argv)
    reader = NVMLReader()
    usage: dict[str, Any] = {}
    if args.xids is not None:
        try:
            events = reader.xid_events(args.xids)
            for event in events:
                print(json.dumps(asdict(event)), flush=True)
            print(json.dumps({"listened_s": args.xids, "events": len(events),
                              "watched": reader.xid_watched}), flush=True)
            return 0
        except Unavailable as exc:
            print(f"n/a: {exc}", file=sys.stderr)
            return 1
        finally:
            reader.close()
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
