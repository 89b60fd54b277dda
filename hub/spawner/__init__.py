"""The spawner (spawner.py) and the helpers it glues together."""
from hub.spawner.spawner import GPUDockerSpawner, GPUUnavailable

__all__ = ["GPUDockerSpawner", "GPUUnavailable"]
