#!/usr/bin/env python3
"""Parking on a real GPU, without the hub: does CUDA's checkpoint API give a process's GPU memory
back and put it back intact, and how long does it take? (docs/gpus.md, "Parking".)

For each size (GB) given, on one GPU:
  1. a worker process ("user A's kernel") allocates that many GB of tensors with torch, computes
     a checksum of them (exact: int64 sums of the bits), keeps a random note (its other state),
     and runs a thread that does a tiny CUDA op every 20 ms and records when;
  2. this process parks it with gpu-park's own functions (images/singleuser/gpu_park.py: lock,
     checkpoint; the same user, as the hub runs it in the container), then stops it with SIGSTOP
     (what `docker pause` does to a container);
  3. the GPU's used memory (nvidia-smi, else NVML) is read until it is back at rest;
  4. a second process ("user B") allocates as much as A had and runs the bf16 matmul of
     tests/gpu_host/matmul.py, compared with the same run before A existed;
  5. SIGCONT, restore, unlock; A recomputes the checksum and shows its note; its op thread must
     have done nothing between park and resume.
Prints one JSON object (also written to --out): per size the park and resume times (lock,
checkpoint, restore, unlock), GPU memory loaded / parked / resumed, A's host memory while parked,
B's matmul against the baseline, and whether checksum, note and the frozen window held.

    python3 tests/gpu_host/park_proof.py --sizes 1,10            # needs torch and a GPU, no Docker
    python3 tests/gpu_host/park_proof.py --sizes 1,10,40 --device 0 --out $OUT/park.json

Sizes that do not fit (GPU memory free, host memory available) are skipped with the reason.
--fake runs the same steps without a GPU (bytes in host memory, gpu-park's driver stand-in, no
matmul): a check of this script itself (tests/unit/test_park.py runs it).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
GIB = 2**30
CHUNK = GIB  # A's tensors: one per GiB


def load_gpu_park():
    spec = importlib.util.spec_from_file_location("gpu_park", ROOT / "images/singleuser/gpu_park.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- user A: the worker ---------------------------------------------------------------------------

def worker(gb: float, device: int, fake: bool) -> None:
    """Allocate, checksum, tick; then answer "verify" and "exit" on stdin (one JSON line each)."""
    import secrets

    note = secrets.token_hex(8)
    t0 = time.monotonic()
    if fake:
        import hashlib
        blocks = [bytearray(os.urandom(int(gb * 2**20)))]  # fake: MiB of host memory per "GB"

        def checksum() -> str:
            return hashlib.sha256(b"".join(blocks)).hexdigest()

        def op() -> None:
            sum(blocks[0][:64])
    else:
        import torch
        torch.cuda.set_device(device)
        g = torch.Generator(device="cuda").manual_seed(1234)
        blocks, left = [], int(gb * GIB)
        while left > 0:
            n = min(CHUNK, left) // 4
            blocks.append(torch.randn(n, device="cuda", generator=g))
            left -= n * 4
        torch.cuda.synchronize()
        tiny = torch.ones(16, device="cuda")

        def checksum() -> str:
            total = 0
            for b in blocks:  # exact: integer sums of the float bits, 64 M at a time
                bits = b.view(torch.int32)
                for i in range(0, bits.numel(), 2**26):
                    total += int(bits[i:i + 2**26].to(torch.int64).sum().item())
            return str(total)

        def op() -> None:
            tiny.add_(1)
            torch.cuda.synchronize()
    first = checksum()
    alloc_s = round(time.monotonic() - t0, 3)
    ticks: list[float] = []

    def tick() -> None:
        while True:
            op()
            ticks.append(time.time())
            del ticks[:-100000]
            time.sleep(0.02)

    threading.Thread(target=tick, daemon=True).start()
    print(json.dumps({"pid": os.getpid(), "checksum": first, "note": note, "alloc_s": alloc_s}), flush=True)
    for line in sys.stdin:
        ask = json.loads(line)
        if ask["do"] == "verify":
            t = time.monotonic()
            again = checksum()
            between = [x for x in ticks if ask["from"] < x < ask["to"]]
            print(json.dumps({"checksum": again, "note": note, "verify_s": round(time.monotonic() - t, 3),
                              "ticks_while_parked": len(between), "ticks": len(ticks)}), flush=True)
        elif ask["do"] == "exit":
            return


# -- user B, the GPU's memory, the host's ---------------------------------------------------------

B_CODE = """
import json, sys, time
sys.path.insert(0, {here!r})
import torch, matmul
torch.cuda.set_device({device})
t = time.monotonic()
hold = torch.empty(int({gb} * 2**30), dtype=torch.uint8, device="cuda") if {gb} else None
torch.cuda.synchronize()
alloc_s = time.monotonic() - t
print(json.dumps({{"alloc_gb": {gb}, "alloc_s": round(alloc_s, 3), **matmul.bench({device})}}))
"""


def user_b(device: int, gb: float, fake: bool) -> dict:
    if fake:
        return {"alloc_gb": gb, "tflops": None, "note": "fake: no matmul"}
    out = subprocess.run([sys.executable, "-c", B_CODE.format(here=str(HERE), device=device, gb=gb)],
                         capture_output=True, text=True, timeout=600)
    if out.returncode:
        return {"alloc_gb": gb, "error": out.stderr.strip()[-800:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


class GPUMemory:
    """The GPU's used and total MiB: nvidia-smi, else NVML through ctypes."""

    def __init__(self, device: int, fake_state: dict | None = None):
        self.device, self.fake = device, fake_state
        self.uuid = self.name = None
        if fake_state is None:
            row = self._smi("uuid,name,memory.total,driver_version")
            self.uuid, self.name, self.total, self.driver = row[0], row[1], int(row[2]), row[3]
        else:
            self.uuid, self.name, self.total, self.driver = "GPU-fake", "fake", 81559, "fake"

    def _smi(self, fields: str) -> list[str]:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader,nounits",
                              "-i", str(self.device)], capture_output=True, text=True, check=True, timeout=30)
        return [v.strip() for v in out.stdout.strip().split(",")]

    def used(self) -> int:
        if self.fake is not None:
            return self.fake["used"]()
        return int(self._smi("memory.used")[0])


def host_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def rss(pid: int) -> int:
    """Resident host memory of a process, in MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    return 0


# -- one size -------------------------------------------------------------------------------------

def wait_for(predicate, timeout: float, step: float = 0.1) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return round(time.monotonic() - t0, 3)
        time.sleep(step)
    return None


def one_size(gb: float, args, gp, driver, memory: GPUMemory, rest: int, fake_pids: dict | None) -> dict:
    row: dict = {"gb": gb}
    free_mib = memory.total - memory.used()
    if gb * 1024 + 2048 > free_mib:
        return {**row, "skipped": f"needs {gb:g} GB + 2 GB free on the GPU, {free_mib} MiB free"}
    if not args.fake and gb * GIB * 1.2 > host_available():
        return {**row, "skipped": f"the checkpoint needs {gb:g} GB of host memory; "
                                  f"{host_available() / GIB:.1f} GB available"}
    a = subprocess.Popen([sys.executable, __file__, "--worker", str(gb), "--device", str(args.device),
                          *(["--fake"] if args.fake else [])], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, bufsize=1)
    try:
        ready = json.loads(a.stdout.readline())
        pid = ready["pid"]
        if fake_pids is not None:
            fake_pids[pid] = gb
        row["alloc_s"] = ready["alloc_s"]
        time.sleep(0.5)  # the op thread runs
        row["mem_loaded_mib"] = memory.used()
        row["host_rss_before_mib"] = rss(pid)

        t = time.monotonic()
        parked = gp.park(driver, [pid], args.lock_timeout_ms)
        row["park_s"] = round(time.monotonic() - t, 3)
        row["park"] = parked["processes"]
        if not parked["ok"]:
            return {**row, "error": f"park: {parked['error']}"}
        if args.freeze:
            os.kill(pid, signal.SIGSTOP)
        parked_at = time.time()
        row["to_rest_s"] = wait_for(lambda: memory.used() <= rest + args.rest_slack_mib, 30)
        row["mem_parked_mib"] = memory.used()
        row["host_rss_parked_mib"] = rss(pid)
        row["state_parked"] = gp.states(driver, [pid])["processes"][0]["state"]

        row["user_b"] = user_b(args.device, gb, args.fake)
        time.sleep(max(0.0, parked_at + args.hold_s - time.time()))  # a window long enough to judge

        resume_from = time.time()
        if args.freeze:
            os.kill(pid, signal.SIGCONT)
        t = time.monotonic()
        resumed = gp.resume(driver, [pid])
        row["resume_s"] = round(time.monotonic() - t, 3)
        row["resume"] = resumed["processes"]
        if not resumed["ok"]:
            return {**row, "error": f"resume: {resumed['error']}"}
        row["mem_resumed_mib"] = memory.used()
        a.stdin.write(json.dumps({"do": "verify", "from": parked_at + 0.1, "to": resume_from - 0.1}) + "\n")
        a.stdin.flush()
        verified = json.loads(a.stdout.readline())
        row.update(checksum_same=verified["checksum"] == ready["checksum"], note_same=verified["note"] == ready["note"],
                   ticks_while_parked=verified["ticks_while_parked"], verify_s=verified["verify_s"],
                   parked_for_s=round(resume_from - parked_at, 3))
        row["ok"] = bool(row["checksum_same"] and row["note_same"] and row["ticks_while_parked"] == 0
                         and row["to_rest_s"] is not None)
        a.stdin.write(json.dumps({"do": "exit"}) + "\n")
        a.stdin.flush()
        a.wait(timeout=60)
        return row
    finally:
        if a.poll() is None:  # a failure on the way: a stopped worker is woken to be killed
            os.kill(a.pid, signal.SIGCONT)
            a.kill()
            a.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,10", help="GB of tensors, comma-separated (e.g. 1,10,40)")
    parser.add_argument("--device", type=int, default=0)
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--no-freeze", dest="freeze", action="store_false", help="no SIGSTOP while parked")
    parser.add_argument("--lock-timeout-ms", type=int, default=10000)
    parser.add_argument("--hold-s", type=float, default=2.0, help="parked at least this long")
    parser.add_argument("--rest-slack-mib", type=int, default=256, help="at rest: at most this over the first reading")
    parser.add_argument("--fake", action="store_true", help="no GPU: checks this script (see the doc)")
    parser.add_argument("--worker", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker(args.worker, args.device, args.fake)
        return 0
    gp = load_gpu_park()
    fake_pids: dict | None = None
    if args.fake:
        state = Path(tempfile.mkdtemp()) / "states.json"
        driver = gp.FakeDriver(str(state), fail="")
        fake_pids = {}

        def used() -> int:  # 1024 MiB a "GB" while a worker is not checkpointed
            states = json.loads(state.read_text()) if state.exists() else {}
            return 300 + sum(int(gb * 1024) for pid, gb in fake_pids.items()
                             if states.get(str(pid), 0) != gp.CHECKPOINTED and os.path.exists(f"/proc/{pid}"))
        memory = GPUMemory(args.device, {"used": used})
    else:
        driver = gp.Driver()
        memory = GPUMemory(args.device)
    rest = memory.used()
    report = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "host": platform.node(),
              "gpu": {"index": args.device, "uuid": memory.uuid, "name": memory.name, "memory_total_mib": memory.total,
                      "driver": memory.driver, "cuda_driver_api": driver.version},
              "mode": "fake" if args.fake else "cuda", "freeze": args.freeze, "mem_rest_mib": rest,
              "baseline": user_b(args.device, 0, args.fake), "sizes": []}
    if not args.fake:
        import torch
        report["torch"] = torch.__version__
    for gb in [float(s) for s in args.sizes.split(",") if s.strip()]:
        print(f"[park_proof] {gb:g} GB ...", file=sys.stderr, flush=True)
        report["sizes"].append(one_size(gb, args, gp, driver, memory, rest, fake_pids))
        row = report["sizes"][-1]
        b = row.get("user_b") or {}
        if b.get("tflops") and report["baseline"].get("tflops"):
            b["vs_baseline"] = round(b["tflops"] / report["baseline"]["tflops"], 4)
    report["ok"] = all(r.get("ok") for r in report["sizes"] if "skipped" not in r) and \
        any("skipped" not in r for r in report["sizes"])
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
