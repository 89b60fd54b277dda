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
- jupyterhub.handlers.pages and jupyterhub.metrics start as stand-ins holding the two names
  jupyterhub.log takes from them: a HealthCheckHandler that no handler of a user server is
  an instance of (the hub's own health page never runs here), and a prometheus_log_method
  that records nothing (the hub's copy of jupyter_server's http_request_duration_seconds);
- LAZY_MODULES load on first use of one of their attributes;
- DEFERRED_PACKAGES run their __init__ on first use of one of their attributes, or before
  any of their submodules but those listed (sqlalchemy.exc loads without the rest of
  SQLAlchemy, jupyterhub.handlers.pages without the hub's other handlers).
Any other JupyterHub version starts exactly as jupyterhub-singleuser does. With any version,
the garbage collector runs less often, while the server starts and after (see main).

Whatever a user or an extension imports later gets the real module: a lazy module or deferred
package loads fully when used, and a stand-in turns into the real module (its code runs in
the stand-in's namespace, after its package's __init__) on the first attribute it lacks, or
before any submodule of its own is imported. So `import jupyterhub.handlers` or
`from jupyterhub.metrics import TOTAL_USERS` work as with jupyterhub-singleuser, and load the
hub's database layer then. Until a stand-in loads, the two names it holds are its own; what
jupyterhub.log took from the stand-ins stays theirs (its health-check test, its no-op metric).
"""
import gc
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types

JUPYTERHUB_VERSION = "6.1.1"
# Imported by `import name` at a server's start, used later if ever (tests/e2e/test_stack.py
# checks, in the image, that each is still unloaded once the server answers).
LAZY_MODULES = frozenset({
    "jupyterhub.orm", "jupyterhub.roles",  # the hub's database models and roles: hub code only
    "requests",  # jupyterlab_server's extension listings, off unless an admin configures them
    "webcolors", "uri_template",  # jsonschema's color and URI-template format checks
})
# Packages whose __init__ waits for first use, and the submodules that import without it:
# jupyterhub.utils takes SQLAlchemyError from sqlalchemy.exc, which needs sqlalchemy.util only;
# jupyterhub.log takes HealthCheckHandler from jupyterhub.handlers.pages (a stand-in, see
# lean_imports), whose package's __init__ imports all of the hub's handlers.
DEFERRED_PACKAGES = {"sqlalchemy": frozenset({"exc", "util"}), "jupyterhub.handlers": frozenset({"pages"})}


class LazyModules(importlib.abc.MetaPathFinder):
    """Finds LAZY_MODULES, DEFERRED_PACKAGES and the stand-ins as the other finders do, with a
    loader that waits for their first use; any other submodule of a deferred package or of a
    stand-in runs the package's own code first, so that the package's own import order holds.

    stand_ins: {module name: {attribute: value}}, what each stand-in holds until it loads."""

    def __init__(self, stand_ins=None):
        self.stand_ins = stand_ins or {}

    def find_spec(self, name, path, target=None):
        parent, _, child = name.rpartition(".")
        package = sys.modules.get(parent) if parent else None
        if DeferredInit.waiting(package) and child not in package.__spec__.loader.standalone:
            return importlib.machinery.ModuleSpec(name, PackageFirst(parent))
        if name not in LAZY_MODULES and name not in DEFERRED_PACKAGES and name not in self.stand_ins:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is None:
                continue
            if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                if name in self.stand_ins:
                    spec.loader = StandIn(spec.loader, self.stand_ins[name])
                elif name in DEFERRED_PACKAGES and spec.submodule_search_locations is not None:
                    spec.loader = DeferredInit(spec.loader, DEFERRED_PACKAGES[name])
                else:
                    spec.loader = importlib.util.LazyLoader(spec.loader)
            return spec
        return None


class DeferredInit(importlib.abc.Loader):
    """Loads a module (a package, here) without running its code until one of its attributes
    is asked for (PEP 562's module __getattr__), except the submodules that import without it."""

    def __init__(self, loader, standalone=frozenset()):
        self.loader = loader
        self.standalone = standalone

    @staticmethod
    def waiting(module) -> bool:
        # (asked of every module that has a submodule imported: a lazy module's __dict__
        # would load it, and its type is not ModuleType)
        namespace = vars(module) if type(module) is types.ModuleType else {}
        return "__getattr__" in namespace and isinstance(getattr(namespace.get("__spec__"), "loader", None), DeferredInit)

    def create_module(self, spec):
        return None  # the default module object, with __path__ (for a package) from the spec

    def exec_module(self, module):
        def __getattr__(attribute):
            if attribute in self.standalone:
                return importlib.import_module(f"{module.__name__}.{attribute}")
            if attribute == "__path__":
                # The import system asks each module it imports names from whether it is a
                # package; a package has its __path__ already, so this one is not.
                raise AttributeError(f"module {module.__name__!r} has no attribute '__path__'")
            self.complete(module)
            return getattr(module, attribute)

        module.__getattr__ = __getattr__

    def complete(self, module) -> None:
        """Run the module's own code now, once, after its package's (as an import would):
        afterwards the module may define a module __getattr__ of its own (PEP 562), which is
        not this loader's to remove."""
        package = sys.modules.get(module.__name__.rpartition(".")[0])
        if self.waiting(package):
            package.__spec__.loader.complete(package)  # which may complete this module too
        if self.waiting(module):
            del module.__dict__["__getattr__"]
            module.__spec__.loader = module.__loader__ = self.loader
            module.__doc__ = None
            self.loader.exec_module(module)


class StandIn(DeferredInit):
    """A module that holds the given attributes until it is asked for another one: then its
    real code runs in its namespace (which replaces them), as a deferred package's does."""

    def __init__(self, loader, attributes: dict):
        super().__init__(loader)
        self.attributes = attributes

    def exec_module(self, module):
        module.__doc__ = f"gpuhub-singleuser's stand-in for {module.__name__} until first use (see its docstring)"
        module.__dict__.update(self.attributes)
        super().exec_module(module)


class PackageFirst(importlib.abc.Loader):
    """Imports a submodule of a deferred package (or stand-in) after running the package's
    code (which may import the submodule itself); the import system then takes the module that
    is in sys.modules by the end, as it does for any module that replaces itself there."""

    def __init__(self, package: str):
        self.package = package

    def create_module(self, spec):
        return None

    def exec_module(self, placeholder):
        del sys.modules[placeholder.__name__]
        package = sys.modules[self.package]
        package.__spec__.loader.complete(package)
        importlib.import_module(placeholder.__name__)


def lean_imports() -> bool:
    from jupyterhub._version import __version__

    if __version__ != JUPYTERHUB_VERSION:
        return False

    class HealthCheckHandler:
        """The hub's /hub/health handler; a user server has none."""

    def prometheus_log_method(handler):
        """The hub's request metric; a user server's is jupyter_server's."""

    sys.meta_path.insert(0, LazyModules({
        "jupyterhub.handlers.pages": {"HealthCheckHandler": HealthCheckHandler},
        "jupyterhub.metrics": {"prometheus_log_method": prometheus_log_method},
    }))
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
