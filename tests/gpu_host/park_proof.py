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

--container: user A runs in a container instead (the GPU kit's gpukit/hostroot:1 with the host's
Python and torch bound in, as tests/gpu_host/reclaim_real.py does; user 1000:100 as the hub's
servers; the GPU by UUID through CDI) and is parked and resumed by the hub's own state machine,
hub/common/park.py's Parker: gpu-park by `docker exec` as the container's user, `docker pause`,
the GPU's memory back at rest (this script's reading), the memory limit raised for the
checkpoint. With --from-host the checkpoint step runs on the host instead, on the container's
processes' host pids (which of the two the driver accepts is one thing this run finds out).
After .gpukit/start-docker.sh on the GPU machine:

    PYTHONPATH=/tmp/site:. python3 tests/gpu_host/park_proof.py --container --sizes 1,10,40
    PYTHONPATH=/tmp/site:. python3 tests/gpu_host/park_proof.py --container --from-host --sizes 1,10

--fake runs the same steps without a GPU (bytes in host memory, gpu-park's driver stand-in, no
matmul): a check of this script itself (tests/unit/test_park_core.py runs it; with --container
on the fake GPUs: --image gpuhub/pytorch-notebook:test --container-python /opt/venv/bin/python3
--uuid GPU-fa4e0000-0000-4000-8000-000000000003).
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
for _p in (Path("/tmp/site"), ROOT):  # --container: the GPU kit's docker package, then hub/
    if _p.is_dir() and str(_p) not in sys.path:
        sys.path.insert(0, str(_p))
GIB = 2**30
CHUNK = GIB  # A's tensors: one per GiB


def load_gpu_park():
    spec = importlib.util.spec_from_file_location("gpu_park", ROOT / "images/singleuser/gpu_park.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- user A: the worker ---------------------------------------------------------------------------

def worker(gb: float, device: int, fake: bool, io: str | None = None) -> None:
    """Allocate, checksum, tick; then answer "verify" and "exit" (one JSON line each on stdin and
    stdout, or with --io as files in that folder: ready.json, ask.json -> answer.json)."""
    import glob
    import secrets

    note = secrets.token_hex(8)
    t0 = time.monotonic()
    if fake:
        import hashlib
        # A CUDA process has its GPU's device node open; gpu-park finds processes by that.
        nodes = [open(n, "rb") for n in sorted(glob.glob("/dev/nvidia[0-9]*"))[:1]]
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
    if not fake:
        torch.cuda.empty_cache()  # the checksum's temporaries: the GPU then holds A's tensors alone
    alloc_s = round(time.monotonic() - t0, 3)
    ticks: list[float] = []

    def tick() -> None:
        while True:
            op()
            ticks.append(time.time())
            del ticks[:-100000]
            time.sleep(0.02)

    def answer(ask: dict) -> dict:
        t = time.monotonic()
        again = checksum()
        between = [x for x in ticks if ask["from"] < x < ask["to"]]
        return {"checksum": again, "note": note, "verify_s": round(time.monotonic() - t, 3),
                "ticks_while_parked": len(between), "ticks": len(ticks)}

    threading.Thread(target=tick, daemon=True).start()
    ready = {"pid": os.getpid(), "checksum": first, "note": note, "alloc_s": alloc_s}
    if io is None:
        print(json.dumps(ready), flush=True)
        for line in sys.stdin:
            ask = json.loads(line)
            if ask["do"] == "exit":
                return
            print(json.dumps(answer(ask)), flush=True)
        return
    folder = Path(io)
    _write(folder / "ready.json", ready)
    while True:
        ask_file = folder / "ask.json"
        if ask_file.exists():
            ask = json.loads(ask_file.read_text())
            ask_file.unlink()
            if ask["do"] == "exit":
                return
            _write(folder / "answer.json", answer(ask))
        time.sleep(0.05)


def _write(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _read_when(path: Path, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            data = json.loads(path.read_text())
            path.unlink()
            return data
        time.sleep(0.05)
    raise TimeoutError(f"no {path.name} from the worker in {timeout:g} s")


class ProcessA:
    """User A as a process of this host, parked with gpu-park's functions by this process (the
    same user), frozen with SIGSTOP as docker pause would."""

    def __init__(self, args, gp, driver, memory, rest: int, fake_pids: dict | None):
        self.args, self.gp, self.driver, self.fake_pids = args, gp, driver, fake_pids
        self.memory, self.rest = memory, rest

    def start(self, gb: float) -> dict:
        self.p = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", str(gb), "--device", str(self.args.device),
                                   *(["--fake"] if self.args.fake else [])], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, bufsize=1)
        ready = json.loads(self.p.stdout.readline())
        self.pid = ready["pid"]
        if self.fake_pids is not None:
            self.fake_pids[("process", self.pid)] = (gb, None, lambda p=self.p: p.poll() is None)
        return ready

    def host_rss(self) -> int:
        return rss(self.pid)

    def park(self) -> dict:
        t = time.monotonic()
        parked = self.gp.park(self.driver, [self.pid], self.args.lock_timeout_ms)
        out = {"ok": parked["ok"], "error": parked["error"], "processes": parked["processes"],
               "park_s": round(time.monotonic() - t, 3)}
        if parked["ok"]:
            # The state is read BEFORE the freeze: the driver's calls are served by a thread of
            # the target, so asking about a stopped process never returns (the hang of this
            # script's first run on the H100, at its 1 GB step; gpu-park now refuses instead).
            out["state_parked"] = self.gp.states(self.driver, [self.pid])["processes"][0]["state"]
            if self.args.freeze:
                os.kill(self.pid, signal.SIGSTOP)
            out["to_rest_s"] = wait_for(lambda: self.memory.used() <= self.rest + self.args.rest_slack_mib, 30)
        return out

    def resume(self) -> dict:
        if self.args.freeze:
            os.kill(self.pid, signal.SIGCONT)
        t = time.monotonic()
        resumed = self.gp.resume(self.driver, [self.pid])
        return {"ok": resumed["ok"], "error": resumed["error"], "processes": resumed["processes"],
                "resume_s": round(time.monotonic() - t, 3)}

    def ask(self, ask: dict) -> dict | None:
        self.p.stdin.write(json.dumps(ask) + "\n")
        self.p.stdin.flush()
        return None if ask["do"] == "exit" else json.loads(self.p.stdout.readline())

    def close(self) -> None:
        if self.p.poll() is None:
            try:
                self.p.wait(timeout=60)
            except subprocess.TimeoutExpired:  # stuck: a stopped worker is woken to be killed
                os.kill(self.p.pid, signal.SIGCONT)
                self.p.kill()
                self.p.wait()


class HostCheckpointer:
    """--from-host: the checkpoint step from the host instead of inside the container (NVIDIA's
    cuda-checkpoint is mostly used that way; one report has it refuse inside a runc container,
    NVIDIA/cuda-checkpoint#37): the container's CUDA processes by their host pids (its cgroup,
    a GPU device node open), parked with gpu-park's functions by this process."""

    def __init__(self, args, fake_states: Path):
        self.gp, self.args = load_gpu_park(), args
        self.driver = self.gp.FakeDriver(str(fake_states), fail="") if args.fake else self.gp.Driver()

    def pids(self, container: dict) -> list[int]:
        out = []
        for p in self.gp.cuda_processes(uid=os.stat(f"/proc/{container['State']['Pid']}").st_uid,
                                        exclude=os.getpid()):
            try:
                cgroup = Path(f"/proc/{p['pid']}/cgroup").read_text()
            except OSError:
                continue
            if container["Id"] in cgroup:
                out.append(p["pid"])
        return out

    async def park(self, container: dict) -> dict:
        import asyncio
        pids = self.pids(container)
        answer = await asyncio.to_thread(self.gp.park, self.driver, pids, self.args.lock_timeout_ms)
        return {**answer, "pids": pids, "from": "host"}

    async def resume(self, container: dict) -> dict:
        import asyncio
        pids = self.pids(container)
        answer = await asyncio.to_thread(self.gp.resume, self.driver, pids)
        return {**answer, "pids": pids, "from": "host"}


def _alive(container) -> bool:
    try:
        container.reload()
    except Exception:  # noqa: BLE001 - removed
        return False
    return container.status in ("running", "paused")


class ContainerA:
    """User A as a container given the GPU by UUID through CDI and labelled as the spawner labels
    it, parked and resumed by the hub's own state machine (hub/common/park.py: gpu-park by
    docker exec as the container's user, docker pause, the GPU's memory back at rest, the memory
    limit raised for the checkpoint), with this script's GPU memory reading as its reader."""

    def __init__(self, args, memory, rest: int, python: str):
        import docker

        from hub.common.engine import DockerCaller, engine_client
        from hub.gpus.parked import ParkedFile
        from hub.common.park import ExecCheckpointer, ParkSettings, Parker

        self.args, self.memory, self.python = args, memory, python
        self.client = docker.from_env()
        self.work = Path(tempfile.mkdtemp(prefix="park-proof-"))
        os.chmod(self.work, 0o777)
        caller = DockerCaller()
        checkpointer = HostCheckpointer(args, self.work / "host-states.json") if args.from_host else \
            ExecCheckpointer(DockerCaller(engine_client(timeout=900)),  # a whole GPU's checkpoint in one exec
                             command=(python, str(ROOT / "images/singleuser/gpu_park.py")),
                             fake=args.fake, timeout_ms=args.lock_timeout_ms)
        self.checkpointer = checkpointer
        self.parker = Parker(
            caller, checkpointer,
            ParkedFile(self.work / "gpu-parked.json"), lambda uuid: memory.used(), self._stop,
            ParkSettings(host_reserve=args.host_reserve_gb * GIB, rest_mib=rest + args.rest_slack_mib, settle=30))
        self.container = None
        self.fake_pids: dict | None = None  # --fake: where the stand-in's states are (fake_used)

    async def _stop(self, user: str, server: str) -> None:
        self.container.stop(timeout=5)

    def binds(self) -> dict:
        binds = {}
        if Path("/etc/gpukit-binds.json").is_file():  # the GPU machine's kit: the host's Python and torch
            binds = json.loads(Path("/etc/gpukit-binds.json").read_text())
        for path, mode in ((str(ROOT), "ro"), (str(self.work), "rw")):
            binds[path] = {"bind": path, "mode": mode}
        return binds

    def start(self, gb: float) -> dict:
        import docker

        folder = self.work / f"{gb:g}"
        folder.mkdir()
        os.chmod(folder, 0o777)
        env = {"PYTHONUNBUFFERED": "1", "GPU_PARK_FAKE_STATE": str(folder / "states.json")}
        self.container = self.client.containers.run(
            self.args.image, [self.python, str(Path(__file__).resolve()), "--worker", str(gb), "--device", "0", "--io", str(folder),
                              *(["--fake"] if self.args.fake else [])],
            detach=True, network_mode="none", user=self.args.container_user, environment=env, volumes=self.binds(),
            mem_limit=f"{int(gb + 8)}g", name=f"park-proof-{os.getpid()}-{gb:g}",
            labels={"gpuhub.user": "park-proof-a", "gpuhub.server": "",
                    "gpuhub.instance": getattr(self.args, "instance", "park-proof"),
                    "gpuhub.gpu.uuid": self.memory.uuid, "gpuhub.gpu.since": f"{time.time():.0f}"},
            device_requests=[docker.types.DeviceRequest(driver="cdi",
                                                        device_ids=[f"nvidia.com/gpu={self.memory.uuid}"])])
        self.folder = folder
        try:
            ready = _read_when(folder / "ready.json", 600)
        except TimeoutError:
            raise RuntimeError(f"user A's container did not start: {self.container.logs()[-2000:]!r}") from None
        if self.fake_pids is not None:  # where the stand-in keeps this worker's state, under which pid
            self.container.reload()
            pid, states = (self.checkpointer.pids(self.container.attrs)[0], self.work / "host-states.json") \
                if self.args.from_host else (ready["pid"], folder / "states.json")
            self.fake_pids[(self.container.id, pid)] = (gb, str(states), lambda c=self.container: _alive(c))
        return ready

    def host_rss(self) -> int:
        stats = self.client.api.stats(self.container.id, stream=False, one_shot=True)
        return int((stats.get("memory_stats") or {}).get("usage") or 0) // 2**20

    def park(self) -> dict:
        import asyncio

        out = asyncio.run(self.parker.park("park-proof-a", "", self.memory.uuid, self.container.id))
        self.container.reload()
        return {"ok": out.action == "parked", "error": None if out.action == "parked" else out.detail,
                "outcome": out.action, "detail": out.detail, "timings": out.timings,
                "processes": (out.tool or {}).get("processes"), "park_s": out.timings.get("park_s"),
                "to_rest_s": out.timings.get("rest_s"), "container_status": self.container.status,
                "mem_limit_parked": self.container.attrs["HostConfig"]["Memory"]}

    def resume(self) -> dict:
        import asyncio

        out = asyncio.run(self.parker.resume("park-proof-a", ""))
        self.container.reload()
        return {"ok": out.action == "resumed", "error": None if out.action == "resumed" else out.detail,
                "outcome": out.action, "processes": (out.tool or {}).get("processes"),
                "resume_s": out.timings.get("resume_s"), "container_status": self.container.status,
                "mem_limit_resumed": self.container.attrs["HostConfig"]["Memory"]}

    def ask(self, ask: dict) -> dict | None:
        _write(self.folder / "ask.json", ask)
        return None if ask["do"] == "exit" else _read_when(self.folder / "answer.json", 600)

    def close(self) -> None:
        if self.container is not None:
            try:
                self.container.remove(force=True)
            except Exception:  # noqa: BLE001 - gone already
                pass


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
                         capture_output=True, text=True, timeout=300)
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


def one_size(gb: float, args, a, memory: GPUMemory) -> dict:
    row: dict = {"gb": gb}
    free_mib = memory.total - memory.used()
    if gb * 1024 + 2048 > free_mib:
        return {**row, "skipped": f"needs {gb:g} GB + 2 GB free on the GPU, {free_mib} MiB free"}
    if not args.fake and gb * GIB * 1.2 > host_available():
        return {**row, "skipped": f"the checkpoint needs {gb:g} GB of host memory; "
                                  f"{host_available() / GIB:.1f} GB available"}
    try:
        ready = a.start(gb)
        row["alloc_s"] = ready["alloc_s"]
        time.sleep(0.5)  # the op thread runs
        row["mem_loaded_mib"] = memory.used()
        row["host_rss_before_mib"] = a.host_rss()
        parked = row["park"] = a.park()
        if not parked["ok"]:
            return {**row, "error": f"park: {parked['error']}"}
        parked_at = time.time()
        row["mem_parked_mib"] = memory.used()
        row["host_rss_parked_mib"] = a.host_rss()

        row["user_b"] = user_b(args.device, gb, args.fake)
        time.sleep(max(0.0, parked_at + args.hold_s - time.time()))  # a window long enough to judge

        resume_from = time.time()
        resumed = row["resume"] = a.resume()
        if not resumed["ok"]:
            return {**row, "error": f"resume: {resumed['error']}"}
        row["mem_resumed_mib"] = memory.used()
        verified = a.ask({"do": "verify", "from": parked_at + 0.1, "to": resume_from - 0.1})
        row.update(checksum_same=verified["checksum"] == ready["checksum"], note_same=verified["note"] == ready["note"],
                   ticks_while_parked=verified["ticks_while_parked"], verify_s=verified["verify_s"],
                   parked_for_s=round(resume_from - parked_at, 3))
        row["ok"] = bool(row["checksum_same"] and row["note_same"] and row["ticks_while_parked"] == 0
                         and parked.get("to_rest_s") is not None)
        a.ask({"do": "exit"})
        return row
    except Exception as exc:  # noqa: BLE001 - the report says what broke, the other sizes still run
        return {**row, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        a.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,10", help="GB of tensors, comma-separated (e.g. 1,10,40)")
    parser.add_argument("--device", type=int, default=0)
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--no-freeze", dest="freeze", action="store_false", help="no SIGSTOP while parked")
    parser.add_argument("--lock-timeout-ms", type=int, default=10000)
    parser.add_argument("--deadline-s", type=float, default=300.0,
                        help="one driver call at most this long (gpu-park's bound), then the size fails")
    parser.add_argument("--hold-s", type=float, default=2.0, help="parked at least this long")
    parser.add_argument("--rest-slack-mib", type=int, default=256, help="at rest: at most this over the first reading")
    parser.add_argument("--fake", action="store_true", help="no GPU: checks this script (see the doc)")
    parser.add_argument("--container", action="store_true",
                        help="user A in a container, parked by the hub's state machine (needs Docker)")
    parser.add_argument("--image", default="gpukit/hostroot:1", help="--container: A's image")
    parser.add_argument("--container-user", default="1000:100", help="--container: A's user (the hub's: 1000:100)")
    parser.add_argument("--container-python", default=sys.executable, help="--container: the Python in A's image")
    parser.add_argument("--host-reserve-gb", type=float, default=8.0, help="--container: host memory kept free")
    parser.add_argument("--from-host", action="store_true",
                        help="--container: the checkpoint step from the host (host pids), not by docker exec")
    parser.add_argument("--uuid", help="--fake --container: the (fake) GPU to give A through CDI")
    parser.add_argument("--worker", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--io", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker(args.worker, args.device, args.fake, args.io)
        return 0
    gp = load_gpu_park()
    fake_pids: dict | None = None
    if args.fake:
        state = Path(tempfile.mkdtemp()) / "states.json"
        driver = gp.FakeDriver(str(state), fail="")
        fake_pids = {}
        memory = GPUMemory(args.device, {"used": lambda: fake_used(gp, state, fake_pids, args)})
        memory.uuid = args.uuid or memory.uuid
    else:
        driver = gp.Driver(deadline=args.deadline_s)
        memory = GPUMemory(args.device)
    rest = memory.used()
    report = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "host": platform.node(),
              "gpu": {"index": args.device, "uuid": memory.uuid, "name": memory.name, "memory_total_mib": memory.total,
                      "driver": memory.driver, "cuda_driver_api": driver.version},
              "mode": "fake" if args.fake else "cuda", "a": "container" if args.container else "process",
              "freeze": args.freeze or args.container, "mem_rest_mib": rest,
              "baseline": user_b(args.device, 0, args.fake), "sizes": []}
    if args.container:
        report["container"] = {"image": args.image, "user": args.container_user, "python": args.container_python,
                               "checkpoint_step": "host" if args.from_host else "docker exec"}
    if not args.fake:
        import torch
        report["torch"] = torch.__version__
    for gb in [float(s) for s in args.sizes.split(",") if s.strip()]:
        print(f"[park_proof] {gb:g} GB ...", file=sys.stderr, flush=True)
        a = ContainerA(args, memory, rest, args.container_python) if args.container \
            else ProcessA(args, gp, driver, memory, rest, fake_pids)
        if args.container and fake_pids is not None:
            a.fake_pids = fake_pids
        report["sizes"].append(one_size(gb, args, a, memory))
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


def fake_used(gp, state: Path, fake_pids: dict, args) -> int:
    """--fake: the GPU's used MiB, 1024 a "GB" for each worker not checkpointed (its stand-in's
    state file: this process's, or in --container mode the one in the worker's folder)."""
    used = 300
    for key, (gb, states_file, alive) in list(fake_pids.items()):
        path = Path(states_file) if states_file else state
        states = json.loads(path.read_text()) if path.exists() else {}
        if alive() and states.get(str(key[1]), 0) != gp.CHECKPOINTED:
            used += int(gb * 1024)
    return used


if __name__ == "__main__":
    sys.exit(main())
