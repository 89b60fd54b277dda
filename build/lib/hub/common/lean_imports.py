"""Hub-managed services without the hub's database layer in memory.

``jupyterhub.services.auth`` (HubOAuth, HubAuth: how the GPU console and gpu-reclaim
authenticate every request with the hub) imports ``jupyterhub.scopes``, which imports the hub's
ORM and roles, and with them SQLAlchemy's ORM and Alembic (Mako, Pygments): about 18 MB resident
per process and 0.8 s of CPU at start (``python -X importtime``, ``ru_maxrss``;
docs/performance.md, "Memory of the hub side"). A service never touches the hub's database; the
scope checks it calls are pure functions. So, in a service's own process only, those two
modules load on first use of one of their attributes (the standard library's
``importlib.util.LazyLoader``): whatever uses them gets the real module, loaded then.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import sys

HUB_DATABASE = frozenset({"jupyterhub.orm", "jupyterhub.roles"})


class _Lazy(importlib.abc.MetaPathFinder):
    def __init__(self, names: frozenset[str]):
        self.names = names

    def find_spec(self, name, path, target=None):
        if name not in self.names:
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


def defer_hub_database() -> None:
    """Call first thing in a service's main, before anything imports jupyterhub.services.auth.
    Does nothing where those modules are loaded already (the hub's own process) or it was
    called before."""
    names = HUB_DATABASE - set(sys.modules)
    if names and not any(isinstance(f, _Lazy) for f in sys.meta_path):
        sys.meta_path.insert(0, _Lazy(frozenset(names)))
