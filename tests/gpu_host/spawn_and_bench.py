"""On a real GPU host: the project's GPU code assigns a GPU and starts a user's container with
it, which then reports what it sees and benchmarks it; the same benchmark runs on the host.

Run from the repository root on the GPU machine (see docs/development.md, "Tests on a GPU host"):

    bash .gpukit/start-docker.sh && PYTHONPATH=/tmp/site:. python3 tests/gpu_host/spawn_and_bench.py

No registry there, so the container runs the host's own Python and PyTorch (image
gpukit/hostroot:1 with the host's directories bound read-only) and the single-user image's
gpu-check script. Prints one JSON object.
"""
import asyncio
import json
import os
import subprocess
import sys
import time

import docker

from hub.gpus.claim import choose_style, device_request
from hub.gpus.inventory import discover, from_cdi
from hub.gpus.manager import GPUManager
from hub.gpus.model import NoGPUAvailable

GPU_CHECK = os.path.abspath("images/singleuser/gpu_check.py")
USER = "h100-user"
ROUNDS = 3


def host_bench() -> dict:
    out = subprocess.run([sys.executable, GPU_CHECK, "--json", "--bench"], capture_output=True, text=True)
    return json.loads(out.stdout)


def container_bench(client, image: str, binds: dict, request: dict, labels: dict) -> dict:
    """A user's container with exactly the device request the spawner would send."""
    c = client.containers.run(
        image, [sys.executable, "/tmp/gpu-check.py", "--json", "--bench"],
        detach=True, network_mode="host", user="1000:100", labels=labels,
        environment={"HOME": "/tmp", "PYTHONPATH": ""},
        volumes={**binds, GPU_CHECK: {"bind": "/tmp/gpu-check.py", "mode": "ro"}},
        device_requests=[docker.types.DeviceRequest(
            driver=request["Driver"], device_ids=request["DeviceIDs"],
            capabilities=request.get("Capabilities"))],
        cap_drop=["ALL"], security_opt=["no-new-privileges=true"],
    )
    try:
        c.wait(timeout=300)
        logs = c.logs(stdout=True, stderr=False).decode()
        info = json.loads(logs.strip().splitlines()[-1])
        info["device_requests"] = client.api.inspect_container(c.id)["HostConfig"]["DeviceRequests"]
        return info
    finally:
        c.remove(force=True)


async def main() -> dict:
    client = docker.from_env()

    async def call(method, *args, **kwargs):  # the spawner's async wrapper, in miniature
        return await asyncio.to_thread(getattr(client.api, method), *args, **kwargs)

    gpus, source = discover()
    style = choose_style("auto", client.info(), gpus, from_cdi() or [])
    manager = GPUManager(gpus, source, style, "/tmp/gpu-intent.json", "gpuhub")
    binds = json.load(open("/etc/gpukit-binds.json"))

    # Users one after another, each GPU held by a container the engine shows (labels only, as
    # the spawner's containers carry them): every user gets a GPU of their own until all are
    # held, and the next one is refused, whatever the number of GPUs.
    users = [USER, *(f"user{i}" for i in range(1, len(gpus)))]
    allocations, holders = [], []
    try:
        for name in users:
            async with manager.lock:
                await manager.reconcile(call)
                got = manager.allocator.allocate(name, since=time.time())
            allocations.append({"user": name, "uuid": got.uuid, "index": got.index})
            holders.append(client.containers.run(
                "gpukit/hostroot:1", ["sleep", "120"], detach=True, network_mode="none", volumes=binds,
                labels={"gpuhub.user": name, "gpuhub.server": "", "gpuhub.gpu.uuid": got.uuid}))
        async with manager.lock:
            await manager.reconcile(call)
            try:
                manager.allocator.allocate("one-too-many")
                refused = "ALLOCATED (wrong)"
            except NoGPUAvailable as exc:
                refused = str(exc)
    finally:
        for holder in holders:
            holder.remove(force=True)
    gpu = next(g for g in gpus if g.uuid == allocations[0]["uuid"])
    request = device_request(gpu.uuid, style)
    labels = {"gpuhub.user": USER, "gpuhub.server": "", "gpuhub.gpu.uuid": gpu.uuid}

    results = {"inventory_source": source, "style": style, "gpus": len(gpus), "assigned_uuid": gpu.uuid,
               "assigned_name": gpu.name, "allocations": allocations,
               "every_user_a_different_gpu": len({a["uuid"] for a in allocations}) == len(gpus),
               "one_too_many": refused, "rounds": []}
    for _ in range(ROUNDS):  # alternate, so drift of clocks/temperature hits both alike
        inside = container_bench(client, "gpukit/hostroot:1", binds, request, labels)
        host = host_bench()
        results["rounds"].append({"container": inside["bench"], "host": host["bench"]})
    results["container_sees"] = {k: inside[k] for k in ("device_count", "devices", "verdict", "device_requests")}
    results["host_sees_device_count"] = host["device_count"]
    best = {where: max(r[where]["matmul_tflops"] for r in results["rounds"]) for where in ("container", "host")}
    h2d = {where: max(r[where]["h2d_gib_per_s"] for r in results["rounds"]) for where in ("container", "host")}
    results["matmul_tflops_best"] = best
    results["matmul_container_vs_host"] = round(best["container"] / best["host"], 4)
    results["h2d_gib_per_s_best"] = h2d
    results["h2d_container_vs_host"] = round(h2d["container"] / h2d["host"], 4)
    uuids_inside = [str(d.get("uuid") or "") for d in inside["devices"]]
    results["container_sees_only_assigned"] = (
        inside["device_count"] == 1 and gpu.uuid.removeprefix("GPU-") in uuids_inside[0].removeprefix("GPU-"))
    return results


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main()), indent=1))
