"""On a real GPU host (after .gpukit/start-docker.sh, PYTHONPATH=/tmp/site:.): the reclaim service's
own code on real GPUs. Two containers get a GPU each by UUID through CDI, labelled as the spawner
labels them: one runs bf16 matmuls, one holds 20 GiB of GPU memory and does nothing. The service's
Reclaimer (NVML readings, holders from the engine's containers, the policy with T and the grace
shortened, a hub stand-in that stops a container as the hub would) runs a round every second.
Prints one JSON object: each holder's readings and the decisions, with their times."""
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import docker

from hub.common.audit import AuditLog
from hub.common.engine import DockerCaller
from hub.gpus.activity import ActivitySampler, ActivityStore
from hub.gpus.nvml import NVMLReader
from hub.gpus.reclaim_policy import ReclaimPolicy
from hub.service_process.reclaim.service import Reclaimer
from hub.common.stop_reasons import ReasonFile

T, GRACE, SECONDS = 15, 10, 45
gpus = json.load(open("/etc/gpukit-gpus.json"))["gpus"]
binds = json.load(open("/etc/gpukit-binds.json"))
py = sys.executable
client = docker.from_env()
work = Path(tempfile.mkdtemp())
LOADS = {
    "busy": "import torch,time; a=torch.randn(8192,8192,device='cuda',dtype=torch.bfloat16)\n"
            f"t=time.time()\nwhile time.time()-t<{SECONDS + 20}:\n  a@a; torch.cuda.synchronize()",
    "idle": "import torch,time; x=torch.empty(20*2**30,dtype=torch.uint8,device='cuda'); torch.cuda.synchronize()\n"
            f"time.sleep({SECONDS + 20})",
}
containers = {}
for (user, code), gpu in zip(LOADS.items(), gpus):
    containers[user] = client.containers.run(
        "gpukit/hostroot:1", [py, "-c", code], detach=True, network_mode="none", name=f"reclaim-{user}",
        labels={"gpuhub.user": user, "gpuhub.server": "", "gpuhub.instance": "h200", "gpuhub.gpu.uuid": gpu["uuid"],
                "gpuhub.gpu.since": f"{time.time():.0f}"}, volumes=binds,
        device_requests=[docker.types.DeviceRequest(driver="cdi", device_ids=[f"nvidia.com/gpu={gpu['uuid']}"])])


class HubStandIn:
    stopped = []

    async def user(self, name):
        return {"name": name, "groups": []}

    async def stop_server(self, user, server):
        self.stopped.append((user, round(time.monotonic() - t0, 1)))
        await asyncio.to_thread(lambda: containers[user].remove(force=True))
        return 204, ""


async def main():
    global t0
    sampler = ActivitySampler(NVMLReader(), interval=1, store=ActivityStore(work / "a.sqlite"))
    r = Reclaimer(ReclaimPolicy(threshold_pct=5, timeout=T, grace=GRACE), sampler, DockerCaller(), HubStandIn(),
                  AuditLog(work / "audit.jsonl"), ReasonFile(work / "reasons.json"), work / "state.json",
                  instance="h200")
    await asyncio.sleep(8)  # the loads start (CUDA context, allocation)
    t0 = time.monotonic()
    decisions, readings = [], {}
    while time.monotonic() - t0 < SECONDS:
        for d in await r.round():
            decisions.append({"t": round(time.monotonic() - t0, 1), "action": d.action, "user": d.key[0], "gpu": d.key[2]})
        for h in r.holdings():
            readings.setdefault(h["user"], []).append((round(time.monotonic() - t0), h["gpu"]["utilization_pct"],
                                                       h["gpu"]["memory_used_mib"], h["idle_seconds"]))
        await asyncio.sleep(1)
    return {"gpus": [(g["index"], g["uuid"], g["name"]) for g in gpus], "timeout_s": T, "grace_s": GRACE,
            "holders_seen": {u: rows[0:1] + rows[-1:] for u, rows in readings.items()},
            "readings": readings, "decisions": decisions, "stopped": HubStandIn.stopped,
            "reason": ReasonFile(work / "reasons.json").get(("idle", "")),
            "audit": [e["action"] for e in AuditLog(work / "audit.jsonl").tail()]}


try:
    print(json.dumps(asyncio.run(main())))
finally:
    for c in containers.values():
        try:
            c.remove(force=True)
        except docker.errors.NotFound:
            pass
