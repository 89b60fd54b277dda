"""GPU allocation: pure decisions, no Docker calls, no I/O, no lock.

Docker is the source of truth for who holds which GPU: the caller (the asyncio spawner)
turns the engine's containers into a held map (`held_from_containers`) and, under ONE
asyncio.Lock shared by all spawns and stops, runs ``reconcile(held)`` + ``allocate()``
and creates the container (labelled with the uuid) before releasing the lock; otherwise
a reconcile from an older snapshot would forget the allocation.

Pins and drains (admin intent, persisted elsewhere) never evict a holder; they steer
later allocations. A pinned GPU is *reserved* for the user(s) pinned to it, running or
not, and a pinned user gets only that GPU (no fallback); users pinned to one GPU take
turns. Identity is always the UUID; ``index`` is only for ordering and display.

Exclusive is the default: one server per GPU. An admin may mark a GPU *shared* with a
capacity K (up to K servers time-share it; memory is not isolated between them). A
*reservation* holds GPUs for a course (a JupyterHub group) during a time window: then only
the course's members may be given them, and they are offered those first. MIG instances are
inventory entries like whole GPUs (their own ``MIG-`` uuid) and are allocated the same way.
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


MAX_SHARED_CAPACITY = 64


@dataclass(frozen=True)
class Reservation:
    """GPUs held for one course (a group name) from `start` to `end` (epoch seconds)."""
    id: str
    course: str
    gpus: tuple[str, ...]
    start: float
    end: float
    note: str = ""

    def active(self, now: float) -> bool:
        return self.start <= now < self.end

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "course": self.course, "gpus": list(self.gpus),
                "start": self.start, "end": self.end, "note": self.note}

    @classmethod
    def from_json(cls, data: Any) -> Reservation:
        keys = {"id", "course", "gpus", "start", "end", "note"}
        if not isinstance(data, dict) or not {"id", "course", "gpus", "start", "end"} <= set(data) <= keys:
            raise ValueError("each intent reservation must be {\"id\", \"course\", \"gpus\", \"start\", \"end\"[, \"note\"]}")
        if not all(_is_str(data[k]) and data[k] for k in ("id", "course")) or not _is_str(data.get("note", "")):
            raise ValueError("intent reservation 'id' and 'course' must be non-empty strings")
        gpus = data["gpus"]
        if not isinstance(gpus, list) or not gpus or not all(_is_str(g) and g for g in gpus):
            raise ValueError(f"intent reservation {data['id']!r}: 'gpus' must be a non-empty list of GPU uuids")
        start, end = data["start"], data["end"]
        if not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in (start, end)) or end <= start:
            raise ValueError(f"intent reservation {data['id']!r}: 'start' and 'end' must be epoch seconds, end after start")
        return cls(data["id"], data["course"], tuple(gpus), float(start), float(end), data.get("note", ""))


@dataclass
class Intent:
    """Admin intent: pins (username -> GPU uuid), drained GPU uuids, who may use GPUs, shared
    GPUs (uuid -> how many servers may share it) and course reservations."""
    pins: dict[str, str] = field(default_factory=dict)
    drained: set[str] = field(default_factory=set)
    access: Access = field(default_factory=Access)
    shared: dict[str, int] = field(default_factory=dict)
    reservations: list[Reservation] = field(default_factory=list)

    def reserved_for(self, now: float) -> dict[str, str]:
        """uuid -> course, for the reservations active at `now`."""
        return {uuid: r.course for r in self.reservations if r.active(now) for uuid in r.gpus}

    def allows(self, user: str, groups: Iterable[str] = ()) -> bool:
        """Whether `user` (a member of `groups`) may be given a GPU at all."""
        return self.access.allows(user, groups)

    def to_json(self) -> dict[str, Any]:
        """A sorted, JSON-ready dict, so that persisting unchanged intent is a no-op diff.
        ``access`` is written only when it restricts anyone (files without it mean everyone)."""
        data: dict[str, Any] = {"pins": dict(sorted(self.pins.items())), "drained": sorted(self.drained)}
        if not self.access.everyone:
            data["access"] = self.access.to_json()
        if self.shared:
            data["shared"] = dict(sorted(self.shared.items()))
        if self.reservations:
            data["reservations"] = [r.to_json() for r in sorted(self.reservations, key=lambda r: (r.start, r.id))]
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
        shared, reservations = data.get("shared") or {}, data.get("reservations") or []
        if not isinstance(shared, dict) or not all(
                _is_str(u) and isinstance(k, int) and not isinstance(k, bool) and 2 <= k <= MAX_SHARED_CAPACITY
                for u, k in shared.items()):
            raise ValueError(f"intent 'shared' must map GPU uuids to capacities from 2 to {MAX_SHARED_CAPACITY}")
        if not isinstance(reservations, list):
            raise ValueError("intent 'reservations' must be a list")
        parsed = [Reservation.from_json(r) for r in reservations]
        if len({r.id for r in parsed}) < len(parsed):
            raise ValueError("intent 'reservations' has two with the same id")
        return cls(dict(pins), set(drained), Access.from_json(data.get("access")), dict(shared), parsed)


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
    """Default policy: the first candidate. Candidates come in the allocator's order of
    preference: GPUs reserved for the user's course, then whole free GPUs, then seats on
    shared GPUs (least used first); by index within each."""
    return candidates[0] if candidates else None


def _all(n: int) -> str:
    return "the only GPU is" if n == 1 else f"all {n} GPUs are"


def _gpus(n: int) -> str:
    return f"{n} GPU{'s' if n != 1 else ''}"


class Allocator:
    """Hands out GPUs: never a drained one, someone else's pinned one, one reserved for
    another course, a held exclusive one, or a shared one with every seat taken."""

    def __init__(self, inventory: Iterable[GPU], intent: Intent | None = None,
                 policy: Policy = first_free):
        self._gpus: dict[str, GPU] = {}
        for gpu in inventory:
            if gpu.uuid in self._gpus:
                raise ValueError(f"GPU {gpu.uuid} appears twice in the inventory")
            self._gpus[gpu.uuid] = gpu
        self.inventory: tuple[GPU, ...] = tuple(sorted(self._gpus.values(), key=_order))
        self.intent, self.policy = intent if intent is not None else Intent(), policy
        self._held: dict[str, list[Holder]] = {}  # uuid -> its holders (several if shared)

    def reconcile(self, held: Mapping[str, Holder | Iterable[Holder]]) -> None:
        """Replace the holders with the engine's (uuid -> holder, or holders of a shared GPU);
        unknown uuids are kept."""
        self._held = {u: [h] if isinstance(h, Holder) else list(h) for u, h in held.items()}
        self._held = {u: hs for u, hs in self._held.items() if hs}

    def unknown_held(self) -> dict[str, Holder]:
        """Holdings of uuids not in the inventory (a GPU gone, or a stale inventory)."""
        return {u: hs[0] for u, hs in self._held.items() if u not in self._gpus}

    def holder_of(self, uuid: str) -> Holder | None:
        """The (first) holder of `uuid`; see `holders_of` for a shared GPU."""
        holders = self._held.get(uuid)
        return holders[0] if holders else None

    def holders_of(self, uuid: str) -> list[Holder]:
        return list(self._held.get(uuid, ()))

    def capacity(self, uuid: str) -> int:
        """How many servers may hold `uuid` at once: 1, or its shared capacity."""
        return self.intent.shared.get(uuid, 1)

    def gpu_of(self, user: str, server: str = "") -> GPU | None:
        """The GPU this server holds (the lowest, should reconcile have found several)."""
        uuids = self._uuids_of(user, server)
        return self._gpu(uuids[0]) if uuids else None

    def allocate(self, user: str, server: str = "", *, since: float | None = None,
                 groups: Iterable[str] = (), now: float | None = None) -> GPU:
        """A GPU for this server, recorded as held; the same one again if it holds one.

        `groups` are the user's groups (for course reservations), `now` the time reservations
        are checked at (default: `since`, else 0: no reservation is active). A server that
        already holds a GPU keeps it even if it was drained or re-pinned since: allocation
        never moves a running server.
        """
        current = self.gpu_of(user, server)
        if current is not None:
            return current
        now = now if now is not None else (since or 0.0)
        gpu = self._choose(user, frozenset(groups), now)
        self._held.setdefault(gpu.uuid, []).append(Holder(user, server, since))
        return gpu

    def release(self, user: str, server: str = "") -> GPU | None:
        """Forget every holding of this server; returns the GPU it held (None if none)."""
        gpu = self.gpu_of(user, server)
        for uuid in self._uuids_of(user, server):
            rest = [h for h in self._held[uuid] if (h.user, h.server) != (user, server)]
            if rest:
                self._held[uuid] = rest
            else:
                del self._held[uuid]
        return gpu

    def release_uuid(self, uuid: str) -> Holder | None:
        """Forget whoever holds `uuid` (e.g. its container vanished); returns the first holder."""
        holders = self._held.pop(uuid, None)
        return holders[0] if holders else None

    def free(self, user: str = "", groups: Iterable[str] = (), now: float = 0.0) -> list[GPU]:
        """Whole GPUs a user (with these groups, at `now`) could get: not held, not drained,
        not pinned, not shared, not reserved for another course. Without a user: for anyone."""
        return [g for g in self._open(frozenset(groups), now) if g.uuid not in self.intent.shared]

    def seats(self, groups: Iterable[str] = (), now: float = 0.0) -> dict[str, int]:
        """Free seats on shared GPUs these groups could use at `now`: uuid -> seats left."""
        return {g.uuid: self.capacity(g.uuid) - len(self._held.get(g.uuid, ()))
                for g in self._open(frozenset(groups), now) if g.uuid in self.intent.shared}

    def _open(self, groups: frozenset[str], now: float) -> list[GPU]:
        """Inventory GPUs with room for one more server that these groups may be given."""
        reserved = self.intent.reserved_for(now)
        pinned = set(self.intent.pins.values())
        return [g for g in self.inventory
                if g.uuid not in pinned and g.uuid not in self.intent.drained
                and reserved.get(g.uuid, "") in ("", *groups)
                and len(self._held.get(g.uuid, ())) < self.capacity(g.uuid)]

    def candidates(self, user: str, groups: Iterable[str] = (), now: float = 0.0) -> list[GPU]:
        """What this user may be given now, best first: GPUs reserved for one of their courses,
        then whole GPUs, then seats on shared GPUs (least used first); by index within each."""
        groups = frozenset(groups)
        reserved = self.intent.reserved_for(now)

        def preference(gpu: GPU) -> tuple:
            mine = gpu.uuid in reserved  # _open left only reservations of the user's courses
            shared = gpu.uuid in self.intent.shared
            return (not mine, shared, len(self._held.get(gpu.uuid, ())), _order(gpu))

        return sorted(self._open(groups, now), key=preference)

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

    def snapshot(self, now: float = 0.0) -> list[dict[str, Any]]:
        """One dict per inventory GPU for UIs; state is held > drained > pinned > reserved > free
        ("held" for a shared GPU once any seat is taken; "holders" lists them all)."""
        rows = []
        reserved = self.intent.reserved_for(now)
        for gpu in self.inventory:
            holders, drained = self._held.get(gpu.uuid, []), gpu.uuid in self.intent.drained
            pinned_to = self._pinned_users(gpu.uuid)
            state = ("held" if holders else "drained" if drained else "pinned" if pinned_to
                     else "reserved" if gpu.uuid in reserved else "free")
            rows.append({**asdict(gpu), "state": state, "drained": drained,
                         "holder": asdict(holders[0]) if holders else None,
                         "holders": [asdict(h) for h in holders],
                         "capacity": self.capacity(gpu.uuid), "shared": gpu.uuid in self.intent.shared,
                         "reserved_for": reserved.get(gpu.uuid), "pinned_to": pinned_to})
        return rows

    def _choose(self, user: str, groups: frozenset[str], now: float) -> GPU:
        pinned = self.intent.pins.get(user)
        if pinned is not None:
            return self._pinned_gpu(user, pinned)
        candidates = self.candidates(user, groups, now)
        if not candidates:
            raise self._exhausted(groups, now)
        choice = self.policy(candidates, MappingProxyType(self._first_holders()), user)
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
        holders = self._held.get(uuid, [])
        if len(holders) >= self.capacity(uuid):
            holder = holders[0]
            who = (f"your other server {holder.server or '(default)'!r}"
                   if holder.user == user else holder.user)
            if self.capacity(uuid) > 1:
                raise self._error(f"your pinned GPU {uuid} is shared and all its {len(holders)} seats are taken")
            raise self._error(f"your pinned GPU {uuid} is held by {who}")
        return self._gpus[uuid]

    def _exhausted(self, groups: frozenset[str], now: float) -> NoGPUAvailable:
        total = len(self._gpus)
        if total == 0:
            return self._error("this host has no GPUs")
        reserved = self.intent.reserved_for(now)
        pinned = set(self.intent.pins.values())
        counts = {"in use": 0, "drained": 0, "reserved for pinned users": 0}
        courses: dict[str, int] = {}
        full_shared = []
        for uuid in self._gpus:
            holders = self._held.get(uuid, [])
            if uuid in self.intent.shared and len(holders) >= self.capacity(uuid):
                full_shared.append(uuid)
            elif holders:
                counts["in use"] += 1
            elif uuid in self.intent.drained:
                counts["drained"] += 1
            elif uuid in pinned:
                counts["reserved for pinned users"] += 1
            elif reserved.get(uuid, "") not in ("", *groups):
                courses[reserved[uuid]] = courses.get(reserved[uuid], 0) + 1
        for what in ("in use", "drained"):
            if counts[what] == total:
                return self._error(f"{_all(total)} {what}")
        parts = [f"{n} {what}" for what, n in counts.items() if n]
        parts += [f"{_gpus(n)} reserved for course {c!r} now" for c, n in sorted(courses.items())]
        parts += [f"shared GPU #{self._gpus[u].index} has all {self.capacity(u)} seats taken"
                  for u in sorted(full_shared, key=lambda u: _order(self._gpus[u]))]
        return self._error(f"no GPU is free ({', '.join(parts)})")

    def _error(self, reason: str) -> NoGPUAvailable:
        drained = sum(u in self._gpus for u in self.intent.drained)
        return NoGPUAvailable(reason, total=len(self._gpus), drained=drained, free=0)

    def _first_holders(self) -> dict[str, Holder]:
        return {u: hs[0] for u, hs in self._held.items()}

    def _uuids_of(self, user: str, server: str) -> list[str]:
        return sorted(u for u, hs in self._held.items() if any((h.user, h.server) == (user, server) for h in hs))

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
    """uuid -> the first holder (see `holders_from_containers`)."""
    held = holders_from_containers(containers, label_prefix, inventory=inventory)
    return {u: hs[0] for u, hs in held.items()}


def holders_from_containers(containers: Iterable[Mapping[str, Any]], label_prefix: str = "gpuhub",
                            *, inventory: Iterable[GPU] | None = None) -> dict[str, list[Holder]]:
    """uuid -> Holder from `docker inspect`-style dicts of live (not exited/dead) containers.

    A container holds the uuids in its ``{prefix}.gpu.uuid`` label (comma-separated) AND
    those its DeviceRequests name (CDI ``nvidia.com/gpu=<uuid>`` or nvidia driver ids), so
    a container without our labels still blocks its GPU. Index names, "all" and counts
    are resolved only when `inventory` is given. Every container that claims a uuid is listed
    (several: a shared GPU, or a double booking the console shows).
    """
    gpus = list(inventory or [])
    held: dict[str, list[Holder]] = {}
    for c in containers:
        if not _is_live(c):
            continue
        labels = (c.get("Config") or {}).get("Labels") or c.get("Labels") or {}
        holder = _holder(c, labels, label_prefix)
        label_ids = (labels.get(f"{label_prefix}.gpu.uuid") or "").split(",")
        for uuid in _resolve([*label_ids, *_requested_ids(c)], gpus):
            held.setdefault(uuid, []).append(holder)
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
