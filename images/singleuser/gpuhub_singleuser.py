#!/opt/venv/bin/python3
"""jupyterhub-singleuser, started leaner: the command gpuhub's spawner runs in this image
(the image's label gpuhub.singleuser-command names it; its default CMD stays
jupyterhub-singleuser, for `docker run` and for other hubs).

A user's server needs none of the hub's database layer, yet importing jupyterhub.singleuser
loads it: jupyterhub.log imports the hub's page handlers (for one isinstance check) and its
Prometheus request metrics, and those, like jupyterhub.scopes, import the ORM, SQLAlchemy's
ORM and Alembic. Measured in this image, that is a third of the imports of every server start
(README, "Performance").

So, for the JupyterHub version this was checked against (JUPYTERHUB_VERSION below):
- jupyterhub.handlers.pages and jupyterhub.metrics get stand-ins holding the two names
  jupyterhub.log takes from them: a HealthCheckHandler that no handler of a user server is
  an instance of (the hub's own health page never runs here), and a prometheus_log_method
  that records nothing (the hub's copy of jupyter_server's http_request_duration_seconds);
- jupyterhub.orm and jupyterhub.roles load lazily, on first use, which only the hub makes.
Any other JupyterHub version starts exactly as jupyterhub-singleuser does.
"""
import importlib.abc
import importlib.util
import sys
import types

JUPYTERHUB_VERSION = "5.5.4"
LAZY_MODULES = frozenset({"jupyterhub.orm", "jupyterhub.roles"})


class LazyModules(importlib.abc.MetaPathFinder):
    """Finds LAZY_MODULES as the other finders do, but runs their code on first attribute use."""

    def find_spec(self, name, path, target=None):
        if name not in LAZY_MODULES:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = importlib.util.LazyLoader(spec.loader)
                return spec
        return None


def stand_in(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name, f"gpuhub-singleuser's stand-in for {name} (see its docstring)")
    module.__dict__.update(attributes)
    return module


def lean_imports() -> bool:
    from jupyterhub._version import __version__

    if __version__ != JUPYTERHUB_VERSION:
        return False

    class HealthCheckHandler:
        """The hub's /hub/health handler; a user server has none."""

    sys.modules["jupyterhub.handlers.pages"] = stand_in("jupyterhub.handlers.pages", HealthCheckHandler=HealthCheckHandler)
    sys.modules["jupyterhub.metrics"] = stand_in("jupyterhub.metrics", prometheus_log_method=lambda handler: None)
    sys.meta_path.insert(0, LazyModules())
    return True


def main() -> int:
    lean = lean_imports()
    from jupyterhub.singleuser import main as singleuser_main

    if not lean:
        print(f"gpuhub-singleuser: JupyterHub is not {JUPYTERHUB_VERSION}: starting as jupyterhub-singleuser does",
              file=sys.stderr)
    return singleuser_main()


if __name__ == "__main__":
    sys.exit(main())
