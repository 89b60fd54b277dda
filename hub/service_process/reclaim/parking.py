"""gpu-reclaim's side of parking (preview; docs/gpus.md, "Parking"): where the policy's action
is ``park``, the reclaim "stop" parks the server instead (hub/common/park.py's ``Parker``), and
each round stops the servers parked longer than their policy's ``max_parked``.

Parking that is refused (no NVML reading, a shared GPU, the host's reserve too small) or fails
(the checkpoint, the pause, the GPU's memory not back at rest) falls back to the stop as before;
the Parker's audit entry (``park-refused``/``park-failed``) says why, and the stop's own entry
follows. Resuming is the person's, through the hub (hub/hub_process/parking.py).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Mapping

from hub.common.engine import DockerCaller, engine_client
from hub.common.park import ExecCheckpointer, Outcome, ParkSettings, Parker
from hub.gpus.parked import Parked, ParkedFile
from hub.settings.table import read

log = logging.getLogger("gpu-reclaim.park")
GIB = 2**30
EXEC_TIMEOUT = 900  # seconds an exec of gpu-park may take (a whole GPU's checkpoint: ~35 s for 80 GB)


def memory_reader(reader: Any) -> Callable[[str], int | None]:
    """uuid -> its used MiB now, from the sampler's reader (NVML), blocking; None: unknown."""
    def used(uuid: str) -> int | None:
        try:
            readings = reader.read()
        except Exception as exc:  # noqa: BLE001 - unknown is an answer: parking is then refused
            log.warning("GPU memory reading failed: %s", exc)
            return None
        return next((r.memory_used_mib for r in readings if r.uuid == uuid), None)
    return used


def build_parker(env: Mapping[str, str], state: Path, reader: Any, audit: Any, hub: Any,
                 docker: Any = None, checkpointer: Any = None, host_memory: Callable[[], int] | None = None,
                 label_prefix: str = "gpuhub") -> Parker:
    """The Parker gpu-reclaim uses: gpu-park by docker exec (``GPU_PARK_FAKE=1``: the tool's
    driver stand-in, for hosts whose GPUs are fake), NVML readings, the hub's stop."""
    docker = docker or DockerCaller(engine_client(timeout=EXEC_TIMEOUT))
    checkpointer = checkpointer or ExecCheckpointer(docker, fake=env.get("GPU_PARK_FAKE") == "1")
    settings = ParkSettings(max_parked=float(read(env, "GPU_PARK_MAX")),
                            host_reserve=int(read(env, "GPU_PARK_HOST_RESERVE")) * GIB,
                            rest_mib=int(env.get("GPU_PARK_REST_MIB") or 1024),
                            settle=float(env.get("GPU_PARK_SETTLE_S") or 15),
                            label_prefix=label_prefix)

    async def stop_server(user: str, server: str) -> Any:
        return await hub.stop_server(user, server)

    extra = {"host_memory": host_memory} if host_memory else {}
    return Parker(docker, checkpointer, ParkedFile(state / "gpu-parked.json"), memory_reader(reader), stop_server,
                  settings, audit=audit, **extra)


async def park_instead(reclaimer: Any, user: str, server: str, uuid: str) -> Outcome | None:
    """Park where the server's policy says so: the Outcome (``parked``: nothing else to do), or
    None where the policy stops or no Parker is set up (the caller stops it)."""
    parker = getattr(reclaimer, "parker", None)
    if parker is None or not reclaimer.policy_of(user, server).parks:
        return None
    container = reclaimer.container_of.get((user, server))
    if not container:
        return None
    return await parker.park(user, server, uuid, container)


async def expire(reclaimer: Any) -> list[Outcome]:
    """Stop the servers parked longer than their policy's ``max_parked``."""
    parker = getattr(reclaimer, "parker", None)
    if parker is None:
        return []

    def limit(record: Parked) -> float:
        return reclaimer.policy_of(record.user, record.server).max_parked

    return await parker.expire(limit)
