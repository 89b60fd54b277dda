"""The host-health checks (hub/gpus/health.py) where the hub acts on them: at hub start (a
log line per check) and before a GPU is handed out, under the GPU manager's lock:

- a toolkit below the minimum (no admin override): no GPU for anyone, the message names the
  CVEs and the fix;
- the host's driver too old for the image's PyTorch (its ``gpuhub.torch.cuda`` label): the
  start is refused up front with the reason and the fix;
- an unhealthy GPU (NVML: lost, uncorrected ECC, pending page retirement or row remapping, a
  pending MIG change, MIG without instances, a critical Xid error received since the last
  check: the reader keeps its NVML event registration, so no Xid between two checks is
  missed): drained in the admin intent, with an audit entry
  (who: "hub", via: "health check"), so the allocator never hands it out; undrained by an admin.

Blocking calls only (NVML, files): the spawner runs ``before_gpu`` on its thread pool.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable

from hub import journal
from hub.gpus.health import CRITICAL_XIDS, FAIL, UNKNOWN, Check, cuda_check, gpu_check, toolkit_check
from hub.gpus.nvml import NVMLReader
from hub.gpus.nvml import Unavailable

log = logging.getLogger(__name__)


class Refused(Exception):
    """No GPU start now; the message says why and the fix (shown to the user as it is)."""


class HostGate:
    def __init__(self, toolkit_version: str, minimum: str, override: bool, audit_file: str,
                 reader: Any = None, clock: Callable[[], float] = time.time, retry_nvml: float = 300.0):
        self.toolkit = toolkit_check(toolkit_version or None, minimum, override)
        self.audit_file, self.clock, self.retry_nvml = Path(audit_file), clock, retry_nvml
        self._reader, self._nvml_down_until = reader, 0.0
        self._driver: dict | None = None
        self._lock = threading.Lock()

    def _nvml(self):
        if self._reader is None:
            self._reader = NVMLReader()
        return self._reader

    def gpu_health(self) -> list[Check] | None:
        """Each GPU's check now; None without NVML (tried again after ``retry_nvml`` seconds)."""

        if self.clock() < self._nvml_down_until:
            return None
        try:
            readings = self._nvml().health()
            if self._driver is None:
                self._driver = self._nvml().driver()
        except Unavailable:
            self._nvml_down_until = self.clock() + self.retry_nvml
            return None
        return [gpu_check(r) for r in readings]

    def startup(self) -> list[Check]:
        """The checks at hub start, logged (warnings and failures as warnings)."""
        checks = [self.toolkit, *(self.gpu_health() or [Check("gpus", UNKNOWN, "GPU health: no NVML in the hub")])]
        for c in checks:
            (log.warning if c.status in ("warn", FAIL) else log.info)(
                "Host health %s: %s%s", c.name, c.message, f" (fix: {c.fix})" if c.status != "ok" and c.fix else "")
        return checks

    def before_gpu(self, manager: Any, image: str, image_cuda: str | None) -> list[str]:
        """Under the manager's lock, before it assigns: raise Refused, or drain unhealthy GPUs
        (returns the messages of those drained now)."""
        with self._lock:
            if self.toolkit.status == FAIL:
                raise Refused(f"{self.toolkit.message}. An admin must {self.toolkit.fix}.")
            health = self.gpu_health()
            driver = self._driver or {}
            cuda = cuda_check(driver.get("cuda"), image_cuda, image, driver.get("version"))
            if cuda.status == FAIL:
                raise Refused(f"{cuda.message}. An admin must {cuda.fix}.")
            return self.drain_unhealthy(manager, health or [])

    def drain_unhealthy(self, manager: Any, checks: list[Check]) -> list[str]:
        intent = manager.allocator.intent
        known = {g.uuid for g in manager.inventory} | {g.parent_uuid for g in manager.inventory if g.parent_uuid}
        drained = []
        for check in checks:
            if check.status != FAIL or not check.refuses.startswith("gpu:"):
                continue
            uuid = check.refuses.removeprefix("gpu:")
            # A MIG-enabled GPU is allocated by its instances: drain those.
            targets = [g.uuid for g in manager.inventory if uuid in (g.uuid, g.parent_uuid)]
            new = [t for t in targets if t not in intent.drained]
            if uuid not in known or not new:
                continue
            for target in new:
                intent = intent.with_drained(target)
            manager.save_intent(intent)
            record = {"action": "drain", "gpu": uuid, "index": check.data.get("index"),
                      "note": check.message, "detail": f"drained {check.message} (automatic: {check.fix})"}
            xids = sorted({int(e["xid"]) for e in check.data.get("xids") or [] if int(e["xid"]) in CRITICAL_XIDS})
            if xids:
                record["xid"] = xids
            self.audit(record)
            log.warning("Drained unhealthy %s", check.message)
            drained.append(check.message)
        return drained

    def audit(self, record: dict[str, Any]) -> None:
        journal.append(self.audit_file, journal.entry(self.clock(), "hub", "health check", **record))
