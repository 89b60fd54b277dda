#!/bin/bash
# On a real GPU host (after .gpukit/start-docker.sh): a user's container (given the GPU by UUID
# through CDI, as the spawner does) runs bf16 matmuls for 30 s while the GPU console's data
# source samples NVML on the host. Prints the samples as JSON lines.
set -euo pipefail
export PYTHONPATH=/tmp/site:.
uuid=$(python3 -c 'import json; print(json.load(open("/etc/gpukit-gpus.json"))["gpus"][0]["uuid"])')
py=$(command -v python3)
python3 - "$uuid" "$py" <<'PY'
import json, sys, docker
uuid, py = sys.argv[1], sys.argv[2]
binds = json.load(open("/etc/gpukit-binds.json"))
code = ("import torch,time; a=torch.randn(8192,8192,device='cuda',dtype=torch.bfloat16); "
        "t=time.time()\nwhile time.time()-t<30: a@a\ntorch.cuda.synchronize()")
docker.from_env().containers.run("gpukit/hostroot:1", [py, "-c", code], detach=True, network_mode="none",
    name="console-usage-load", labels={"gpuhub.user": "h100-user", "gpuhub.gpu.uuid": uuid},
    volumes=binds, device_requests=[docker.types.DeviceRequest(driver="cdi", device_ids=[f"nvidia.com/gpu={uuid}"])])
PY
sleep 8
python3 -m hub.gpus.nvml --json --repeat 10 --interval 1
python3 - <<'PY'
import docker
c = docker.from_env().containers.get("console-usage-load")
print("load container exit:", c.wait(timeout=60)["StatusCode"]); c.remove()
PY
