"""Parked servers: which paused containers gave their GPU back (hub/common/park.py parks them).

A container's labels cannot change once it exists, so what is parked is kept in a small JSON
file on the state volume, ``gpu-parked.json`` beside the admin's intent:
``{"user\\nserver": {record}}``. A container counts as parked only while the file names it
AND the engine shows it paused (``parked_ids``): a stale record (the container was unpaused,
removed, or replaced by a new one) can never free a GPU that is in use.

The file also keeps, under ``"_resumed"``, when each container last came back from parking
(``resumed_at``): usage accounting (hub.usage.reconcile) counts a resumed container's GPU time
from then on, so parked time is never GPU time (docker unpause leaves ``State.StartedAt`` as it was).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from hub.files import write_atomic

FILE = "gpu-parked.json"
RESUMED = "_resumed"  # container id -> when it last resumed (epoch seconds)
RESUMED_KEEP = 64 * 86400.0  # resumed times older than this are dropped at the next write


@dataclass(frozen=True)
class Parked:
    """One parked server: its container, the GPU it gave back, since when, and what was moved
    into its host memory (the memory limit it had, to put back when it resumes)."""
    user: str
    server: str
    container: str  # the container's full id
    uuid: str
    since: float
    gpu_mib: int = 0  # GPU memory in use when it was parked (what its host memory now holds)
    mem_limit: int = 0  # the container's memory limit before parking (bytes; 0: none)
    mem_limit_parked: int = 0  # the limit while parked (bytes; 0: unchanged)
    memswap_limit: int = 0  # its swap limit before parking (bytes; 0: the engine's default)
    pids: tuple[int, ...] = field(default_factory=tuple)  # the CUDA processes parked

    @property
    def key(self) -> tuple[str, str]:
        return (self.user, self.server)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "pids": list(self.pids)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Parked":
        return cls(str(data["user"]), str(data.get("server", "")), str(data["container"]), str(data["uuid"]),
                   float(data["since"]), int(data.get("gpu_mib") or 0), int(data.get("mem_limit") or 0),
                   int(data.get("mem_limit_parked") or 0), int(data.get("memswap_limit") or 0),
                   tuple(int(p) for p in data.get("pids") or ()))


class ParkedFile:
    """The parked servers on the state volume; each change is one atomic rewrite."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def _raw(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def all(self) -> dict[tuple[str, str], Parked]:
        out = {}
        for name, value in self._raw().items():
            if name == RESUMED:
                continue
            try:
                record = Parked.from_json(value)
            except (KeyError, TypeError, ValueError, AttributeError):
                continue  # one bad record frees nothing and blocks nothing else
            out[record.key] = record
        return out

    def get(self, key: tuple[str, str]) -> Parked | None:
        return self.all().get(key)

    def resumed_at(self) -> dict[str, float]:
        """Container id -> when it last came back from parking."""
        value = self._raw().get(RESUMED)
        out = {}
        for cid, when in (value.items() if isinstance(value, dict) else ()):
            try:
                out[str(cid)] = float(when)
            except (TypeError, ValueError):
                continue
        return out

    def put(self, record: Parked) -> None:
        records = self.all()
        records[record.key] = record
        self._write(records, self.resumed_at())

    def pop(self, key: tuple[str, str], resumed: float | None = None) -> Parked | None:
        """Remove a record; ``resumed``: its container runs on its GPU again from that time."""
        records = self.all()
        gone = records.pop(key, None)
        if gone is not None:
            times = self.resumed_at()
            if resumed is not None:
                times[gone.container] = resumed
            self._write(records, times)
        return gone

    def _write(self, records: dict[tuple[str, str], Parked], resumed: dict[str, float]) -> None:
        data: dict[str, Any] = {"\n".join(k): r.to_json() for k, r in records.items()}
        if resumed:
            newest = max(resumed.values())
            data[RESUMED] = {c: t for c, t in resumed.items() if newest - t < RESUMED_KEEP}
        write_atomic(self.path, json.dumps(data, indent=1, sort_keys=True))


def is_paused(container: Mapping[str, Any]) -> bool:
    """Whether an inspect (``State.Paused``) or listing (``State: "paused"``) shows it paused."""
    state = container.get("State")
    if isinstance(state, str):
        return state.lower() == "paused"
    return bool((state or {}).get("Paused")) or str((state or {}).get("Status", "")).lower() == "paused"


def parked_ids(containers: Iterable[Mapping[str, Any]], records: Iterable[Parked]) -> frozenset[str]:
    """The ids of the containers that are parked: paused now, and named by a record."""
    named = {r.container for r in records}
    return frozenset(c["Id"] for c in containers if c.get("Id") in named and is_paused(c))
