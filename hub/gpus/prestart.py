"""Reservation pre-start: which servers to start before a course's GPU reservation, when its
window closes, and whether a pre-started server has been claimed (pure decisions, and the two
small files that record them).

A reservation with ``prestart`` seconds (hub.gpus.model.Reservation) opens its *pre-start
window* that long before its ``start`` (the GPUs are held for the course from then on) and
closes it ``grace`` seconds after ``start`` (never after its ``end``). While it is open the GPU
console starts a server for every member of the course's roster that has none, with the
course's profile, on the reservation's GPUs; only when the roster fits the reserved seats
(``who``): a roster larger than the seats gets no pre-start at all, since seats held for
people who do not come would be missing for those who do.

A pre-started server is *claimed* at its person's first request to it: the browser's first
visit to a fresh server goes through the hub's OAuth authorisation for that server (JupyterHub
deletes the server's OAuth client, and with it every token, when a server stops), and the hub
writes that moment into the claims file (hub/hub_process/patches/prestart_claim.py). Until then
the server holds no GPU seat for usage accounting and gpu-reclaim does not judge it; from then
on both count from the claim (``seat_start``). At the window's close every unclaimed one is
stopped (``to_stop``), with a reason its person reads on their next page load.

Files on the state volume, beside the admin's intent:

- ``gpu-prestart.json``, written by the GPU console only: the pre-started servers (``Record``:
  user, server, reservation, course, when the start was asked for, when it is stopped unclaimed,
  its container once known) and, per reservation, what its pre-start did.
- ``gpu-prestart-claims.json``, written by the hub only: ``{"user\\nserver": claimed at}``.

Two writers, two files: neither ever overwrites the other's change. A claim counts only for a
record asked for before it (``claimed_at``), and a record names its container (``is_record_of``),
so a stale record or claim never touches another start of the same server.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from hub.files import write_atomic
from hub.gpus.model import Reservation

FILE = "gpu-prestart.json"
CLAIMS_FILE = "gpu-prestart-claims.json"
START_TOLERANCE = 5.0  # seconds: a container started this long before its record was written is still its own
KEEP = 7 * 86400.0  # records, claims and done reservations older than this are dropped at the next write


@dataclass(frozen=True)
class Record:
    """One pre-started server."""
    user: str
    server: str
    reservation: str
    course: str
    since: float  # when its start was asked for
    until: float  # when it is stopped if nobody has claimed it (the window's close)
    container: str = ""  # the container's full id, once the console has seen it

    @property
    def key(self) -> tuple[str, str]:
        return (self.user, self.server)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Record:
        return cls(str(data["user"]), str(data.get("server", "")), str(data["reservation"]), str(data["course"]),
                   float(data["since"]), float(data["until"]), str(data.get("container") or ""))


# ---- decisions (pure) ---------------------------------------------------------------------------

def window(r: Reservation, grace: float) -> tuple[float, float]:
    """When the reservation's pre-start window opens and closes (epoch seconds)."""
    return r.start - r.prestart, min(r.end, r.start + max(0.0, grace))


def due(reservations: Iterable[Reservation], now: float, grace: float, done: Iterable[str] = ()) -> list[Reservation]:
    """The reservations whose servers are to be started now: with a pre-start, window open, not
    done already (each reservation's pre-start runs once)."""
    done = set(done)
    out = []
    for r in reservations:
        opens, closes = window(r, grace)
        if r.prestart > 0 and r.id not in done and opens <= now < closes:
            out.append(r)
    return sorted(out, key=lambda r: (r.start, r.id))


def seats(r: Reservation, shared: Mapping[str, int]) -> int:
    """How many servers the reservation's GPUs take: one per whole GPU, its capacity per shared one."""
    return sum(max(1, int(shared.get(uuid, 1))) for uuid in r.gpus)


def who(members: Iterable[str], seat_count: int, running: Iterable[str]) -> tuple[list[str], str]:
    """Whose servers to start (members without a running server, by name) and, when none is
    to be started, why ("" otherwise). The whole roster must fit the seats: which of a larger
    one would come cannot be known, and a seat held for someone absent is one that a member who
    came cannot have."""
    people = sorted(set(members))
    if not people:
        return [], "the course has no members"
    if len(people) > seat_count:
        return [], (f"the course has {len(people)} members for {seat_count} reserved seat"
                    f"{'s' if seat_count != 1 else ''}: servers are pre-started only when everyone fits")
    running = set(running)
    return [p for p in people if p not in running], ""


def claimed_at(record: Record, claims: Mapping[tuple[str, str], float]) -> float | None:
    """When the record's server was claimed, or None: a claim counts only from the record's start on."""
    when = claims.get(record.key)
    return when if when is not None and when >= record.since - START_TOLERANCE else None


def is_record_of(record: Record, container_id: str, started: float | None) -> bool:
    """Whether ``record`` is about this container (``started``: its State.StartedAt): named by
    it, or, before the console has written the id, started after the record was asked for."""
    if record.container:
        return record.container == container_id
    return started is not None and started >= record.since - START_TOLERANCE


def seat_start(record: Record | None, claims: Mapping[tuple[str, str], float], started: float | None) -> tuple[bool, float | None]:
    """(counts, start) of a container's GPU seat for accounting and idle clocks: a server not
    pre-started counts from its start (``(True, None)``: unchanged); an unclaimed pre-started one
    does not count (``(False, None)``); a claimed one counts from the claim."""
    if record is None:
        return True, None
    claim = claimed_at(record, claims)
    if claim is None:
        return False, None
    return True, max(claim, started or 0.0)


def to_stop(records: Iterable[Record], claims: Mapping[tuple[str, str], float], now: float) -> list[Record]:
    """The pre-started servers whose window has closed with nobody having claimed them."""
    return sorted((r for r in records if now >= r.until and claimed_at(r, claims) is None),
                  key=lambda r: r.key)


def stop_message(course: str, title: str = "") -> str:
    """What the person reads on their next page load."""
    name = f"{title} ({course})" if title else course
    return (f"Your server was started for you before the lab session of {name} and was stopped because it was "
            "not used by the end of the session's first minutes. Start it again whenever you need it.")


def counts(records: Iterable[Record], claims: Mapping[tuple[str, str], float]) -> dict[str, dict[str, int]]:
    """Per reservation id: pre-started servers still recorded, and how many of them are claimed."""
    out: dict[str, dict[str, int]] = {}
    for r in records:
        c = out.setdefault(r.reservation, {"prestarted": 0, "claimed": 0})
        c["prestarted"] += 1
        c["claimed"] += claimed_at(r, claims) is not None
    return out


# ---- the files --------------------------------------------------------------------------------

def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class PrestartFile:
    """``gpu-prestart.json``: the console's records; each change is one atomic rewrite."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def all(self) -> dict[tuple[str, str], Record]:
        out = {}
        for value in (_read(self.path).get("servers") or {}).values():
            try:
                record = Record.from_json(value)
            except (KeyError, TypeError, ValueError, AttributeError):
                continue  # one bad record changes nothing for the others
            out[record.key] = record
        return out

    def done(self) -> dict[str, dict]:
        """Reservation id -> what its pre-start did ({"at", "started", "reason"})."""
        value = _read(self.path).get("reservations")
        return {str(k): v for k, v in value.items() if isinstance(v, dict)} if isinstance(value, dict) else {}

    def put(self, *records: Record) -> None:
        servers = self.all()
        for record in records:
            servers[record.key] = record
        self._write(servers, self.done())

    def pop(self, key: tuple[str, str]) -> Record | None:
        servers = self.all()
        gone = servers.pop(key, None)
        if gone is not None:
            self._write(servers, self.done())
        return gone

    def mark(self, reservation: str, info: dict) -> None:
        done = self.done()
        done[reservation] = info
        self._write(self.all(), done)

    def _write(self, servers: dict[tuple[str, str], Record], done: dict[str, dict]) -> None:
        newest = max([r.since for r in servers.values()] + [float(d.get("at") or 0) for d in done.values()] + [0.0])
        data = {"servers": {"\n".join(k): r.to_json() for k, r in servers.items() if newest - r.since < KEEP},
                "reservations": {k: d for k, d in done.items() if newest - float(d.get("at") or 0) < KEEP}}
        write_atomic(self.path, json.dumps(data, indent=1, sort_keys=True))


def read_claims(path: str | Path) -> dict[tuple[str, str], float]:
    """``gpu-prestart-claims.json``: (user, server) -> when its person first came."""
    out = {}
    for key, when in _read(Path(path)).items():
        user, _, server = str(key).partition("\n")
        try:
            out[(user, server)] = float(when)
        except (TypeError, ValueError):
            continue
    return out


def write_claim(path: str | Path, key: tuple[str, str], when: float) -> None:
    """Record a claim (the hub's only write; older claims go after KEEP)."""
    claims = {k: t for k, t in read_claims(path).items() if when - t < KEEP}
    claims[key] = when
    write_atomic(Path(path), json.dumps({"\n".join(k): t for k, t in claims.items()}, indent=1, sort_keys=True))


def wants_claim(records: Mapping[tuple[str, str], Record], claims: Mapping[tuple[str, str], float],
                key: tuple[str, str]) -> bool:
    """Whether a request to this server claims it: it is pre-started and not claimed yet."""
    record = records.get(key)
    return record is not None and claimed_at(record, claims) is None
