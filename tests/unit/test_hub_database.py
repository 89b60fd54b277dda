"""hub/hub_process/config/database.py: the hub's SQLite file in WAL with synchronous=NORMAL,
through SQLAlchemy as JupyterHub opens it; other databases of the process untouched."""
import sqlite3

from sqlalchemy import create_engine, text

from hub.hub_process.config.database import use_wal


def modes(engine) -> tuple[str, int]:
    with engine.connect() as conn:
        return (conn.execute(text("PRAGMA journal_mode")).scalar(), conn.execute(text("PRAGMA synchronous")).scalar())


def test_the_hubs_database_is_wal_with_normal_sync_and_others_are_not(tmp_path):
    hub_db, other_db = tmp_path / "jupyterhub.sqlite", tmp_path / "other.sqlite"
    use_wal(str(hub_db))
    use_wal(str(hub_db))  # registering twice adds one listener
    hub, other = create_engine(f"sqlite:///{hub_db}"), create_engine(f"sqlite:///{other_db}")
    assert modes(hub) == ("wal", 1)  # 1: NORMAL
    assert modes(other) == ("delete", 2)  # SQLite's defaults: rollback journal, FULL
    with hub.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
        conn.execute(text("INSERT INTO t VALUES (1)"))
    hub.dispose()
    # the mode is the file's: a plain connection later (a backup tool, sqlite3) sees WAL too
    plain = sqlite3.connect(hub_db)
    assert plain.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert plain.execute("SELECT x FROM t").fetchall() == [(1,)]
    plain.close()


def test_in_memory_databases_are_left_alone(tmp_path):
    use_wal(str(tmp_path / "jupyterhub.sqlite"))
    assert modes(create_engine("sqlite://")) == ("memory", 2)


def test_a_log_left_by_a_killed_hub_is_folded_into_the_file_at_start(tmp_path):
    import shutil

    from hub.hub_process.config.database import fold_log
    live = tmp_path / "live"
    live.mkdir()
    conn = sqlite3.connect(live / "jupyterhub.sqlite", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")  # everything stays in the log, as between checkpoints
    conn.execute("CREATE TABLE t (x INTEGER)")
    conn.execute("INSERT INTO t VALUES (7)")
    killed = tmp_path / "killed"  # the volume as a hub killed now leaves it
    killed.mkdir()
    for name in ("jupyterhub.sqlite", "jupyterhub.sqlite-wal"):
        shutil.copy(live / name, killed / name)
    conn.close()
    db = killed / "jupyterhub.sqlite"
    fold_log(str(db))
    assert not (killed / "jupyterhub.sqlite-wal").exists()
    # the file alone (what JupyterHub's upgrade copies) has the row
    copy = tmp_path / "copy.sqlite"
    shutil.copy(db, copy)
    assert sqlite3.connect(copy).execute("SELECT x FROM t").fetchall() == [(7,)]
    fold_log(str(tmp_path / "absent.sqlite"))  # no file, no log: nothing happens
    assert not (tmp_path / "absent.sqlite").exists()
