#!/opt/venv/bin/python3
"""jupyterhub-singleuser, started leaner: the command gpuhub's spawner runs in this image
(the image's label gpuhub.singleuser-command names it; its default CMD stays
jupyterhub-singleuser, for `docker run` and for other hubs).

A user's server needs none of the hub's database layer, yet importing jupyterhub.singleuser
loads it: jupyterhub.log imports the hub's page handlers (for one isinstance check) and its
Prometheus request metrics, and those, like jupyterhub.scopes, import the ORM, SQLAlchemy's
ORM and Alembic; jupyterhub.utils takes one exception class from sqlalchemy.exc, and
SQLAlchemy's own __init__ then imports its engine and SQL layer. Other libraries import
modules at start that a user server uses late or never. Measured in this image
(bench/server_start.py), a server started this way, and without the jupyter_lsp and
notebook_shim extensions (the spawner's default), takes half the CPU time of
jupyterhub-singleuser to answer (README, "Performance").

So, for the JupyterHub version this was checked against (JUPYTERHUB_VERSION below):
- jupyterhub.handlers.pages and jupyterhub.metrics get stand-ins holding the two names
  jupyterhub.log takes from them: a HealthCheckHandler that no handler of a user server is
  an instance of (the hub's own health page never runs here), and a prometheus_log_method
  that records nothing (the hub's copy of jupyter_server's http_request_duration_seconds);
- LAZY_MODULES load on first use of one of their attributes;
- DEFERRED_PACKAGES run their __init__ on first use of one of their attributes, or before
  any of their submodules but those listed (sqlalchemy.exc loads without the rest of
  SQLAlchemy).
Any other JupyterHub version starts exactly as jupyterhub-singleuser does. With any version,
the garbage collector runs less often, while the server starts and after (see main). Whatever
a user or an extension does later still works: a lazy module or package loads fully when used.
"""
import gc
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types

JUPYTERHUB_VERSION = "5.5.4"
# Imported by `import name` at a server's start, used later if ever (tests/e2e/test_stack.py
# checks, in the image, that each is still unloaded once the server answers).
LAZY_MODULES = frozenset({
    "jupyterhub.orm", "jupyterhub.roles",  # the hub's database models and roles: hub code only
    "requests",  # jupyterlab_server's extension listings, off unless an admin configures them
    "webcolors", "uri_template",  # jsonschema's color and URI-template format checks
})
# Packages whose __init__ waits for first use, and the submodules that import without it:
# jupyterhub.utils takes SQLAlchemyError from sqlalchemy.exc, which needs sqlalchemy.util only.
DEFERRED_PACKAGES = {"sqlalchemy": frozenset({"exc", "util"})}


class LazyModules(importlib.abc.MetaPathFinder):
    """Finds LAZY_MODULES and DEFERRED_PACKAGES as the other finders do, with a loader that
    waits for their first use; any other submodule of a deferred package runs the package's
    __init__ first, so that the package's own import order holds."""

    def find_spec(self, name, path, target=None):
        package, _, submodule = name.partition(".")
        if submodule and package in DEFERRED_PACKAGES:
            deferred = DeferredInit.waiting(sys.modules.get(package))
            if deferred and submodule.partition(".")[0] not in DEFERRED_PACKAGES[package]:
                return importlib.machinery.ModuleSpec(name, PackageFirst(package))
            return None
        if name not in LAZY_MODULES and name not in DEFERRED_PACKAGES:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is None:
                continue
            if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                if name in DEFERRED_PACKAGES and spec.submodule_search_locations is not None:
                    spec.loader = DeferredInit(spec.loader)
                else:
                    spec.loader = importlib.util.LazyLoader(spec.loader)
            return spec
        return None


class DeferredInit(importlib.abc.Loader):
    """Loads a package without running its __init__ until one of its attributes is asked for
    (PEP 562's module __getattr__), except the submodules that import without it."""

    def __init__(self, loader):
        self.loader = loader

    @staticmethod
    def waiting(package) -> bool:
        return package is not None and "__getattr__" in vars(package) and isinstance(package.__spec__.loader, DeferredInit)

    def create_module(self, spec):
        return None  # the default module object, with __path__ from the spec

    def exec_module(self, package):
        standalone = DEFERRED_PACKAGES[package.__name__]

        def __getattr__(attribute):
            if attribute in standalone:
                return importlib.import_module(f"{package.__name__}.{attribute}")
            self.complete(package)
            return getattr(package, attribute)

        package.__getattr__ = __getattr__

    def complete(self, package) -> None:
        """Run the package's __init__ now, once: afterwards the package may define a module
        __getattr__ of its own (PEP 562), which is not this loader's to remove."""
        if self.waiting(package):
            del package.__dict__["__getattr__"]
            package.__spec__.loader = package.__loader__ = self.loader
            self.loader.exec_module(package)


class PackageFirst(importlib.abc.Loader):
    """Imports a submodule of a deferred package after running the package's __init__ (which
    may import the submodule itself); the import system then takes the module that is in
    sys.modules by the end, as it does for any module that replaces itself there."""

    def __init__(self, package: str):
        self.package = package

    def create_module(self, spec):
        return None

    def exec_module(self, placeholder):
        del sys.modules[placeholder.__name__]
        package = sys.modules[self.package]
        package.__spec__.loader.complete(package)
        importlib.import_module(placeholder.__name__)


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
    # A server start allocates a few hundred thousand objects that all stay (modules, classes,
    # traitlets), and Python's default first-generation threshold (700) makes it collect
    # about 190 times on the way, scanning them again and again: a tenth of the start's CPU,
    # measured in this image. Collecting after every 10,000 allocations instead (Python 3.13
    # itself raised the default to 2,000) keeps that cost small for the server's whole life.
    gc.set_threshold(10_000, 10, 10)
    lean = lean_imports()
    from jupyterhub.singleuser import main as singleuser_main

    if not lean:
        print(f"gpuhub-singleuser: JupyterHub is not {JUPYTERHUB_VERSION}: starting as jupyterhub-singleuser does",
              file=sys.stderr)
    return singleuser_main()


if __name__ == "__main__":
    sys.exit(main())
