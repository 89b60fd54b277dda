"""What the parking tests share (test_park_hub.py, test_park_browser.py): the stack's settings
(fake GPU readings, gpu-reclaim parking idle servers at once, the GPU line), a "CUDA process"
for gpu-park's driver stand-in to find, and the looks at a parked container from this host."""
import json
import time

import requests

from consoleclient import wait_for

T, GRACE, INTERVAL = 4, 4, 1
PARKED = "/srv/jupyterhub/state/gpu-parked.json"
SETTINGS = {"COMPOSE_FILE": "docker-compose.yml:tests/e2e/fake_gpu/compose.yml", "GPU_IDLE_TIMEOUT": str(T),
            "GPU_IDLE_GRACE": str(GRACE), "GPU_SAMPLE_INTERVAL": str(INTERVAL), "GPU_IDLE_ACTION": "park",
            "GPU_WHEN_FULL": "queue"}
# A "CUDA process" in the user's container: a GPU's device node open (gpu-park finds it so), a
# random state, a counter in a file.
KERNEL = ("import glob, os, secrets, time\n"
          "gpu = open(sorted(glob.glob('/dev/nvidia[0-9]*'))[0], 'rb')\n"
          "state, n = secrets.token_hex(8), 0\n"
          "while True:\n"
          "    n += 1\n"
          "    open('/tmp/pk.tmp', 'w').write(f'{os.getpid()} {state} {n}')\n"
          "    os.replace('/tmp/pk.tmp', '/tmp/pk')\n"
          "    time.sleep(0.05)\n")


def parked_records(stack) -> dict:
    out = stack.docker("exec", f"{stack.prefix}-hub-1", "cat", PARKED, check=False)
    return {k: v for k, v in json.loads(out.stdout or "{}").items() if not k.startswith("_")}


def status(stack, container: str) -> str:
    return stack.inspect(container)["State"]["Status"]


def ticks(stack, container: str) -> tuple[str, str, int]:
    """The process's pid, state and count, read through /proc/<its init>/root from this host
    (docker exec refuses a paused container)."""
    pid = stack.inspect(container)["State"]["Pid"]
    out = open(f"/proc/{pid}/root/tmp/pk").read().split()
    return out[0], out[1], int(out[2])


def wait_parked(stack, container: str) -> float:
    """Parked, and its proxy route gone: the hub drops it when it sees the record (within
    hub/hub_process/parking.py WATCH_S; a request sent before that waits for the resume, documented
    in docs/gpus.md), so the checks that follow see the hub's answers, not that window."""
    t0 = time.monotonic()
    wait_for(lambda: status(stack, container) == "paused" and parked_records(stack), timeout=T + GRACE + 40,
             what="the idle server parked")
    user = stack.inspect(container)["Config"]["Labels"]["gpuhub.user"]

    def hub_answers() -> bool:  # the paused server would not answer at all
        try:
            requests.get(f"{stack.url}/user/{user}/api/status", timeout=1, allow_redirects=False)
            return True
        except requests.RequestException:
            return False
    wait_for(hub_answers, timeout=15, what="the parked server's route removed")
    return time.monotonic() - t0


def start_cuda_process(stack, container: str) -> tuple[str, str, int]:
    """KERNEL in the user's container, as its user; its first tick."""
    stack.docker("exec", "-d", "-u", "1000:100", container, "python3", "-c", KERNEL)

    def ticking():
        try:
            return ticks(stack, container)
        except (OSError, IndexError):
            return None
    return wait_for(ticking, timeout=30, what="the CUDA process ticking")
