"""images/singleuser/gpuhub_singleuser.py: the user server without the hub's database layer.

Each check runs in a fresh interpreter (the launcher changes sys.modules and sys.meta_path).
This environment has no jupyter_server, so these import the JupyterHub modules that
jupyterhub.singleuser imports; tests/e2e/test_stack.py checks the real server in the image."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

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


# What a server extension may import from JupyterHub: (statement, expression to compare)
EXTENSION_IMPORTS = [
    ("import jupyterhub.handlers", "len(jupyterhub.handlers.default_handlers)"),
    ("from jupyterhub.metrics import TOTAL_USERS", "TOTAL_USERS"),
    ("from jupyterhub.handlers import BaseHandler", "BaseHandler"),
    ("from jupyterhub.handlers.base import BaseHandler", "BaseHandler.__mro__"),
    ("from jupyterhub.handlers.pages import default_handlers", "len(default_handlers)"),
    ("import jupyterhub.handlers.pages", "len(jupyterhub.handlers.pages.default_handlers)"),
    ("import jupyterhub.metrics", "(jupyterhub.metrics.RUNNING_SERVERS, jupyterhub.metrics.__doc__.split())"),
    ("from jupyterhub.metrics import *", "sorted(n for n in globals() if n.isupper())"),
    ("from jupyterhub import orm, metrics", "(orm.User.__tablename__, metrics.TOTAL_USERS)"),
]
# (The two names the stand-ins hold answer from the stand-ins until something else is asked
# of their module: the next test.)


def evaluate(lean: bool, imports: list) -> dict:
    """After the server's own imports (which took the stand-ins): each (statement, expression)
    of imports, in a namespace of its own, and the expression's value as text."""
    return run(f"""
lean = launcher["lean_imports"]() if {lean} else None
SINGLEUSER_IMPORTS
values = []
for statement, expression in {imports!r}:
    namespace = {{}}
    exec(statement, namespace)
    values.append(str(eval(expression, namespace)))
print(json.dumps({{"lean": lean, "values": values}}))
""")


@pytest.fixture(scope="module")
def without_the_launcher() -> list:
    return evaluate(False, EXTENSION_IMPORTS)["values"]


@pytest.mark.parametrize("i", range(len(EXTENSION_IMPORTS)), ids=[s for s, _ in EXTENSION_IMPORTS])
def test_an_extension_imports_from_jupyterhub_as_it_would_without_the_launcher(i, without_the_launcher):
    # a fresh interpreter for each: which import comes first matters
    assert evaluate(True, [EXTENSION_IMPORTS[i]]) == {"lean": True, "values": [without_the_launcher[i]]}


def test_a_stand_in_waits_until_asked_for_an_attribute_it_lacks_then_is_the_real_module():
    result = run("""
launcher["lean_imports"]()
SINGLEUSER_IMPORTS
import jupyterhub.metrics as metrics, jupyterhub.handlers.pages as pages
from tornado.web import RequestHandler
stand_ins = {"metrics": metrics.prometheus_log_method.__qualname__, "pages": pages.HealthCheckHandler.__qualname__,
             "packages": hasattr(metrics, "__path__") or hasattr(pages, "__path__"),
             "waiting": ["__getattr__" in vars(m) for m in (metrics, pages, sys.modules["jupyterhub.handlers"])],
             "loaded": [m for m in ("jupyterhub.handlers.base", "sqlalchemy.orm") if m in sys.modules]}
running = str(metrics.RUNNING_SERVERS)
try:
    metrics.no_such_name
except AttributeError as e:
    missing = str(e)
real_metrics = {"waiting": "__getattr__" in vars(metrics), "same": sys.modules["jupyterhub.metrics"] is metrics,
                "loader": type(metrics.__spec__.loader).__name__, "log_method": metrics.prometheus_log_method.__qualname__,
                "handlers_waiting": "__getattr__" in vars(sys.modules["jupyterhub.handlers"])}
count = len(pages.default_handlers)  # the package's __init__ runs first, as an import would run it
import jupyterhub.handlers, jupyterhub.log
real_pages = {"waiting": ["__getattr__" in vars(m) for m in (pages, jupyterhub.handlers)],
              "same": jupyterhub.handlers.pages is pages is sys.modules["jupyterhub.handlers.pages"],
              "health": issubclass(pages.HealthCheckHandler, RequestHandler), "handlers": count > 0,
              "log_keeps_its_stand_in": not issubclass(jupyterhub.log.HealthCheckHandler, RequestHandler)}
print(json.dumps({"stand_ins": stand_ins, "running": running, "missing": missing,
                  "metrics": real_metrics, "pages": real_pages}))
""")
    assert result == {
        "stand_ins": {"metrics": "lean_imports.<locals>.prometheus_log_method",
                      "pages": "lean_imports.<locals>.HealthCheckHandler",
                      "packages": False, "waiting": [True, True, True], "loaded": []},
        "running": "gauge:jupyterhub_running_servers",
        "missing": "module 'jupyterhub.metrics' has no attribute 'no_such_name'",
        "metrics": {"waiting": False, "same": True, "loader": "SourceFileLoader",
                    "log_method": "prometheus_log_method", "handlers_waiting": True},
        "pages": {"waiting": [False, False], "same": True, "health": True, "handlers": True,
                  "log_keeps_its_stand_in": True},
    }


def test_a_real_submodule_of_a_stand_in_package_imports_after_the_package(tmp_path):
    package = tmp_path / "standin_pkg"
    package.mkdir()
    (package / "__init__.py").write_text('NAME = "real"\n')
    (package / "sub.py").write_text('import sys\nPACKAGE_FIRST = "NAME" in vars(sys.modules["standin_pkg"])\n'
                                    'from . import NAME\n')
    result = run(f"""
sys.path.insert(0, {str(tmp_path)!r})
sys.meta_path.insert(0, launcher["LazyModules"]({{"standin_pkg": {{"NAME": "stand-in", "ONLY_IN_STAND_IN": 1}}}}))
import standin_pkg
before = {{"name": standin_pkg.NAME, "waiting": "__getattr__" in vars(standin_pkg),
          "package": isinstance(standin_pkg.__path__, list)}}
import standin_pkg.sub
print(json.dumps({{"before": before, "package_first": standin_pkg.sub.PACKAGE_FIRST, "name": standin_pkg.sub.NAME,
                  "waiting": "__getattr__" in vars(standin_pkg), "bound": standin_pkg.sub is sys.modules["standin_pkg.sub"]}}))
""")
    assert result == {"before": {"name": "stand-in", "waiting": True, "package": True},
                      "package_first": True, "name": "real", "waiting": False, "bound": True}


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
