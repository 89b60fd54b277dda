"""The spawners (spawner.py: one Docker host; swarm.py: a Docker Swarm) and the helpers they
glue together.

The spawners load on first use of their names: the hub-managed services import helpers from
this package (stop_reasons, running) and need neither DockerSpawner nor the hub's database
layer it brings (hub/common/lean_imports.py)."""
import importlib

_MODULE_OF = {"GPUDockerSpawner": "spawner", "GPUUnavailable": "spawner", "GPUSwarmSpawner": "swarm"}
__all__ = list(_MODULE_OF)


def __getattr__(name: str):
    if name in _MODULE_OF:
        return getattr(importlib.import_module(f"hub.hub_process.spawner.{_MODULE_OF[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
