"""Exclusive GPU allocation: pure decisions, no Docker calls, no I/O, no lock.

Docker is the source of truth for who holds which GPU: the caller (the asyncio spawner)
turns the engine's containers into a held map (`held_from_containers`) and, under ONE
asyncio.Lock shared by all spawns and stops, runs ``reconcile(held)`` + ``allocate()``
and creates the container (labelled with the uuid) before releasing the lock; otherwise
a reconcile from an older snapshot would forget the allocation.

Pins and drains (admin intent, persisted elsewhere) never evict a holder; they steer
later allocations. A pinned GPU is *reserved* for the user(s) pinned to it, running or
not, and a pinned user gets only that GPU (no fallback); users pinned to one GPU take
turns. Identity is always the UUID; ``index`` is only for ordering and display.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping


@dataclass(frozen=True)
class GPU:
    """One allocatable device: a whole GPU, or a MIG instance (then parent_uuid is set)."""
    uuid: str
    index: int
    name: str = "GPU"
    memory_total_mib: int | None = None
    parent_uuid: str | None = None


@dataclass(frozen=True)
class Holder:
    """Who holds a GPU: a user's server ("" is the default server), since when (epoch s)."""
    user: str
    server: str = ""
    since: float | None = None


@dataclass(frozen=True)
class Access:
    """Who may use GPUs at all: these users and the members of these groups; both empty
    (the default) means everyone. Admins are not exempt: list them too."""
    users: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()

    @property
    def everyone(self) -> bool:
        return not self.users and not self.groups

    def allows(self, user: str, groups: Iterable[str] = ()) -> bool:
        return self.everyone or user in self.users or not self.groups.isdisjoint(groups)

    def to_json(self) -> dict[str, list[str]]:
        return {"users": sorted(self.users), "groups": sorted(self.groups)}

    @classmethod
    def from_json(cls, data: Any) -> Access:
        if data is None:
            return cls()
        if not isinstance(data, dict) or not set(data) <= {"users", "groups"}:
            raise ValueError("intent 'access' must be {\"users\": [...], \"groups\": [...]}")
        users, groups = data.get("users") or [], data.get("groups") or []
        for key, names in (("users", users), ("groups", groups)):
            if not isinstance(names, list) or not all(_is_str(n) and n for n in names):
                raise ValueError(f"intent 'access.{key}' must be a list of non-empty {key[:-1]} names")
        return cls(frozenset(users), frozenset(groups))


ACCESS_REFUSED = ("Your account may not use GPUs on this hub: an administrator decides who may. "
                  "Choose a CPU-only profile, or ask an administrator for GPU access.")


@dataclass
class Intent:
    """Admin intent: pins (username -> GPU uuid), drained GPU uuids, and who may use GPUs."""
    pins: dict[str, str] = field(default_factory=dict)
    drained: set[str] = field(default_factory=set)
    access: Access = field(default_factory=Access)

    def allows(self, user: str, groups: Iterable[str] = ()) -> bool:
        """Whether `user` (a member of `groups`) may be given a GPU at all."""
        return self.access.allows(user, groups)

    def to_json(self) -> dict[str, Any]:
        """A sorted, JSON-ready dict, so that persisting unchanged intent is a no-op diff.
        ``access`` is written only when it restricts anyone (files without it mean everyone)."""
        data: dict[str, Any] = {"pins": dict(sorted(self.pins.items())), "drained": sorted(self.drained)}
        if not self.access.everyone:
            data["access"] = self.access.to_json()
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str | None) -> Intent:
        """Inverse of `to_json` (also accepts the JSON text); rejects ill-typed data."""
        data = (json.loads(data) if isinstance(data, str) else data) or {}
        pins, drained = data.get("pins") or {}, data.get("drained") or []
        if not isinstance(pins, dict) or not all(map(_is_str, (*pins, *pins.values()))):
            raise ValueError("intent 'pins' must map usernames to GPU uuid strings")
        if not isinstance(drained, list) or not all(map(_is_str, drained)):
            raise ValueError("intent 'drained' must be a list of GPU uuid strings")
        return cls(dict(pins), set(drained), Access.from_json(data.get("access")))


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


class NoGPUAvailable(Exception):
    """No GPU can be given to this server now; `reason` says why in a few words."""

    def __init__(self, reason: str, total: int = 0, drained: int = 0, free: int = 0):
        super().__init__(reason, total, drained, free)
        self.reason, self.total, self.drained, self.free = reason, total, drained, free

    def __str__(self) -> str:
        return (f"No GPU could be assigned to your server: {self.reason}. "
                "Try again later, or ask an administrator if this persists.")


Policy = Callable[[list[GPU], Mapping[str, Holder], str], GPU | None]


def _order(gpu: GPU) -> tuple[int, str]:
    return (gpu.index, gpu.uuid)


def first_free(candidates: list[GPU], held: Mapping[str, Holder], user: str) -> GPU | None:
    """Default policy: the lowest-index candidate, so allocation is predictable."""
    return min(candidates, key=_order, default=None)


def _all(n: int) -> str:
    return "the only GPU is" if n == 1 else f"all {n} GPUs are"


class Allocator:
    """Hands out whole GPUs exclusively: never a held, drained, or someone else's pinned one."""

    def __init__(self, inventory: Iterable[GPU], intent: Intent | None = None,
                 policy: Policy = first_free):
        self._gpus: dict[str, GPU] = {}
        for gpu in inventory:
            if gpu.uuid in self._gpus:
                raise ValueError(f"GPU {gpu.uuid} appears twice in the inventory")
            self._gpus[gpu.uuid] = gpu
        self.inventory: tuple[GPU, ...] = tuple(sorted(self._gpus.values(), key=_order))
        self.intent, self.policy = intent if intent is not None else Intent(), policy
        self._held: dict[str, Holder] = {}

    def reconcile(self, held: Mapping[str, Holder]) -> None:
        """Replace the held map with the engine's (uuid -> holder); unknown uuids are kept."""
        self._held = dict(held)

    def unknown_held(self) -> dict[str, Holder]:
        """Holdings of uuids not in the inventory (a GPU gone, or a stale inventory)."""
        return {u: h for u, h in self._held.items() if u not in self._gpus}

    def holder_of(self, uuid: str) -> Holder | None:
        return self._held.get(uuid)

    def gpu_of(self, user: str, server: str = "") -> GPU | None:
        """The GPU this server holds (the lowest, should reconcile have found several)."""
        uuids = self._uuids_of(user, server)
        return self._gpu(uuids[0]) if uuids else None

    def allocate(self, user: str, server: str = "", *, since: float | None = None) -> GPU:
        """A GPU for this server, recorded as held; the same one again if it holds one.

        A server that already holds a GPU keeps it even if it was drained or re-pinned
        since: allocation never moves a running server.
        """
        current = self.gpu_of(user, server)
        if current is not None:
            return current
        gpu = self._choose(user)
        self._held[gpu.uuid] = Holder(user, server, since)
        return gpu

    def release(self, user: str, server: str = "") -> GPU | None:
        """Forget every holding of this server; returns the GPU it held (None if none)."""
        gpu = self.gpu_of(user, server)
        for uuid in self._uuids_of(user, server):
            del self._held[uuid]
        return gpu

    def release_uuid(self, uuid: str) -> Holder | None:
        """Forget whoever holds `uuid` (e.g. its container vanished); returns that holder."""
        return self._held.pop(uuid, None)

    def free(self) -> list[GPU]:
        """GPUs an unpinned user could get now: not held, not drained, not pinned."""
        reserved = set(self.intent.pins.values())
        taken = reserved | self.intent.drained | self._held.keys()
        return [g for g in self.inventory if g.uuid not in taken]

    def pin(self, user: str, uuid: str) -> None:
        """Reserve `uuid` for `user` (from their next allocation on)."""
        if not user:
            raise ValueError("cannot pin: the username is empty")
        self._require_known(uuid, f"pin {user!r} to it")
        self.intent.pins[user] = uuid

    def unpin(self, user: str) -> None:
        self.intent.pins.pop(user, None)

    def drain(self, uuid: str) -> None:
        """Stop handing out `uuid`; its current holder (if any) keeps it."""
        self._require_known(uuid, "drain it")
        self.intent.drained.add(uuid)

    def undrain(self, uuid: str) -> None:
        self.intent.drained.discard(uuid)

    def snapshot(self) -> list[dict[str, Any]]:
        """One dict per inventory GPU for UIs; state is held > drained > pinned > free."""
        rows = []
        for gpu in self.inventory:
            holder, drained = self._held.get(gpu.uuid), gpu.uuid in self.intent.drained
            pinned_to = self._pinned_users(gpu.uuid)
            state = ("held" if holder else "drained" if drained
                     else "pinned" if pinned_to else "free")
            rows.append({**asdict(gpu), "state": state, "drained": drained,
                         "holder": asdict(holder) if holder else None, "pinned_to": pinned_to})
        return rows

    def _choose(self, user: str) -> GPU:
        pinned = self.intent.pins.get(user)
        if pinned is not None:
            return self._pinned_gpu(user, pinned)
        candidates = self.free()
        if not candidates:
            raise self._exhausted()
        choice = self.policy(candidates, MappingProxyType(self._held), user)
        if choice is None:
            raise self._error(f"the allocation policy declined ({len(candidates)} free)")
        if choice not in candidates:  # a buggy policy must not break exclusivity
            raise RuntimeError(f"GPU policy returned {choice.uuid}, not one of the candidates")
        return choice

    def _pinned_gpu(self, user: str, uuid: str) -> GPU:
        if uuid not in self._gpus:
            raise self._error(f"your pinned GPU {uuid} is not on this host")
        if uuid in self.intent.drained:
            raise self._error(f"your pinned GPU {uuid} is drained")
        holder = self._held.get(uuid)
        if holder is not None:
            who = (f"your other server {holder.server or '(default)'!r}"
                   if holder.user == user else holder.user)
            raise self._error(f"your pinned GPU {uuid} is held by {who}")
        return self._gpus[uuid]

    def _exhausted(self) -> NoGPUAvailable:
        total = len(self._gpus)
        if total == 0:
            return self._error("this host has no GPUs")
        in_use = sum(u in self._held for u in self._gpus)
        drained = sum(u in self.intent.drained and u not in self._held for u in self._gpus)
        reserved = total - in_use - drained
        for n, what in ((in_use, "in use"), (drained, "drained")):
            if n == total:
                return self._error(f"{_all(total)} {what}")
        parts = [f"{n} {what}" for n, what in ((in_use, "in use"), (drained, "drained"),
                                                (reserved, "reserved for pinned users")) if n]
        return self._error(f"no GPU is free ({', '.join(parts)})")

    def _error(self, reason: str) -> NoGPUAvailable:
        drained = sum(u in self._gpus for u in self.intent.drained)
        return NoGPUAvailable(reason, total=len(self._gpus), drained=drained, free=0)

    def _uuids_of(self, user: str, server: str) -> list[str]:
        return sorted(u for u, h in self._held.items() if (h.user, h.server) == (user, server))

    def _pinned_users(self, uuid: str) -> list[str]:
        return sorted(user for user, pinned in self.intent.pins.items() if pinned == uuid)

    def _gpu(self, uuid: str) -> GPU:
        """The inventory GPU, or a placeholder for a uuid only the engine knows about."""
        return self._gpus.get(uuid) or GPU(uuid=uuid, index=-1, name="unknown")

    def _require_known(self, uuid: str, action: str) -> None:
        if uuid not in self._gpus:
            known = ", ".join(g.uuid for g in self.inventory) or "none"
            raise ValueError(f"cannot {action}: no GPU {uuid!r} on this host (known: {known})")


_LIVE = frozenset({"created", "running", "restarting", "paused"})  # exited/dead/removing free
_CDI = "nvidia.com/gpu="


def held_from_containers(containers: Iterable[Mapping[str, Any]], label_prefix: str = "gpuhub",
                         *, inventory: Iterable[GPU] | None = None) -> dict[str, Holder]:
    """uuid -> Holder from `docker inspect`-style dicts of live (not exited/dead) containers.

    A container holds the uuids in its ``{prefix}.gpu.uuid`` label (comma-separated) AND
    those its DeviceRequests name (CDI ``nvidia.com/gpu=<uuid>`` or nvidia driver ids), so
    a container without our labels still blocks its GPU. Index names, "all" and counts
    are resolved only when `inventory` is given. If two containers claim one uuid, the
    first in `containers` is reported.
    """
    gpus = list(inventory or [])
    held: dict[str, Holder] = {}
    for c in containers:
        if not _is_live(c):
            continue
        labels = (c.get("Config") or {}).get("Labels") or c.get("Labels") or {}
        holder = _holder(c, labels, label_prefix)
        label_ids = (labels.get(f"{label_prefix}.gpu.uuid") or "").split(",")
        for uuid in _resolve([*label_ids, *_requested_ids(c)], gpus):
            held.setdefault(uuid, holder)
    return held


def _is_live(c: Mapping[str, Any]) -> bool:
    state = c.get("State") or {}
    state = {"Status": state} if isinstance(state, str) else state  # `containers()` form
    if state.get("Status"):
        return str(state["Status"]).lower() in _LIVE
    return bool(state.get("Running") or state.get("Restarting") or state.get("Paused"))


def _holder(c: Mapping[str, Any], labels: Mapping[str, str], prefix: str) -> Holder:
    name = c.get("Name") or next(iter(c.get("Names") or []), "") or c.get("Id", "")
    try:
        since = float(labels[f"{prefix}.gpu.since"])
    except (KeyError, TypeError, ValueError):
        since = None
    return Holder(labels.get(f"{prefix}.user") or name.lstrip("/"),
                  labels.get(f"{prefix}.server") or "", since)


def _requested_ids(c: Mapping[str, Any]) -> list[str]:
    """Device names from HostConfig.DeviceRequests ("all" for ``--gpus all``)."""
    ids: list[str] = []
    for req in (c.get("HostConfig") or {}).get("DeviceRequests") or []:
        driver = (req.get("Driver") or "").lower()
        names = [n for i in req.get("DeviceIDs") or [] for n in str(i).split(",")]
        if driver == "cdi":
            ids += [n.removeprefix(_CDI) for n in names if n.startswith(_CDI)]
        elif driver == "nvidia" or any("gpu" in caps for caps in req.get("Capabilities") or []):
            count = req.get("Count") or 0  # moby: -1 is "all", n is indexes 0..n-1
            ids += names or (["all"] if count < 0 else [str(i) for i in range(count)])
    return ids


def _resolve(names: Iterable[str], gpus: list[GPU]) -> list[str]:
    """UUIDs for device names: UUIDs as is; "all" and indexes through the inventory."""
    uuids: list[str] = []
    for name in (n.strip() for n in names):
        if name.startswith(("GPU-", "MIG-")):
            uuids.append(name)
        elif name == "all":
            uuids += [g.uuid for g in gpus]
        elif name.isdigit():
            uuids += [g.uuid for g in gpus if g.index == int(name)]  # MIG: parent's index
    return list(dict.fromkeys(uuids))
