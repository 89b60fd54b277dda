"""A GPU claim on the engine, both ways: what a container carries to hold a GPU, and who
holds which GPU according to the engine's containers. The one module that knows the labels
and device-request forms, so that encoding and decoding cannot drift apart.

A container holds a GPU by a device request that names the GPU's UUID (CDI
``nvidia.com/gpu=<uuid>``, or the nvidia driver's ``device_ids``; never a count) and by the
``<prefix>.gpu.uuid`` label. Decoding reads both, so a container that another tool started
with ``--gpus`` still blocks its GPU.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Collection, Iterable, Mapping

from hub.gpus.model import GPU, Holder

LIVE_STATES = ("created", "running", "restarting", "paused")  # exited, dead, removing: free
CDI_KIND = "nvidia.com/gpu"
CDI_PREFIX = f"{CDI_KIND}="
STYLES = ("cdi", "nvidia")  # on a Swarm: "swarm", generic resources (hub/gpus/swarm.py)


@dataclass(frozen=True)
class Labels:
    """The label keys under one prefix (``gpuhub`` unless configured)."""
    prefix: str = "gpuhub"

    @property
    def user(self) -> str:
        return f"{self.prefix}.user"

    @property
    def server(self) -> str:
        return f"{self.prefix}.server"

    @property
    def instance(self) -> str:
        return f"{self.prefix}.instance"

    @property
    def gpu_uuid(self) -> str:
        return f"{self.prefix}.gpu.uuid"

    @property
    def gpu_since(self) -> str:
        return f"{self.prefix}.gpu.since"

    @property
    def course(self) -> str:
        return f"{self.prefix}.course"

    @property
    def profile(self) -> str:
        """The profile the server was started with (its reclaim policy: hub/gpus/reclaim_policy.py)."""
        return f"{self.prefix}.profile"

    def owner(self, user: str, server: str, instance: str) -> dict[str, str]:
        """Whose container this is, for anyone (and for the hub after a restart)."""
        return {self.user: user, self.server: server, self.instance: instance}


def device_request(uuid: str, style: str) -> dict:
    """The engine-API device request that gives a container exactly this GPU, never a count."""
    if style == "cdi":
        return {"Driver": "cdi", "DeviceIDs": [f"{CDI_PREFIX}{uuid}"]}
    return {"Driver": "nvidia", "DeviceIDs": [uuid], "Capabilities": [["gpu", "compute", "utility"]]}


def choose_style(configured: str, engine_info: dict, inventory: list[GPU], cdi_gpus: list[GPU]) -> str:
    """'cdi' or 'nvidia': as configured, or detected from the engine and the host's CDI specs."""
    if configured in STYLES:
        return configured
    # CDI needs the engine's CDI support (Docker >= 25 with the feature on: it then reports
    # its spec dirs) and a spec that names every GPU of the inventory by UUID.
    listed = {g.uuid for g in cdi_gpus}
    if engine_info.get("CDISpecDirs") and inventory and all(g.uuid in listed for g in inventory):
        return "cdi"
    return "nvidia"


@dataclass(frozen=True)
class Assignment:
    """One server's GPU, as the allocator decided it: everything its container must carry."""
    gpu: GPU
    style: str
    shared_by: int = 1  # how many servers may share this GPU (1: exclusive)
    since: float = field(default_factory=time.time)
    kind: str = ""  # Swarm: the GPU's generic-resource kind (hub/gpus/swarm.py)
    node_id: str = ""  # Swarm: the node the GPU is on

    def labels(self, keys: Labels) -> dict[str, str]:
        shared = {f"{keys.prefix}.gpu.shared_by": str(self.shared_by)} if self.shared_by > 1 else {}
        return {keys.gpu_uuid: self.gpu.uuid, keys.gpu_since: f"{self.since:.0f}", **shared}

    def device_requests(self) -> list[dict]:
        return [device_request(self.gpu.uuid, self.style)]

    def env(self) -> dict[str, str]:
        # gpu-check tells the user that their GPU's memory is shared
        return {"GPUHUB_GPU_SHARED_BY": str(self.shared_by)} if self.shared_by > 1 else {}


NO_GPU_ENV = {"NVIDIA_VISIBLE_DEVICES": "void"}  # no runtime default may hand a GPU out



def held_from_containers(containers: Iterable[Mapping[str, Any]], label_prefix: str = "gpuhub",
                         *, inventory: Iterable[GPU] | None = None,
                         parked: Collection[str] = ()) -> dict[str, Holder]:
    """uuid -> the first holder (see `holders_from_containers`)."""
    held = holders_from_containers(containers, label_prefix, inventory=inventory, parked=parked)
    return {u: hs[0] for u, hs in held.items()}


def holders_from_containers(containers: Iterable[Mapping[str, Any]], label_prefix: str = "gpuhub",
                            *, inventory: Iterable[GPU] | None = None,
                            parked: Collection[str] = ()) -> dict[str, list[Holder]]:
    """uuid -> Holder from `docker inspect`-style dicts of live (not exited/dead) containers.

    A container holds the uuids in its ``{prefix}.gpu.uuid`` label (comma-separated) AND
    those its DeviceRequests name (CDI ``nvidia.com/gpu=<uuid>`` or nvidia driver ids), so
    a container without our labels still blocks its GPU. Index names, "all" and counts
    are resolved only when `inventory` is given. Every container that claims a uuid is listed
    (several: a shared GPU, or a double booking the console shows). The containers whose ids
    are in `parked` hold nothing: their GPU state is in host memory (``hub.gpus.parked``:
    only paused containers with a record are ever named there).
    """
    gpus = list(inventory or [])
    held: dict[str, list[Holder]] = {}
    for c in containers:
        if not _is_live(c) or (parked and c.get("Id") in parked):
            continue
        labels = (c.get("Config") or {}).get("Labels") or c.get("Labels") or {}
        holder = _holder(c, labels, label_prefix)
        label_ids = (labels.get(Labels(label_prefix).gpu_uuid) or "").split(",")
        for uuid in _resolve([*label_ids, *_requested_ids(c)], gpus):
            held.setdefault(uuid, []).append(holder)
    return held


def _is_live(c: Mapping[str, Any]) -> bool:
    state = c.get("State") or {}
    state = {"Status": state} if isinstance(state, str) else state  # `containers()` form
    if state.get("Status"):
        return str(state["Status"]).lower() in LIVE_STATES
    return bool(state.get("Running") or state.get("Restarting") or state.get("Paused"))


def _holder(c: Mapping[str, Any], labels: Mapping[str, str], prefix: str) -> Holder:
    name = c.get("Name") or next(iter(c.get("Names") or []), "") or c.get("Id", "")
    keys = Labels(prefix)
    try:
        since = float(labels[keys.gpu_since])
    except (KeyError, TypeError, ValueError):
        since = None
    return Holder(labels.get(keys.user) or name.lstrip("/"), labels.get(keys.server) or "", since)


def _requested_ids(c: Mapping[str, Any]) -> list[str]:
    """Device names from HostConfig.DeviceRequests ("all" for ``--gpus all``)."""
    ids: list[str] = []
    for req in (c.get("HostConfig") or {}).get("DeviceRequests") or []:
        driver = (req.get("Driver") or "").lower()
        names = [n for i in req.get("DeviceIDs") or [] for n in str(i).split(",")]
        if driver == "cdi":
            ids += [n.removeprefix(CDI_PREFIX) for n in names if n.startswith(CDI_PREFIX)]
        elif driver == "nvidia" or any("gpu" in caps for caps in req.get("Capabilities") or []):
            count = req.get("Count") or 0  # moby: -1 is "all", n is indexes 0..n-1
            ids += names or (["all"] if count < 0 else [str(i) for i in range(count)])
    return ids


def _resolve(names: Iterable[str], gpus: list[GPU]) -> list[str]:
    """UUIDs for device names: UUIDs as is; "all" and indexes through the inventory."""
    uuids: list[str] = []
    for name in (n.strip() for n in names):
        if name.startswith(("GPU-", "MIG-")):
            uuids.append(name)
        elif name == "all":
            uuids += [g.uuid for g in gpus]
        elif name.isdigit():
            uuids += [g.uuid for g in gpus if g.index == int(name)]  # MIG: parent's index
    return list(dict.fromkeys(uuids))
