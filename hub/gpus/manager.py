"""The hub's one GPU manager: inventory, admin intent on the state volume, one lock, and the
engine as the source of truth for who holds what.

Every decision runs under ``lock``: read the engine's live containers (labels and
``HostConfig.DeviceRequests``), reconcile the pure allocator with them, allocate, and, still
under the lock, create the container that carries the GPU. A hub restart, a container killed
behind the hub's back or a failed start therefore never leaks or double-books a GPU: there is
no in-memory pool to go stale.
"""
import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from docker.errors import NotFound

from hub.gpus.allocator import GPU, Allocator, Intent, Policy, first_free, holders_from_containers

LIVE_STATES = ["created", "running", "restarting", "paused"]
CDI_KIND = "nvidia.com/gpu"

DockerCall = Callable[..., Awaitable]


def device_request(uuid: str, style: str) -> dict:
    """The engine-API device request that gives a container exactly this GPU, never a count."""
    if style == "cdi":
        return {"Driver": "cdi", "DeviceIDs": [f"{CDI_KIND}={uuid}"]}
    return {"Driver": "nvidia", "DeviceIDs": [uuid], "Capabilities": [["gpu", "compute", "utility"]]}


def choose_style(configured: str, engine_info: dict, inventory: list[GPU], cdi_gpus: list[GPU]) -> str:
    """'cdi' or 'nvidia': as configured, or detected from the engine and the host's CDI specs."""
    if configured in ("cdi", "nvidia"):
        return configured
    # CDI needs the engine's CDI support (Docker >= 25 with the feature on: it then reports
    # its spec dirs) and a spec that names every GPU of the inventory by UUID.
    listed = {g.uuid for g in cdi_gpus}
    if engine_info.get("CDISpecDirs") and inventory and all(g.uuid in listed for g in inventory):
        return "cdi"
    return "nvidia"


class GPUManager:
    def __init__(self, inventory: list[GPU], source: str, style: str, intent_file: str,
                 label_prefix: str, policy: Policy = first_free):
        self.source, self.style, self.label_prefix = source, style, label_prefix
        self.intent_file = Path(intent_file)
        self.allocator = Allocator(inventory, load_intent(self.intent_file), policy)
        self.lock = asyncio.Lock()

    @property
    def inventory(self) -> tuple[GPU, ...]:
        return self.allocator.inventory

    async def reconcile(self, docker: DockerCall) -> None:
        """Rebuild who holds which GPU from the engine's live containers, and re-read the
        admin's intent, so that a pin or drain applies from the next decision on."""
        self.allocator.intent = load_intent(self.intent_file)
        summaries = await docker("containers", all=True, filters={"status": LIVE_STATES})
        details = await asyncio.gather(*(self._inspect(docker, c["Id"]) for c in summaries))
        held = holders_from_containers([d for d in details if d], self.label_prefix, inventory=self.inventory)
        self.allocator.reconcile(held)

    @staticmethod
    async def _inspect(docker: DockerCall, container_id: str) -> dict | None:
        try:
            return await docker("inspect_container", container_id)
        except NotFound:  # removed between the listing and now: holds nothing
            return None

    def save_intent(self) -> None:
        """Persist pins and drains atomically on the state volume."""
        tmp = self.intent_file.with_name(f".{self.intent_file.name}.tmp")
        tmp.write_text(json.dumps(self.allocator.intent.to_json(), indent=1) + "\n")
        os.replace(tmp, self.intent_file)


def load_intent(path: Path) -> Intent:
    """Admin intent from the state volume; none yet on a first start."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return Intent()
    try:
        return Intent.from_json(text)
    except ValueError as exc:
        raise ValueError(f"{path} is not valid GPU intent ({exc}); fix or remove it") from exc
