"""What all spawners of one hub process share: one ``HubProcess``, ``PROCESS``."""
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from hub.common.stop_reasons import StopReasons
from hub.gpus.gate import HostGate
from hub.gpus.manager import GPUManager
from hub.gpus.queue import GPUQueue
from hub.hub_process.spawner.running import RunningContainers
from hub.hub_process.spawner.turns import StartTurns


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


PROCESS = HubProcess()
