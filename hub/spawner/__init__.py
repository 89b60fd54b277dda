"""The spawner (spawner.py) and the helpers it glues together.

The spawner loads on first use of its names: the hub-managed services import helpers from this
package (stop_reasons, running) and need neither DockerSpawner nor the hub's database layer
it brings (hub/lean_imports.py)."""

__all__ = ["GPUDockerSpawner", "GPUUnavailable"]


def __getattr__(name: str):
    if name in __all__:
        from hub.spawner import spawner
        return getattr(spawner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
