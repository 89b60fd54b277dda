"""Console: what the console sees (GPUs, holders, intent, usage) and the one way its actions
change anything (``commit``: the intent file, then one audit line).

State is computed exactly as the spawner computes it: the hub's ``GPUManager`` re-reads the
admin intent (``gpu-intent.json``) and reconciles the pure ``Allocator`` with the engine's live
containers (their ``gpuhub.gpu.uuid`` labels and device requests). The actions (gpu_actions.py,
course_actions.py) validate everything first (the hub's REST API for users and groups, the
inventory for GPUs) and only then ``commit``: a refused action changes neither file. Actions
are serialised by ``Console.lock``.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from typing import Any, Callable
from pathlib import Path
from urllib.parse import quote

from hub.common.audit import AuditLog
from hub.common.engine import DockerCall
from hub.common.errors import ConsoleError
from hub.common.hubapi import HubAPI
from hub.gpus.claim import Labels, held_from_containers
from hub.gpus.manager import GPUManager, load_intent
from hub.gpus.model import GPU, Holder, Intent
from hub.gpus.parked import FILE as PARKED_FILE, ParkedFile
from hub.gpus.queue import read_line
from hub.times import utc_iso
from hub.service_process.reclaim.service import HOLDERS_FILE, holders_snapshot


def gpu_label(gpu: GPU) -> str:
    """How messages name a GPU: "GPU #2 (GPU-…)"."""
    return f"GPU #{gpu.index} ({gpu.uuid})"


def _activity(seen: dict | None) -> dict[str, Any] | None:
    """What gpu-reclaim last saw of one holder: utilisation now, memory held, idle for how long
    (by its profile's threshold), its warning; None when the service has no fresh round."""
    if not seen:
        return None
    gpu, warning = seen.get("gpu") or {}, seen.get("warning")
    return {"utilization_pct": gpu.get("utilization_pct"), "memory_used_mib": gpu.get("memory_used_mib"),
            "idle_since": seen.get("idle_since"), "idle_seconds": seen.get("idle_seconds", 0),
            "warning_deadline": warning.get("deadline") if warning else None,
            "extended_until": seen.get("extended_until"), "profile": seen.get("profile"),
            "policy": seen.get("policy"), "sampled_at": seen.get("sampled_at")}


@dataclass
class View:
    """One consistent reading: intent from the file, holders from the engine."""
    intent: Intent
    rows: list[dict[str, Any]]
    gpus: dict[str, GPU]  # the inventory, in its order
    holders: dict[str, Holder]
    containers: dict[str, dict] = field(default_factory=dict)  # uuid -> container details
    all_holders: dict[str, list[Holder]] = field(default_factory=dict)  # several on a shared GPU
    by_holder: dict[tuple[str, str, str], dict] = field(default_factory=dict)  # (uuid, user, server) -> container
    now: float = 0.0

    def gpu(self, uuid: str, status: int = 400) -> GPU:
        """The inventory's GPU with this uuid, or a refusal (`status`) that lists the known ones."""
        gpu = self.gpus.get(uuid)
        if gpu is None:
            known = ", ".join(f"#{g.index} {g.uuid}" for g in self.gpus.values()) or "none"
            raise ConsoleError(status, f"no GPU {uuid!r} on this host (known: {known})")
        return gpu


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
    def labels(self) -> Labels:
        """The keys of the labels on this hub's containers."""
        return Labels(self.manager.label_prefix)

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
            intent = alloc.intent  # never changed in place: actions commit a changed copy
            now = self.clock()
            rows = alloc.snapshot(now)
            holders = {g.uuid: h for g in alloc.inventory if (h := alloc.holder_of(g.uuid))}
            holders.update(alloc.unknown_held())
            all_holders = {u: alloc.holders_of(u) for u in holders}
        containers: dict[str, dict] = {}  # uuid -> the first holder's container
        by_holder: dict[tuple[str, str, str], dict] = {}  # every holder's, for a shared GPU
        for d in details:
            for uuid, h in held_from_containers([d], self.manager.label_prefix, inventory=self.manager.inventory,
                                                parked=self.manager.parked).items():
                containers.setdefault(uuid, d)
                by_holder[(uuid, h.user, h.server)] = d
        return View(intent, rows, {g.uuid: g for g in self.manager.inventory}, holders, containers,
                    all_holders, by_holder, now)

    async def intent(self) -> Intent:
        """The admin intent as the file has it, without reading the engine."""
        try:
            return await asyncio.to_thread(load_intent, self.manager.intent_file)
        except ValueError as exc:  # a broken intent file, as view() reports it
            raise ConsoleError(500, str(exc)) from None

    def container(self, view: View, uuid: str) -> dict[str, Any]:
        """The container of the GPU's (first) holder: its name, hub instance, and whether this
        hub started it (only those can be stopped through the hub)."""
        return self._describe(view.containers.get(uuid))

    def _describe(self, d: dict | None) -> dict[str, Any]:
        d, keys = d or {}, self.labels
        labels = (d.get("Config") or {}).get("Labels") or {}
        return {"name": (d.get("Name") or "").lstrip("/") or None,
                "instance": labels.get(keys.instance),
                "this_hub": bool(labels.get(keys.user)) and labels.get(keys.instance) == self.instance}

    def server_url(self, user: str, server: str) -> str:
        url = f"{self.base_url}user/{quote(user, safe='')}/"
        return url + f"{quote(server, safe='')}/" if server else url

    async def known_user(self, name: str) -> dict:
        """The hub's model of this user (with "groups"), or a 400 saying there is no such user."""
        model = await self.hub.user(name)
        if model is None:
            raise ConsoleError(400, f"no user {name!r} on this hub (names are as on the hub's admin page)")
        return model

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
        activity = await asyncio.to_thread(holders_snapshot, Path(self.manager.intent_file).parent / HOLDERS_FILE, now)
        gpus = [self._gpu_json(view, row, servers, activity) for row in view.rows]
        unknown = [{"uuid": u, "holder": {"user": h.user, "server": h.server, "since": h.since},
                    "container": self.container(view, u)}
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
            "queue": self.queue(),
            "parked": await self.parked(view),
            "holder_activity": bool(activity),  # gpu-reclaim's last round is fresh
        }
        self._cached = (now, state)
        return state

    def _gpu_json(self, view: View, row: dict[str, Any], servers: dict | None,
                  activity: dict | None = None) -> dict[str, Any]:
        uuid = row["uuid"]
        reading = self.sampler.now(uuid)
        holder = None
        if row["holder"]:
            h = row["holder"]
            container = self.container(view, uuid)
            server = (servers or {}).get((h["user"], h["server"])) if container["this_hub"] else None
            holder = {**h, "since_iso": utc_iso(h["since"]) if h.get("since") else None,
                      "container": container["name"], "this_hub": container["this_hub"],
                      "instance": container["instance"],
                      "server_url": self.server_url(h["user"], h["server"]) if container["this_hub"] else None,
                      "ready": bool(server and server.get("ready")),
                      "last_activity": (server or {}).get("last_activity"),
                      "activity": _activity((activity or {}).get((h["user"], h["server"], uuid)))}
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
            "holders": [self._holder_json(view, uuid, h, servers, activity) for h in view.all_holders.get(uuid, [])],
            "history": self.sampler.history(uuid),
        }

    def _holder_json(self, view: View, uuid: str, h: Holder, servers: dict | None,
                     activity: dict | None = None) -> dict[str, Any]:
        container = self._describe(view.by_holder.get((uuid, h.user, h.server)))
        server = (servers or {}).get((h.user, h.server)) if container["this_hub"] else None
        return {"user": h.user, "server": h.server, "since": h.since,
                "since_iso": utc_iso(h.since) if h.since else None,
                "container": container["name"], "this_hub": container["this_hub"],
                "ready": bool(server and server.get("ready")),
                "activity": _activity((activity or {}).get((h.user, h.server, uuid)))}

    @property
    def queue_file(self) -> Path:
        """The line's file, which the hub writes beside the intent file."""
        return Path(self.manager.intent_file).parent / "gpu-queue.json"

    def queue(self) -> list[dict[str, Any]]:
        """The line of starts waiting for a GPU, as the hub last wrote it."""
        return read_line(self.queue_file)

    async def parked(self, view: View | None = None) -> list[dict[str, Any]]:
        """The parked servers (hub/gpus/parked.py: recorded and paused at the view's reconcile):
        who, since when, the GPU state they keep in host memory, the GPU they resume on and who
        holds it now, and their place in the GPU line if their resume waits for it."""
        view = view or await self.view()
        records = await asyncio.to_thread(ParkedFile(Path(self.manager.intent_file).with_name(PARKED_FILE)).all)
        line = {(e.get("user"), e.get("server", "")): e.get("position") for e in self.queue() if e.get("resume_gpu")}
        out = []
        for r in sorted(records.values(), key=lambda r: r.since):
            if r.container not in self.manager.parked:
                continue  # a stale record (unpaused, removed): not parked
            gpu = view.gpus.get(r.uuid)
            out.append({"user": r.user, "server": r.server, "since": r.since, "since_iso": utc_iso(r.since),
                        "gpu": r.uuid, "gpu_index": gpu.index if gpu else None,
                        "gpu_memory_mib": r.gpu_mib, "host_memory_bytes": r.gpu_mib * 2**20,
                        "mem_limit_parked": r.mem_limit_parked or None,
                        "gpu_held_by": sorted({h.user for h in view.all_holders.get(r.uuid, [])}),
                        "in_line": line.get((r.user, r.server)) or 0,
                        "server_url": self.server_url(r.user, r.server)})
        return out

    async def names(self) -> dict[str, list[str]]:
        return {"users": await self.hub.user_names(), "groups": await self.hub.group_names()}

    def audit_tail(self, limit: int) -> list[dict[str, Any]]:
        return self.audit.tail(limit)

    # -- changing ------------------------------------------------------------------------------

    async def commit(self, intent: Intent | None, record: dict[str, Any], note: str, detail: str,
                     who: str, via: str) -> dict:
        """Write the intent (atomically; None: unchanged) and then the audit line, under the
        caller's ``lock``. Returns the reply: ``detail`` as a sentence, and the audit entry."""
        if intent is not None:
            async with self.manager.lock:
                await asyncio.to_thread(self.manager.save_intent, intent)
        entry = await asyncio.to_thread(self.audit.write, self.clock(), who, via,
                                        **{**record, "note": note, "detail": detail})
        self._cached = None
        return {"message": detail[0].upper() + detail[1:], "entry": entry}
