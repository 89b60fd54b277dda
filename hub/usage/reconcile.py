"""The console's periodic usage sync: the store made to agree with the engine, then quotas
enforced on running servers.

Each ``sync``: list this hub's live containers (``<prefix>.instance`` label) and inspect those
not seen before or started again (seats from ``State.StartedAt``), read the engine's ``start`` and ``die`` events since the
previous sync (a few seconds of overlap: replays change nothing), and ``advance`` the store's
intervals (hub.usage.accounting). After downtime of the console, the hub or the Docker daemon
(live-restore keeps containers and their StartedAt), the first sync closes what died meanwhile
at its ``die`` time and adds servers that started and died meanwhile. Where the engine no longer
has the events (its buffer holds the last 256, and a daemon restart empties it), an exited
container that still exists gives its ``State.FinishedAt``; else its interval ends where it was
last seen live: under-counted, never counted twice.

``watch_events`` (a thread) has the console sync about a second after each of those events, so
the events are read while the engine still has them: only a server that starts and dies within
that second before a daemon restart, or while the console is down and the daemon then restarts,
goes uncounted.

Parked servers (hub.gpus.parked: paused, their GPU given back) hold no seat: their interval
closes where it was last seen live, and after a resume a new one opens at the resume time
(``parked_file``), so parked time is not GPU time.

Servers pre-started for a reservation (hub.gpus.prestart) hold no seat until their person's
first request claims them, and from then on a seat from the claim (``prestart_file``): GPU-hours
begin when the person comes, not when the console started the server for them.

``enforce``: for each user holding a GPU, the tightest quota (hub.usage.quota): at 90 % a
warning the user reads on their next page load, at 100 % their GPU servers are stopped through
the hub's API (files kept), with the reason kept for their next page load and an audit line.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Awaitable, Callable, Iterable

from docker.errors import NotFound

from hub import courses as course_model
from hub.gpus.claim import LIVE_STATES, Labels
from hub.gpus.model import GPU
from hub.gpus.parked import ParkedFile, parked_ids
from hub.gpus import prestart as prestarts
from hub.usage import quota as quotas
from hub.usage.accounting import (Interval, UtilisationSource, advance, docker_time, event_time,
                                  seats_of_container, seats_of_event, seats_of_tasks)
from hub.usage.store import UsageStore
from hub.gpus.swarm import nodes_from_engine

log = logging.getLogger("gpu-console.usage")
EVENT_OVERLAP = 5.0  # seconds of events read twice across two syncs
INSPECT_MAX_AGE = 300.0  # seconds a live container's inspect is reused (see live_seats)
DockerCall = Callable[..., Awaitable]
EventsCall = Callable[[float, float, dict], Awaitable[list]]


@dataclass
class SyncResult:
    time: float
    live: int
    changed: int
    created: int
    events: int
    stopped: list[tuple[str, str]] = field(default_factory=list)
    warned: list[str] = field(default_factory=list)


class UsageKeeper:
    def __init__(self, store: UsageStore, inventory: Callable[[], Iterable[GPU]], docker: DockerCall,
                 events: EventsCall, hub: Any, instance: str, label_prefix: str = "gpuhub",
                 util: UtilisationSource | None = None, default_quota: tuple[float, float] | None = None,
                 audit: Callable[[dict], Awaitable[Any]] | None = None, clock: Callable[[], float] = time.time,
                 parked_file: Any = None, prestart_file: Any = None):
        self.store, self.inventory, self.docker, self.events, self.hub = store, inventory, docker, events, hub
        self.parked = ParkedFile(parked_file) if parked_file else None
        self.prestart = prestarts.PrestartFile(prestart_file) if prestart_file else None
        self.instance, self.labels, self.util, self.clock = instance, Labels(label_prefix), util, clock
        self.default_quota, self.audit = default_quota, audit
        self.lock = asyncio.Lock()
        self.last: SyncResult | None = None
        self._inspected: dict[str, tuple[float, dict | None]] = {}  # id -> (monotonic time, inspect)

    @property
    def instance_filter(self) -> dict:
        return {"label": [f"{self.labels.instance}={self.instance}"]}

    @property
    def event_filter(self) -> dict:
        """The engine events a sync reads: this hub's containers starting and dying."""
        return {"type": "container", "event": ["start", "die"], **self.instance_filter}

    async def live_seats(self, restarted: Iterable[str] = ()) -> list:
        """Seats of this hub's live containers. A container's labels, environment and device
        requests never change, and its ``StartedAt`` only with a ``start`` event: so each is
        inspected once, again after a start event (``restarted``: their ids) and at least every
        ``INSPECT_MAX_AGE`` seconds, not at every sync (an inspect per idle server every 15 s
        was most of the engine's work for an idle host)."""
        summaries = await self.docker("containers", all=True,
                                      filters={"status": list(LIVE_STATES), **self.instance_filter})
        now, restarted = time.monotonic(), set(restarted)
        cached = {c["Id"]: self._inspected.get(c["Id"]) for c in summaries}
        stale = [cid for cid, hit in cached.items()
                 if hit is None or cid in restarted or now - hit[0] > INSPECT_MAX_AGE]
        for cid, d in zip(stale, await asyncio.gather(*(self._inspect(cid) for cid in stale))):
            cached[cid] = (now, d)
        self._inspected = {cid: hit for cid, hit in cached.items() if hit[1]}
        inventory = list(self.inventory())
        parked, resumed = frozenset(), {}
        if self.parked is not None:  # parked: no seat; resumed: a seat from the resume on
            listing = [{"Id": c["Id"], "State": c.get("State")} for c in summaries]
            parked = parked_ids(listing, (await asyncio.to_thread(self.parked.all)).values())
            resumed = await asyncio.to_thread(self.parked.resumed_at)
        seats = []
        for _, d in self._inspected.values():
            if d["Id"] in parked:
                continue
            start = None
            if d["Id"] in resumed:
                started = docker_time((d.get("State") or {}).get("StartedAt"))
                start = max(resumed[d["Id"]], started or 0.0)
            seats += seats_of_container(d, inventory, self.labels.prefix, start=start)
        return await self.claimed_only(seats)

    async def claimed_only(self, seats: list) -> list:
        """The seats without those of unclaimed pre-started servers, and a claimed one's from its
        claim (hub.gpus.prestart.seat_start)."""
        if self.prestart is None:
            return seats
        records = await asyncio.to_thread(self.prestart.all)
        if not records:
            return seats
        claims = await asyncio.to_thread(prestarts.read_claims, self.prestart.path.with_name(prestarts.CLAIMS_FILE))
        out = []
        for seat in seats:
            record = records.get((seat.user, seat.server))
            if record is not None and not prestarts.is_record_of(record, seat.container_id, seat.start):
                record = None
            counts, start = prestarts.seat_start(record, claims, seat.start)
            if counts:
                out.append(seat if start is None else replace(seat, start=start))
        return out

    async def _inspect(self, cid: str) -> dict | None:
        try:
            return await self.docker("inspect_container", cid)
        except NotFound:
            return None

    async def sync(self) -> SyncResult:
        """One sync (serialised); raises when the engine cannot be read: the store is unchanged."""
        async with self.lock:
            now = self.clock()
            last = await asyncio.to_thread(self.store.last_sync)
            events: list[dict] = []
            if last is not None and last < now:
                events = await self.events(last - EVENT_OVERLAP, now, self.event_filter)
            live = await self.live_seats(restarted={(e.get("Actor") or {}).get("ID") or e.get("id") for e in events
                                                    if (e.get("Action") or e.get("status")) == "start"})
            inventory = list(self.inventory())
            started = await self.claimed_only([s for e in events if (e.get("Action") or e.get("status")) == "start"
                                               for s in seats_of_event(e, inventory, self.labels.prefix)])
            ended: dict[str, float] = {}
            for e in events:
                if (e.get("Action") or e.get("status")) == "die":
                    cid = (e.get("Actor") or {}).get("ID") or e.get("id")
                    ended[cid] = max(ended.get(cid, 0.0), event_time(e))
            known = await asyncio.to_thread(self._known, [*(s.container_id for s in started), *ended])
            await self._finished_times(known, live, ended)
            changed, created = advance(known, live, now, started=started, ended=ended, util=self.util)
            if created:
                changed = await self._with_groups(changed, {iv.key for iv in created})
            await asyncio.to_thread(self.store.save, changed, now)
            self.last = SyncResult(now, len(live), len(changed), len(created), len(events))
            return self.last

    async def _finished_times(self, known: list[Interval], live: list, ended: dict[str, float]) -> None:
        """An open interval's container that is no longer live and whose ``die`` event is not at
        hand (the engine lost its events, e.g. in a daemon restart) may still exist, exited:
        its ``State.FinishedAt`` is when it stopped."""
        live_ids = {s.container_id for s in live}
        missing = {iv.container_id for iv in known if iv.open and iv.container_id not in live_ids
                   and iv.container_id not in ended}
        for cid, d in zip(missing, await asyncio.gather(*(self._inspect(cid) for cid in missing))):
            finished = docker_time(((d or {}).get("State") or {}).get("FinishedAt"))
            if finished is not None:
                ended[cid] = finished

    def _known(self, started_ids: list[str]) -> list[Interval]:
        known = {iv.key: iv for iv in self.store.open_intervals()}
        known.update({iv.key: iv for iv in self.store.of_containers(started_ids)})
        return list(known.values())

    async def _with_groups(self, changed: list[Interval], new: set) -> list[Interval]:
        """New intervals get their user's groups and courses as they are now (reports per group)."""
        try:
            group_models = await self.hub.group_models()
            course_names = {g["name"] for g in group_models if course_model.PROPERTY in (g.get("properties") or {})}
            members: dict[str, list[str]] = {}
            for g in group_models:
                for u in g.get("users") or []:
                    members.setdefault(u, []).append(g["name"])
        except Exception as exc:  # noqa: BLE001 - the hub may be restarting: counted without groups
            log.info("usage: groups unknown (%s)", exc)
            return changed
        out = []
        for iv in changed:
            if iv.key in new:
                groups = tuple(sorted(members.get(iv.user, [])))
                iv = replace(iv, groups=groups, courses=tuple(g for g in groups if g in course_names))
            out.append(iv)
        return out

    # -- quotas on running servers ---------------------------------------------------------------

    def quota_list(self) -> list[quotas.Quota]:
        return quotas.from_rows(self.store.quotas(), self.default_quota)

    def statuses(self, user: str, groups: Iterable[str], courses: Iterable[str], now: float,
                 quota_list: list[quotas.Quota] | None = None) -> list[quotas.Status]:
        applying = quotas.applicable(quota_list if quota_list is not None else self.quota_list(), user, groups, courses)
        if not applying:
            return []
        window = max(q.window_s for q in applying)
        mine = self.store.between(now - window, now, user)
        return [quotas.status(q, mine, now) for q in applying]

    async def enforce(self) -> SyncResult | None:
        """Warn at 90 %, stop at 100 % (after a sync: the store is fresh)."""
        result = self.last
        if result is None:
            return None
        now = result.time
        running = await asyncio.to_thread(self.store.open_intervals)
        by_user: dict[str, list[Interval]] = {}
        for iv in running:
            by_user.setdefault(iv.user, []).append(iv)
        quota_list = await asyncio.to_thread(self.quota_list)
        for user, ivs in sorted(by_user.items()):
            groups = {g for iv in ivs for g in iv.groups}
            courses = {c for iv in ivs for c in iv.courses}
            statuses = await asyncio.to_thread(self.statuses, user, groups, courses, now, quota_list)
            worst = quotas.tightest(statuses)
            if worst is None or worst.fraction < quotas.WARN_AT:
                continue
            if worst.fraction < 1.0:
                if await asyncio.to_thread(self.store.notice, user, "", "warn", quotas.warning_message(worst), now):
                    result.warned.append(user)
                    log.info("usage: %s at %.0f%% of %s", user, 100 * worst.fraction, worst.quota.to_json()["text"])
                continue
            message = quotas.stop_message(worst)
            for server in sorted({iv.server for iv in ivs}):
                await asyncio.to_thread(self.store.notice, user, server, "stop", message, now)
                code, why = await self.hub.stop_server(user, server)
                if code in (202, 204, 404):
                    result.stopped.append((user, server))
                    log.info("usage: stopped %s's server %r: quota used up", user, server)
                    if self.audit is not None:
                        await self.audit({"action": "quota-stop", "user": user, "server": server,
                                          "quota": worst.quota.to_json(), "used_hours": round(worst.used_h, 3),
                                          "detail": f"stopped {user}'s server: {worst.quota.to_json()['text']} used up"})
                else:
                    log.warning("usage: could not stop %s's server %r (%s %s)", user, server, code, why)
        return result


def watch_events(connect: Callable[[], Any], filters: dict, notify: Callable[[dict], None],
                 stop: threading.Event, retry: float = 1.0) -> None:
    """Blocking (a thread of its own): ``notify`` of each engine event as it happens, so the
    console syncs right after a server starts or dies. The engine keeps events in memory only:
    a sync every few seconds alone would lose a server that started and died shortly before a
    daemon restart. The stream breaks when the daemon restarts: ``connect`` again (a new
    docker-py client) after ``retry`` seconds, until ``stop``."""
    while not stop.is_set():
        try:
            for event in connect().events(filters=filters, decode=True):
                notify(event)
                if stop.is_set():
                    return
        except Exception as exc:  # noqa: BLE001 - the daemon restarting or gone: connect again
            log.info("usage: engine events interrupted (%s); connecting again", exc)
        stop.wait(retry)


def docker_events(client: Any) -> EventsCall:
    """The engine's events between two times, read off the event loop (docker-py streams them)."""
    async def events(since: float, until: float, filters: dict) -> list:
        def read():
            # whole seconds back (the overlap is harmless), until now exactly: a later until would wait
            return list(client.events(since=int(since), until=f"{until:.3f}", filters=filters, decode=True))
        return await asyncio.to_thread(read)
    return events


class SwarmUsageKeeper(UsageKeeper):
    """The usage sync of a hub over a swarm: the seats of this hub's services' running tasks
    (hub.usage.accounting.seats_of_tasks). Swarm's task events are not read: a run's interval
    ends where a sync last saw it live (under-counted by up to one sync interval, never counted
    twice)."""

    async def live_seats(self, restarted: Iterable[str] = ()) -> list:
        """Tasks are read whole at each sync: there is no per-container inspect to cache."""
        nodes, services, tasks = await asyncio.gather(
            self.docker("nodes"), self.docker("services", filters=self.instance_filter),
            self.docker("tasks", filters={"desired-state": "running"}))
        return await self.claimed_only(seats_of_tasks(tasks, services, nodes_from_engine(nodes), list(self.inventory()),
                                                      self.labels.prefix))

    async def _finished_times(self, known, live, ended) -> None:
        """No containers to inspect on the hub's engine: runs end where last seen."""
