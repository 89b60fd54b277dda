"""What all spawners of one hub process share: one ``HubProcess``, ``PROCESS``."""
import asyncio
from concurrent.futures import ThreadPoolExecutor
from collections import deque
from dataclasses import dataclass, field

from hub.common.stop_reasons import StopReasons
from hub.gpus.gate import HostGate
from hub.gpus.manager import GPUManager
from hub.gpus.queue import GPUQueue
from hub.memory import ServerCost
from hub.hub_process.spawner.running import RunningContainers
from hub.hub_process.spawner.turns import StartTurns


@dataclass
class MemoryLine:
    """Starts waiting for the host's memory (hub/memory.py), first come first served."""
    waiting: deque = field(default_factory=deque)  # (user, server) in arrival order
    pending: dict = field(default_factory=dict)  # (user, server) -> its memory limit (None: none): admitted, not started
    cost: ServerCost | None = None  # made by the first start, from its spawner's estimate
    moved: asyncio.Event | None = None  # set when someone leaves the line or is admitted
    short: bool = False  # the first in line found too little memory at its last look

    def changed(self) -> None:
        """Wake every waiter: the line moved (a waiter left) or memory was given back."""
        if self.moved is not None:
            self.moved.set()
        self.moved = asyncio.Event()

    async def wait(self, seconds: float) -> None:
        """Until the line moves, or ``seconds`` pass (memory frees without a word to the hub)."""
        if self.moved is None:
            self.moved = asyncio.Event()
        try:
            await asyncio.wait_for(self.moved.wait(), seconds)
        except asyncio.TimeoutError:
            pass


@dataclass
class HubProcess:
    """What all spawners of one hub process share (one instance, ``PROCESS``)."""
    executor: ThreadPoolExecutor | None = None  # Docker calls
    gpu_manager: GPUManager | None = None  # created by the first spawn that needs it
    host_gate: HostGate | None = None  # host-health checks before a GPU is handed out
    turns: StartTurns = field(default_factory=StartTurns)
    stop_reasons: StopReasons = field(default_factory=StopReasons)
    running: RunningContainers = field(default_factory=RunningContainers)  # shared by all polls
    gpu_queue: GPUQueue = field(default_factory=GPUQueue)  # the line for GPUs (GPU_WHEN_FULL=queue)
    nfs_dirs: set[str] = field(default_factory=set)  # Swarm: volumes whose NFS folder exists
    memory: MemoryLine = field(default_factory=MemoryLine)  # admission by memory (HOST_MEMORY_*)


PROCESS = HubProcess()
