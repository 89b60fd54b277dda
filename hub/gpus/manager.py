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
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from docker.errors import NotFound

from hub.files import write_atomic
from hub.gpus.allocator import Allocator, Policy, first_free
from hub.gpus.claim import LIVE_STATES, Assignment, choose_style, holders_from_containers
from hub.gpus.inventory import discover, from_cdi
from hub.gpus.model import GPU, Intent
from hub.gpus.parked import FILE as PARKED_FILE, ParkedFile, parked_ids
from hub.gpus.swarm import (SwarmInventory, holders_from_tasks, inventory_from_nodes, nodes_from_engine,
                            releasing_from_tasks)

DockerCall = Callable[..., Awaitable]


class GPUManager:
    def __init__(self, inventory: list[GPU], source: str, style: str, intent_file: str,
                 label_prefix: str, policy: Policy = first_free):
        self.source, self.style, self.label_prefix = source, style, label_prefix
        self.intent_file = Path(intent_file)
        self.allocator = Allocator(inventory, load_intent(self.intent_file), policy)
        self.lock = asyncio.Lock()
        self.reconciled_at = 0.0  # time.monotonic() when the last reconcile began reading the engine
        self.parked: frozenset[str] = frozenset()  # ids of the parked containers at the last reconcile

    @classmethod
    def discover(cls, static_yaml: str | None, cdi_dirs: list[str], request_style: str, engine_info: dict,
                 intent_file: str, label_prefix: str, policy: Policy = first_free) -> "GPUManager":
        """The manager for this host: its GPUs (NVML, CDI or the static list), and how the
        engine is asked for them ('auto' decided from the engine's info and the CDI specs)."""
        gpus, source = discover(static_yaml, cdi_dirs)
        cdi_gpus = (gpus if source == "cdi" else from_cdi(cdi_dirs)) or []
        style = choose_style(request_style, engine_info, gpus, cdi_gpus)
        return cls(gpus, source, style, intent_file, label_prefix, policy)

    @property
    def inventory(self) -> tuple[GPU, ...]:
        return self.allocator.inventory

    async def reconcile(self, docker: DockerCall) -> None:
        """Rebuild who holds which GPU from the engine's live containers, and re-read the
        admin's intent, so that a pin or drain applies from the next decision on."""
        began = time.monotonic()
        self.allocator.intent = load_intent(self.intent_file)
        summaries = await docker("containers", all=True, filters={"status": list(LIVE_STATES)})
        details = await asyncio.gather(*(self._inspect(docker, c["Id"]) for c in summaries))
        live = [d for d in details if d]
        # a parked (paused, checkpointed) server gave its GPU back: hub.gpus.parked
        self.parked = parked_ids(live, ParkedFile(self.intent_file.with_name(PARKED_FILE)).all().values())
        held = holders_from_containers(live, self.label_prefix, inventory=self.inventory, parked=self.parked)
        self.allocator.reconcile(held)
        self.reconciled_at = began

    @staticmethod
    async def _inspect(docker: DockerCall, container_id: str) -> dict | None:
        try:
            return await docker("inspect_container", container_id)
        except NotFound:  # removed between the listing and now: holds nothing
            return None

    def assign(self, user: str, server: str, groups: set[str], now: float) -> Assignment:
        """A GPU for this server, under the lock after ``reconcile``; NoGPUAvailable if none."""
        gpu = self.allocator.allocate(user, server, since=now, groups=groups, now=now)
        return Assignment(gpu, self.style, self.allocator.capacity(gpu.uuid), now)

    def save_intent(self, intent: Intent) -> None:
        """Persist the admin's intent atomically on the state volume; it applies from now on."""
        write_atomic(self.intent_file, json.dumps(intent.to_json(), indent=1) + "\n")
        self.allocator.intent = intent


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


class ExclusiveAllocator(Allocator):
    """On a swarm every GPU is one generic-resource unit, which Swarm gives one task at a time:
    a GPU the admin marked shared is handed out whole there (docs/swarm.md)."""

    def capacity(self, uuid: str) -> int:
        return 1


class SwarmGPUManager(GPUManager):
    """The GPU manager of a hub over a Docker Swarm (hub/gpus/swarm.py): the inventory is
    re-read from the nodes at every reconcile (a node that joins brings its GPUs, one that
    is drained or down takes no new servers), the holders from the tasks' assigned units."""

    def __init__(self, intent_file: str, label_prefix: str, policy: Policy = first_free,
                 constraints: tuple[str, ...] = ()):
        super().__init__([], "swarm", "swarm", intent_file, label_prefix, policy)
        self.constraints = tuple(constraints)  # every user server's placement constraints
        self.allocator = ExclusiveAllocator([], self.allocator.intent, policy)
        self.swarm = SwarmInventory()
        self.releasing: dict[str, str] = {}  # uuid -> node: a stopping task still has its unit

    async def reconcile(self, docker: DockerCall) -> None:
        # tasks Swarm means to run, and those it is shutting down (their units not released yet)
        nodes_json, services, tasks = await asyncio.gather(
            docker("nodes"), docker("services"),
            docker("tasks", filters={"desired-state": ["running", "shutdown", "remove"]}))
        nodes = nodes_from_engine(nodes_json)
        self.swarm = inventory_from_nodes(nodes, self.constraints)
        intent = load_intent(self.intent_file)
        if [g for g in self.allocator.inventory] != self.swarm.gpus:
            self.allocator = ExclusiveAllocator(self.swarm.gpus, intent, self.allocator.policy)
        self.allocator.intent = intent
        self.allocator.unavailable = dict(self.swarm.unavailable)
        self.allocator.reconcile(holders_from_tasks(tasks, services, nodes, self.label_prefix))
        self.releasing = releasing_from_tasks(tasks, nodes)
        self.allocator.releasing = frozenset(self.releasing)

    def assign(self, user: str, server: str, groups: set[str], now: float) -> Assignment:
        gpu = self.allocator.allocate(user, server, since=now, groups=groups, now=now)
        kind, node_id = self.swarm.request(gpu.uuid)
        return Assignment(gpu, "swarm", self.allocator.capacity(gpu.uuid), now, kind=kind, node_id=node_id)
