"""The GPU console's state and actions, independent of the web layer.

State is computed exactly as the spawner computes it: the hub's ``GPUManager`` re-reads the
admin intent (``gpu-intent.json``) and reconciles the pure ``Allocator`` with the engine's live
containers (their ``gpuhub.gpu.uuid`` labels and device requests). Actions validate everything
first (the hub's REST API for users and groups, the inventory for GPUs) and only then write:
the intent with ``GPUManager.save_intent`` (atomic), then one audit line. A refused action
changes neither file. Actions are serialised by one lock.
"""
from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import quote

from hub.gpus.allocator import GPU, Access, Holder, Intent, held_from_containers
from hub.gpus.manager import GPUManager

MAX_NAME = 255
MAX_NOTE = 500
MAX_LIST = 1000
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ConsoleError(Exception):
    """An answer other than success: HTTP status and a message for the admin."""

    def __init__(self, status: int, message: str, **extra: Any):
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra  # extra: more JSON fields


# ---- request bodies ------------------------------------------------------------------------

def parse_object(body: bytes | str) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 saying what is wrong with it."""
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError:
            raise ConsoleError(400, "the request body is not UTF-8 text") from None
    if not body.strip():
        raise ConsoleError(400, "the request body is empty: send a JSON object")
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        raise ConsoleError(400, f"the request body is not valid JSON ({exc.msg} at line "
                                f"{exc.lineno} column {exc.colno})") from None
    except RecursionError:  # json gives up on deep nesting ([[[[…) with Python's stack
        raise ConsoleError(400, "the request body is nested too deeply: send a flat JSON object") from None
    if not isinstance(data, dict):
        raise ConsoleError(400, f"the request body must be a JSON object, not {_kind(data)}")
    return data


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


# field kinds: "name" (non-empty string), "server" (string, may be empty), "note" (optional
# text), "note_any" (text of any length, e.g. a roster), "names" (array of names), "bool",
# "any" (checked by the action)
def check_fields(data: dict[str, Any], required: dict[str, str],
                 optional: dict[str, str] | None = None) -> dict[str, Any]:
    """Exactly these fields, each of its kind; 400 naming the first field that is wrong."""
    optional = optional or {}
    allowed = {**required, **optional}
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ConsoleError(400, f"unknown field {unknown[0]!r}; this request takes "
                                f"{', '.join(repr(k) for k in allowed)}")
    for name in required:
        if name not in data:
            raise ConsoleError(400, f"missing field {name!r}")
    return {name: _check(name, kind, data[name]) for name, kind in allowed.items() if name in data}


def _check(name: str, kind: str, value: Any) -> Any:
    if kind == "any":
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConsoleError(400, f"{name!r} must be true or false, not {_kind(value)}")
        return value
    if kind == "note_any":
        if not isinstance(value, str):
            raise ConsoleError(400, f"{name!r} must be a string, not {_kind(value)}")
        return value
    if kind == "names":
        if not isinstance(value, list):
            raise ConsoleError(400, f"{name!r} must be an array of names, not {_kind(value)}")
        if len(value) > MAX_LIST:
            raise ConsoleError(400, f"{name!r} lists more than {MAX_LIST} names")
        return sorted(set(_check(f"{name}[{i}]", "name", v) for i, v in enumerate(value)))
    if not isinstance(value, str):
        raise ConsoleError(400, f"{name!r} must be a string, not {_kind(value)}")
    limit = MAX_NOTE if kind == "note" else MAX_NAME
    if len(value) > limit:
        raise ConsoleError(400, f"{name!r} is longer than {limit} characters")
    if kind == "name" and not value.strip():
        raise ConsoleError(400, f"{name!r} must not be empty")
    if kind != "note" and _CONTROL.search(value):
        raise ConsoleError(400, f"{name!r} contains control characters")
    return value


# ---- audit log -----------------------------------------------------------------------------

class AuditLog:
    """Who did what when: one JSON object per line, appended, on the state volume."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def append(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, sort_keys=True) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

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


# ---- the hub's REST API, as the service ---------------------------------------------------

class HubAPI:
    """The few calls the console makes with its own token (see configure_console's role)."""

    async def user(self, name: str) -> dict | None: ...  # the model (with "groups"), None if unknown
    async def group_exists(self, name: str) -> bool: ...
    async def user_names(self) -> list[str]: ...
    async def group_names(self) -> list[str]: ...
    async def active_servers(self) -> dict[tuple[str, str], dict]: ...
    async def stop_server(self, user: str, server: str) -> tuple[int, str]: ...
    # courses (hub/console/courses.py)
    async def group_models(self) -> list[dict]: ...  # with "users" and "properties"
    async def create_users(self, names: list[str]) -> None: ...
    async def create_group(self, name: str) -> None: ...
    async def add_group_members(self, group: str, users: list[str]) -> None: ...
    async def remove_group_members(self, group: str, users: list[str]) -> None: ...
    async def group_properties(self, group: str) -> dict: ...
    async def set_group_properties(self, group: str, properties: dict) -> None: ...


# ---- state ---------------------------------------------------------------------------------

@dataclass
class View:
    """One consistent reading: intent from the file, holders from the engine."""
    intent: Intent
    rows: list[dict[str, Any]]
    gpus: dict[str, GPU]
    holders: dict[str, Holder]
    containers: dict[str, dict] = field(default_factory=dict)  # uuid -> container details
    all_holders: dict[str, list[Holder]] = field(default_factory=dict)  # several on a shared GPU
    by_holder: dict[tuple[str, str, str], dict] = field(default_factory=dict)  # (uuid, user, server) -> container
    now: float = 0.0


DockerCall = Callable[..., Awaitable]


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


class Console:
    def __init__(self, manager: GPUManager, docker: DockerCall, hub: HubAPI, sampler: Any,
                 audit: AuditLog, instance: str, base_url: str = "/",
                 clock: Callable[[], float] = time.time, cache_seconds: float = 1.5):
        self.manager, self.docker, self.hub, self.sampler = manager, docker, hub, sampler
        self.audit, self.instance, self.base_url, self.clock = audit, instance, base_url, clock
        self.cache_seconds = cache_seconds
        self.lock = asyncio.Lock()  # one action at a time
        self._cached: tuple[float, dict] | None = None

    @property
    def label_prefix(self) -> str:
        return self.manager.label_prefix

    # -- reading ----------------------------------------------------------------------------

    async def view(self) -> View:
        """Reconcile exactly as the spawner does, under the manager's lock."""
        details: list[dict] = []

        async def recording(method: str, *args: Any, **kwargs: Any) -> Any:
            result = await self.docker(method, *args, **kwargs)
            if method == "inspect_container" and result:
                details.append(result)
            return result

        async with self.manager.lock:
            try:
                await self.manager.reconcile(recording)
            except ValueError as exc:  # a broken intent file
                raise ConsoleError(500, str(exc)) from None
            except Exception as exc:  # noqa: BLE001 - the engine did not answer
                raise ConsoleError(503, f"cannot read the Docker engine's containers: {exc}") from None
            alloc = self.manager.allocator
            intent = copy.deepcopy(alloc.intent)
            now = self.clock()
            rows = alloc.snapshot(now)
            holders = {g.uuid: h for g in alloc.inventory if (h := alloc.holder_of(g.uuid))}
            holders.update(alloc.unknown_held())
            all_holders = {u: alloc.holders_of(u) for u in holders}
        containers: dict[str, dict] = {}  # uuid -> the first holder's container
        by_holder: dict[tuple[str, str, str], dict] = {}  # every holder's, for a shared GPU
        for d in details:
            for uuid, h in held_from_containers([d], self.label_prefix, inventory=self.manager.inventory).items():
                containers.setdefault(uuid, d)
                by_holder[(uuid, h.user, h.server)] = d
        return View(intent, rows, {g.uuid: g for g in self.manager.inventory}, holders, containers,
                    all_holders, by_holder, now)

    def _container_of(self, view: View, uuid: str) -> dict[str, Any]:
        return self._describe(view.containers.get(uuid))

    def _describe(self, d: dict | None) -> dict[str, Any]:
        """A holder's container: its name, hub instance, and whether this hub started it."""
        d = d or {}
        labels = (d.get("Config") or {}).get("Labels") or {}
        return {"name": (d.get("Name") or "").lstrip("/") or None,
                "instance": labels.get(f"{self.label_prefix}.instance"),
                "this_hub": bool(labels.get(f"{self.label_prefix}.user"))
                and labels.get(f"{self.label_prefix}.instance") == self.instance}

    def server_url(self, user: str, server: str) -> str:
        url = f"{self.base_url}user/{quote(user, safe='')}/"
        return url + f"{quote(server, safe='')}/" if server else url

    async def state(self, fresh: bool = False) -> dict[str, Any]:
        """What the page and `GET api/gpus` show; cached for a moment against many pollers."""
        now = self.clock()
        if not fresh and self._cached and now - self._cached[0] < self.cache_seconds:
            return self._cached[1]
        view = await self.view()
        try:
            servers = await self.hub.active_servers()
        except ConsoleError:
            servers = None
        gpus = []
        for row in view.rows:
            gpus.append(self._gpu_json(view, row, servers))
        unknown = [{"uuid": u, "holder": {"user": h.user, "server": h.server, "since": h.since},
                    "container": self._container_of(view, u)}
                   for u, h in sorted(view.holders.items()) if u not in view.gpus]
        state = {
            "time": now,
            "inventory_source": self.manager.source,
            "usage": {"source": self.sampler.source, "reason": self.sampler.reason,
                      "interval_s": self.sampler.interval, "window_s": self.sampler.window},
            "gpus": gpus,
            "unknown_held": unknown,
            "pins": dict(sorted(view.intent.pins.items())),
            "shared": dict(sorted(view.intent.shared.items())),
            "reservations": [{**r.to_json(), "active": r.active(now), "gpu_indexes":
                              [view.gpus[u].index for u in r.gpus if u in view.gpus]}
                             for r in sorted(view.intent.reservations, key=lambda r: (r.start, r.id))],
            "access": {**view.intent.access.to_json(), "everyone": view.intent.access.everyone},
            "hub_reachable": servers is not None,
        }
        self._cached = (now, state)
        return state

    def _gpu_json(self, view: View, row: dict[str, Any], servers: dict | None) -> dict[str, Any]:
        uuid = row["uuid"]
        reading = self.sampler.now(uuid)
        holder = None
        if row["holder"]:
            h = row["holder"]
            container = self._container_of(view, uuid)
            server = (servers or {}).get((h["user"], h["server"])) if container["this_hub"] else None
            holder = {**h, "since_iso": _iso(h["since"]) if h.get("since") else None,
                      "container": container["name"], "this_hub": container["this_hub"],
                      "instance": container["instance"],
                      "server_url": self.server_url(h["user"], h["server"]) if container["this_hub"] else None,
                      "ready": bool(server and server.get("ready")),
                      "last_activity": (server or {}).get("last_activity")}
        total = row["memory_total_mib"]
        if reading is not None and reading.memory_total_mib is not None:
            total = reading.memory_total_mib
        return {
            "index": row["index"], "uuid": uuid, "name": reading.name if reading else row["name"],
            "parent_uuid": row["parent_uuid"],
            "memory_total_mib": total,
            "memory_used_mib": reading.memory_used_mib if reading else None,
            "utilization_pct": reading.utilization_pct if reading else None,
            "state": row["state"], "drained": row["drained"], "pinned_to": row["pinned_to"],
            "holder": holder,
            "shared": row["shared"], "capacity": row["capacity"], "reserved_for": row["reserved_for"],
            "holders": [self._holder_json(view, uuid, h, servers) for h in view.all_holders.get(uuid, [])],
            "history": self.sampler.history(uuid),
        }

    def _holder_json(self, view: View, uuid: str, h: Holder, servers: dict | None) -> dict[str, Any]:
        container = self._describe(view.by_holder.get((uuid, h.user, h.server)))
        server = (servers or {}).get((h.user, h.server)) if container["this_hub"] else None
        return {"user": h.user, "server": h.server, "since": h.since,
                "since_iso": _iso(h.since) if h.since else None,
                "container": container["name"], "this_hub": container["this_hub"],
                "ready": bool(server and server.get("ready"))}

    async def names(self) -> dict[str, list[str]]:
        return {"users": await self.hub.user_names(), "groups": await self.hub.group_names()}

    def audit_tail(self, limit: int) -> list[dict[str, Any]]:
        return self.audit.tail(limit)

    # -- actions ------------------------------------------------------------------------------

    def _gpu(self, view: View, uuid: str, status: int = 400) -> GPU:
        gpu = view.gpus.get(uuid)
        if gpu is None:
            known = ", ".join(f"#{g.index} {g.uuid}" for g in self.manager.inventory) or "none"
            raise ConsoleError(status, f"no GPU {uuid!r} on this host (known: {known})")
        return gpu

    async def _require_user(self, name: str) -> dict:
        model = await self.hub.user(name)
        if model is None:
            raise ConsoleError(400, f"no user {name!r} on this hub (names are as on the hub's admin page)")
        return model

    async def _commit(self, intent: Intent | None, record: dict[str, Any], note: str, detail: str,
                      who: str, via: str) -> dict:
        """Write the intent (atomically) and then the audit line; both under the action lock.

        Returns the reply: ``detail`` as a sentence, and the audit entry."""
        if intent is not None:
            async with self.manager.lock:
                self.manager.allocator.intent = intent
                await asyncio.to_thread(self.manager.save_intent)
        now = self.clock()
        entry = {"time": _iso(now), "epoch": round(now, 3), "who": who, "via": via, **record,
                 "note": note, "detail": detail}
        await asyncio.to_thread(self.audit.append, entry)
        self._cached = None
        return {"message": detail[0].upper() + detail[1:], "entry": entry}

    @staticmethod
    def _label(gpu: GPU) -> str:
        return f"GPU #{gpu.index} ({gpu.uuid})"

    async def pin(self, body: dict, who: str, via: str) -> dict:
        f = check_fields(body, {"user": "name", "gpu": "name"}, {"note": "note"})
        async with self.lock:
            view = await self.view()
            gpu = self._gpu(view, f["gpu"])
            user = await self._require_user(f["user"])
            if gpu.uuid in view.intent.drained:
                raise ConsoleError(409, f"{self._label(gpu)} is drained: undrain it before pinning anyone to it")
            if not view.intent.allows(f["user"], user.get("groups") or []):
                raise ConsoleError(409, f"{f['user']!r} may not use GPUs (see 'Who may use GPUs'): allow them first")
            before = view.intent.pins.get(f["user"])
            if before == gpu.uuid:
                raise ConsoleError(409, f"{f['user']!r} is already pinned to {self._label(gpu)}")
            intent = copy.deepcopy(view.intent)
            intent.pins[f["user"]] = gpu.uuid
            detail = f"pinned {f['user']} to {self._label(gpu)}"
            if before:
                detail += f" (was {before})"
            held = [u for u, h in view.holders.items() if h.user == f["user"] and u != gpu.uuid]
            if held:
                detail += f"; their running server keeps {held[0]} until it stops"
            return await self._commit(intent, {"action": "pin", "user": f["user"], "gpu": gpu.uuid,
                                                       "index": gpu.index, "previous": before},
                                              f.get("note", ""), detail, who, via)

    async def unpin(self, user: str, body: dict, who: str, via: str) -> dict:
        f = check_fields(body, {}, {"note": "note"})
        _check("user", "name", user)
        async with self.lock:
            view = await self.view()
            uuid = view.intent.pins.get(user)
            if uuid is None:
                raise ConsoleError(404, f"{user!r} is not pinned to any GPU")
            intent = copy.deepcopy(view.intent)
            del intent.pins[user]
            gpu = view.gpus.get(uuid)
            detail = f"unpinned {user} from {self._label(gpu) if gpu else uuid}"
            return await self._commit(intent, {"action": "unpin", "user": user, "gpu": uuid,
                                                       "index": gpu.index if gpu else None},
                                              f.get("note", ""), detail, who, via)

    async def drain(self, body: dict, who: str, via: str) -> dict:
        f = check_fields(body, {"gpu": "name"}, {"note": "note"})
        async with self.lock:
            view = await self.view()
            gpu = self._gpu(view, f["gpu"])
            if gpu.uuid in view.intent.drained:
                raise ConsoleError(409, f"{self._label(gpu)} is already drained")
            intent = copy.deepcopy(view.intent)
            intent.drained.add(gpu.uuid)
            holder = view.holders.get(gpu.uuid)
            detail = f"drained {self._label(gpu)}"
            if holder:
                detail += f"; {holder.user} keeps it until their server stops"
            return await self._commit(intent, {"action": "drain", "gpu": gpu.uuid, "index": gpu.index},
                                              f.get("note", ""), detail, who, via)

    async def undrain(self, uuid: str, body: dict, who: str, via: str) -> dict:
        f = check_fields(body, {}, {"note": "note"})
        _check("gpu", "name", uuid)
        async with self.lock:
            view = await self.view()
            if uuid not in view.intent.drained:
                self._gpu(view, uuid, status=404)
                raise ConsoleError(409, f"{self._label(view.gpus[uuid])} is not drained")
            intent = copy.deepcopy(view.intent)
            intent.drained.discard(uuid)
            gpu = view.gpus.get(uuid)
            detail = f"undrained {self._label(gpu) if gpu else uuid}"
            return await self._commit(intent, {"action": "undrain", "gpu": uuid,
                                                       "index": gpu.index if gpu else None},
                                              f.get("note", ""), detail, who, via)

    async def set_access(self, body: dict, who: str, via: str) -> dict:
        f = check_fields(body, {"users": "names", "groups": "names"}, {"note": "note"})
        async with self.lock:
            view = await self.view()
            for user in f["users"]:
                await self._require_user(user)
            for group in f["groups"]:
                if not await self.hub.group_exists(group):
                    raise ConsoleError(400, f"no group {group!r} on this hub")
            access = Access(frozenset(f["users"]), frozenset(f["groups"]))
            if access == view.intent.access:
                return {"message": "Unchanged", "unchanged": True, "access": access.to_json()}
            intent = copy.deepcopy(view.intent)
            intent.access = access
            if access.everyone:
                detail = "GPUs may be used by everyone"
            else:
                who_may = [*(f"user {u}" for u in f["users"]), *(f"group {g}" for g in f["groups"])]
                detail = "GPUs may be used only by " + ", ".join(who_may)
            reply = await self._commit(intent, {"action": "access", "users": f["users"],
                                                "groups": f["groups"], "previous": view.intent.access.to_json()},
                                       f.get("note", ""), detail, who, via)
        return {**reply, "access": access.to_json()}

    async def free(self, body: dict, who: str, via: str) -> dict:
        """Stop the server that holds a GPU (named by "gpu", or by "user" and "server")."""
        f = check_fields(body, {}, {"gpu": "name", "user": "name", "server": "server", "note": "note"})
        if ("gpu" in f) == ("user" in f):
            raise ConsoleError(400, "name either 'gpu' (the GPU to free) or 'user' (whose server to stop)")
        if "server" in f and "user" not in f:
            raise ConsoleError(400, "'server' goes with 'user'")
        async with self.lock:
            view = await self.view()
            if "gpu" in f:
                gpu = self._gpu(view, f["gpu"])
                uuid = gpu.uuid
                holder = view.holders.get(uuid)
                if holder is None:
                    raise ConsoleError(409, f"{self._label(gpu)} is free already: no server holds it")
            else:
                user, server = f["user"], f.get("server", "")
                held = sorted(u for u, h in view.holders.items() if (h.user, h.server) == (user, server))
                if not held:
                    await self._require_user(user)
                    name = f"{user}'s server" + (f" {server!r}" if server else "")
                    raise ConsoleError(409, f"{name} holds no GPU")
                uuid, holder = held[0], view.holders[held[0]]
                gpu = view.gpus.get(uuid) or GPU(uuid, -1, "unknown")
            container = self._container_of(view, uuid)
            if not container["this_hub"]:
                raise ConsoleError(409, f"{self._label(gpu)} is held by container {container['name']!r}, which "
                                        "this hub did not start; stop it with docker on the host")
            status, message = await self.hub.stop_server(holder.user, holder.server)
            if status not in (202, 204):
                raise ConsoleError(409, f"the hub did not stop {holder.user}'s server: {message}")
            state = "stopped" if status == 204 else "stopping"
            server_name = f" {holder.server!r}" if holder.server else ""
            detail = f"stopped {holder.user}'s server{server_name} to free {self._label(gpu)}"
            reply = await self._commit(None, {"action": "free", "user": holder.user, "server": holder.server,
                                              "gpu": uuid, "index": gpu.index, "container": container["name"],
                                              "result": state},
                                       f.get("note", ""), detail, who, via)
        return {**reply, "result": state}
