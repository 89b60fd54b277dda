"""Epoch seconds as the text the hub writes: ISO 8601 in UTC with a Z (audit lines, API replies,
CSV) and the shorter form people read in messages. Pure."""
from __future__ import annotations

from datetime import datetime, timezone


def utc_iso(epoch: float, timespec: str = "seconds") -> str:
    """2026-11-23T09:00:00Z (``timespec`` as datetime.isoformat's: "seconds", "minutes")."""
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec=timespec).replace("+00:00", "Z")


def utc_words(epoch: float) -> str:
    """2026-11-23 09:00 UTC, for sentences."""
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def utc_day(epoch: float) -> str:
    """2026-11-23, for tables."""
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d")
