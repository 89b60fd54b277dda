"""What the hub asks of the usage store (hub/hub_process/spawner/spawner.py): may this user start a GPU
server (their quotas), what to show them (usage, a 90 % warning, why their server was stopped),
and counting refused starts by reason (the metrics' ``gpuhub_spawn_refusals_total``).

Blocking (SQLite, a few milliseconds): the spawner calls these on a thread.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from functools import lru_cache
from typing import Any, Iterable

from hub.usage import quota as quotas
from hub.usage.store import UsageStore

log = logging.getLogger("jupyterhub")


@lru_cache(maxsize=4)
def store(path: str) -> UsageStore:
    return UsageStore(path)


def _statuses(db: UsageStore, user: str, groups: Iterable[str], courses: Iterable[str], default: str,
              now: float) -> list[quotas.Status]:
    applying = quotas.applicable(quotas.from_rows(db.quotas(), quotas.parse_spec(default) if default else None),
                                 user, groups, courses)
    if not applying:
        return []
    mine = db.between(now - max(q.window_s for q in applying), now, user)
    return [quotas.status(q, mine, now) for q in applying]


def start_refusal(path: str, user: str, groups: Iterable[str], courses: Iterable[str], default: str = "",
                  now: float | None = None) -> str | None:
    """The refusal message when a quota of this user is used up, else None (and their old
    warnings and stop reasons are cleared: a new GPU session begins)."""
    if not Path(path).is_file():  # the console creates it: no usage recorded yet
        return None
    now = time.time() if now is None else now
    db = store(path)
    worst = quotas.tightest(_statuses(db, user, groups, courses, default, now))
    if worst is not None and worst.fraction >= 1.0:
        db.count_refusal("quota")
        return quotas.refusal_message(worst)
    db.clear_notices(user)
    return None


def count_refusal(path: str, reason: str) -> None:
    try:
        if Path(path).is_file():
            store(path).count_refusal(reason)
    except Exception as exc:  # noqa: BLE001 - a metric must never fail a spawn
        log.warning("usage store: could not count a refusal (%s)", exc)


def summary(path: str, user: Any, groups: Iterable[str], courses: Iterable[str], default: str = "",
            now: float | None = None) -> dict:
    """For the hub's pages: the user's GPU-hours (last 24 h, 7 days, 30 days), their tightest
    quota and notices. {} when there is nothing to show or the store cannot be read."""
    now = time.time() if now is None else now
    if not Path(path).is_file():
        return {}
    try:
        db = store(path)
        mine = db.between(now - 30 * 86400, now, user)
        out: dict = {"hours": {k: round(sum(iv.held_between(now - d * 86400, now) for iv in mine) / 3600, 2)
                               for k, d in (("day", 1), ("week", 7), ("month", 30))}}
        worst = quotas.tightest(_statuses(db, user, groups, courses, default, now))
        if worst is not None:
            out["quota"] = worst.to_json()
        notices = db.notices(user)
        out["warning"] = notices.get("warn", {}).get("message", "")
        out["stopped"] = notices.get("stop", {}).get("message", "")
        return out
    except Exception as exc:  # noqa: BLE001 - a page must render without usage
        log.warning("usage store: %s", exc)
        return {}
