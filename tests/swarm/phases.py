"""Where a spawn's time goes on the swarm, read from the engine while it happens (swarm-storm).

A ``SpawnWatch`` thread asks the manager's task API every 0.1 s about one user's service and
keeps, per task state, the engine's own time of that state (``Status.Timestamp``: the nodes
share this machine's clock) and what Swarm said while the task waited. ``phases`` turns that
into the phases of one start, in seconds:

- ``to_service``: the harness's POST until the service exists (``CreatedAt``): the hub's
  request handling, the allocator's reconcile and choice (``choose``, from the hub's log line
  "Assigning GPU", where there is one), the service create;
- ``scheduling``: service created until its task is assigned to a node (``pending`` while
  Swarm finds no node with the unit free: ``waited_for`` says why);
- ``task_start``: assigned until running (the node's agent: accepted, preparing, starting:
  container create and start);
- ``answer``: running until the hub reports the server ready (the server's boot, the hub's
  port probe and HTTP check, the harness's own poll of the hub every 0.1 s).
"""
from __future__ import annotations

import re
import statistics
import threading
import time
from datetime import datetime

# task states from scheduled on (one of them is seen once the task left "pending")
AFTER_PENDING = ("assigned", "accepted", "preparing", "ready", "starting", "running")


def engine_time(stamp: str) -> float | None:
    """Epoch seconds of an engine timestamp (RFC 3339 with nanoseconds, "Z")."""
    if not stamp or stamp.startswith("0001-"):
        return None
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", stamp)
    if not m:
        return None
    base = datetime.fromisoformat(m.group(1) + ("+00:00" if m.group(3) == "Z" else m.group(3)))
    return base.timestamp() + (float("0." + m.group(2)) if m.group(2) else 0.0)


class SpawnWatch:
    """Swarm's record of one user's service while it starts (a thread; ``stop()`` ends it)."""

    def __init__(self, api, user: str, instance: str, interval: float = 0.1):
        self.api, self.user, self.instance, self.interval = api, user, instance, interval
        self.service_created: float | None = None
        self.gpu = ""
        self.states: dict[str, float] = {}  # state -> the engine's time of it (first task seen)
        self.said: list[str] = []  # what Swarm said while the task waited (pending, no node)
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "SpawnWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        service_id = None
        while not self._stop.is_set():
            try:
                if service_id is None:
                    found = self.api.services(filters={"label": [f"gpuhub.user={self.user}",
                                                                 f"gpuhub.instance={self.instance}"]})
                    if found:
                        service_id = found[0]["ID"]
                        self.service_created = engine_time(found[0].get("CreatedAt", ""))
                        self.gpu = (found[0]["Spec"].get("Labels") or {}).get("gpuhub.gpu.uuid", "")
                if service_id is not None:
                    self.observe(self.api.tasks(filters={"service": service_id}))
                    if "running" in self.states:
                        return
            except Exception:  # noqa: BLE001 - a missed poll is a coarser figure, not a failure
                self.errors += 1
            self._stop.wait(self.interval)

    def observe(self, tasks: list[dict]) -> None:
        for task in sorted(tasks, key=lambda t: t.get("CreatedAt", "")):
            status = task.get("Status") or {}
            state = str(status.get("State") or "").lower()
            at = engine_time(status.get("Timestamp", ""))
            if state and at is not None:
                self.states.setdefault(state, at)
            if state == "pending":
                said = status.get("Err") or status.get("Message") or ""
                if said and said not in self.said:
                    self.said.append(said)


def phases(t0: float, ready: float, watch: SpawnWatch, chose: float | None = None) -> dict:
    """The phases of one start (seconds; None where the watch missed a state)."""
    created = watch.service_created
    scheduled = min((watch.states[s] for s in AFTER_PENDING if s in watch.states), default=None)
    running = watch.states.get("running")

    def span(a, b):
        return round(b - a, 3) if a is not None and b is not None else None
    return {
        "total": round(ready - t0, 3),
        "choose": span(t0, chose),
        "to_service": span(t0, created),
        "scheduling": span(created, scheduled),
        "task_start": span(scheduled, running),
        "answer": span(running, ready),
        "gpu": watch.gpu,
        "waited_for": watch.said,
    }


def summary(runs: list[dict]) -> dict:
    """p50 of each phase over the runs (those that have it)."""
    out = {}
    for key in ("total", "choose", "to_service", "scheduling", "task_start", "answer"):
        values = [r[key] for r in runs if r.get(key) is not None]
        out[key] = round(statistics.median(values), 3) if values else None
    out["waited_for_a_unit"] = sum(1 for r in runs if any("insufficient" in s or "resources" in s
                                                          for s in r.get("waited_for") or []))
    out["same_gpu_as_previous"] = sum(1 for a, b in zip(runs, runs[1:]) if b.get("gpu") and a.get("gpu") == b.get("gpu"))
    return out


_STAMP = r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z) "
_ASSIGNING = re.compile(_STAMP + r".*Assigning GPU (\S+) .* to (\S+)\s*$")
_HUB_PHASES = re.compile(_STAMP + r".*Start of (\S+) on the swarm: (.*)$")


def assigning_times(log_text: str) -> dict[str, list[float]]:
    """user -> the times of the hub's "Assigning GPU ... to <user>" lines, from
    ``docker service logs --timestamps`` output (each line carries the engine's time)."""
    found: dict[str, list[float]] = {}
    for line in log_text.splitlines():
        m = _ASSIGNING.search(line.strip())
        if m and (at := engine_time(m.group(1))) is not None:
            found.setdefault(m.group(3), []).append(at)
    return found


def hub_phases(log_text: str) -> dict[str, list[tuple[float, str]]]:
    """user -> (time, the hub's own line of phases) of each start ("folders ready 0.32s, GPU
    chosen 0.34s, ...", hub/hub_process/spawner/swarm.py)."""
    found: dict[str, list[tuple[float, str]]] = {}
    for line in log_text.splitlines():
        m = _HUB_PHASES.search(line.strip())
        if m and (at := engine_time(m.group(1))) is not None:
            found.setdefault(m.group(2), []).append((at, m.group(3).strip()))
    return found


def within(times, t0: float, t1: float):
    """The first of ``times`` (or of (time, value) pairs) between t0 and t1."""
    for item in times or []:
        at = item[0] if isinstance(item, tuple) else item
        if t0 <= at <= t1:
            return item
    return None
