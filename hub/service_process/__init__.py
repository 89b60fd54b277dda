"""Runs in the hub-managed service process (one process, ``python -m hub.service_process.console.app``):
the GPU console and gpu-reclaim. Imports nothing from hub/hub_process/ (no DockerSpawner, no hub
database layer: hub/common/lean_imports.py)."""
