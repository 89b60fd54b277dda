"""The durable usage store: SQLite in WAL mode on the hub's state volume, beside jupyterhub.sqlite.

Why SQLite of its own rather than tables in the hub's database (docs/usage.md): the console
(one writer, every few seconds) and the hub (reads at each start, rare small writes) are two
processes in one container on one volume, which WAL serves without either blocking the other;
JupyterHub's database belongs to JupyterHub (its migrations, and a deployment may point it at
PostgreSQL), and a hub upgrade never touches this file. It is backed up with the state volume.

Tables: ``intervals`` (see hub.usage.accounting; the primary key is container id, GPU uuid and
start, so a row is written once and then only grows), ``quotas``, ``notices`` (the 90 %
warning and the 100 % stop, for the user's next page load), ``refusals`` (starts refused, by
reason) and ``meta`` (the last sync's time).
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from hub.usage.accounting import Interval

SCHEMA = """
CREATE TABLE IF NOT EXISTS intervals (
    container_id TEXT NOT NULL, gpu_uuid TEXT NOT NULL, start REAL NOT NULL, "end" REAL NOT NULL,
    open INTEGER NOT NULL, user TEXT NOT NULL, server TEXT NOT NULL, weight REAL NOT NULL,
    model TEXT NOT NULL, node TEXT NOT NULL, groups TEXT NOT NULL, courses TEXT NOT NULL,
    used_s REAL NOT NULL, sampled_s REAL NOT NULL,
    PRIMARY KEY (container_id, gpu_uuid, start));
CREATE INDEX IF NOT EXISTS intervals_open ON intervals (open) WHERE open = 1;
CREATE INDEX IF NOT EXISTS intervals_end ON intervals ("end");
CREATE INDEX IF NOT EXISTS intervals_user ON intervals (user, "end");
CREATE TABLE IF NOT EXISTS quotas (
    scope TEXT NOT NULL, name TEXT NOT NULL, hours REAL NOT NULL, window_s REAL NOT NULL,
    set_by TEXT NOT NULL, set_at REAL NOT NULL, PRIMARY KEY (scope, name));
CREATE TABLE IF NOT EXISTS notices (
    user TEXT NOT NULL, server TEXT NOT NULL, kind TEXT NOT NULL, message TEXT NOT NULL,
    time REAL NOT NULL, PRIMARY KEY (user, server, kind));
CREATE TABLE IF NOT EXISTS refusals (reason TEXT PRIMARY KEY, count INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_COLUMNS = ("container_id", "gpu_uuid", "start", "end", "open", "user", "server", "weight", "model", "node",
            "groups", "courses", "used_s", "sampled_s")


def _row(r: sqlite3.Row) -> Interval:
    return Interval(r["container_id"], r["gpu_uuid"], r["start"], r["end"], bool(r["open"]), r["user"],
                    r["server"], r["weight"], r["model"], r["node"], tuple(json.loads(r["groups"])),
                    tuple(json.loads(r["courses"])), r["used_s"], r["sampled_s"])


class UsageStore:
    """One connection per thread (sqlite3 objects stay in their thread); every write is one
    transaction, so a crash leaves the file as it was before or after it."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self._local = threading.local()
        with self._tx() as db:
            for statement in filter(str.strip, SCHEMA.split(";")):
                db.execute(statement)

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints, never corrupt
            db.execute("PRAGMA busy_timeout=10000")
            self._local.db = db
        return db

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # -- intervals ------------------------------------------------------------------------------

    def save(self, intervals: Iterable[Interval], synced_at: float | None = None) -> int:
        """Insert or grow these intervals (an end never moves back, a closed one never reopens,
        whatever is replayed), and record the sync's time; one transaction."""
        n = 0
        with self._tx() as db:
            for iv in intervals:
                db.execute(
                    f"""INSERT INTO intervals ({', '.join(f'"{c}"' for c in _COLUMNS)})
                        VALUES ({', '.join('?' * len(_COLUMNS))})
                        ON CONFLICT (container_id, gpu_uuid, start) DO UPDATE SET
                          "end" = max("end", excluded."end"), open = open AND excluded.open,
                          used_s = max(used_s, excluded.used_s), sampled_s = max(sampled_s, excluded.sampled_s)""",
                    (iv.container_id, iv.gpu_uuid, iv.start, iv.end, int(iv.open), iv.user, iv.server, iv.weight,
                     iv.model, iv.node, json.dumps(list(iv.groups)), json.dumps(list(iv.courses)), iv.used_s,
                     iv.sampled_s))
                n += 1
            if synced_at is not None:
                db.execute("INSERT INTO meta VALUES ('last_sync', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                           (repr(synced_at),))
        return n

    def last_sync(self) -> float | None:
        row = self._db().execute("SELECT value FROM meta WHERE key = 'last_sync'").fetchone()
        return float(row[0]) if row else None

    def open_intervals(self) -> list[Interval]:
        return [_row(r) for r in self._db().execute("SELECT * FROM intervals WHERE open = 1")]

    def of_containers(self, ids: Iterable[str]) -> list[Interval]:
        ids = list(dict.fromkeys(ids))
        out: list[Interval] = []
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            out += [_row(r) for r in self._db().execute(
                f"SELECT * FROM intervals WHERE container_id IN ({','.join('?' * len(chunk))})", chunk)]
        return out

    def between(self, since: float, until: float, user: str | None = None) -> list[Interval]:
        """Intervals that overlap [since, until] (of one user, if given)."""
        sql, args = 'SELECT * FROM intervals WHERE "end" >= ? AND start <= ?', [since, until]
        if user is not None:
            sql, args = sql + " AND user = ?", [*args, user]
        return [_row(r) for r in self._db().execute(sql, args)]

    def totals(self) -> tuple[list[sqlite3.Row], list[sqlite3.Row], list[sqlite3.Row]]:
        """Held (and used) GPU-seconds of all time per user, per group and per course: the
        metrics' counters, summed by SQLite."""
        db = self._db()
        users = db.execute('SELECT user, sum(("end" - start) * weight) AS held, sum(used_s) AS used '
                           "FROM intervals GROUP BY user").fetchall()
        per = []
        for column in ("groups", "courses"):
            per.append(db.execute(f'SELECT j.value AS name, sum(("end" - start) * weight) AS held '
                                  f"FROM intervals, json_each(intervals.{column}) AS j GROUP BY j.value").fetchall())
        return users, per[0], per[1]

    def held_per_user(self, since: float, until: float) -> list[sqlite3.Row]:
        """Held GPU-seconds in [since, until] per (user, groups, courses), summed in SQLite."""
        return self._db().execute(
            'SELECT user, groups, courses, sum(max(0, min("end", ?) - max(start, ?)) * weight) AS held '
            'FROM intervals WHERE "end" >= ? AND start <= ? GROUP BY user, groups, courses',
            (until, since, since, until)).fetchall()

    # -- quotas ---------------------------------------------------------------------------------

    def quotas(self) -> list[dict]:
        return [dict(r) for r in self._db().execute("SELECT * FROM quotas ORDER BY scope, name")]

    def set_quota(self, scope: str, name: str, hours: float, window_s: float, who: str) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO quotas VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (scope, name) DO UPDATE SET "
                       "hours = excluded.hours, window_s = excluded.window_s, set_by = excluded.set_by, "
                       "set_at = excluded.set_at", (scope, name, hours, window_s, who, time.time()))

    def delete_quota(self, scope: str, name: str) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM quotas WHERE scope = ? AND name = ?", (scope, name)).rowcount > 0

    # -- notices and refusals -------------------------------------------------------------------

    def notice(self, user: str, server: str, kind: str, message: str, when: float) -> bool:
        """Record a notice once (True if new)."""
        with self._tx() as db:
            return db.execute("INSERT OR IGNORE INTO notices VALUES (?, ?, ?, ?, ?)",
                              (user, server, kind, message, when)).rowcount > 0

    def notices(self, user: str) -> dict[str, dict]:
        return {r["kind"]: dict(r) for r in self._db().execute(
            "SELECT * FROM notices WHERE user = ? AND server = ''", (user,))}

    def clear_notices(self, user: str, server: str = "") -> None:
        with self._tx() as db:
            db.execute("DELETE FROM notices WHERE user = ? AND server = ?", (user, server))

    def count_refusal(self, reason: str) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO refusals VALUES (?, 1) ON CONFLICT (reason) DO UPDATE SET count = count + 1",
                       (reason,))

    def refusals(self) -> dict[str, int]:
        return {r["reason"]: r["count"] for r in self._db().execute("SELECT * FROM refusals")}
