"""On a real GPU host (PYTHONPATH=/tmp/site:.): the NVML readings behind the GPU health checks,
for real. 1) hub.gpus.nvml's reader registers for critical-Xid events on every GPU and waits
(no Xid expected: it must return cleanly after the wait, and a poll without wait at once);
2) its health() readings; 3) the raw NVML calls behind them (retired pages, ECC, row
remapping, supported event types), each value or the NVML error it gives. One JSON object."""
import json
import sys
import time

import pynvml

from hub.gpus.health import gpu_check, xid_check
from hub.gpus.nvml import NVMLReader

wait = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
out: dict = {"pynvml": getattr(pynvml, "__version__", "?")}
reader = NVMLReader()
t = time.monotonic()
events = reader.xid_events(wait)
out["xid_wait"] = {"asked_s": wait, "took_s": round(time.monotonic() - t, 3), "events": [e.__dict__ for e in events],
                   "watched": reader.xid_watched}
t = time.monotonic()
reader.xid_events(0)
out["xid_poll_no_wait_s"] = round(time.monotonic() - t, 4)
t = time.monotonic()
readings = reader.health(0.01)
out["health_took_s"] = round(time.monotonic() - t, 4)
out["health"] = readings
out["checks"] = [gpu_check(r).to_json() | {"data": None} for r in readings] + [xid_check(readings, wait).to_json()]
reader.close()

pynvml.nvmlInit()
raw = []
for i in range(pynvml.nvmlDeviceGetCount()):
    h = pynvml.nvmlDeviceGetHandleByIndex(i)
    row = {"index": i}
    calls = {
        "uuid": lambda: pynvml.nvmlDeviceGetUUID(h),
        "name": lambda: pynvml.nvmlDeviceGetName(h),
        "supported_event_types": lambda: int(pynvml.nvmlDeviceGetSupportedEventTypes(h)),
        "ecc_mode": lambda: list(pynvml.nvmlDeviceGetEccMode(h)),
        "ecc_volatile_uncorrected": lambda: int(pynvml.nvmlDeviceGetTotalEccErrors(
            h, pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_VOLATILE_ECC)),
        "ecc_aggregate_uncorrected": lambda: int(pynvml.nvmlDeviceGetTotalEccErrors(
            h, pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_AGGREGATE_ECC)),
        "ecc_aggregate_corrected": lambda: int(pynvml.nvmlDeviceGetTotalEccErrors(
            h, pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, pynvml.NVML_AGGREGATE_ECC)),
        "retired_pages_dbe": lambda: pynvml.nvmlDeviceGetRetiredPages(
            h, pynvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR),
        "retired_pages_sbe": lambda: pynvml.nvmlDeviceGetRetiredPages(
            h, pynvml.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS),
        "retired_pending": lambda: int(pynvml.nvmlDeviceGetRetiredPagesPendingStatus(h)),
        "remapped_rows": lambda: list(pynvml.nvmlDeviceGetRemappedRows(h)),
        "mig_mode": lambda: list(pynvml.nvmlDeviceGetMigMode(h)),
    }
    for key, call in calls.items():
        try:
            value = call()
            row[key] = value.decode() if isinstance(value, bytes) else value
        except pynvml.NVMLError as exc:
            row[key] = f"NVMLError: {exc}"
    raw.append(row)
out["raw"] = raw
out["driver"] = pynvml.nvmlSystemGetDriverVersion()
pynvml.nvmlShutdown()
print(json.dumps(out, indent=1, default=str))
