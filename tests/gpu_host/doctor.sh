#!/bin/bash
# On a real GPU host (after .gpukit/start-docker.sh), with the host's python3 (docker and
# nvidia-ml-py importable): 1) `doctor --json`, the host-health checks for real (engine, toolkit
# CVEs, driver vs CUDA 13.0, each GPU's NVML health); 2) the /proc/driver/nvidia/gpus mask: a
# container given GPU 0 by CDI, with the spawner's MaskedPaths, lists that directory (expected:
# empty) and runs torch on its GPU (expected: True, 1 device). Prints JSON lines.
set -uo pipefail
export PYTHONPATH=/tmp/site:.
python3 -m hub.gpus.doctor --json; echo "{\"doctor_exit\": $?}"
uuid=$(python3 -c 'import json; print(json.load(open("/etc/gpukit-gpus.json"))["gpus"][0]["uuid"])')
py=$(command -v python3)
python3 - "$uuid" "$py" <<'PY'
import json, sys, docker
from hub.hub_process.spawner.hardening import masked_paths
uuid, py = sys.argv[1], sys.argv[2]
binds = json.load(open("/etc/gpukit-binds.json"))
code = ("import os, json, torch; d='/proc/driver/nvidia/gpus'; "
        "print(json.dumps({'proc_gpus': sorted(os.listdir(d)) if os.path.isdir(d) else None, "
        "'cuda': torch.cuda.is_available(), 'devices': torch.cuda.device_count()}))")
client = docker.from_env()
for masked in (False, True):
    host = client.api.create_host_config(binds=binds, network_mode="none",
        device_requests=[docker.types.DeviceRequest(driver="cdi", device_ids=[f"nvidia.com/gpu={uuid}"])])
    if masked:
        host["MaskedPaths"] = masked_paths()
    c = client.api.create_container("gpukit/hostroot:1", [py, "-c", code], host_config=host)
    client.api.start(c)
    client.api.wait(c, timeout=300)
    print(json.dumps({"masked": masked, "out": client.api.logs(c).decode().strip()[-2000:]}))
    client.api.remove_container(c, force=True)
PY
