"""The hub's SQLite database: write-ahead log, and no fsync on each commit.

JupyterHub has one synchronous database connection on its event loop, and commits after most
things it does (a spawn's state, a token, an OAuth code, activity). With SQLite's defaults
(rollback journal, synchronous=FULL) each commit waits for the disk twice; in a class of 100
arriving in a minute that was the largest single cost of the hub's event loop: 22 % of its busy
time in `do_commit` (py-spy, docs/performance.md "Where the hub's time goes").

In WAL mode with synchronous=NORMAL a commit appends to the log without waiting for the disk;
the log is synced at checkpoints. SQLite's guarantee: the database stays consistent after a
crash of the hub or of the host; a power loss or OS crash can lose the last transactions
before it (the hub's state as of a moment earlier, e.g. a token or a server's record), never
corrupt the file. The mode is stored in the file: jupyterhub.sqlite-wal and -shm appear beside
it in the state volume while the hub runs (backups archive the whole volume). At the hub's start,
before JupyterHub copies the file for a schema migration (`upgrade_db`), a log left by a hub that
was killed is folded into the file, so that copy is whole.
"""
import sqlite3
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine

PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL")
_registered: set[str] = set()


def _database_file(dbapi_connection: sqlite3.Connection) -> str:
    """The file of the connection's main database ('' for an in-memory one)."""
    for _seq, name, path in dbapi_connection.execute("PRAGMA database_list").fetchall():
        if name == "main":
            return path or ""
    return ""


def fold_log(db_file: str) -> None:
    """Checkpoint a write-ahead log left beside ``db_file`` into it; the last connection closing
    removes the log. Nothing to do without one."""
    if Path(db_file).exists() and Path(f"{db_file}-wal").exists():
        conn = sqlite3.connect(db_file)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()


def use_wal(db_file: str) -> None:
    """Every new SQLite connection of this process to ``db_file`` (JupyterHub's engine, made
    later by the hub) switches it to WAL with synchronous=NORMAL; other databases are left alone.
    A log left by an earlier hub is folded in first (fold_log)."""
    fold_log(db_file)
    target = str(Path(db_file).resolve())
    if target in _registered:
        return
    _registered.add(target)

    def on_connect(dbapi_connection, _record) -> None:
        if not isinstance(dbapi_connection, sqlite3.Connection):
            return
        path = _database_file(dbapi_connection)
        if path and str(Path(path).resolve()) == target:
            for pragma in PRAGMAS:
                dbapi_connection.execute(pragma)

    event.listen(Engine, "connect", on_connect)
