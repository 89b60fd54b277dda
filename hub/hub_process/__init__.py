"""Runs in JupyterHub's own process: its configuration, the spawner, the version-gated
patches, the roster route and the watchdogs. Never imported by the service process
(hub/service_process/); both build on hub/common/, hub/settings/ and the pure floors below."""
