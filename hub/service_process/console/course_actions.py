"""CourseDesk: the console's teaching-lab actions: rosters, course settings, stopping and
resetting a course's servers, GPU reservations for a course and shared GPUs.

Courses live in the hub's database (a group per course, see hub/courses.py); reservations and
shared GPUs are admin intent in ``gpu-intent.json`` next to pins and drains, so the spawner
reads them before every decision exactly as it reads pins. Every change is validated in full
before anything is written (request bodies arrive checked against openapi.yaml), and leaves
one audit line.
"""
from __future__ import annotations

import asyncio
import re
import secrets
import time
from dataclasses import replace
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

from pathlib import Path

from hub import courses
from hub.common import profiles
from hub.common.errors import ConsoleError
from hub.common.stop_reasons import ReasonFile
from hub.times import utc_iso
from hub.service_process.console.state import Console, View, gpu_label
from hub.gpus import prestart as prestarts
from hub.gpus.model import MAX_PRESTART, Reservation

MAX_RESERVATION_DAYS = 31
# Rosters are parsed in a thread of their own: one at a time, however many are uploaded at once,
# and never in the default executor that the usage sync and the GPU samples use.
_ROSTER_READER = ThreadPoolExecutor(1, thread_name_prefix="roster")


def parse_time(name: str, value: str | float) -> float:
    """Epoch seconds from a number or an ISO 8601 time with a zone (…Z or …+01:00); the
    request's schema (Time) has made sure it is one of the two."""
    if isinstance(value, (int, float)):
        epoch = float(value)
    else:
        try:
            when = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ConsoleError(400, f"{name!r}={value!r} is not an ISO 8601 time such as 2026-11-23T09:00:00Z") from None
        if when.tzinfo is None:
            raise ConsoleError(400, f"{name!r}={value!r} has no time zone: add Z (UTC) or an offset such as +01:00")
        epoch = when.timestamp()
    try:  # NaN, Infinity (Python's json reads them) and times past the year 9999 have no date
        datetime.fromtimestamp(epoch, timezone.utc)
    except (OverflowError, ValueError, OSError):
        raise ConsoleError(400, f"{name!r}={value!r} is not a time between the years 1 and 9999") from None
    return epoch


PRESTART_CONCURRENCY = 4  # pre-starts in flight at once: the spawner's turns and memory admission pace them further
PRESTART_READY_WAIT = 900.0  # seconds a pre-start is followed before it counts as failed


class CourseDesk:
    def __init__(self, console: Console, roster_max_bytes: int = 1024 * 1024, prestart_minutes: int = 0,
                 prestart_grace_minutes: int = 15, profiles_file: str = ""):
        self.console, self.roster_max_bytes = console, roster_max_bytes
        self.prestart_minutes, self.prestart_grace = prestart_minutes, prestart_grace_minutes * 60.0
        self.profiles_file = profiles_file
        state = Path(console.manager.intent_file).parent
        self.prestarts = prestarts.PrestartFile(state / prestarts.FILE)
        self.claims_file = state / prestarts.CLAIMS_FILE
        self.reasons = ReasonFile(state / "stop-reasons.json")
        self._prestarting: set[asyncio.Task] = set()
        self._records_lock = asyncio.Lock()  # one rewrite of the pre-start file at a time (starts run side by side)

    @property
    def hub(self):
        return self.console.hub

    # -- reading ------------------------------------------------------------------------------

    async def courses(self) -> dict[str, courses.Course]:
        return {c.name: c for g in await self.hub.group_models() if (c := courses.course_from_group(g))}

    async def course(self, name: str) -> courses.Course:
        found = (await self.courses()).get(name)
        if found is None:
            raise ConsoleError(404, f"no course {name!r} on this hub (import a roster that names it first)")
        return found

    async def listing(self) -> dict[str, Any]:
        found = await self.courses()
        servers = await self.hub.active_servers()
        intent = await self.console.intent()  # only the reservations: no reading of the engine
        now = self.console.clock()
        status = await self.prestart_status()
        out = []
        for name, c in sorted(found.items()):
            running = sorted(u for (u, _s) in servers if u in c.members)
            out.append({**c.to_json(), "running": running,
                        "reservations": [self._reservation_json(r, now, status) for r in intent.reservations
                                         if r.course == name]})
        return {"courses": out}

    def _reservation_json(self, r: Reservation, now: float, status: dict | None = None) -> dict[str, Any]:
        data = {**r.to_json(), "start_iso": utc_iso(r.start, 'minutes'), "end_iso": utc_iso(r.end, 'minutes'),
                "active": r.active(now), "over": now >= r.end, "prestart_minutes": r.prestart / 60}
        if r.prestart:
            data["prestart"] = (status or {}).get(r.id) or {"done": False, "prestarted": 0, "claimed": 0}
        return data

    async def prestart_status(self) -> dict[str, dict]:
        """Per reservation: what its pre-start did, and its pre-started servers now, claimed or not."""
        records = await asyncio.to_thread(self.prestarts.all)
        claims = await asyncio.to_thread(prestarts.read_claims, self.claims_file)
        done = await asyncio.to_thread(self.prestarts.done)
        now_counts = prestarts.counts(records.values(), claims)
        out = {}
        for rid in set(done) | set(now_counts):
            d = done.get(rid) or {}
            out[rid] = {"done": rid in done, "started": int(d.get("started") or 0), "failed": int(d.get("failed") or 0),
                        "reason": str(d.get("reason") or ""), **now_counts.get(rid, {"prestarted": 0, "claimed": 0})}
        return out

    # -- rosters ------------------------------------------------------------------------------

    async def import_roster(self, body: dict[str, Any], who: str, via: str) -> dict[str, Any]:
        text = body["roster"]
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > self.roster_max_bytes:
            raise ConsoleError(413, f"the roster ({size} bytes) is larger than this hub's limit of "
                                    f"{self.roster_max_bytes} bytes (CONSOLE_ROSTER_MAX_SIZE): split it by course")
        try:  # off the event loop (gpu-reclaim's rounds and quota stops share it), one at a time
            roster = await asyncio.get_running_loop().run_in_executor(
                _ROSTER_READER, courses.parse_roster, text, body.get("format", "auto"))
        except courses.RosterError as exc:
            raise ConsoleError(400, f"cannot read the roster: {exc}; nothing was changed") from None
        bad = [b.to_json() for b in roster.bad]
        dry_run = bool(body.get("dry_run"))
        async with self.console.lock:
            existing = await self.courses()
            users = await self.hub.user_names()
            groups = await self.hub.group_names()
            try:
                plan = courses.plan(roster.rows, users, existing, groups)
            except ValueError as exc:
                raise ConsoleError(409, f"{exc}; nothing was changed") from None
            report = {"dry_run": dry_run, "rows": len(roster.rows), "bad_rows": bad,
                      "ignored_columns": roster.ignored_columns, **plan.to_json(), "unchanged": plan.empty}
            if bad and not body.get("skip_bad_rows"):
                raise ConsoleError(400, f"{len(bad)} bad row{'s' if len(bad) != 1 else ''} in the roster "
                                        f"(first: line {bad[0]['line']}: {bad[0]['error']}); nothing was "
                                        "changed: fix them, or import with skip_bad_rows", report=report)
            if dry_run or plan.empty:
                return {"message": self._summary(plan, report, dry_run=dry_run), "report": report}
            await self._apply(plan)
            reply = await self.console.commit(
                None, {"action": "roster", "courses": sorted(plan.courses), "users_created": plan.users_to_create,
                       "added": plan.add, "removed": plan.remove, "bad_rows": len(bad)},
                body.get("note", ""), self._summary(plan, report, dry_run=False), who, via)
        return {**reply, "report": report}

    async def _apply(self, plan: courses.Plan) -> None:
        """Users first, then groups, then members, then the course properties: a failure part
        way leaves a state that a re-import completes (every step is idempotent)."""
        if plan.users_to_create:
            await self.hub.create_users(plan.users_to_create)
        for name in plan.groups_to_create:
            await self.hub.create_group(name)
        for name, course in plan.courses.items():
            if plan.add.get(name):
                await self.hub.add_group_members(name, plan.add[name])
            if plan.remove.get(name):
                await self.hub.remove_group_members(name, plan.remove[name])
            if plan.properties_changed(name):
                await self._write_properties(name, course)

    async def _write_properties(self, name: str, course: courses.Course) -> None:
        props = dict(await self.hub.group_properties(name))  # keep what others stored there
        props[courses.PROPERTY] = course.properties()
        await self.hub.set_group_properties(name, props)

    @staticmethod
    def _summary(plan: courses.Plan, report: dict, dry_run: bool) -> str:
        if plan.empty:
            text = "the roster matches the hub: nothing to change"
        else:
            added = sum(len(v) for v in plan.add.values())
            removed = sum(len(v) for v in plan.remove.values())
            roles = sum(len(v) for v in plan.roles.values())
            text = (f"{'would import' if dry_run else 'imported'} the roster of "
                    f"{', '.join(sorted(plan.courses))}: {len(plan.users_to_create)} new users, "
                    f"{len(plan.groups_to_create)} new courses, {added} added, {removed} removed, "
                    f"{roles} role changes")
        if report["bad_rows"]:
            text += f"; {len(report['bad_rows'])} bad rows skipped"
        return text

    # -- course settings and actions --------------------------------------------------------------

    async def update(self, name: str, body: dict[str, Any], who: str, via: str) -> dict[str, Any]:
        try:  # the course module's own reading of them (title stripped, hours as a float)
            settings = courses.check_settings({k: v for k, v in body.items() if k != "note"})
        except ValueError as exc:
            raise ConsoleError(400, str(exc)) from None
        if not settings:
            raise ConsoleError(400, "send at least one of 'title', 'max_session_hours', 'materials'")
        async with self.console.lock:
            course = await self.course(name)
            before = course.properties()
            for key, value in settings.items():
                setattr(course, key, value)
            if course.properties() == before:
                return {"message": "Unchanged", "unchanged": True, "course": course.to_json()}
            await self._write_properties(name, course)
            detail = f"set {', '.join(f'{k}={v!r}' for k, v in settings.items())} for course {name}"
            reply = await self.console.commit(None, {"action": "course", "course": name, **settings},
                                              body.get("note", ""), detail, who, via)
        return {**reply, "course": course.to_json()}

    async def stop_all(self, name: str, body: dict[str, Any], who: str, via: str) -> dict[str, Any]:
        include_staff = bool(body.get("include_staff"))
        async with self.console.lock:
            course = await self.course(name)
            stopped, failed = await self._stop(course.members if include_staff else course.students)
            whose = "members" if include_staff else "students"
            detail = f"stopped {len(stopped)} servers of course {name}'s {whose}"
            if failed:
                detail += f"; {len(failed)} could not be stopped ({failed[0]['message']})"
            reply = await self.console.commit(None, {"action": "course-stop", "course": name,
                                                     "stopped": stopped, "failed": failed},
                                              body.get("note", ""), detail, who, via)
        return {**reply, "stopped": stopped, "failed": failed}

    async def _stop(self, users: set[str]) -> tuple[list[dict], list[dict]]:
        stopped, failed = [], []
        for (user, server), _model in sorted((await self.hub.active_servers()).items()):
            if user not in users:
                continue
            status, message = await self.hub.stop_server(user, server)
            entry = {"user": user, "server": server}
            if status in (202, 204):
                stopped.append(entry)
            else:
                failed.append({**entry, "message": message or f"the hub answered {status}"})
        return stopped, failed

    async def reset(self, name: str, body: dict[str, Any], who: str, via: str) -> dict[str, Any]:
        """Stop a member's servers and remove their containers, so the next start is a fresh
        container from the course's image; their volume (their files) is not touched."""
        user = body["user"]
        async with self.console.lock:
            course = await self.course(name)
            if user not in course.members:
                raise ConsoleError(400, f"{user!r} is not in course {name}")
            stopped, failed = await self._stop({user})
            if failed:
                raise ConsoleError(409, f"the hub did not stop {user}'s server: {failed[0]['message']}")
            removed = await self._remove_containers(user)
            detail = (f"reset {user}'s environment in course {name}: {len(stopped)} servers stopped, "
                      f"{len(removed)} containers removed; their files are untouched")
            reply = await self.console.commit(None, {"action": "course-reset", "course": name, "user": user,
                                                     "stopped": stopped, "containers": removed},
                                              body.get("note", ""), detail, who, via)
        return {**reply, "stopped": stopped, "containers": removed}

    async def _remove_containers(self, user: str) -> list[str]:
        keys = self.console.labels
        labels = [f"{keys.user}={user}", f"{keys.instance}={self.console.instance}"]
        found = await self.console.docker("containers", all=True, filters={"label": labels})
        removed = []
        for c in found:
            name = (c.get("Names") or [c["Id"]])[0].lstrip("/")
            deadline = time.monotonic() + 30
            while True:
                try:
                    await self.console.docker("remove_container", c["Id"], force=True)
                except Exception as exc:  # noqa: BLE001 - 404: gone already; 409: removal in progress
                    status = getattr(getattr(exc, "response", None), "status_code", None)
                    if status == 409 and time.monotonic() < deadline:
                        await asyncio.sleep(0.5)
                        continue
                    if status not in (404, 409):
                        raise ConsoleError(502, f"cannot remove container {name}: {exc}") from None
                removed.append(name)
                break
        return removed

    async def enforce_session_limits(self) -> list[dict[str, Any]]:
        """Stop students' servers that have run longer than their course's max_session_hours."""
        limited = {n: c for n, c in (await self.courses()).items() if c.max_session_hours}
        if not limited:
            return []
        now = self.console.clock()
        stopped = []
        for (user, server), model in sorted((await self.hub.active_servers()).items()):
            started = _epoch(model.get("started"))
            for name, c in limited.items():
                if user in c.students and started and now - started > c.max_session_hours * 3600:
                    status, message = await self.hub.stop_server(user, server)
                    if status in (202, 204):
                        detail = (f"stopped {user}'s server after {(now - started) / 3600:.1f} h: course {name} "
                                  f"allows sessions of {c.max_session_hours:g} h")
                        await self.console.commit(None, {"action": "max-session", "course": name, "user": user,
                                                         "server": server}, "", detail, "gpu-console", "schedule")
                        stopped.append({"user": user, "server": server, "course": name})
                    break
        return stopped

    # -- reservations -----------------------------------------------------------------------------

    async def reserve(self, body: dict[str, Any], who: str, via: str) -> dict[str, Any]:
        start, end = parse_time("start", body["start"]), parse_time("end", body["end"])
        if end <= start:
            raise ConsoleError(400, "'end' must be after 'start'")
        if end - start > MAX_RESERVATION_DAYS * 86400:
            raise ConsoleError(400, f"a reservation may last at most {MAX_RESERVATION_DAYS} days")
        if end <= self.console.clock():
            raise ConsoleError(400, f"the window ends in the past ({utc_iso(end, 'minutes')})")
        name = body["course"]
        minutes = body.get("prestart_minutes", self.prestart_minutes)  # 0 to 240: the schema says so
        prestart = min(float(minutes) * 60, MAX_PRESTART)
        async with self.console.lock:
            await self.course(name)
            view = await self.console.view()
            # the GPUs are held from the pre-start on: overlapping means overlapping that too
            taken = {u for r in view.intent.reservations if r.start - r.prestart < end and start - prestart < r.end
                     for u in r.gpus}
            gpus = self._reservable(view, body["gpus"], taken)
            reservation = Reservation(f"r-{secrets.token_hex(4)}", name, tuple(gpus), start, end, body.get("note", ""),
                                      prestart)
            labels = ", ".join(f"#{i}" for i in sorted(view.gpus[u].index for u in gpus))
            detail = (f"reserved GPU{'s' if len(gpus) > 1 else ''} {labels} for course {name} "
                      f"from {utc_iso(start, 'minutes')} to {utc_iso(end, 'minutes')}")
            if prestart:
                detail += f"; its servers start {minutes:g} minutes before"
            reply = await self.console.commit(view.intent.with_reservation(reservation),
                                              {"action": "reserve", **reservation.to_json()},
                                              body.get("note", ""), detail, who, via)
        return {**reply, "reservation": self._reservation_json(reservation, self.console.clock())}

    @staticmethod
    def _reservable(view: View, wanted: int | list[str], taken: set[str]) -> list[str]:
        """The uuids a reservation takes: those named, or N chosen (shared GPUs and GPUs no
        one is pinned to first, by index), none drained or reserved then already."""
        if isinstance(wanted, list):
            if not wanted or len(wanted) > len(view.gpus):
                raise ConsoleError(400, f"'gpus' lists {len(wanted)} GPUs; this host has {len(view.gpus)}")
            uuids = []
            for ref in wanted:
                uuid = view.gpu(ref).uuid
                if uuid in view.intent.drained:
                    raise ConsoleError(409, f"GPU #{view.gpus[uuid].index} is drained: undrain it first")
                if uuid in taken:
                    raise ConsoleError(409, f"GPU #{view.gpus[uuid].index} is already reserved in that window")
                uuids.append(uuid)
            return list(dict.fromkeys(uuids))
        pinned = set(view.intent.pins.values())
        pool = [g for g in sorted(view.gpus.values(), key=lambda g: (g.index, g.uuid))
                if g.uuid not in view.intent.drained and g.uuid not in taken]
        pool.sort(key=lambda g: (g.uuid in pinned, g.uuid not in view.intent.shared))
        if len(pool) < wanted:
            raise ConsoleError(409, f"only {len(pool)} of {len(view.gpus)} GPUs can be reserved in that window "
                                    f"(the others are drained or reserved for another course); asked for {wanted}")
        return [g.uuid for g in pool[:wanted]]

    async def cancel(self, rid: str, body: dict[str, Any], who: str, via: str) -> dict[str, Any]:
        async with self.console.lock:
            view = await self.console.view()
            found = [r for r in view.intent.reservations if r.id == rid]
            if not found:
                raise ConsoleError(404, f"no reservation {rid!r}")
            r = found[0]
            detail = f"cancelled reservation {rid} of course {r.course} ({utc_iso(r.start, 'minutes')} to {utc_iso(r.end, 'minutes')})"
            return await self.console.commit(view.intent.without_reservations([rid]),
                                             {"action": "unreserve", **r.to_json()},
                                             body.get("note", ""), detail, who, via)

    async def prune_reservations(self, keep_days: float = 7) -> int:
        """Forget reservations that ended more than `keep_days` ago (the audit log keeps them)."""
        async with self.console.lock:
            view = await self.console.view()
            cutoff = self.console.clock() - keep_days * 86400
            over = [r.id for r in view.intent.reservations if r.end < cutoff]
            if not over:
                return 0
            await self.console.commit(view.intent.without_reservations(over),
                                      {"action": "prune-reservations", "removed": len(over)}, "",
                                      f"forgot {len(over)} reservations that ended over {keep_days:g} days ago",
                                      "gpu-console", "schedule")
            return len(over)

    # -- pre-start (hub/gpus/prestart.py) -----------------------------------------------------------

    def course_profile(self, course: str) -> profiles.Profile | None:
        """The profile a course's pre-started servers get: the first in profiles.yaml that names
        the course's group, one with a GPU first; None if no profile names it."""
        if not self.profiles_file:
            return None
        try:
            offered = profiles.load_profiles(Path(self.profiles_file).read_text(), "-", 0, 0)
        except (OSError, ValueError):
            return None
        return profiles.course_profile(offered, course)

    async def prestart_round(self) -> dict[str, Any]:
        """One round: unclaimed pre-started servers past their window stopped (with their reason),
        records of servers gone dropped, and the reservations now due pre-started (in tasks of
        their own: a class of starts takes minutes, and the next round must still stop on time)."""
        now = self.console.clock()
        intent = await self.console.intent()
        records = await asyncio.to_thread(self.prestarts.all)
        stopped = await self._stop_unclaimed(records, now) if records else []
        if records:
            await self._forget_gone(records)
        done = await asyncio.to_thread(self.prestarts.done)
        started = []
        for r in prestarts.due(intent.reservations, now, self.prestart_grace, done):
            await self._records(self.prestarts.mark, r.id, {"at": now, "started": 0, "running": True})
            task = asyncio.get_running_loop().create_task(self.prestart(r))
            self._prestarting.add(task)
            task.add_done_callback(self._prestarting.discard)
            started.append(r.id)
        return {"stopped": stopped, "started": started}

    async def prestart(self, r: Reservation) -> dict[str, Any]:
        """Start the servers of reservation `r`'s course (hub.gpus.prestart.who), throttled; one audit line."""
        now = self.console.clock()
        _opens, closes = prestarts.window(r, self.prestart_grace)
        result: dict[str, Any] = {"at": now, "started": 0, "failed": 0, "reason": ""}
        try:
            course = await self.course(r.course)
            profile = self.course_profile(r.course)
            running = {u for (u, s) in await self.hub.active_servers() if s == ""}
            intent = await self.console.intent()
            users, reason = prestarts.who(course.members, prestarts.seats(r, intent.shared), running)
            if profile is None:
                users, reason = [], f"no profile in the profiles file names the course's group {r.course!r}"
        except ConsoleError as exc:
            users, reason = [], exc.message
        result["reason"] = reason
        gate = asyncio.Semaphore(PRESTART_CONCURRENCY)
        failures: list[dict] = []

        async def one(user: str) -> bool:
            async with gate:
                record = prestarts.Record(user, "", r.id, r.course, self.console.clock(), closes)
                await self._records(self.prestarts.put, record)
                try:
                    ok, message = await self._start_and_wait(user, r.id)
                except ConsoleError as exc:  # the hub's API did not answer, or answered 5xx
                    ok, message = False, exc.message
                if not ok:
                    await self._records(self.prestarts.pop, record.key)
                    failures.append({"user": user, "message": message})
                    return False
                container = await self._container_of(user)
                if container:
                    await self._records(self.prestarts.put, replace(record, container=container))
                return True

        oks = await asyncio.gather(*(one(u) for u in users)) if users else []
        result["started"], result["failed"] = sum(oks), len(oks) - sum(oks)
        await self._records(self.prestarts.mark, r.id, result)
        if users:
            detail = (f"pre-started {result['started']} of {len(users)} servers of course {r.course} for reservation "
                      f"{r.id} (starts {utc_iso(r.start, 'minutes')}); unused ones stop at {utc_iso(closes, 'minutes')}")
            if failures:
                detail += f"; {len(failures)} failed ({failures[0]['user']}: {failures[0]['message']})"
        else:
            detail = f"no servers pre-started for course {r.course}'s reservation {r.id}: {reason or 'all running'}"
        await self.console.commit(None, {"action": "prestart", "course": r.course, "reservation": r.id,
                                         "users": sorted(users), "started": result["started"], "failed": failures,
                                         "reason": reason},
                                  "", detail, "gpu-console", "schedule")
        return result

    async def _records(self, change, *args: Any) -> Any:
        """A change of the pre-start file (its put, pop or mark), in a thread, one at a time."""
        async with self._records_lock:
            return await asyncio.to_thread(change, *args)

    async def _start_and_wait(self, user: str, reservation: str) -> tuple[bool, str]:
        """Ask the hub to pre-start `user`'s server for `reservation` (hub/hub_process/prestart_api.py);
        follow it until it is ready (True) or gone (False, why)."""
        status, message = await self.hub.prestart_server(user, reservation)
        if status not in (201, 202):
            return False, message or f"the hub answered {status}"
        deadline = self.console.clock() + PRESTART_READY_WAIT
        while self.console.clock() < deadline:
            model = await self.hub.user(user)
            server = ((model or {}).get("servers") or {}).get("")
            if server is None:
                return False, "the start failed (the hub shows no server)"
            if server.get("ready"):
                return True, ""
            await asyncio.sleep(1.0)
        return False, f"not ready after {PRESTART_READY_WAIT:g} s"

    async def _container_of(self, user: str) -> str:
        keys = self.console.labels
        found = await self.console.docker("containers", filters={
            "label": [f"{keys.user}={user}", f"{keys.instance}={self.console.instance}"]})
        for c in found:
            if (c.get("Labels") or {}).get(keys.server, "") == "":
                return c["Id"]
        return ""

    async def _stop_unclaimed(self, records: dict, now: float) -> list[dict]:
        claims = await asyncio.to_thread(prestarts.read_claims, self.claims_file)
        due = prestarts.to_stop(records.values(), claims, now)
        if not due:
            return []
        titles = {n: c.title for n, c in (await self.courses()).items()}
        servers = await self.hub.active_servers()
        stopped = []
        for record in due:
            if record.key in servers:
                message = prestarts.stop_message(record.course, titles.get(record.course, ""))
                await asyncio.to_thread(self.reasons.put, record.key, message, now)  # before the stop, as gpu-reclaim does
                status, answer = await self.hub.stop_server(record.user, record.server)
                if status not in (202, 204):
                    await asyncio.to_thread(self.reasons.pop, record.key)
                    log_failed = {"user": record.user, "message": answer or f"the hub answered {status}"}
                    await self.console.commit(None, {"action": "prestart-unclaimed", "course": record.course,
                                                     "reservation": record.reservation, "failed": [log_failed]},
                                              "", f"could not stop {record.user}'s unused pre-started server: "
                                                  f"{log_failed['message']}", "gpu-console", "schedule")
                    continue
                stopped.append({"user": record.user, "server": record.server, "course": record.course,
                                "reservation": record.reservation})
            await self._records(self.prestarts.pop, record.key)
        if stopped:
            courses_ = sorted({s["course"] for s in stopped})
            await self.console.commit(None, {"action": "prestart-unclaimed", "courses": courses_,
                                             "stopped": stopped}, "",
                                      f"stopped {len(stopped)} pre-started server{'s' if len(stopped) != 1 else ''} "
                                      f"nobody used ({', '.join(s['user'] for s in stopped)}) of course "
                                      f"{', '.join(courses_)}", "gpu-console", "schedule")
        return stopped

    async def _forget_gone(self, records: dict) -> None:
        """Drop the records of pre-started servers that no longer run (stopped by their person, the
        culler, ...): a later start of the same server is an ordinary one. A record is kept while
        its start is still being followed (no container written yet)."""
        servers = await self.hub.active_servers()
        for key, record in records.items():
            if record.container and key not in servers:
                await self._records(self.prestarts.pop, key)

    # -- shared GPUs --------------------------------------------------------------------------------

    async def share(self, body: dict[str, Any], who: str, via: str) -> dict[str, Any]:
        capacity = body["capacity"]  # 2 to MAX_SHARED_CAPACITY: the schema says so
        async with self.console.lock:
            view = await self.console.view()
            gpu = view.gpu(body["gpu"])
            before = view.intent.shared.get(gpu.uuid)
            if before == capacity:
                raise ConsoleError(409, f"{gpu_label(gpu)} is already shared by up to {capacity}")
            holders = view.all_holders.get(gpu.uuid, [])
            detail = f"shared {gpu_label(gpu)} by up to {capacity} servers"
            if len(holders) > capacity:
                detail += f"; its {len(holders)} current holders keep it until their servers stop"
            return await self.console.commit(view.intent.with_shared(gpu.uuid, capacity),
                                              {"action": "share", "gpu": gpu.uuid, "index": gpu.index,
                                               "capacity": capacity, "previous": before},
                                              body.get("note", ""), detail, who, via)

    async def unshare(self, uuid: str, body: dict[str, Any], who: str, via: str) -> dict[str, Any]:
        async with self.console.lock:
            view = await self.console.view()
            gpu = view.gpu(uuid, status=404)
            if gpu.uuid not in view.intent.shared:
                raise ConsoleError(409, f"{gpu_label(gpu)} is not shared")
            holders = view.all_holders.get(gpu.uuid, [])
            detail = f"made {gpu_label(gpu)} exclusive again"
            if len(holders) > 1:
                detail += f"; its {len(holders)} current holders keep it until their servers stop"
            return await self.console.commit(view.intent.without_shared(gpu.uuid),
                                             {"action": "unshare", "gpu": gpu.uuid, "index": gpu.index},
                                             body.get("note", ""), detail, who, via)


def _epoch(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(re.sub(r"Z$", "+00:00", value)).timestamp()
    except ValueError:
        return None
