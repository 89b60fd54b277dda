"""hub/common/lean_imports.py: a service's process loads the hub's database layer only when used; and
the console's request checks load jsonschema with the first checked request."""
import subprocess
import sys

CHECK = """
import sys
from hub.common.lean_imports import defer_hub_database
defer_hub_database()
import hub.service_process.console.app, hub.service_process.console.handlers, hub.service_process.reclaim.service
from jupyterhub.services.auth import HubAuth, HubOAuthCallbackHandler, check_scopes
loaded = lambda m: m in sys.modules and type(sys.modules[m]).__name__ == "module"
print(sorted(m for m in ("jupyterhub.orm", "jupyterhub.roles", "sqlalchemy.orm", "alembic", "dockerspawner") if loaded(m)))
assert check_scopes({"access:services!service=gpu-console"}, {"access:services"})
from jupyterhub import orm
print(orm.User.__tablename__, loaded("jupyterhub.orm"))
print(loaded("jsonschema"))
from hub.service_process.console import openapi
openapi.operation("/pins", "post")
print(loaded("jsonschema"))
"""


def test_services_start_without_the_hub_database_layer_and_load_it_when_used():
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["[]", "users True", "False", "True"]
