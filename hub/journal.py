"""One audit line: the entry every admin or automatic action writes (when, who, through what,
and what), one JSON object per line. Pure, on the bottom floor, so the GPU gate (hub/gpus/gate.py)
writes the same lines as hub/common/audit.py's AuditLog, which the processes read and write."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hub.files import append_line
from hub.times import utc_iso


def entry(now: float, who: str, via: str, **fields: Any) -> dict[str, Any]:
    """An audit entry at ``now`` (epoch seconds): its time as text and as a number, who did it
    and through what (``via``), then the action's own fields."""
    return {"time": utc_iso(now), "epoch": round(now, 3), "who": who, "via": via, **fields}


def append(path: str | Path, record: dict[str, Any]) -> None:
    """Append one entry as a line (sorted keys, fsynced)."""
    append_line(path, json.dumps(record, sort_keys=True))
