"""images/singleuser/gpuhub_singleuser.py: the user server without the hub's database layer.

Each check runs in a fresh interpreter (the launcher changes sys.modules and sys.meta_path).
This environment has no jupyter_server, so these import the JupyterHub modules that
jupyterhub.singleuser imports; tests/e2e/test_stack.py checks the real server in the image."""
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = ROOT / "images/singleuser/gpuhub_singleuser.py"


# What jupyterhub.singleuser (mixins and extension) takes from the rest of JupyterHub
SINGLEUSER_IMPORTS = """
from jupyterhub.log import log_request
from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler
from jupyterhub.utils import exponential_backoff, isoformat, make_ssl_context, url_path_join
"""


def run(code: str) -> dict:
    code = code.replace("SINGLEUSER_IMPORTS", SINGLEUSER_IMPORTS)
    script = f"import runpy, sys, json\nlauncher = runpy.run_path({str(LAUNCHER)!r})\n{code}"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_user_server_imports_without_the_orm_sqlalchemy_or_alembic():
    result = run("""
lean = launcher["lean_imports"]()
SINGLEUSER_IMPORTS
import jupyterhub.scopes
loaded = [m for m in ("jupyterhub.handlers.base", "sqlalchemy.orm", "sqlalchemy.engine", "sqlalchemy.sql", "alembic")
          if m in sys.modules]
print(json.dumps({"lean": lean, "loaded": loaded, "log_request": callable(log_request),
                  "sqlalchemy_waits": "__getattr__" in vars(sys.modules["sqlalchemy"]),
                  "exc": sys.modules["sqlalchemy.exc"].SQLAlchemyError.__name__}))
""")
    assert result == {"lean": True, "loaded": [], "log_request": True, "sqlalchemy_waits": True,
                      "exc": "SQLAlchemyError"}


def test_lazy_modules_still_work_when_something_uses_them():
    # jupyterhub.orm imports alembic, which imports sqlalchemy.sql before anything asks the
    # sqlalchemy package itself for an attribute: SQLAlchemy's __init__ must run first
    result = run("""
launcher["lean_imports"]()
SINGLEUSER_IMPORTS
from jupyterhub import orm, roles
before = "alembic" in sys.modules
user_table = orm.User.__tablename__
import sqlalchemy, sqlalchemy.sql, sqlalchemy.exc
engine = sqlalchemy.create_engine("sqlite://")
with engine.connect() as db:
    one = db.execute(sqlalchemy.text("select 1")).scalar()
print(json.dumps({"before": before, "table": user_table, "roles": callable(roles.get_default_roles),
                  "after": "alembic" in sys.modules, "one": one,
                  "same_modules": sqlalchemy.sql is sys.modules["sqlalchemy.sql"]
                                  and sys.modules["jupyterhub.utils"].SQLAlchemyError is sqlalchemy.exc.SQLAlchemyError}))
""")
    assert result == {"before": False, "table": "users", "roles": True, "after": True, "one": 1, "same_modules": True}


def test_a_deferred_package_imports_whole_for_its_other_submodules_and_attributes():
    result = run("""
launcher["lean_imports"]()
from sqlalchemy.exc import SQLAlchemyError
import sqlalchemy
waiting = "__getattr__" in vars(sqlalchemy)
import sqlalchemy.orm  # a submodule that SQLAlchemy's __init__ does not import itself
from sqlalchemy.orm import declarative_base
Base = declarative_base()
class Row(Base):
    __tablename__ = "rows"
    id = sqlalchemy.Column(sqlalchemy.Integer, primary_key=True)
print(json.dumps({"waiting": waiting, "done": "__getattr__" not in vars(sqlalchemy),
                  "version": sqlalchemy.__version__ == sys.modules["sqlalchemy"].__version__,
                  "orm": sqlalchemy.orm is sys.modules["sqlalchemy.orm"], "table": Row.__table__.name}))
""")
    assert result == {"waiting": True, "done": True, "version": True, "orm": True, "table": "rows"}


def test_lazy_modules_load_on_first_attribute_use():
    result = run("""
launcher["lean_imports"]()
import importlib.util, requests
waiting = type(requests) is importlib.util._LazyModule
status = requests.codes.ok
print(json.dumps({"waiting": waiting, "status": status, "loaded": type(requests) is not importlib.util._LazyModule}))
""")
    assert result == {"waiting": True, "status": 200, "loaded": True}


def test_stand_ins_answer_as_the_hub_modules_would_in_a_user_server():
    result = run("""
launcher["lean_imports"]()
from jupyterhub.log import log_request
from tornado.web import RequestHandler
pages, metrics = sys.modules["jupyterhub.handlers.pages"], sys.modules["jupyterhub.metrics"]
print(json.dumps({"health": issubclass(RequestHandler, pages.HealthCheckHandler),
                  "metrics": metrics.prometheus_log_method(object()) is None}))
""")
    assert result == {"health": False, "metrics": True}


def test_main_collects_garbage_less_often_then_runs_the_single_user_server():
    # jupyterhub.singleuser needs jupyter_server, which this environment lacks: a stand-in main
    result = run("""
import gc, types
sys.modules["jupyterhub.singleuser"] = types.SimpleNamespace(main=lambda: json.dumps(gc.get_threshold()))
print(launcher["main"]())
""")
    assert result == [10_000, 10, 10]


def test_another_jupyterhub_version_starts_the_standard_way():
    result = run("""
import jupyterhub._version
jupyterhub._version.__version__ = "9.9.9"
lean = launcher["lean_imports"]()
print(json.dumps({"lean": lean, "stand_in": "jupyterhub.metrics" in sys.modules}))
""")
    assert result == {"lean": False, "stand_in": False}


def test_the_launcher_is_checked_against_the_pinned_jupyterhub():
    pinned = re.search(r"^jupyterhub==(\S+)", (ROOT / "images/singleuser/requirements.txt").read_text(), re.M).group(1)
    assert re.search(r'^JUPYTERHUB_VERSION = "(.+)"', LAUNCHER.read_text(), re.M).group(1) == pinned
    dockerfile = (ROOT / "images/singleuser/Dockerfile").read_text()
    assert "LABEL gpuhub.singleuser-command=gpuhub-singleuser" in dockerfile
    assert "/usr/local/bin/gpuhub-singleuser" in dockerfile
