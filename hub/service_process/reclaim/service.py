"""gpu-reclaim: the hub service that samples every GPU, attributes each reading to the server
holding it, and reclaims idle GPUs (hub/gpus/reclaim_policy.py decides; this module acts).

It runs in the GPU console's process (hub/service_process/console/app.py ``main``, ``start`` here), yet is a
service of its own for JupyterHub (configure_reclaim): its own URL, and its own token, whose
role may only list users and their groups, read servers and stop them. ``python -m
hub.service_process.reclaim.service`` runs it alone. Every ``GPU_SAMPLE_INTERVAL`` seconds it:

1. lists this hub's live containers (their GPU labels: ``hub.gpus.claim``), i.e. who holds what;
2. reads every GPU (``hub.gpus.activity.ActivitySampler``, NVML or ``GPU_USAGE_READER``) and
   stores each reading with its holder in ``gpu-activity.sqlite`` on the state volume;
3. judges each holder idle or not (``ActivityStore.idle_since``), decides (``policy.decide``)
   and acts: a warning (shown in the user's JupyterLab, audited), or the stop: the reason is
   written for the user's next page load (``hub.common.stop_reasons.ReasonFile``), the audit
   log records it, and the server is stopped through the hub's REST API (files kept, GPU freed).

After each round it writes what it saw per holder (the ``api/holders`` list: utilisation, memory,
idle since, warning, policy) to ``gpu-holders.json`` on the state volume, which the GPU console
shows per holder (``holders_snapshot``) instead of judging idleness a second time.

Its decisions' memory (warnings, admins' extensions) is kept in ``gpu-reclaim.json``, so a
restart of the hub loses neither the idle history nor a warning under way.

Each server is judged by the policy of the profile it was started with (the container's
``gpuhub.profile`` label; a profile's ``reclaim:`` in the profiles file, re-read when it
changes), else by the settings.

API (JSON; ``Authorization: token <token>``; errors ``{"status", "message"}``):
    GET  api/me                       the caller's servers with a GPU: usage, idle for, warning;
                                      and the caller's GPU-hours and tightest quota ("usage")
    POST api/me/still-working {"server"}   the caller answers a warning (once per warning)
    GET  api/holders                  (admins) every holder with its activity and warning
    POST api/extend {"user", "server", "seconds"}   (admins) exempt one server until then
Any user's token may call ``api/me`` (it answers for the token's owner only; a server's own
token included, which is how JupyterLab's GPU item asks); ``api/holders`` and ``api/extend``
need the service's access scope (``access:services!service=gpu-reclaim``: hub admins).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from tornado import web

from hub.settings import RECLAIM_TOKEN_ENV, RECLAIM_URL_ENV
from hub.settings.gpu_settings import GPUSettings
from hub.settings.table import read
from hub.common.audit import AuditLog
from hub.gpus.activity import ActivitySampler, ActivityStore, load_reader
from hub.gpus.claim import LIVE_STATES, Labels, holders_from_containers
from hub.gpus.model import Holder
from hub.gpus.parked import FILE as PARKED_FILE, ParkedFile, parked_ids
from hub.gpus import prestart as prestarts
from hub.gpus.reclaim_policy import (Candidate, Decision, PolicyTable, ReclaimOverride, ReclaimPolicy, ReclaimState,
                                decide, next_due, stop_message)
from hub.common.stop_reasons import ReasonFile
from hub.common.profiles import load_profiles
from hub.common.engine import DockerCaller
from hub.common.hubapi import HubClient
from hub.usage import gate
from hub.common.services import every, guarded
from hub.common.lean_imports import defer_hub_database
from hub.common.services import serve
from hub.files import write_atomic
from hub.times import utc_iso
from hub.service_process.reclaim import parking

NAME = "gpu-reclaim"
# Its bodies are a few bytes ({"server": ...}): tornado reads none over 64 KiB (100 MB by default),
# whoever sends it, and answers 400.
SERVER_LIMITS = {"max_body_size": 64 * 1024, "max_buffer_size": 128 * 1024}
HOLDERS_FILE = "gpu-holders.json"  # each round's holders with their activity, for the GPU console
log = logging.getLogger(NAME)


def policy_from_env(env: Mapping[str, str]) -> ReclaimPolicy:
    return ReclaimPolicy(threshold_pct=read(env, "GPU_IDLE_THRESHOLD"), timeout=read(env, "GPU_IDLE_TIMEOUT"),
                         grace=read(env, "GPU_IDLE_GRACE"),
                         exempt_users=frozenset(read(env, "GPU_IDLE_EXEMPT_USERS")),
                         exempt_groups=frozenset(read(env, "GPU_IDLE_EXEMPT_GROUPS")),
                         action=read(env, "GPU_IDLE_ACTION"), max_parked=float(read(env, "GPU_PARK_MAX")))


def overrides_from_profiles(path: str | Path) -> dict[str, ReclaimOverride]:
    """Each profile's own reclaim policy from the profiles file (none: no file, or no profile
    has one). Raises ValueError for a file the hub would refuse too."""

    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return {}
    # images and limits do not matter here; placeholders satisfy the parser
    return {p.slug: p.reclaim for p in load_profiles(text, "unused", 0, 0.0) if p.reclaim is not None}


class Reclaimer:
    """One round at a time: who holds what, one reading, decisions, actions."""

    def __init__(self, policy: ReclaimPolicy | PolicyTable, sampler: ActivitySampler, docker: Callable, hub: Any,
                 audit: AuditLog, reasons: ReasonFile, state_file: str | Path, instance: str,
                 label_prefix: str = "gpuhub", clock: Callable[[], float] = time.time,
                 profiles_file: str | Path | None = None, holders_file: str | Path | None = None,
                 usage: Callable[[str, list[str]], dict] | None = None, parked_file: str | Path | None = None,
                 prestart_file: str | Path | None = None):
        self.policies = policy if isinstance(policy, PolicyTable) else PolicyTable(policy)
        self.policy = self.policies.default  # the settings' policy
        self.sampler, self.docker, self.hub = sampler, docker, hub
        self.profiles_file, self._profiles_mtime = Path(profiles_file) if profiles_file else None, None
        self.profile_of: dict[tuple[str, str], str] = {}  # (user, server) -> profile, from the labels
        self.container_of: dict[tuple[str, str], str] = {}  # (user, server) -> container id
        self.parker = None  # hub/reclaim/parking.py: set where a policy may park
        self.holders_file = Path(holders_file) if holders_file else None
        self.usage = usage  # (user, groups) -> their GPU-hours and tightest quota (blocking: SQLite)
        self.parked = ParkedFile(parked_file) if parked_file else None  # parked servers hold no GPU
        self._parked_before: set[tuple[str, str]] | None = None  # (user, server) parked at the last round
        self.resumed_at: dict[tuple[str, str], float] = {}  # resumed since: their idle clocks start there
        # pre-started servers (hub/gpus/prestart.py): not judged until claimed, then idle from the claim
        self.prestart = prestarts.PrestartFile(prestart_file) if prestart_file else None
        self.audit, self.reasons, self.instance, self.clock = audit, reasons, instance, clock
        self.labels = Labels(label_prefix)
        self.state_file = Path(state_file)
        self.state = self._load_state()
        self.holders: dict[str, list[Holder]] = {}
        self.lock = asyncio.Lock()
        self.last_round: float | None = None
        self.next_due: float | None = None  # when the next warning or stop falls due (policy.next_due)

    def _load_state(self) -> ReclaimState:
        try:
            return ReclaimState.from_json(json.loads(self.state_file.read_text()))
        except FileNotFoundError:
            return ReclaimState()
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("%s is not readable (%s): starting without warnings", self.state_file, exc)
            return ReclaimState()

    def save_state(self) -> None:
        write_atomic(self.state_file, json.dumps(self.state.to_json(), indent=1))

    async def read_holders(self) -> dict[str, list[Holder]]:
        """uuid -> holders, from this hub's live containers that carry a GPU label (the engine
        is the source of truth). Listed holders come from their labels alone (a listing has no
        device requests), so the engine is asked for those only: a listing costs it per
        container listed, and a host full of idle CPU-only servers lists none."""
        containers = await self.docker("containers", all=True, filters={
            "label": [f"{self.labels.instance}={self.instance}", self.labels.gpu_uuid],
            "status": list(LIVE_STATES)})
        profiles, self.container_of = {}, {}
        for c in containers:
            labels = (c.get("Config") or {}).get("Labels") or c.get("Labels") or {}
            self.container_of[(labels.get(self.labels.user, ""), labels.get(self.labels.server, ""))] = c["Id"]
            if labels.get(self.labels.profile):
                profiles[(labels.get(self.labels.user, ""), labels.get(self.labels.server, ""))] = \
                    labels[self.labels.profile]
        self.profile_of = profiles
        records = (await asyncio.to_thread(self.parked.all)).values() if self.parked else ()
        self.note_resumed({(r.user, r.server) for r in records}, self.clock())
        return holders_from_containers(containers, self.labels.prefix, parked=parked_ids(containers, records))

    def note_resumed(self, parked_now: set[tuple[str, str]], now: float) -> None:
        """Servers parked at the last round and not now were resumed (or stopped): their idle
        clocks start again at this round, not at their GPU label's time (a resume is the person's
        own request: without this, a server resumed after a long park was reclaimed again at once)."""
        if self._parked_before is not None:
            for key in self._parked_before - parked_now:
                self.resumed_at[key] = now
        self._parked_before = parked_now
        live = set(self.container_of)
        self.resumed_at = {k: t for k, t in self.resumed_at.items() if k in live or k in parked_now}

    def holding_since(self, h: Holder) -> Holder:
        """The holder with its holding's start moved to its resume, if it was resumed since."""
        resumed = self.resumed_at.get((h.user, h.server))
        return replace(h, since=resumed) if resumed and resumed > (h.since or 0.0) else h

    def reload_profiles(self) -> None:
        """The profiles' own policies, re-read when the file changed (an admin's edit applies at
        the next round); a file the hub would refuse keeps the last good policies."""
        if self.profiles_file is None:
            return
        try:
            mtime = self.profiles_file.stat().st_mtime
        except OSError:
            mtime = None
        if mtime == self._profiles_mtime:
            return
        self._profiles_mtime = mtime
        try:
            overrides = overrides_from_profiles(self.profiles_file) if mtime is not None else {}
        except ValueError as exc:
            log.warning("%s: %s; keeping the last reclaim policies", self.profiles_file, exc)
            return
        self.policies = PolicyTable(self.policies.default, overrides)
        if overrides:
            log.info("reclaim policies of profiles: %s", json.dumps(self.policies.to_json()["profiles"]))

    def policy_of(self, user: str, server: str) -> ReclaimPolicy:
        return self.policies.of(self.profile_of.get((user, server)))

    async def round(self) -> list[Decision]:
        async with self.lock:
            self.holders = await self.read_holders()
            await asyncio.to_thread(self.reload_profiles)
            await asyncio.to_thread(self.sampler.sample, self.holders)
            now = self.clock()
            candidates = []
            claimed = await self.claimed_holders()
            for uuid, holders in self.holders.items():
                for h in holders:
                    h = claimed(h)
                    if h is None:  # pre-started, nobody has come yet: its idle clock has not begun
                        continue
                    policy, idle = self.policy_of(h.user, h.server), None
                    if self.sampler.store is not None and self.sampler.source == "nvml":
                        idle = await asyncio.to_thread(self.sampler.store.idle_since, self.holding_since(h), uuid,
                                                       policy.threshold_pct)
                    groups = frozenset()
                    if idle is not None and now - idle >= policy.timeout and policy.exempt_groups:
                        groups = await self._groups(h.user)
                    candidates.append(Candidate(h.user, h.server, uuid, idle, groups,
                                                self.profile_of.get((h.user, h.server), "")))
            await parking.expire(self)  # parked longer than allowed: stopped
            decisions = decide(self.policies, candidates, self.state, now)
            self.next_due = next_due(self.policies, candidates, self.state, now)
            for d in decisions:
                await self._act(d, now)
            if decisions:
                await asyncio.to_thread(self.save_state)
            self.last_round = now
            if self.holders_file is not None:
                await asyncio.to_thread(self.save_holders)
            return decisions

    async def claimed_holders(self) -> Callable[[Holder], Holder | None]:
        """A holder as its idle clock sees it: None for an unclaimed pre-started server, one
        held since its claim for a claimed one, else itself (hub.gpus.prestart.seat_start)."""
        records = await asyncio.to_thread(self.prestart.all) if self.prestart else {}
        claims = (await asyncio.to_thread(prestarts.read_claims, self.prestart.path.with_name(prestarts.CLAIMS_FILE))
                  if records else {})

        def claimed(h: Holder) -> Holder | None:
            record = records.get((h.user, h.server))
            if record is None or not prestarts.is_record_of(record, self.container_of.get((h.user, h.server), ""),
                                                            h.since):
                return h
            counts, start = prestarts.seat_start(record, claims, h.since)
            return None if not counts else replace(h, since=start)
        return claimed

    def save_holders(self) -> None:
        """What this round saw per holder, for the GPU console (``holders_snapshot``)."""
        data = {"time": self.clock(), "interval_s": self.sampler.interval, "source": self.sampler.source,
                "reason": self.sampler.reason, "holders": self.holdings()}
        write_atomic(self.holders_file, json.dumps(data))

    async def _groups(self, user: str) -> frozenset[str]:
        model = await self.hub.user(user)
        return frozenset((model or {}).get("groups") or [])

    async def _act(self, d: Decision, now: float) -> None:
        user, server, uuid = d.key
        reading = self.sampler.now(uuid)
        gpu_name = f"{reading.name if reading else 'GPU'} {uuid}"
        if d.action == "warn":
            log.info("%s's server %r: GPU %s idle since %s; stop at %s unless it is busy again",
                     user, server, uuid, utc_iso(d.idle_since), utc_iso(d.deadline))
            await self._audit("reclaim-warn", user, server, uuid, now,
                              f"warned {user}'s server: its GPU idle since {utc_iso(d.idle_since)}, "
                              f"reclaimed at {utc_iso(d.deadline)} unless busy again")
        elif d.action == "clear":
            log.info("%s's server %r: reclaim warning withdrawn (%s)", user, server, d.why)
        elif d.action == "stop":
            parked = await parking.park_instead(self, user, server, uuid)
            if parked is not None and parked.action == "parked":
                return  # its GPU is given back; the Parker's audit entry says so
            policy = self.policy_of(user, server)
            message = stop_message(gpu_name, policy, d.idle_since, now)
            await asyncio.to_thread(self.reasons.put, (user, server), message, now)
            code, answer = await self.hub.stop_server(user, server)
            log.info("%s's server %r stopped: GPU %s idle since %s (hub: %s %s)", user, server, uuid,
                     utc_iso(d.idle_since), code, answer)
            await self._audit("reclaim", user, server, uuid, now,
                              f"stopped {user}'s server to reclaim GPU {uuid}: under "
                              f"{policy.threshold_pct:g} % since {utc_iso(d.idle_since)}, warned, "
                              f"grace over at {utc_iso(d.deadline)}")

    async def _audit(self, action: str, user: str, server: str, uuid: str, now: float, detail: str,
                     who: str = NAME, via: str = "service") -> dict:
        return await asyncio.to_thread(self.audit.write, now, who, via, action=action, user=user, server=server,
                                       gpu=uuid, note="", detail=detail)

    # -- what the API shows ---------------------------------------------------------------

    def holder_json(self, uuid: str, h: Holder, now: float) -> dict[str, Any]:
        reading = self.sampler.now(uuid)
        store = self.sampler.store
        policy = self.policy_of(h.user, h.server)
        idle = store.idle_since(self.holding_since(h), uuid, policy.threshold_pct) if store and reading else None
        warned = self.state.warned.get((h.user, h.server, uuid))
        extended = self.state.extended.get((h.user, h.server), 0.0)
        return {
            "user": h.user, "server": h.server, "since": h.since,
            "gpu": {"uuid": uuid, "name": reading.name if reading else None,
                    "utilization_pct": reading.utilization_pct if reading else None,
                    "memory_used_mib": reading.memory_used_mib if reading else None,
                    "memory_total_mib": reading.memory_total_mib if reading else None},
            "usage_source": self.sampler.source, "usage_reason": self.sampler.reason,
            "idle_since": idle, "idle_seconds": round(now - idle) if idle is not None else 0,
            "warning": None if warned is None else {
                "deadline": warned.deadline, "deadline_iso": utc_iso(warned.deadline),
                "seconds_left": max(0, round(warned.deadline - now)), "still_working": warned.still_working},
            "extended_until": extended if extended > now else None,
            "profile": self.profile_of.get((h.user, h.server)),
            "policy": public_policy(policy),
        }

    def holdings(self, user: str | None = None) -> list[dict[str, Any]]:
        now = self.clock()
        return [self.holder_json(uuid, h, now) for uuid, hs in sorted(self.holders.items())
                for h in hs if user is None or h.user == user]

    def find(self, user: str, server: str) -> str | None:
        """The GPU this server holds, from the last round."""
        return next((u for u, hs in self.holders.items() for h in hs if (h.user, h.server) == (user, server)), None)

    async def still_working(self, user: str, server: str) -> dict:
        uuid = self.find(user, server)
        key = (user, server, uuid or "")
        async with self.lock:
            try:
                warned = self.state.still_working(key, self.policy_of(user, server).grace)
            except ValueError as exc:
                raise ApiError(409, str(exc)) from None
            if warned is None:
                raise ApiError(404, f"your server {server!r} has no reclaim warning" if server
                               else "your server has no reclaim warning")
            await asyncio.to_thread(self.save_state)
        log.info("%s's server %r: still working; deadline now %s", user, server, utc_iso(warned.deadline))
        return {"message": f"The GPU stays yours until {utc_iso(warned.deadline)}; use it before then "
                           "and the warning goes away.", "deadline": warned.deadline}

    async def extend(self, user: str, server: str, seconds: float, who: str) -> dict:
        if self.find(user, server) is None:
            raise ApiError(404, f"{user}'s server {server!r} holds no GPU")
        now = self.clock()
        async with self.lock:
            self.state.extended[(user, server)] = now + seconds
            self.state.warned = {k: w for k, w in self.state.warned.items() if k[:2] != (user, server)}
            await asyncio.to_thread(self.save_state)
            entry = await self._audit("reclaim-extend", user, server, self.find(user, server) or "", now,
                                      f"exempted {user}'s server from GPU reclaim until {utc_iso(now + seconds)}",
                                      who=who, via="token")
        return {"message": entry["detail"][0].upper() + entry["detail"][1:], "entry": entry}


def holders_snapshot(path: str | Path, now: float) -> dict[tuple[str, str, str], dict]:
    """(user, server, uuid) -> what gpu-reclaim's last round saw of that holder (see
    ``Reclaimer.holder_json``; ``idle_seconds`` brought up to ``now``); empty if the file is
    missing, unreadable or older than three sampling intervals (the service is not running)."""
    try:
        data = json.loads(Path(path).read_text())
        interval, taken = float(data.get("interval_s") or 10), float(data["time"])
        holders = data.get("holders") or []
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}
    if now - taken > 3 * interval + 5:
        return {}
    out = {}
    for h in holders:
        try:
            key = (h["user"], h["server"], h["gpu"]["uuid"])
        except (KeyError, TypeError):
            continue
        idle = h.get("idle_since")
        out[key] = {**h, "idle_seconds": max(0, round(now - idle)) if idle is not None else 0, "sampled_at": taken}
    return out


class ApiError(web.HTTPError):
    def __init__(self, status: int, message: str):
        super().__init__(status, message.replace("%", "%%"))
        self.message = message


def public_policy(policy: ReclaimPolicy) -> dict[str, Any]:
    """The policy as any user may see it: thresholds and times, not the exempt users and groups."""
    return {k: v for k, v in policy.to_json().items() if not k.startswith("exempt")}


class Handler(web.RequestHandler):
    @property
    def reclaimer(self) -> Reclaimer:
        return self.settings["reclaimer"]

    async def caller(self) -> dict:
        header = self.request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() not in ("token", "bearer") or not token.strip():
            raise ApiError(401, "send an API token: 'Authorization: token <token>'")
        model = await self.settings["identify"](token.strip())
        if not model or model.get("kind", "user") != "user":
            raise ApiError(403, "this token is not a user's (or the hub did not accept it)")
        return model

    async def admin(self) -> dict:
        # after defer_hub_database() (hub/common/lean_imports.py): no hub database layer in this process
        from jupyterhub.services.auth import check_scopes

        model = await self.caller()
        if not check_scopes({f"access:services!service={NAME}"}, set(model.get("scopes") or [])):
            raise ApiError(403, "only hub admins may do this (it needs the scope "
                                f"access:services!service={NAME})")
        return model

    def body(self) -> dict:
        try:
            data = json.loads(self.request.body or b"{}")
        except (ValueError, RecursionError):  # ValueError: not JSON, or a number of 4300+ digits
            raise ApiError(400, "the body is not JSON (or nests too deeply, or has a number too long to read)") from None
        if not isinstance(data, dict):
            raise ApiError(400, "the body must be a JSON object")
        return data

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None))[1]
        message = getattr(exc, "message", None) or self._reason
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"status": status_code, "message": message}))

    def reply(self, data: Any) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))


def _server_of(body: dict) -> str:
    server = body.get("server", "")
    if not isinstance(server, str) or len(server) > 255:
        raise ApiError(400, "'server' must be a server's name ('' for the default server)")
    return server


class MeHandler(Handler):
    async def get(self) -> None:
        model = await self.caller()
        r = self.reclaimer
        groups = list(model.get("groups") or [])
        usage = await asyncio.to_thread(r.usage, model["name"], groups) if r.usage else None
        # Only what concerns the caller: whether they are exempt, never who else is (the policy's
        # exempt users and groups are the admins' business: api/holders).
        self.reply({"user": model["name"], "policy": public_policy(r.policy), "enabled": r.policies.enabled,
                    "exempt": r.policy.exempt(model["name"], groups),
                    "servers": r.holdings(model["name"]), "usage": usage or None})


class StillWorkingHandler(Handler):
    async def post(self) -> None:
        model = await self.caller()
        body = self.body()
        unknown = set(body) - {"server"}
        if unknown:
            raise ApiError(400, f"unknown field {sorted(unknown)[0]!r}; this request takes only 'server' "
                                "(your own server; a user cannot answer for another)")
        self.reply(await self.reclaimer.still_working(model["name"], _server_of(body)))


class HoldersHandler(Handler):
    async def get(self) -> None:
        await self.admin()
        r = self.reclaimer
        self.reply({"policy": r.policies.to_json(), "enabled": r.policies.enabled, "last_round": r.last_round,
                    "usage": {"source": r.sampler.source, "reason": r.sampler.reason,
                              "interval_s": r.sampler.interval},
                    "holders": r.holdings()})


class ExtendHandler(Handler):
    async def post(self) -> None:
        model = await self.admin()
        body = self.body()
        unknown = set(body) - {"user", "server", "seconds"}
        if unknown:
            raise ApiError(400, f"unknown field {sorted(unknown)[0]!r}; this request takes 'user', 'server', 'seconds'")
        user, seconds = body.get("user"), body.get("seconds", 3600)
        if not isinstance(user, str) or not user:
            raise ApiError(400, "'user' must name the user whose server to extend")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds <= 30 * 86400:
            raise ApiError(400, "'seconds' must be a number of seconds from 1 to 2592000 (30 days)")
        self.reply(await self.reclaimer.extend(user, _server_of(body), float(seconds), model["name"]))


def make_app(reclaimer: Reclaimer, identify: Callable, prefix: str = f"/services/{NAME}/") -> web.Application:
    return web.Application([
        (f"{prefix}api/me", MeHandler),
        (f"{prefix}api/me/still-working", StillWorkingHandler),
        (f"{prefix}api/holders", HoldersHandler),
        (f"{prefix}api/extend", ExtendHandler),
    ], reclaimer=reclaimer, identify=identify, server_limits=SERVER_LIMITS)


def build(env: Mapping[str, str], docker: Any = None, hub: Any = None) -> Reclaimer:

    settings = GPUSettings.from_env(env)  # the state volume's files and labels, as the console reads them
    state = Path(settings.state_dir)
    interval = read(env, "GPU_SAMPLE_INTERVAL")
    store = ActivityStore(state / "gpu-activity.sqlite")
    sampler = ActivitySampler(load_reader(read(env, "GPU_USAGE_READER")), interval=interval, store=store)
    hub = hub or HubClient(env["JUPYTERHUB_API_URL"], env["JUPYTERHUB_API_TOKEN"])
    usage_db, default_quota = settings.usage_db, read(env, "GPU_QUOTA_DEFAULT")

    def usage(user: str, groups: list[str]) -> dict:

        # A course is a group of the same name, and only a course can carry a course quota: the
        # groups serve as the courses too (the token's model has group names, not properties).
        return gate.summary(usage_db, user, groups, groups, default_quota)
    audit = AuditLog(settings.audit_file)
    reclaimer = Reclaimer(policy_from_env(env), sampler, docker or DockerCaller(), hub,
                     audit, ReasonFile(state / "stop-reasons.json"),
                     state / "gpu-reclaim.json", instance=read(env, "HUB_NAME_PREFIX"),
                     label_prefix=settings.label_prefix, profiles_file=settings.profiles_file,
                     holders_file=state / HOLDERS_FILE, usage=usage, parked_file=state / PARKED_FILE,
                     prestart_file=state / prestarts.FILE)
    # used only where a policy (the settings' or a profile's, re-read when it changes) parks; none
    # on a Swarm (its servers run on other nodes' engines): a profile's `park` stops there
    if read(env, "HUB_BACKEND") != "swarm":
        reclaimer.parker = parking.build_parker(env, state, sampler.reader, audit, hub,
                                                label_prefix=settings.label_prefix)
    return reclaimer


def env_in_console(env: Mapping[str, str]) -> dict[str, str]:
    """gpu-reclaim's environment inside the GPU console's process (hub/service_process/console/app.py ``main``):
    the console's, less the console's own JupyterHub identity, with gpu-reclaim's token, URL and
    prefix, which configure_reclaim hands to the console. Raises ValueError naming what is missing."""
    missing = [name for name in (RECLAIM_TOKEN_ENV, RECLAIM_URL_ENV) if not read(env, name)]
    missing += [] if env.get("JUPYTERHUB_API_URL") else ["JUPYTERHUB_API_URL"]
    if missing:
        raise ValueError(f"gpu-reclaim in the console's process needs {', '.join(missing)} (configure_reclaim)")
    shared = {"JUPYTERHUB_API_URL", "JUPYTERHUB_BASE_URL"}
    own = {k: v for k, v in env.items() if k in shared or not k.startswith("JUPYTERHUB_")}
    own.pop(RECLAIM_TOKEN_ENV)
    return {**own, "JUPYTERHUB_SERVICE_NAME": NAME, "JUPYTERHUB_API_TOKEN": read(env, RECLAIM_TOKEN_ENV),
            "JUPYTERHUB_SERVICE_URL": read(env, RECLAIM_URL_ENV),
            "JUPYTERHUB_SERVICE_PREFIX": f"{env.get('JUPYTERHUB_BASE_URL', '/')}services/{NAME}/"}


async def start(reclaimer: Reclaimer, env: Mapping[str, str]) -> None:
    """gpu-reclaim's component: its API at its own URL, authenticated with its own token, then a
    round now and every ``GPU_SAMPLE_INTERVAL`` (guarded: hub.common.services.every)."""
    # after defer_hub_database() (hub/common/lean_imports.py): no hub database layer in this process
    from jupyterhub.services.auth import HubAuth


    # A HubAuth of its own, made here: HubAuth.instance() in the console's process is the
    # console's HubOAuth, with the console's token.
    auth = HubAuth(api_token=env["JUPYTERHUB_API_TOKEN"], api_url=env["JUPYTERHUB_API_URL"],
                   access_scopes=set())  # api/me: any user's token, for its owner only

    async def identify(token: str) -> dict | None:
        return await auth.user_for_token(token, sync=False)

    url = urlsplit(env.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10102"))
    make_app(reclaimer, identify, env.get("JUPYTERHUB_SERVICE_PREFIX", f"/services/{NAME}/")).listen(
        url.port or 80, address="0.0.0.0", **SERVER_LIMITS)
    log.info("GPU reclaim at %s: %s; a reading every %gs", url.geturl(),
             json.dumps(reclaimer.policies.to_json()) if reclaimer.policies.enabled else "off (sampling only)",
             reclaimer.sampler.interval)
    told, due_round = [], []

    async def round_() -> None:
        await reclaimer.round()
        if reclaimer.sampler.source != "nvml" and not told:
            log.info("GPU usage: n/a (%s): nothing is judged idle", reclaimer.sampler.reason)
            told.append(True)
        # A warning or stop due before the next interval gets a round of its own then, so a
        # reclaim takes T + grace after the first idle reading, not up to one interval more.
        while due_round:
            due_round.pop().cancel()
        if reclaimer.next_due is not None:
            delay = reclaimer.next_due - reclaimer.clock()
            if 0 < delay < reclaimer.sampler.interval:
                due_round.append(asyncio.get_running_loop().call_later(
                    delay, lambda: asyncio.ensure_future(guarded_round())))

    guarded_round = guarded(round_, "reclaim round (due)", log)
    await every(reclaimer.sampler.interval, round_, "reclaim round", log)


def main() -> None:
    """gpu-reclaim in a process of its own (tests, a GPU host's own setup); the deployment runs
    it in the GPU console's process (hub/service_process/console/app.py)."""

    defer_hub_database()  # before jupyterhub.services.auth: no hub database layer in this process

    env = dict(os.environ)
    logging.basicConfig(level=read(env, "HUB_LOG_LEVEL").upper(),
                        format="[%(levelname).1s %(asctime)s %(name)s] %(message)s")
    reclaimer = build(env)
    serve(lambda: start(reclaimer, env))


if __name__ == "__main__":
    main()
