#!/usr/bin/env python3
"""A bounded first look at CUDA's checkpoint API on a real GPU (each step timed and printed as it
happens, every wait bounded): a torch process holds N GB; gpu-park (images/singleuser/gpu_park.py)
parks it (lock, checkpoint) by its pid; nvidia-smi shows the GPU's memory; resume (restore,
unlock); the process checks its checksum. Prints one JSON line. Usage: park_quick.py [GB]."""
import json, os, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
gb = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
WORKER = r'''
import sys, torch, time
n = int(float(sys.argv[1]) * (1 << 30) // 4)
x = torch.arange(n, device="cuda", dtype=torch.int32)
torch.cuda.synchronize()
s = int(x.to(torch.int64).sum().item())
print("ready", s, flush=True)
sys.stdin.readline()  # resumed
print("after", int(x.to(torch.int64).sum().item()), flush=True)
'''
def used():
    return subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                          capture_output=True, text=True, timeout=20).stdout.strip()
def park(op, pid):
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, str(ROOT / "images/singleuser/gpu_park.py"), op, "--pid", str(pid)],
                       capture_output=True, text=True, timeout=120)
    return {"op": op, "s": round(time.monotonic() - t0, 2), "rc": r.returncode, "out": r.stdout[-600:], "err": r.stderr[-600:]}
out = {"gb": gb, "at_rest_mib": used()}
w = subprocess.Popen([sys.executable, "-c", WORKER, str(gb)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
t0 = time.monotonic()
line = w.stdout.readline().split()
out["load_s"], out["checksum"], out["loaded_mib"] = round(time.monotonic() - t0, 2), line[1], used()
print("loaded", out, flush=True, file=sys.stderr)
out["park"] = park("park", w.pid); print(out["park"], file=sys.stderr, flush=True)
out["parked_mib"] = used()
out["resume"] = park("resume", w.pid); print(out["resume"], file=sys.stderr, flush=True)
out["resumed_mib"] = used()
w.stdin.write("\n"); w.stdin.flush()
after = w.stdout.readline().split()
out["checksum_after"] = after[1] if len(after) > 1 else after
out["same"] = out["checksum_after"] == out["checksum"]
w.wait(timeout=60)
print(json.dumps(out))
