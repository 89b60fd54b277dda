"""The GPU model: what a GPU is, who holds one, and the admin's intent (pure data, no I/O).

A GPU is identified by its node and UUID (``GPU.node`` is "" on a single host): the same
model serves one Docker host today and several later. ``Intent`` is what admins decide (pins,
drains, who may use GPUs, shared GPUs, course reservations); its ``with_*``/``without_*``
methods return a changed copy, so a refused action never leaves a half-changed intent behind.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping

@dataclass(frozen=True)
class GPU:
    """One allocatable device: a whole GPU, or a MIG instance (then parent_uuid is set).

    ``node`` names the Docker host the device is on ("" for the one local host); with the
    UUID it identifies the device (``ref``). ``index`` only orders and labels GPUs."""
    uuid: str
    index: int
    name: str = "GPU"
    memory_total_mib: int | None = None
    parent_uuid: str | None = None
    node: str = ""

    @property
    def ref(self) -> str:
        """"node/uuid", or the UUID alone on the local host."""
        return f"{self.node}/{self.uuid}" if self.node else self.uuid


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


MAX_PRESTART = 4 * 3600.0  # seconds: a reservation's servers start at most this long before it


@dataclass(frozen=True)
class Reservation:
    """GPUs held for one course (a group name) from `start` to `end` (epoch seconds)."""
    id: str
    course: str
    gpus: tuple[str, ...]
    start: float
    end: float
    note: str = ""
    prestart: float = 0.0
    """Seconds before ``start`` that the course's servers are started (hub/gpus/prestart.py);
    the GPUs are held for the course from then on, so the pre-started servers get them."""

    def active(self, now: float) -> bool:
        return self.start <= now < self.end

    def holds(self, now: float) -> bool:
        """Whether the GPUs are held for the course at `now`: the window, and its pre-start."""
        return self.start - self.prestart <= now < self.end

    def to_json(self) -> dict[str, Any]:
        data = {"id": self.id, "course": self.course, "gpus": list(self.gpus),
                "start": self.start, "end": self.end, "note": self.note}
        if self.prestart:  # written only when set: an intent file without it reads as before
            data["prestart"] = self.prestart
        return data

    @classmethod
    def from_json(cls, data: Any) -> Reservation:
        keys = {"id", "course", "gpus", "start", "end", "note", "prestart"}
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
        prestart = data.get("prestart", 0)
        if isinstance(prestart, bool) or not isinstance(prestart, (int, float)) or not 0 <= prestart <= MAX_PRESTART:
            raise ValueError(f"intent reservation {data['id']!r}: 'prestart' must be seconds from 0 to {MAX_PRESTART}")
        return cls(data["id"], data["course"], tuple(gpus), float(start), float(end), data.get("note", ""),
                   float(prestart))


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
        return {uuid: r.course for r in self.reservations if r.holds(now) for uuid in r.gpus}

    def allows(self, user: str, groups: Iterable[str] = ()) -> bool:
        """Whether `user` (a member of `groups`) may be given a GPU at all."""
        return self.access.allows(user, groups)

    # -- changes: each returns a new Intent (the caller persists it) ---------------------------

    def with_pin(self, user: str, uuid: str) -> Intent:
        """Reserve `uuid` for `user` from their next start on (their running server keeps its GPU)."""
        if not user:
            raise ValueError("cannot pin: the username is empty")
        return replace(self, pins={**self.pins, user: uuid})

    def without_pin(self, user: str) -> Intent:
        return replace(self, pins={u: g for u, g in self.pins.items() if u != user})

    def with_drained(self, uuid: str) -> Intent:
        """Stop handing out `uuid`; its current holder (if any) keeps it."""
        return replace(self, drained=self.drained | {uuid})

    def without_drained(self, uuid: str) -> Intent:
        return replace(self, drained=self.drained - {uuid})

    def with_access(self, access: Access) -> Intent:
        return replace(self, access=access)

    def with_shared(self, uuid: str, capacity: int) -> Intent:
        if not 2 <= capacity <= MAX_SHARED_CAPACITY:
            raise ValueError(f"a shared GPU's capacity is from 2 to {MAX_SHARED_CAPACITY}, not {capacity}")
        return replace(self, shared={**self.shared, uuid: capacity})

    def without_shared(self, uuid: str) -> Intent:
        return replace(self, shared={u: k for u, k in self.shared.items() if u != uuid})

    def with_reservation(self, reservation: Reservation) -> Intent:
        if any(r.id == reservation.id for r in self.reservations):
            raise ValueError(f"a reservation {reservation.id!r} exists already")
        return replace(self, reservations=[*self.reservations, reservation])

    def without_reservations(self, ids: Iterable[str]) -> Intent:
        gone = set(ids)
        return replace(self, reservations=[r for r in self.reservations if r.id not in gone])

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

