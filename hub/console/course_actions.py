"""The console's teaching-lab actions: rosters, course settings, stopping and resetting a
course's servers, GPU reservations for a course and shared GPUs.

Courses live in the hub's database (a group per course, see hub/courses.py); reservations and
shared GPUs are admin intent in ``gpu-intent.json`` next to pins and drains, so the spawner
reads them before every decision exactly as it reads pins. Every change is validated in full
before anything is written, and leaves one audit line.
"""
from __future__ import annotations

import asyncio
import copy
import re
import secrets
import time
from datetime import datetime, timezone
from typing import Any

from hub import courses as courses_
from hub.console.core import Console, ConsoleError, _check, check_fields
from hub.gpus.allocator import MAX_SHARED_CAPACITY, Reservation
from hub.gpus.manager import load_intent

MAX_ROSTER_BYTES = 1024 * 1024
MAX_RESERVATION_DAYS = 31


def parse_time(name: str, value: Any) -> float:
    """Epoch seconds from a number or an ISO 8601 time with a zone (…Z or …+01:00)."""
    if isinstance(value, bool):
        raise ConsoleError(400, f"{name!r} must be a time, not a boolean")
    if isinstance(value, (int, float)):
        return float(value)
    if not isinstance(value, str) or len(value) > 64:
        raise ConsoleError(400, f"{name!r} must be an ISO 8601 time such as 2026-11-23T09:00:00Z, or epoch seconds")
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ConsoleError(400, f"{name!r}={value!r} is not an ISO 8601 time such as 2026-11-23T09:00:00Z") from None
    if when.tzinfo is None:
        raise ConsoleError(400, f"{name!r}={value!r} has no time zone: add Z (UTC) or an offset such as +01:00")
    return when.timestamp()


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="minutes").replace("+00:00", "Z")


class CourseDesk:
    def __init__(self, console: Console):
        self.console = console

    @property
    def hub(self):
        return self.console.hub

    # -- reading ------------------------------------------------------------------------------

    async def courses(self) -> dict[str, courses_.Course]:
        return {c.name: c for g in await self.hub.group_models() if (c := courses_.course_from_group(g))}

    async def course(self, name: str) -> courses_.Course:
        _check("course", "name", name)
        found = (await self.courses()).get(name)
        if found is None:
            raise ConsoleError(404, f"no course {name!r} on this hub (import a roster that names it first)")
        return found

    async def listing(self) -> dict[str, Any]:
        courses = await self.courses()
        servers = await self.hub.active_servers()
        try:  # only the reservations: the intent file, not a reconcile with the engine
            intent = await asyncio.to_thread(load_intent, self.console.manager.intent_file)
        except ValueError as exc:  # a broken intent file, as view() reports it
            raise ConsoleError(500, str(exc)) from None
        now = self.console.clock()
        out = []
        for name, c in sorted(courses.items()):
            running = sorted(u for (u, _s) in servers if u in c.members)
            out.append({**c.to_json(), "running": running,
                        "reservations": [self._reservation_json(r, now) for r in intent.reservations if r.course == name]})
        return {"courses": out}

    def _reservation_json(self, r: Reservation, now: float) -> dict[str, Any]:
        return {**r.to_json(), "start_iso": _iso(r.start), "end_iso": _iso(r.end),
                "active": r.active(now), "over": now >= r.end}

    # -- rosters ------------------------------------------------------------------------------

    async def import_roster(self, body: dict, who: str, via: str) -> dict[str, Any]:
        f = check_fields(body, {"roster": "note_any"}, {"format": "name", "dry_run": "bool",
                                                        "skip_bad_rows": "bool", "note": "note"})
        if len(f["roster"].encode()) > MAX_ROSTER_BYTES:
            raise ConsoleError(413, f"the roster is larger than {MAX_ROSTER_BYTES} bytes")
        try:
            roster = courses_.parse_roster(f["roster"], f.get("format", "auto"))
        except courses_.RosterError as exc:
            raise ConsoleError(400, f"cannot read the roster: {exc}; nothing was changed") from None
        bad = [b.to_json() for b in roster.bad]
        async with self.console.lock:
            existing = await self.courses()
            users = await self.hub.user_names()
            groups = await self.hub.group_names()
            try:
                plan = courses_.plan(roster.rows, users, existing, groups)
            except ValueError as exc:
                raise ConsoleError(409, f"{exc}; nothing was changed") from None
            report = {"dry_run": bool(f.get("dry_run")), "rows": len(roster.rows), "bad_rows": bad,
                      "ignored_columns": roster.ignored_columns, **plan.to_json(), "unchanged": plan.empty}
            if bad and not f.get("skip_bad_rows"):
                raise ConsoleError(400, f"{len(bad)} bad row{'s' if len(bad) != 1 else ''} in the roster "
                                        f"(first: line {bad[0]['line']}: {bad[0]['error']}); nothing was "
                                        "changed: fix them, or import with skip_bad_rows", report=report)
            if f.get("dry_run") or plan.empty:
                return {"message": self._summary(plan, report, dry_run=bool(f.get("dry_run"))), "report": report}
            await self._apply(plan)
            reply = await self.console._commit(
                None, {"action": "roster", "courses": sorted(plan.courses), "users_created": plan.users_to_create,
                       "added": plan.add, "removed": plan.remove, "bad_rows": len(bad)},
                f.get("note", ""), self._summary(plan, report, dry_run=False), who, via)
        return {**reply, "report": report}

    async def _apply(self, plan: courses_.Plan) -> None:
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

    async def _write_properties(self, name: str, course: courses_.Course) -> None:
        props = dict(await self.hub.group_properties(name))  # keep what others stored there
        props[courses_.PROPERTY] = course.properties()
        await self.hub.set_group_properties(name, props)

    @staticmethod
    def _summary(plan: courses_.Plan, report: dict, dry_run: bool) -> str:
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

    async def update(self, name: str, body: dict, who: str, via: str) -> dict[str, Any]:
        note = _check("note", "note", body.pop("note", ""))
        try:
            settings = courses_.check_settings(body)
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
            reply = await self.console._commit(None, {"action": "course", "course": name, **settings},
                                               note, detail, who, via)
        return {**reply, "course": course.to_json()}

    async def stop_all(self, name: str, body: dict, who: str, via: str) -> dict[str, Any]:
        f = check_fields(body, {}, {"include_staff": "bool", "note": "note"})
        async with self.console.lock:
            course = await self.course(name)
            targets = course.members if f.get("include_staff") else course.students
            stopped, failed = await self._stop(targets)
            whose = "members" if f.get("include_staff") else "students"
            detail = f"stopped {len(stopped)} servers of course {name}'s {whose}"
            if failed:
                detail += f"; {len(failed)} could not be stopped ({failed[0]['message']})"
            reply = await self.console._commit(None, {"action": "course-stop", "course": name,
                                                      "stopped": stopped, "failed": failed},
                                               f.get("note", ""), detail, who, via)
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

    async def reset(self, name: str, body: dict, who: str, via: str) -> dict[str, Any]:
        """Stop a member's servers and remove their containers, so the next start is a fresh
        container from the course's image; their volume (their files) is not touched."""
        f = check_fields(body, {"user": "name"}, {"note": "note"})
        async with self.console.lock:
            course = await self.course(name)
            user = f["user"]
            if user not in course.members:
                raise ConsoleError(400, f"{user!r} is not in course {name}")
            stopped, failed = await self._stop({user})
            if failed:
                raise ConsoleError(409, f"the hub did not stop {user}'s server: {failed[0]['message']}")
            removed = await self._remove_containers(user)
            detail = (f"reset {user}'s environment in course {name}: {len(stopped)} servers stopped, "
                      f"{len(removed)} containers removed; their files are untouched")
            reply = await self.console._commit(None, {"action": "course-reset", "course": name, "user": user,
                                                      "stopped": stopped, "containers": removed},
                                               f.get("note", ""), detail, who, via)
        return {**reply, "stopped": stopped, "containers": removed}

    async def _remove_containers(self, user: str) -> list[str]:
        prefix = self.console.label_prefix
        labels = [f"{prefix}.user={user}", f"{prefix}.instance={self.console.instance}"]
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
                        await self.console._commit(None, {"action": "max-session", "course": name, "user": user,
                                                          "server": server}, "", detail, "gpu-console", "schedule")
                        stopped.append({"user": user, "server": server, "course": name})
                    break
        return stopped

    # -- reservations -----------------------------------------------------------------------------

    async def reserve(self, body: dict, who: str, via: str) -> dict[str, Any]:
        f = check_fields(body, {"course": "name", "gpus": "any", "start": "any", "end": "any"}, {"note": "note"})
        start, end = parse_time("start", f["start"]), parse_time("end", f["end"])
        if end <= start:
            raise ConsoleError(400, "'end' must be after 'start'")
        if end - start > MAX_RESERVATION_DAYS * 86400:
            raise ConsoleError(400, f"a reservation may last at most {MAX_RESERVATION_DAYS} days")
        if end <= self.console.clock():
            raise ConsoleError(400, f"the window ends in the past ({_iso(end)})")
        async with self.console.lock:
            await self.course(f["course"])
            view = await self.console.view()
            taken = {u for r in view.intent.reservations if r.start < end and start < r.end for u in r.gpus}
            gpus = self._reservable(view, f["gpus"], taken, f["course"])
            rid = f"r-{secrets.token_hex(4)}"
            reservation = Reservation(rid, f["course"], tuple(gpus), start, end, f.get("note", ""))
            intent = copy.deepcopy(view.intent)
            intent.reservations.append(reservation)
            labels = ", ".join(f"#{i}" for i in sorted(view.gpus[u].index for u in gpus))
            detail = (f"reserved GPU{'s' if len(gpus) > 1 else ''} {labels} for course {f['course']} "
                      f"from {_iso(start)} to {_iso(end)}")
            reply = await self.console._commit(intent, {"action": "reserve", **reservation.to_json()},
                                               f.get("note", ""), detail, who, via)
        return {**reply, "reservation": self._reservation_json(reservation, self.console.clock())}

    def _reservable(self, view, wanted: Any, taken: set[str], course: str) -> list[str]:
        """The uuids a reservation takes: those named, or N chosen (shared GPUs and GPUs no
        one is pinned to first, by index), none drained or reserved then already."""
        pinned = set(view.intent.pins.values())
        if isinstance(wanted, list):
            if not wanted or len(wanted) > len(view.gpus):
                raise ConsoleError(400, f"'gpus' lists {len(wanted)} GPUs; this host has {len(view.gpus)}")
            uuids = []
            for ref in wanted:
                uuid = self.console._gpu(view, _check("gpus[]", "name", ref)).uuid
                if uuid in view.intent.drained:
                    raise ConsoleError(409, f"GPU #{view.gpus[uuid].index} is drained: undrain it first")
                if uuid in taken:
                    raise ConsoleError(409, f"GPU #{view.gpus[uuid].index} is already reserved in that window")
                uuids.append(uuid)
            return list(dict.fromkeys(uuids))
        if isinstance(wanted, bool) or not isinstance(wanted, int) or wanted < 1:
            raise ConsoleError(400, "'gpus' must be a number of GPUs (at least 1) or a list of GPU uuids")
        pool = [g for g in sorted(view.gpus.values(), key=lambda g: (g.index, g.uuid))
                if g.uuid not in view.intent.drained and g.uuid not in taken]
        pool.sort(key=lambda g: (g.uuid in pinned, g.uuid not in view.intent.shared))
        if len(pool) < wanted:
            raise ConsoleError(409, f"only {len(pool)} of {len(view.gpus)} GPUs can be reserved in that window "
                                    f"(the others are drained or reserved for another course); asked for {wanted}")
        return [g.uuid for g in pool[:wanted]]

    async def cancel(self, rid: str, body: dict, who: str, via: str) -> dict[str, Any]:
        f = check_fields(body, {}, {"note": "note"})
        _check("reservation", "name", rid)
        async with self.console.lock:
            view = await self.console.view()
            found = [r for r in view.intent.reservations if r.id == rid]
            if not found:
                raise ConsoleError(404, f"no reservation {rid!r}")
            intent = copy.deepcopy(view.intent)
            intent.reservations = [r for r in intent.reservations if r.id != rid]
            r = found[0]
            detail = f"cancelled reservation {rid} of course {r.course} ({_iso(r.start)} to {_iso(r.end)})"
            return await self.console._commit(intent, {"action": "unreserve", **r.to_json()},
                                              f.get("note", ""), detail, who, via)

    async def prune_reservations(self, keep_days: float = 7) -> int:
        """Forget reservations that ended more than `keep_days` ago (the audit log keeps them)."""
        async with self.console.lock:
            view = await self.console.view()
            cutoff = self.console.clock() - keep_days * 86400
            keep = [r for r in view.intent.reservations if r.end >= cutoff]
            if len(keep) == len(view.intent.reservations):
                return 0
            intent = copy.deepcopy(view.intent)
            intent.reservations = keep
            gone = len(view.intent.reservations) - len(keep)
            await self.console._commit(intent, {"action": "prune-reservations", "removed": gone}, "",
                                       f"forgot {gone} reservations that ended over {keep_days:g} days ago",
                                       "gpu-console", "schedule")
            return gone

    # -- shared GPUs --------------------------------------------------------------------------------

    async def share(self, body: dict, who: str, via: str) -> dict[str, Any]:
        f = check_fields(body, {"gpu": "name", "capacity": "any"}, {"note": "note"})
        capacity = f["capacity"]
        if isinstance(capacity, bool) or not isinstance(capacity, int) or not 2 <= capacity <= MAX_SHARED_CAPACITY:
            raise ConsoleError(400, f"'capacity' must be a whole number from 2 to {MAX_SHARED_CAPACITY} "
                                    "(how many servers may share the GPU); to stop sharing, DELETE api/shared/<uuid>")
        async with self.console.lock:
            view = await self.console.view()
            gpu = self.console._gpu(view, f["gpu"])
            before = view.intent.shared.get(gpu.uuid)
            if before == capacity:
                raise ConsoleError(409, f"{self.console._label(gpu)} is already shared by up to {capacity}")
            intent = copy.deepcopy(view.intent)
            intent.shared[gpu.uuid] = capacity
            holders = [h for h in view.all_holders.get(gpu.uuid, [])]
            detail = f"shared {self.console._label(gpu)} by up to {capacity} servers"
            if len(holders) > capacity:
                detail += f"; its {len(holders)} current holders keep it until their servers stop"
            reply = await self.console._commit(intent, {"action": "share", "gpu": gpu.uuid, "index": gpu.index,
                                                        "capacity": capacity, "previous": before},
                                               f.get("note", ""), detail, who, via)
        return reply

    async def unshare(self, uuid: str, body: dict, who: str, via: str) -> dict[str, Any]:
        f = check_fields(body, {}, {"note": "note"})
        _check("gpu", "name", uuid)
        async with self.console.lock:
            view = await self.console.view()
            gpu = self.console._gpu(view, uuid, status=404)
            if gpu.uuid not in view.intent.shared:
                raise ConsoleError(409, f"{self.console._label(gpu)} is not shared")
            intent = copy.deepcopy(view.intent)
            del intent.shared[gpu.uuid]
            holders = view.all_holders.get(gpu.uuid, [])
            detail = f"made {self.console._label(gpu)} exclusive again"
            if len(holders) > 1:
                detail += f"; its {len(holders)} current holders keep it until their servers stop"
            return await self.console._commit(intent, {"action": "unshare", "gpu": gpu.uuid, "index": gpu.index},
                                              f.get("note", ""), detail, who, via)


def _epoch(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(re.sub(r"Z$", "+00:00", value)).timestamp()
    except ValueError:
        return None
