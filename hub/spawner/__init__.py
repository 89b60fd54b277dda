"""The spawners (spawner.py: one Docker host; swarm.py: a Docker Swarm) and the helpers they
glue together."""
from hub.spawner.spawner import GPUDockerSpawner, GPUUnavailable
from hub.spawner.swarm import GPUSwarmSpawner

__all__ = ["GPUDockerSpawner", "GPUSwarmSpawner", "GPUUnavailable"]
