"""A hub upgraded from JupyterHub 5.5 starts on its old database: the hub's configuration has
JupyterHub upgrade the schema at start, after copying the SQLite file (docs/operations.md,
"Upgrading JupyterHub"). The 5.5 schema is made here by downgrading a new database with
JupyterHub's own migrations to 5.5's last revision."""
import os
import sqlite3
import sys

import alembic.command
import alembic.config
import pytest
from jupyterhub import orm
from jupyterhub.app import JupyterHub
from jupyterhub.dbutil import _temp_alembic_ini
from traitlets.config import Config

from hub.hub_process.config.configure import configure_hub

JUPYTERHUB_55_REVISION = "4621fec11365"  # the newest migration in JupyterHub 5.5.4


@pytest.fixture
def hub_55_database(tmp_path, monkeypatch):
    # JupyterHub runs its migrations with the `alembic` command (dbutil.upgrade), as in the image
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    url = f"sqlite:///{tmp_path}/jupyterhub.sqlite"
    db = orm.new_session_factory(url)()
    user = orm.User(name="alice")
    db.add(user)
    db.add(orm.Spawner(name="", user=user))
    db.commit()
    db.close()
    with _temp_alembic_ini(url) as ini:
        alembic.command.downgrade(alembic.config.Config(ini), JUPYTERHUB_55_REVISION)
    return tmp_path / "jupyterhub.sqlite"


def hub_app(db_file, upgrade_db):
    return JupyterHub(db_url=f"sqlite:///{db_file}", upgrade_db=upgrade_db)


def test_the_pinned_jupyterhub_refuses_a_55_database_unless_told_to_upgrade(hub_55_database):
    with pytest.raises(SystemExit, match="run `jupyterhub upgrade-db`"):
        hub_app(hub_55_database, upgrade_db=False).init_db()


def test_the_hub_upgrades_a_55_database_at_start_after_a_copy(hub_55_database, tmp_path):
    c = Config()
    token = tmp_path / "token"
    token.write_text("t")
    configure_hub(c, {}, proxy_token_file=str(token))
    assert c.JupyterHub.upgrade_db is True

    app = hub_app(hub_55_database, upgrade_db=c.JupyterHub.upgrade_db)
    app.init_db()
    assert [s.user.name for s in app.db.query(orm.Spawner)] == ["alice"]

    backups = [p for p in tmp_path.iterdir() if p.name.startswith("jupyterhub.sqlite.")]
    assert len(backups) == 1
    with sqlite3.connect(backups[0]) as old:
        assert old.execute("select version_num from alembic_version").fetchall() == [(JUPYTERHUB_55_REVISION,)]
