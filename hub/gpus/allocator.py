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

from dataclasses import asdict
from types import MappingProxyType
from typing import Any, Callable, Collection, Iterable, Mapping

from hub.gpus.model import GPU, Holder, Intent, NoGPUAvailable


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
        # uuid -> why its host takes no new servers now (a Swarm node drained or down): not
        # the admin's intent but the engine's, so it is given with each reconcile, not saved
        self.unavailable: Mapping[str, str] = {}
        # uuids whose last holder is still being shut down by the engine (a Swarm task keeps
        # its GPU's unit until its container stopped): free, but offered after the others
        self.releasing: Collection[str] = frozenset()

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

    def could_allocate(self, user: str, groups: Iterable[str] = (), now: float = 0.0) -> bool:
        """Whether ``allocate`` would give this user a GPU now (records nothing)."""
        try:
            self._choose(user, frozenset(groups), now)
        except NoGPUAvailable:
            return False
        return True

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
                if g.uuid not in pinned and g.uuid not in self.intent.drained and g.uuid not in self.unavailable
                and reserved.get(g.uuid, "") in ("", *groups)
                and len(self._held.get(g.uuid, ())) < self.capacity(g.uuid)]

    def candidates(self, user: str, groups: Iterable[str] = (), now: float = 0.0) -> list[GPU]:
        """What this user may be given now, best first: GPUs reserved for one of their courses,
        then whole GPUs, then seats on shared GPUs (least used first); by index within each,
        GPUs still being released by the engine (``releasing``) after the others."""
        groups = frozenset(groups)
        reserved = self.intent.reserved_for(now)

        def preference(gpu: GPU) -> tuple:
            mine = gpu.uuid in reserved  # _open left only reservations of the user's courses
            shared = gpu.uuid in self.intent.shared
            return (not mine, shared, len(self._held.get(gpu.uuid, ())), gpu.uuid in self.releasing, _order(gpu))

        return sorted(self._open(groups, now), key=preference)

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
                         "unavailable": self.unavailable.get(gpu.uuid),
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
        if uuid in self.unavailable:
            raise self._error(f"your pinned GPU {uuid} takes no new servers: {self.unavailable[uuid]}")
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
        counts = {"in use": 0, "drained": 0, "on nodes that take no new servers": 0,
                  "reserved for pinned users": 0}
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
            elif uuid in self.unavailable:
                counts["on nodes that take no new servers"] += 1
            elif uuid in pinned:
                counts["reserved for pinned users"] += 1
            elif reserved.get(uuid, "") not in ("", *groups):
                courses[reserved[uuid]] = courses.get(reserved[uuid], 0) + 1
        for what in ("in use", "drained", "on nodes that take no new servers"):
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
