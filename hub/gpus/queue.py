"""The line of starts waiting for a GPU when all are taken (GPU_WHEN_FULL=queue).

One ``GPUQueue`` per hub process; every decision is still made under the GPU manager's lock
from the engine's live containers. The line only orders who may take a GPU that frees: a start
may take one when the allocator could give it one and nobody earlier in the line could
(``blocked``: a later arrival never overtakes a waiter that the free GPU suits; a waiter that
it does not suit, e.g. a GPU reserved for another course, does not hold anyone up). A waiter
stays in the line until its container exists (``done``), so nobody slips in between.

Waiters are woken (``wake``) whenever a server stops, and re-check every few seconds anyway
(a GPU undrained, a container removed behind the hub's back). The line is written to a JSON
file on the state volume at every change: the GPU console shows it, and after a hub restart
(which ends every pending start) each waiter is told why on their next page load and, joining
again within ``rejoin_window`` seconds, gets their old place.

A parked server whose GPU is held waits in the same line to resume (``join(..., gpu=uuid)``):
it can take only that GPU, so it holds up those behind it only while that GPU is free.

Admins move waiters from the GPU console, another process: it appends a move to
``gpu-queue-moves.json`` beside the line (``request_move``) and the hub applies it at the next
look of any waiter (``apply_moves``, within a few seconds), recording the outcome by id in the
line's file for the console to read back. The line is ordered by ``rank`` (the time a waiter
joined, unless an admin moved it), so a later arrival still goes to the end.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from hub.files import write_atomic

Key = tuple[str, str]  # (user, server)


@dataclass
class Waiter:
    user: str
    server: str
    groups: frozenset[str]
    since: float
    event: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    passed: bool = False  # may take a GPU; starting (its container does not exist yet)
    rank: float = -1.0  # the line's order: ``since`` unless an admin moved it
    woken_at: float = 0.0  # time.monotonic() of the last wake (the waiter reads the engine only if nobody has since)
    waited: bool = False  # was told a place: a start let through at its first look is no hand-over
    gpu: str = ""  # a parked server waiting to resume: the one GPU it can take (hub/hub_process/parking.py)

    def __post_init__(self) -> None:
        if self.rank < 0:
            self.rank = self.since

    @property
    def key(self) -> Key:
        return (self.user, self.server)


class GPUQueue:
    def __init__(self, path: str | Path | None = None, clock: Callable[[], float] = time.time,
                 rejoin_window: float = 900.0):
        self.path = Path(path) if path else None
        self.clock, self.rejoin_window = clock, rejoin_window
        self.waiters: list[Waiter] = []
        self.handovers: deque[float] = deque(maxlen=20)  # when waiters got their GPU
        self.previous: dict[Key, tuple[float, int, float]] = {}  # left by the last hub process: since, position, rank
        self.previous_resumes: dict[Key, str] = {}  # of those, parked servers that waited to resume: their GPU
        self.recovered_at = 0.0
        self.started = clock()  # moves requested before this process are not its own
        self.moves: dict[str, str] = {}  # move id -> outcome ("moved", "not in line", "starting")
        self._moves_seen: float | None = None  # the moves file's mtime last read

    # -- the line ---------------------------------------------------------------------------

    def find(self, user: str, server: str) -> Waiter | None:
        return next((w for w in self.waiters if w.key == (user, server)), None)

    def join(self, user: str, server: str, groups: frozenset[str] = frozenset(), gpu: str = "") -> Waiter:
        """Into the line (at its end, or at the old place of a waiter of the last hub process);
        ``gpu``: a parked server waiting for the GPU it was parked on, to resume there."""
        found = self.find(user, server)
        if found:
            return found
        now = self.clock()
        old = self.previous.pop((user, server), None)
        back = old and now - self.recovered_at <= self.rejoin_window
        waiter = Waiter(user, server, frozenset(groups), old[0] if back else now, rank=old[2] if back else now,
                        gpu=gpu)
        self.waiters.append(waiter)
        self.waiters.sort(key=lambda w: w.rank)
        self.save()
        return waiter

    def leave(self, waiter: Waiter) -> None:
        if waiter in self.waiters:
            self.waiters.remove(waiter)
            self.save()
        self.wake()

    def done(self, waiter: Waiter) -> None:
        """The waiter's container exists now, with its GPU: out of the line. Only a start that
        waited is a hand-over (the estimate's pace is how fast GPUs free up, not how fast a
        burst on free GPUs started)."""
        if waiter.waited:
            self.handovers.append(self.clock())
        self.leave(waiter)

    def position(self, waiter: Waiter) -> int:
        """1 for the first in line; 0 if not in it."""
        return self.waiters.index(waiter) + 1 if waiter in self.waiters else 0

    def blocked(self, user: str, server: str, may_take: Callable[[str, frozenset[str]], bool],
                free: int | None = None, gpu_free: Callable[[str], bool] | None = None) -> bool:
        """Whether someone earlier in the line (everyone, for a start not in it) could take a
        GPU free now, or the earlier starts already let through (``passed``, their containers
        not created yet) will take all ``free`` GPUs this start could have: then it must wait,
        however free a GPU looks to it. A parked server waiting to resume (``Waiter.gpu``) could
        take only its own GPU (``gpu_free(uuid)``; without it, any GPU free to its user)."""
        claimed = 0
        for w in self.waiters:
            if w.key == (user, server):
                break
            if w.passed:
                claimed += 1
            elif w.gpu and gpu_free is not None:
                if gpu_free(w.gpu):
                    return True
            elif may_take(w.user, w.groups):
                return True
        # Nobody let through: the allocator itself says why nothing is free (a reservation, all in use).
        return free is not None and claimed > 0 and claimed >= free

    def must_wait(self, alloc, user: str, server: str, groups, now: float) -> bool:
        """``blocked`` with the allocator's answers (hub/gpus/allocator.py): whether this start
        must wait in line although the allocator might give it a GPU now."""
        return self.blocked(user, server, lambda name, their_groups: alloc.could_allocate(name, their_groups, now),
                            free_gpus(alloc, user, groups, now), lambda uuid: gpu_is_free(alloc, uuid))

    def may_resume(self, alloc, waiter: Waiter) -> bool:
        """Whether a parked server waiting in line (``waiter.gpu``) may resume now: its GPU is
        free, and nobody earlier in the line could take it (or has been let through to)."""
        return gpu_is_free(alloc, waiter.gpu) and not self.blocked(
            waiter.user, waiter.server, lambda name, their_groups: alloc.could_allocate(name, their_groups, time.time()),
            1, lambda uuid: gpu_is_free(alloc, uuid))

    def move(self, user: str, server: str, position: int) -> str:
        """Put a waiter at ``position`` (1: first; past the end: last); the outcome in words."""
        waiter = self.find(user, server)
        if waiter is None:
            return "not in line"
        if waiter.passed:
            return "starting"
        others = [w for w in self.waiters if w is not waiter]
        at = min(max(position, 1), len(others) + 1) - 1
        before = others[at - 1].rank if at > 0 else None
        after = others[at].rank if at < len(others) else None
        if before is None and after is None:
            rank = waiter.rank
        elif before is None:
            rank = after - 1.0
        elif after is None:
            rank = before + 1e-3  # still before anyone joining from now on
        else:
            rank = (before + after) / 2
        waiter.rank = rank
        self.waiters = [*others[:at], waiter, *others[at:]]
        return "moved"

    def apply_moves(self) -> bool:
        """Apply the moves the console asked for since the last look (once each); True if any
        was. Cheap when nothing changed: one stat."""
        path = moves_file(self.path) if self.path else None
        try:
            mtime = path.stat().st_mtime if path else None
        except OSError:
            mtime = None
        if mtime is None or mtime == self._moves_seen:
            return False
        self._moves_seen = mtime
        applied = False
        for m in read_moves(path):
            if m["id"] in self.moves or m["at"] < self.started:
                continue
            self.moves[m["id"]] = self.move(m["user"], m["server"], m["position"])
            applied = True
        if applied:
            while len(self.moves) > 100:
                self.moves.pop(next(iter(self.moves)))
            self.save()
            self.wake()  # everyone behind or before the moved waiter: a new place to show
        return applied

    def wake(self) -> None:
        """A GPU may have become free: every waiter checks again."""
        now = time.monotonic()
        for w in self.waiters:
            w.woken_at = now
            w.event.set()

    def estimate(self, position: int) -> float | None:
        """Seconds until this position gets a GPU, from the pace of the last hand-overs (None
        before two)."""
        if len(self.handovers) < 2 or position < 1:
            return None
        pace = (self.handovers[-1] - self.handovers[0]) / (len(self.handovers) - 1)
        return pace * position

    # -- the file on the state volume ---------------------------------------------------------

    def to_json(self) -> list[dict]:
        return [{"user": w.user, "server": w.server, "since": w.since, "position": i + 1, "starting": w.passed,
                 "rank": w.rank, **({"resume_gpu": w.gpu} if w.gpu else {})} for i, w in enumerate(self.waiters)]

    def save(self) -> None:
        if self.path is None:
            return
        write_atomic(self.path, json.dumps({"time": self.clock(), "waiting": self.to_json(), "moves": self.moves}, indent=1))

    def recover(self) -> list[dict]:
        """The line a previous hub process left (its starts ended with it); remembered so that
        those waiters get their old place back if they join again soon. Returns them."""
        if self.path is None:
            return []
        try:
            left = json.loads(self.path.read_text()).get("waiting") or []
        except (OSError, ValueError, AttributeError):
            return []
        now = self.recovered_at = self.clock()
        recovered = [e for e in left if isinstance(e, dict) and now - float(e.get("since", 0)) < 7 * 86400]
        self.previous = {(e["user"], e.get("server", "")): (float(e["since"]), int(e.get("position", 0)),
                                                             float(e.get("rank", e["since"])))
                         for e in recovered}
        self.previous_resumes = {(e["user"], e.get("server", "")): str(e["resume_gpu"])
                                 for e in recovered if e.get("resume_gpu")}
        self.save()  # the line is empty now
        return recovered


def read_line(path: str | Path) -> list[dict]:
    """The line as the hub last wrote it (for the GPU console)."""
    try:
        return json.loads(Path(path).read_text()).get("waiting") or []
    except (OSError, ValueError, AttributeError):
        return []


def moves_file(line_path: str | Path) -> Path:
    """Where the console asks the hub to move waiters: beside the line's file."""
    return Path(line_path).with_name("gpu-queue-moves.json")


def read_moves(path: str | Path) -> list[dict]:
    """The moves asked for, well-formed ones only (the file is the console's)."""
    try:
        moves = json.loads(Path(path).read_text()).get("moves") or []
    except (OSError, ValueError, AttributeError):
        return []
    return [m for m in moves if isinstance(m, dict) and isinstance(m.get("id"), str)
            and isinstance(m.get("user"), str) and isinstance(m.get("server"), str)
            and isinstance(m.get("position"), int) and isinstance(m.get("at"), (int, float))]


def request_move(line_path: str | Path, user: str, server: str, position: int, now: float,
                 keep: float = 3600.0) -> str:
    """(The console) ask the hub to move a waiter; returns the move's id, whose outcome the
    hub writes into the line's file (``move_outcome``). Moves older than ``keep`` are dropped."""
    path = moves_file(line_path)
    move_id = uuid.uuid4().hex[:12]
    moves = [m for m in read_moves(path) if now - m["at"] < keep][-99:]
    moves.append({"id": move_id, "user": user, "server": server, "position": position, "at": now})
    write_atomic(path, json.dumps({"moves": moves}, indent=1))
    return move_id


def withdraw_move(line_path: str | Path, move_id: str) -> None:
    """(The console) take back a move the hub has not applied."""
    path = moves_file(line_path)
    moves = [m for m in read_moves(path) if m["id"] != move_id]
    write_atomic(path, json.dumps({"moves": moves}, indent=1))


def move_outcome(line_path: str | Path, move_id: str) -> str | None:
    """What the hub did with a move: "moved", "not in line", "starting"; None: not yet."""
    try:
        return (json.loads(Path(line_path).read_text()).get("moves") or {}).get(move_id)
    except (OSError, ValueError, AttributeError):
        return None


def gpu_is_free(alloc, uuid: str) -> bool:
    """Whether this GPU has room for one more server now (a parked server's resume: the admin's
    drains and pins steer new starts, never a server that was running on it)."""
    return any(g.uuid == uuid for g in alloc.inventory) and len(alloc.holders_of(uuid)) < alloc.capacity(uuid)


def free_gpus(alloc, user: str = "", groups=(), now: float | None = None) -> int:
    """How many GPUs (or shared seats' GPUs) this user could be given now; at least 1 if a pin
    gives them one."""
    now = time.time() if now is None else now
    return max(len(alloc.candidates(user, groups, now)), int(alloc.could_allocate(user, groups, now)))
