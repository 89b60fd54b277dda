"""GPU-seconds from the engine's truth (pure: no I/O).

A *seat* is one GPU, MIG instance or shared-GPU seat held by one container, with its weight:
1 for a whole GPU, 1/capacity for a seat of a shared GPU, a MIG instance's fraction of its GPU
(``mig_fraction``). An *interval* is a seat's time in the store: keyed by container id, GPU
uuid and start (the engine's ``State.StartedAt``; the ``start`` event's time for a container
only the events saw), it only ever grows: ``advance`` moves the end of a live seat's interval to
now, closes the interval of a seat that is no longer live at its container's ``die`` time (or,
without one, where it was last seen live), and never reopens a closed interval. Replaying a
sync, an event seen twice, or a container seen both live and in the events therefore changes
nothing: GPU-seconds are never counted twice.

Held GPU-seconds = (end - start) x weight. Used GPU-seconds add, over each stretch between two
syncs, the stretch x weight x the GPU's utilisation (when the sampler had a reading), and
``sampled_s`` says how much of the interval had readings.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Mapping, Protocol

from hub.gpus.claim import Labels, holders_from_containers
from hub.gpus.model import GPU
from hub.gpus.swarm import assigned_uuids, task_is_live

START_TOLERANCE = 5.0  # seconds: an event's start time and StartedAt of the same run differ by less
BUCKETS = ("day", "week", "month")
GROUPINGS = ("user", "group", "course", "gpu", "node")
SHARE_ENV = "GPUHUB_GPU_SHARED_BY"


class UtilisationSource(Protocol):
    """What the accounting needs of a GPU activity sampler (hub.gpus.activity.ActivitySampler)."""

    def now(self, uuid: str) -> Any:
        """The latest reading of this device (with ``utilization_pct``, None when unknown), or
        None when there is no recent one."""


@dataclass(frozen=True)
class Seat:
    container_id: str
    gpu_uuid: str
    user: str
    server: str
    start: float
    weight: float = 1.0
    model: str = ""
    node: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.container_id, self.gpu_uuid)


@dataclass(frozen=True)
class Interval:
    container_id: str
    gpu_uuid: str
    start: float
    end: float
    open: bool = True
    user: str = ""
    server: str = ""
    weight: float = 1.0
    model: str = ""
    node: str = ""
    groups: tuple[str, ...] = ()
    courses: tuple[str, ...] = ()
    used_s: float = 0.0  # utilisation-weighted seconds (weight applied)
    sampled_s: float = 0.0  # seconds of the interval that had a utilisation reading

    @property
    def key(self) -> tuple[str, str, float]:
        return (self.container_id, self.gpu_uuid, self.start)

    @property
    def held_s(self) -> float:
        return max(0.0, self.end - self.start) * self.weight

    def held_between(self, since: float, until: float) -> float:
        return max(0.0, min(self.end, until) - max(self.start, since)) * self.weight

    def used_between(self, since: float, until: float) -> float:
        """Used seconds in [since, until], spread evenly over the interval."""
        length = self.end - self.start
        if length <= 0:
            return 0.0
        return self.used_s * max(0.0, min(self.end, until) - max(self.start, since)) / length


# ---- from the engine ---------------------------------------------------------------------------

def docker_time(value: Any) -> float | None:
    """Epoch seconds of the engine's RFC 3339 time (nanoseconds allowed); None for its zero time."""
    if not value or not isinstance(value, str) or value.startswith("0001-"):
        return None
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", value.strip())
    if not m:
        return None
    base = datetime.fromisoformat(m.group(1) + (m.group(3).replace("Z", "+00:00")))
    return base.timestamp() + float(m.group(2) or 0)


def mig_fraction(gpu: GPU, inventory: Iterable[GPU]) -> float:
    """A MIG instance's share of its GPU: its compute slices of the GPU's (``3g.40gb`` is 3 of 7;
    an A30 has 4), else its memory's share of the parent's memory; 1 for a whole GPU."""
    if not gpu.parent_uuid:
        return 1.0
    parent = next((g for g in inventory if g.uuid == gpu.parent_uuid), None)
    m = re.search(r"(\d+)g\.\d+gb", gpu.name)
    if m:
        slices = 4 if parent is not None and "A30" in parent.name else 7
        return min(1.0, int(m.group(1)) / slices)
    if parent is not None and gpu.memory_total_mib and parent.memory_total_mib:
        return min(1.0, gpu.memory_total_mib / parent.memory_total_mib)
    return 1.0


def _share_weight(labels: Mapping[str, str], env: Iterable[str], keys: Labels) -> float:
    raw = labels.get(f"{keys.prefix}.gpu.shared_by")
    if raw is None:
        raw = next((e.split("=", 1)[1] for e in env if e.startswith(f"{SHARE_ENV}=")), "1")
    try:
        n = int(raw)
    except ValueError:
        n = 1
    return 1.0 / n if n > 1 else 1.0


def seats_of_container(d: Mapping[str, Any], inventory: Iterable[GPU], label_prefix: str = "gpuhub",
                       node: str = "", start: float | None = None) -> list[Seat]:
    """The seats a live container (``docker inspect``) holds: every GPU its label or device
    requests name (hub.gpus.claim decodes both), from ``start`` if given, else its
    ``State.StartedAt`` (else its ``gpu.since`` label)."""
    gpus = {g.uuid: g for g in inventory}
    keys = Labels(label_prefix)
    labels = (d.get("Config") or {}).get("Labels") or {}
    env = (d.get("Config") or {}).get("Env") or []
    if start is None:
        start = docker_time((d.get("State") or {}).get("StartedAt"))
    if start is None:
        try:
            start = float(labels[keys.gpu_since])
        except (KeyError, ValueError):
            return []
    seats = []
    for uuid, holders in holders_from_containers([d], label_prefix, inventory=gpus.values()).items():
        gpu = gpus.get(uuid)
        weight = _share_weight(labels, env, keys) * (mig_fraction(gpu, gpus.values()) if gpu else 1.0)
        seats.append(Seat(d["Id"], uuid, holders[0].user, holders[0].server, start, weight,
                          gpu.name if gpu else "", gpu.node if gpu else node))
    return seats


def seats_of_tasks(tasks: Iterable[Mapping[str, Any]], services: Iterable[Mapping[str, Any]],
                   nodes: Iterable[Any], inventory: Iterable[GPU], label_prefix: str = "gpuhub") -> list[Seat]:
    """On a swarm (hub.gpus.swarm): the seats of the tasks that run, each task a run (its ID in
    place of a container's), from when it started running (its status time), on the GPUs
    Swarm assigned it. Its end is when a sync last saw it live: Swarm's events are not at hand."""
    gpus = {g.uuid: g for g in inventory}
    by_node = {n.id: n for n in nodes}
    specs = {s.get("ID"): s.get("Spec") or {} for s in services}
    keys = Labels(label_prefix)
    seats = []
    for task in tasks:
        status = task.get("Status") or {}
        if str(status.get("State") or "").lower() != "running" or not task_is_live(task, by_node):
            continue
        labels = specs.get(task.get("ServiceID"), {}).get("Labels") or {}
        start = docker_time(status.get("Timestamp"))
        if start is None:
            continue
        user = labels.get(keys.user) or specs.get(task.get("ServiceID"), {}).get("Name") or ""
        for uuid in assigned_uuids(task):
            gpu = gpus.get(uuid)
            weight = mig_fraction(gpu, gpus.values()) if gpu else 1.0
            seats.append(Seat(str(task.get("ID")), uuid, user, labels.get(keys.server) or "", start, weight,
                              gpu.name if gpu else "", gpu.node if gpu else ""))
    return seats


def seats_of_event(event: Mapping[str, Any], inventory: Iterable[GPU], label_prefix: str = "gpuhub") -> list[Seat]:
    """The seats a container's ``start`` event names (its labels are the event's attributes)."""
    attrs = (event.get("Actor") or {}).get("Attributes") or {}
    cid = (event.get("Actor") or {}).get("ID") or event.get("id")
    if not cid:
        return []
    when = event_time(event)
    fake = {"Id": cid, "Name": attrs.get("name", ""), "State": {"Status": "running"},
            "Config": {"Labels": attrs, "Env": []}}
    return seats_of_container(fake, inventory, label_prefix, start=when)


def event_time(event: Mapping[str, Any]) -> float:
    if event.get("timeNano"):
        return int(event["timeNano"]) / 1e9
    return float(event.get("time") or 0)


# ---- the one way intervals change ------------------------------------------------------------

def advance(known: Iterable[Interval], live: Iterable[Seat], now: float, *,
            started: Iterable[Seat] = (), ended: Mapping[str, float] | None = None,
            util: UtilisationSource | None = None) -> tuple[list[Interval], list[Interval]]:
    """One sync: (changed intervals, of which the new ones).

    ``known``: the store's open intervals and any other interval of the containers in
    ``started``; ``live``: the seats of the engine's live containers now; ``started``: seats from
    ``start`` events since the last sync (a container may have started and died in between);
    ``ended``: container id -> its ``die`` time, from the events. Changes only move ends later,
    close open intervals and add intervals for runs not in ``known``."""
    ended = dict(ended or {})
    by_run: dict[tuple[str, str], list[Interval]] = {}
    for iv in known:
        by_run.setdefault((iv.container_id, iv.gpu_uuid), []).append(iv)
    changed: dict[tuple, Interval] = {}
    created: list[Interval] = []

    def find(seat: Seat) -> Interval | None:
        runs = [changed.get(iv.key, iv) for iv in by_run.get(seat.key, [])]
        return next((iv for iv in runs if abs(iv.start - seat.start) <= START_TOLERANCE), None)

    def new(seat: Seat) -> Interval:
        iv = Interval(seat.container_id, seat.gpu_uuid, seat.start, seat.start, True, seat.user, seat.server,
                      seat.weight, seat.model, seat.node)
        by_run.setdefault(seat.key, []).append(iv)
        created.append(iv)
        return iv

    live_keys = set()
    for seat in live:
        iv = find(seat) or new(seat)
        live_keys.add(iv.key)
        if iv.open:
            changed[iv.key] = _extend(iv, max(iv.start, now), util)
    for seat in started:  # a run the events saw start: close it if it is over
        iv = find(seat)
        if iv is None and seat.container_id in ended and ended[seat.container_id] >= seat.start:
            iv = new(seat)
        if iv is not None and iv.key not in live_keys and iv.key not in changed:
            changed[iv.key] = iv  # closed below (or unchanged if it was closed already)
    for runs in by_run.values():
        for iv in runs:
            iv = changed.get(iv.key, iv)
            if iv.key in live_keys:
                continue
            died = ended.get(iv.container_id)
            if not iv.open:
                # Closed where it was last seen live because its die event was not at hand then
                # (the container stopped just as a sync listed the engine, or the console went
                # down before the sync its die brought): the die event read now gives the true
                # end, unless that die belongs to a later run of the same container.
                later = [r.start for r in runs if r.start > iv.start + START_TOLERANCE]
                if died is not None and died > iv.end and not (later and died >= min(later)):
                    changed[iv.key] = _extend(iv, min(died, now), None)
                continue
            end = iv.end if died is None or died < iv.start else min(max(iv.end, died), now)
            changed[iv.key] = replace(_extend(iv, end, None), open=False)
    out = [iv for key, iv in changed.items() if iv != _original(by_run, key) or iv in created]
    new_keys = {iv.key for iv in created}
    return out, [iv for iv in out if iv.key in new_keys]


def _original(by_run: dict, key: tuple) -> Interval | None:
    return next((iv for iv in by_run.get(key[:2], []) if iv.key == key), None)


def _extend(iv: Interval, end: float, util: UtilisationSource | None) -> Interval:
    if end <= iv.end:
        return iv
    stretch = end - iv.end
    used, sampled = iv.used_s, iv.sampled_s
    reading = util.now(iv.gpu_uuid) if util is not None else None
    pct = getattr(reading, "utilization_pct", None) if reading is not None else None
    if pct is not None:
        used += stretch * iv.weight * min(100.0, max(0.0, float(pct))) / 100.0
        sampled += stretch
    return replace(iv, end=end, used_s=used, sampled_s=sampled)


# ---- reports -------------------------------------------------------------------------------

def bucket_start(t: float, bucket: str) -> float:
    """The start (UTC) of the day, ISO week (Monday) or month that ``t`` is in."""
    d = datetime.fromtimestamp(t, timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    if bucket == "week":
        d -= timedelta(days=d.weekday())
    elif bucket == "month":
        d = d.replace(day=1)
    return d.timestamp()


def next_bucket(t: float, bucket: str) -> float:
    d = datetime.fromtimestamp(bucket_start(t, bucket), timezone.utc)
    if bucket == "day":
        d += timedelta(days=1)
    elif bucket == "week":
        d += timedelta(days=7)
    else:
        d = (d.replace(day=28) + timedelta(days=4)).replace(day=1)
    return d.timestamp()


def _names(iv: Interval, by: str) -> tuple[str, ...]:
    if by == "user":
        return (iv.user,)
    if by == "group":
        return iv.groups or ("(no group)",)
    if by == "course":
        return iv.courses or ("(no course)",)
    if by == "gpu":
        return (iv.model or iv.gpu_uuid,)
    return (iv.node or "(this host)",)


def report(intervals: Iterable[Interval], since: float, until: float, by: str = "user",
           bucket: str | None = None) -> list[dict[str, Any]]:
    """GPU-hours held and used in [since, until] per ``by`` (and per day/week/month bucket).

    A user in two groups counts for each group; totals over groups may exceed the total."""
    if by not in GROUPINGS:
        raise ValueError(f"by={by!r}: use one of {', '.join(GROUPINGS)}")
    if bucket is not None and bucket not in BUCKETS:
        raise ValueError(f"bucket={bucket!r}: use one of {', '.join(BUCKETS)}")
    sums: dict[tuple[str, float], list[float]] = {}
    for iv in intervals:
        lo, hi = max(iv.start, since), min(iv.end, until)
        if hi <= lo and not (iv.open and iv.start <= until and iv.end >= since):
            continue
        edges = [lo]
        if bucket:
            while (nxt := next_bucket(edges[-1], bucket)) < hi:
                edges.append(nxt)
        edges.append(hi)
        for a, b in zip(edges, edges[1:]):
            when = bucket_start(a, bucket) if bucket else since
            for name in _names(iv, by):
                s = sums.setdefault((name, when), [0.0, 0.0, 0.0, set()])
                s[0] += iv.held_between(a, b)
                s[1] += iv.used_between(a, b)
                s[2] += max(0.0, b - a) * (iv.sampled_s / (iv.end - iv.start) if iv.end > iv.start else 0)
                s[3].add(iv.container_id)
    rows = [{by: name, "start": when, "gpu_hours": round(s[0] / 3600, 6),
             "used_gpu_hours": round(s[1] / 3600, 6) if s[2] > 0 else None,
             "sampled_hours": round(s[2] / 3600, 6), "servers": len(s[3])}
            for (name, when), s in sums.items()]
    return sorted(rows, key=lambda r: (r["start"], -r["gpu_hours"], r[by]))


def held_in_window(intervals: Iterable[Interval], start: float, end: float) -> float:
    """Held GPU-seconds in [start, end] (a quota's rolling window)."""
    return math.fsum(iv.held_between(start, end) for iv in intervals)
