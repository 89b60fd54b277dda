"""AuditLog: who did what when, one JSON line per admin action on the state volume."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from hub import journal


class AuditLog:
    """Who did what when: one JSON object per line, appended, on the state volume."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def append(self, entry: dict[str, Any]) -> None:
        journal.append(self.path, entry)

    def write(self, now: float, who: str, via: str, **fields: Any) -> dict[str, Any]:
        """Build the entry (``hub.journal.entry``), append it, return it. Blocking (fsync)."""
        record = journal.entry(now, who, via, **fields)
        self.append(record)
        return record

    def tail(self, limit: int = 50) -> list[dict[str, Any]]:
        """The last `limit` entries, newest first (unreadable lines are skipped)."""
        try:
            with open(self.path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                chunk = min(size, max(limit, 1) * 2048)
                f.seek(size - chunk)
                lines = f.read().splitlines()
        except FileNotFoundError:
            return []
        if chunk < size:
            lines = lines[1:]  # the first line may be cut
        entries = []
        for raw in reversed(lines):
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            if isinstance(entry, dict):
                entries.append(entry)
            if len(entries) >= limit:
                break
        return entries
