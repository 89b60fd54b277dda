"""GPU accounting: who held (and used) how many GPU-hours, quotas on them, and metrics.

- ``accounting``: pure. Seats from the engine's containers, intervals that only grow, sums
  per user/group/course/GPU and time bucket, the rolling-window usage a quota checks.
- ``quota``: pure. Which quotas apply to a user, how much is used, when it renews.
- ``store``: the durable store, SQLite in WAL mode on the hub's state volume.
- ``reconcile``: the console's periodic sync of the store with the engine (live containers,
  start/die events since the last sync).
- ``metrics``: the Prometheus exposition.

Held time comes from the engine only (container start and die times); the utilisation-weighted
"used" time reads a sampler through ``accounting.UtilisationSource`` (``now(uuid)`` returning
a reading with ``utilization_pct``, or None), so the sampler can change without touching this.
"""
