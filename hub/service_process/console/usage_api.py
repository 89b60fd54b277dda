"""The console's usage and quota desk: what the API's /usage, /usage/users/{user} and /quotas
do (their handlers are in handlers.py).

Reports read the usage store (hub/usage/store.py) that the console's periodic sync keeps
(hub/usage/reconcile.py). Quota changes are checked first (hub/usage/quota.py: a number of
hours above 0 and sane, a window of at most a year, a user, group or course the hub knows) and
only then written, with an audit line: a refused change changes nothing.
"""
from __future__ import annotations

import asyncio
import csv
import io
import math
import re
import time
from datetime import datetime, timezone
from typing import Any

from hub import courses as course_model
from hub.common.errors import ConsoleError, shown
from hub.times import utc_iso
from hub.usage import quota as quotas
from hub.usage.accounting import BUCKETS, GROUPINGS, report
from hub.usage.reconcile import UsageKeeper

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([hdw])$")
MAX_SPAN = 400 * 86400


def parse_when(raw: str, now: float, name: str) -> float:
    """``7d``, ``24h`` or ``2w`` before now, ISO 8601 (a date, or a time with a zone), or epoch
    seconds; a 400 naming the parameter otherwise."""
    raw = raw.strip()
    m = _RELATIVE.match(raw)
    if m:
        return now - float(m.group(1)) * {"h": 3600, "d": 86400, "w": 7 * 86400}[m.group(2)]
    try:
        value = float(raw)
    except ValueError:
        try:
            d = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise ConsoleError(400, f"{name}={shown(raw)}: use 7d, 24h or 2w (before now), an ISO 8601 date or "
                                    "time (2026-11-23, 2026-11-23T09:00+01:00) or epoch seconds") from None
        value = (d if d.tzinfo else d.replace(tzinfo=timezone.utc)).timestamp()
    if not math.isfinite(value) or not 0 <= value < 253402300800:
        raise ConsoleError(400, f"{name}={shown(raw)} is not a time between 1970 and 9999")
    return value


class UsageDesk:
    def __init__(self, console: Any, keeper: UsageKeeper):
        self.console, self.keeper = console, keeper

    @property
    def store(self):
        return self.keeper.store

    async def report(self, args: dict[str, str]) -> dict[str, Any]:
        now = time.time()
        since = parse_when(args.get("since", "7d"), now, "since")
        until = parse_when(args["until"], now, "until") if args.get("until") else now
        by, bucket = args.get("by", "user"), args.get("bucket") or None
        if by not in GROUPINGS:
            raise ConsoleError(400, f"by={shown(by)}: use one of {', '.join(GROUPINGS)}")
        if bucket is not None and bucket not in BUCKETS:
            raise ConsoleError(400, f"bucket={shown(bucket)}: use one of {', '.join(BUCKETS)} (or leave it out)")
        if until <= since or until - since > MAX_SPAN:
            raise ConsoleError(400, "since must be before until, and at most 400 days before it")
        user = args.get("user")
        intervals = await asyncio.to_thread(self.store.between, since, until, user)
        rows = report(intervals, since, until, by, bucket)
        total = round(sum(r["gpu_hours"] for r in rows), 6) if by in ("user", "gpu", "node") else None
        last = self.keeper.last
        return {"since": since, "until": until, "by": by, "bucket": bucket, "user": user, "rows": rows,
                "total_gpu_hours": total, "synced_at": last.time if last else None}

    async def user_usage(self, user: str) -> dict[str, Any]:
        model = await self.console.known_user(user)
        groups = model.get("groups") or []
        course_names = await self._courses()
        now = time.time()
        statuses = await asyncio.to_thread(self.keeper.statuses, user, groups,
                                           [g for g in groups if g in course_names], now)
        intervals = await asyncio.to_thread(self.store.between, now - 30 * 86400, now, user)
        hours = {k: round(sum(iv.held_between(now - d * 86400, now) for iv in intervals) / 3600, 4)
                 for k, d in (("day", 1), ("week", 7), ("month", 30))}
        notices = await asyncio.to_thread(self.store.notices, user)
        return {"user": user, "hours": hours, "quotas": [s.to_json() for s in statuses],
                "notices": {k: v["message"] for k, v in notices.items()}}

    async def _courses(self) -> set[str]:
        return {g["name"] for g in await self.console.hub.group_models()
                if course_model.PROPERTY in (g.get("properties") or {})}

    async def listing(self) -> dict[str, Any]:
        rows = await asyncio.to_thread(self.store.quotas)
        default = self.keeper.default_quota
        return {"quotas": [{**quotas.Quota(r["scope"], r["name"], r["hours"], r["window_s"]).to_json(),
                            "set_by": r["set_by"], "set_at": r["set_at"]} for r in rows],
                "configured_default": quotas.Quota("default", "", *default[:1], default[1] * 86400).to_json()
                if default else None}

    async def set_quota(self, body: dict[str, Any], who: str, via: str) -> dict[str, Any]:
        try:
            q = quotas.check(body["scope"], body.get("name", ""), body["hours"], body["window_days"])
        except quotas.QuotaError as exc:
            raise ConsoleError(400, str(exc)) from None
        await self._exists(q.scope, q.name)
        async with self.console.lock:
            await asyncio.to_thread(self.store.set_quota, q.scope, q.name, q.hours, q.window_s, who)
            text = q.to_json()["text"]
            whose = "every user" if q.scope == "default" else f"{q.scope} {q.name}"
            return await self.console.commit(None, {"action": "quota", **q.to_json()}, body.get("note", ""),
                                             f"set the GPU quota of {whose} to {text}", who, via)

    async def delete_quota(self, scope: str, name: str, body: dict[str, Any], who: str, via: str) -> dict[str, Any]:
        if scope not in quotas.SCOPES:
            raise ConsoleError(400, f"scope {scope!r}: use one of {', '.join(quotas.SCOPES)}")
        name = "" if scope == "default" else name
        async with self.console.lock:
            if not await asyncio.to_thread(self.store.delete_quota, scope, name):
                raise ConsoleError(404, f"no GPU quota for {scope} {name!r}".rstrip())
            return await self.console.commit(None, {"action": "unquota", "scope": scope, "name": name},
                                             body.get("note", ""), f"removed the GPU quota of {scope} {name}".rstrip(),
                                             who, via)

    async def _exists(self, scope: str, name: str) -> None:
        if scope == "user":
            await self.console.known_user(name)
        elif scope == "group" and not await self.console.hub.group_exists(name):
            raise ConsoleError(400, f"no group {name!r} on this hub (names are as on the hub's admin page)")
        elif scope == "course" and name not in await self._courses():
            raise ConsoleError(400, f"no course {name!r} on this hub (import a roster that names it first)")


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_cell(value: Any) -> Any:
    """A text cell a spreadsheet will not run: one starting with = + - @ tab or CR (a user named
    ``=HYPERLINK(...)``) gets a leading ' (OWASP's advice on CSV injection), which spreadsheets
    show as text and do not display. Numbers are left as they are."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def to_csv(data: dict[str, Any]) -> str:
    """The report as CSV for a spreadsheet: names (users, groups, courses, GPUs, nodes) escaped
    by ``spreadsheet_cell``; the figures are written by this function and never start so."""
    out = io.StringIO()
    by = data["by"]
    writer = csv.writer(out)
    writer.writerow([by, "start", "gpu_hours", "used_gpu_hours", "sampled_hours", "servers"])
    for r in data["rows"]:
        start = utc_iso(r["start"])
        writer.writerow([spreadsheet_cell(r[by]), start, f"{r['gpu_hours']:.4f}",
                         "" if r["used_gpu_hours"] is None else f"{r['used_gpu_hours']:.4f}",
                         f"{r['sampled_hours']:.4f}", r["servers"]])
    return out.getvalue()
