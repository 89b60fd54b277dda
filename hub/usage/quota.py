"""GPU-hour quotas over a rolling window (pure: no I/O).

A quota is ``hours`` of held GPU time per ``window_s`` seconds, for one user, for each member of
a group, or for each member of a course (a course is a group, hub/courses.py), or ``default``
for every user. Held time is weighted (hub.usage.accounting): a seat of a GPU shared by 4
counts 1/4, a MIG instance its fraction of the GPU. A user is bound by every quota that applies
to them (their own, each of their groups' and courses', the default) and the tightest one
decides: a start is refused when any is used up, a running server is warned at 90 % and
stopped at 100 %. A used-up quota renews gradually as old usage leaves the window;
``renews_at`` is when usage falls below the limit again.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from hub.usage.accounting import Interval, held_in_window
from hub.times import utc_words

SCOPES = ("user", "group", "course", "default")
WARN_AT = 0.9
MAX_WINDOW_DAYS = 366
MAX_HOURS = 24 * MAX_WINDOW_DAYS * 64  # every hour of a year on 64 GPUs: anything above is a typo
_SPEC = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*h\s*/\s*(\d+(?:\.\d+)?)\s*([hd])\s*$")


class QuotaError(ValueError):
    """A quota that cannot be: the message says what to give instead."""


@dataclass(frozen=True)
class Quota:
    scope: str
    name: str
    hours: float
    window_s: float

    def to_json(self) -> dict[str, Any]:
        return {"scope": self.scope, "name": self.name, "hours": self.hours, "window_days": self.window_s / 86400,
                "text": f"{self.hours:g} h per {_window_text(self.window_s)}"}


def _window_text(window_s: float) -> str:
    days = window_s / 86400
    return f"{days:g} day{'s' if days != 1 else ''}" if days >= 1 else f"{window_s / 3600:g} h"


def check(scope: str, name: str, hours: Any, window_days: Any) -> Quota:
    """A valid quota, or QuotaError saying what is wrong (negative, absurd, not a number)."""
    if scope not in SCOPES:
        raise QuotaError(f"scope {scope!r}: use one of {', '.join(SCOPES)}")
    if scope == "default":
        name = ""
    elif not isinstance(name, str) or not name.strip():
        raise QuotaError(f"a {scope} quota needs the {scope}'s name")
    for label, value in (("hours", hours), ("window_days", window_days)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise QuotaError(f"'{label}' must be a number, not {value!r}")
    if not 0 < window_days <= MAX_WINDOW_DAYS:
        raise QuotaError(f"window_days={window_days!r}: use more than 0 and at most {MAX_WINDOW_DAYS} "
                         "(e.g. 7 for a week, 1 for a day, 0.5 for 12 hours)")
    if not 0 < hours <= MAX_HOURS:
        raise QuotaError(f"hours={hours!r}: use a number of GPU-hours above 0 and at most {MAX_HOURS} "
                         "(e.g. 20 for 20 GPU-hours per window); remove the quota for no limit")
    return Quota(scope, name, float(hours), float(window_days) * 86400)


def parse_spec(text: str) -> tuple[float, float]:
    """``"20h/7d"`` -> (20.0, 7.0): hours and window in days ("12h/24h" is per 24 hours)."""
    m = _SPEC.match(text or "")
    if not m:
        raise QuotaError(f"{text!r} is not a quota: write GPU-hours per window, e.g. 20h/7d or 4h/24h")
    hours, n, unit = float(m.group(1)), float(m.group(2)), m.group(3)
    return hours, n if unit == "d" else n / 24


def applicable(quotas: Iterable[Quota], user: str, groups: Iterable[str], courses: Iterable[str]) -> list[Quota]:
    groups, courses = set(groups), set(courses)
    out = []
    for q in quotas:
        if (q.scope == "user" and q.name == user) or (q.scope == "group" and q.name in groups) \
                or (q.scope == "course" and q.name in courses) or q.scope == "default":
            out.append(q)
    return out


@dataclass(frozen=True)
class Status:
    quota: Quota
    used_h: float
    fraction: float
    renews_at: float | None  # when usage falls below the limit again (None: it is below now)

    @property
    def remaining_h(self) -> float:
        return max(0.0, self.quota.hours - self.used_h)

    def to_json(self) -> dict[str, Any]:
        return {**self.quota.to_json(), "used_hours": round(self.used_h, 4), "remaining_hours": round(self.remaining_h, 4),
                "fraction": round(self.fraction, 4), "renews_at": self.renews_at,
                "renews_at_iso": utc_words(self.renews_at) if self.renews_at else None}


def status(quota: Quota, intervals: Iterable[Interval], now: float) -> Status:
    """How much of ``quota`` the user's ``intervals`` use at ``now``, and when it renews."""
    intervals = [iv for iv in intervals if iv.end > now - quota.window_s]
    limit = quota.hours * 3600
    used = held_in_window(intervals, now - quota.window_s, now)
    renews = None
    if used >= limit:
        # usage(t) = held in [t - window, now] for t >= now (nothing more is counted once stopped);
        # it falls as t grows: find the first t where it is below the limit.
        lo, hi = now, now + quota.window_s
        for _ in range(60):
            mid = (lo + hi) / 2
            if held_in_window(intervals, mid - quota.window_s, now) >= limit:
                lo = mid
            else:
                hi = mid
        renews = math.ceil(hi)
    return Status(quota, used / 3600, used / limit, renews)


def tightest(statuses: Iterable[Status]) -> Status | None:
    return max(statuses, key=lambda s: (s.fraction, -s.quota.hours), default=None)


def _whose(q: Quota) -> str:
    return {"user": "your quota", "group": f"the quota of group {q.name}", "course": f"the quota of course {q.name}",
            "default": "this hub's quota"}[q.scope]


def refusal_message(s: Status) -> str:
    q = s.quota
    return (f"You have used {s.used_h:.1f} of {q.hours:g} GPU-hours in the last {_window_text(q.window_s)} "
            f"({_whose(q)}: {q.hours:g} h per {_window_text(q.window_s)}), so no GPU server can start now. "
            f"The quota renews as old usage leaves the window: you can start one again from "
            f"{utc_words(s.renews_at) if s.renews_at else 'now'}. Choose a CPU-only profile to work without a GPU "
            "meanwhile, or ask an administrator.")


def warning_message(s: Status) -> str:
    q = s.quota
    return (f"You have used {s.used_h:.1f} of {q.hours:g} GPU-hours ({s.fraction:.0%}) of {_whose(q)} "
            f"({q.hours:g} h per {_window_text(q.window_s)}); your server is stopped when it is used up. "
            "Save your work.")


def stop_message(s: Status) -> str:
    q = s.quota
    return (f"Your server was stopped because {_whose(q)} of {q.hours:g} GPU-hours per "
            f"{_window_text(q.window_s)} is used up ({s.used_h:.1f} h). Your files in work/ are kept. "
            f"You can start a GPU server again from {utc_words(s.renews_at) if s.renews_at else 'now'}.")


def from_rows(rows: Iterable[Mapping[str, Any]], default: tuple[float, float] | None = None) -> list[Quota]:
    """Quotas from the store's rows, plus the configured default (hours, window days) unless the
    store sets one."""
    quotas = [Quota(r["scope"], r["name"], r["hours"], r["window_s"]) for r in rows]
    if default and not any(q.scope == "default" for q in quotas):
        quotas.append(Quota("default", "", default[0], default[1] * 86400))
    return quotas
