"""Parking (preview): the in-container tool gpu-park (its argument structures, how it finds CUDA
processes, its driver stand-in's states, all-or-none parking), the parked records and the GPU
they free (allocator), the memory plan, and the state machine against a stand-in engine."""
import asyncio
import ctypes
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from docker.errors import NotFound

from hub.common.audit import AuditLog
from hub.gpus.claim import device_request, holders_from_containers
from hub.gpus.manager import GPUManager
from hub.gpus.model import GPU
from hub.gpus.parked import Parked, ParkedFile, is_paused, parked_ids
from hub.common.park import MIB, ParkSettings, Parker, plan_memory

TOOL_PATH = Path(__file__).resolve().parents[2] / "images/singleuser/gpu_park.py"
spec = importlib.util.spec_from_file_location("gpu_park", TOOL_PATH)
gpu_park = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_park)
GIB = 2**30


# -- gpu-park, the in-container tool ---------------------------------------------------------------

def test_argument_structures_match_cuda_h():
    """cuda.h (CUDA 12.8/13.0): every argument structure is 64 bytes; the restore arguments'
    gpuPairs pointer, then its count, then reserved bytes up to a final 64-bit word."""
    for struct in (gpu_park.LockArgs, gpu_park.CheckpointArgs, gpu_park.RestoreArgs, gpu_park.UnlockArgs):
        assert ctypes.sizeof(struct) == 64, struct.__name__
    assert gpu_park.LockArgs.timeoutMs.offset == 0 and gpu_park.LockArgs.reserved1.offset == 8
    assert gpu_park.RestoreArgs.gpuPairs.offset == 0 and gpu_park.RestoreArgs.gpuPairsCount.offset == 8
    assert gpu_park.RestoreArgs.reserved1.offset == 56
    assert ctypes.sizeof(gpu_park.GpuPair) == 32 and gpu_park.GpuPair.newUuid.offset == 16


def test_uuid_bytes():
    assert gpu_park.uuid_bytes("GPU-fa4e0000-0000-4000-8000-000000000001") == bytes.fromhex(
        "fa4e0000000040008000000000000001")
    with pytest.raises(ValueError, match="not a GPU UUID"):
        gpu_park.uuid_bytes("GPU-1")


def fake_proc(tmp_path, processes):
    """A /proc tree: pid -> (its open files, its command line)."""
    for pid, (files, cmd) in processes.items():
        fd = tmp_path / str(pid) / "fd"
        fd.mkdir(parents=True)
        (tmp_path / str(pid) / "cmdline").write_bytes(cmd.replace(" ", "\0").encode() + b"\0")
        for i, target in enumerate(files):
            os.symlink(target, fd / str(i))
    (tmp_path / "self").mkdir()  # not a pid
    return str(tmp_path)


def test_cuda_processes_are_those_with_a_gpu_open(tmp_path):
    proc = fake_proc(tmp_path, {
        10: (["/dev/null", "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia0"], "python -m ipykernel_launcher"),
        11: (["/dev/nvidiactl"], "nvidia-smi"),  # the control node only: no GPU context
        12: (["/dev/nvidia3", "/dev/nvidia3"], "python train.py"),
        13: (["/dev/nvidia0"], "gpu-park park"),  # the tool itself
        14: ([], "jupyter-lab"),
    })
    found = gpu_park.cuda_processes(proc, uid=os.getuid(), exclude=13)
    assert [(p["pid"], p["devices"], p["cmd"]) for p in found] == [
        (10, ["/dev/nvidia0"], "python -m ipykernel_launcher"), (12, ["/dev/nvidia3"], "python train.py")]
    assert gpu_park.cuda_processes(proc, uid=os.getuid() + 1, exclude=13) == []  # others' processes


@pytest.fixture
def driver(tmp_path):
    return gpu_park.FakeDriver(str(tmp_path / "states.json"), fail="")


def test_fake_driver_keeps_the_drivers_transitions(driver):
    pid = os.getpid()
    assert driver.state(pid) == gpu_park.RUNNING
    with pytest.raises(gpu_park.ParkError, match="ILLEGAL_STATE") as err:
        driver.checkpoint(pid)  # checkpoint needs a locked process
    assert err.value.code == gpu_park.CUDA_ERROR_ILLEGAL_STATE
    driver.lock(pid, 1000)
    driver.checkpoint(pid)
    assert driver.state(pid) == gpu_park.CHECKPOINTED
    with pytest.raises(gpu_park.ParkError, match="ILLEGAL_STATE"):
        driver.unlock(pid)  # a checkpointed process is restored first
    with pytest.raises(gpu_park.ParkError, match="no process"):
        driver.lock(2**22 + 1, 1000)  # beyond pid_max: never a process


def test_park_then_resume_each_step_once(driver):
    pid = os.getpid()
    parked = gpu_park.park(driver, [pid])
    assert parked["ok"] and parked["processes"][0]["before"] == "running"
    assert parked["processes"][0]["state"] == "checkpointed"
    again = gpu_park.park(driver, [pid])  # parking a parked process changes nothing
    assert again["ok"] and again["processes"][0]["lock_s"] is None
    resumed = gpu_park.resume(driver, [pid])
    assert resumed["ok"] and resumed["processes"][0]["state"] == "running"
    assert resumed["processes"][0]["restore_s"] is not None and resumed["processes"][0]["unlock_s"] is not None


def test_park_is_all_or_none(tmp_path):
    """One process failing: the ones parked before it are resumed, and the answer says which."""
    ok = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        driver = gpu_park.FakeDriver(str(tmp_path / "states.json"), fail="")
        answer = gpu_park.park(driver, [os.getpid(), 2**22 + 1, ok.pid])
        assert not answer["ok"] and "no process" in answer["error"]
        assert [r["pid"] for r in answer["processes"]] == [os.getpid(), 2**22 + 1]  # stopped at the failure
        assert driver.state(os.getpid()) == gpu_park.RUNNING and driver.state(ok.pid) == gpu_park.RUNNING
        assert answer["rolled_back"][0]["state"] == "running"
        failing = gpu_park.FakeDriver(str(tmp_path / "states.json"), fail="checkpoint")
        answer = gpu_park.park(failing, [ok.pid])
        assert not answer["ok"] and answer["processes"][0]["state"] == "locked"  # locked, not checkpointed
        assert answer["rolled_back"][0]["unlock_s"] is not None  # so the rollback unlocked it
        assert driver.state(ok.pid) == gpu_park.RUNNING
        assert gpu_park.resume(driver, [ok.pid])["processes"][0]["before"] == "running"
    finally:
        ok.kill()
        ok.wait()


def test_the_tool_answers_json(tmp_path):
    env = {**os.environ, "GPU_PARK_FAKE": "1", "GPU_PARK_FAKE_STATE": str(tmp_path / "s.json")}
    run = lambda *args: subprocess.run([sys.executable, str(TOOL_PATH), *args], capture_output=True, text=True,
                                       env=env, timeout=30)
    out = run("park", "--pid", str(os.getpid()))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["mode"] == "fake"
    assert json.loads(run("state", "--pid", str(os.getpid())).stdout)["processes"][0]["state"] == "checkpointed"
    bad = run("resume", "--pid", str(os.getpid()), "--gpu-pair", "GPU-1")
    assert bad.returncode == 1 and "OLD:NEW" in json.loads(bad.stdout)["error"]
    assert run("resume", "--pid", str(os.getpid())).returncode == 0
    nothing = run("park")  # this user has no CUDA process here: nothing to do, no driver needed
    assert nothing.returncode == 0 and json.loads(nothing.stdout)["pids"] == []
    no_driver = subprocess.run([sys.executable, str(TOOL_PATH), "park", "--pid", str(os.getpid())],
                               capture_output=True, text=True, timeout=30,
                               env={k: v for k, v in os.environ.items() if k != "GPU_PARK_FAKE"})
    if not any(Path(d, "libcuda.so.1").exists() for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib64")):
        assert no_driver.returncode == 1 and "no CUDA driver library" in json.loads(no_driver.stdout)["error"]


# -- the records, and the GPU they free ------------------------------------------------------------

def record(user="alice", container="c-alice", uuid="GPU-0", since=1000.0, **kw):
    return Parked(user, "", container, uuid, since, **kw)


def test_parked_file_round_trip(tmp_path):
    f = ParkedFile(tmp_path / "gpu-parked.json")
    assert f.all() == {}
    f.put(record(gpu_mib=10240, mem_limit=8 * GIB, pids=(12, 34)))
    f.put(record("bob", "c-bob", "GPU-1"))
    assert f.get(("alice", "")).pids == (12, 34) and f.get(("alice", "")).gpu_mib == 10240
    data = json.loads((tmp_path / "gpu-parked.json").read_text())
    data["carol\n"] = {"user": "carol"}  # a broken record is skipped, the others stay
    (tmp_path / "gpu-parked.json").write_text(json.dumps(data))
    assert set(f.all()) == {("alice", ""), ("bob", "")}
    assert f.pop(("alice", "")).container == "c-alice" and f.pop(("alice", "")) is None
    assert set(f.all()) == {("bob", "")}


def inspected(cid, uuid, user, status="running"):
    return {"Id": cid, "Name": f"/{cid}",
            "State": {"Status": status, "Running": status in ("running", "paused"), "Paused": status == "paused"},
            "Config": {"Labels": {"gpuhub.user": user, "gpuhub.gpu.uuid": uuid}, "User": "1000:100"},
            "HostConfig": {"DeviceRequests": [device_request(uuid, "cdi")], "Memory": 4 * GIB, "MemorySwap": 8 * GIB}}


def test_only_a_paused_container_with_a_record_is_parked():
    paused, running = inspected("c-alice", "GPU-0", "alice", "paused"), inspected("c-bob", "GPU-1", "bob")
    assert is_paused(paused) and not is_paused(running) and is_paused({"State": "paused"})
    records = [record(), record("bob", "c-bob", "GPU-1")]
    assert parked_ids([paused, running], records) == {"c-alice"}  # bob's record is stale: he runs
    assert parked_ids([paused], []) == frozenset()  # paused by someone else: still holds its GPU
    held = holders_from_containers([paused, running], parked=parked_ids([paused, running], records))
    assert set(held) == {"GPU-1"}


def test_the_allocator_gives_a_parked_gpu_out(tmp_path):
    from test_gpu_manager import fake_docker

    gpus = [GPU("GPU-0", 0), GPU("GPU-1", 1)]
    manager = GPUManager(gpus, "cdi", "cdi", str(tmp_path / "gpu-intent.json"), "gpuhub")
    engine = [inspected("c-alice", "GPU-0", "alice", "paused"), inspected("c-bob", "GPU-1", "bob")]
    asyncio.run(manager.reconcile(fake_docker(engine)))
    assert manager.allocator.holder_of("GPU-0").user == "alice"  # paused, no record: held
    ParkedFile(tmp_path / "gpu-parked.json").put(record())
    asyncio.run(manager.reconcile(fake_docker(engine)))
    assert manager.allocator.holder_of("GPU-0") is None
    assert manager.allocator.allocate("carol").uuid == "GPU-0"


# -- the memory plan ---------------------------------------------------------------------------------

def test_memory_plan():
    plan = plan_memory(10240, 8 * GIB, 16 * GIB, host_available=64 * GIB, reserve=8 * GIB, margin=0.1)
    assert plan.ok and plan.need == 11 * GIB
    assert plan.mem_limit == 19 * GIB and plan.memswap_limit == 27 * GIB
    unlimited = plan_memory(10240, 0, 0, 64 * GIB, 8 * GIB)
    assert unlimited.ok and unlimited.mem_limit == 0
    no_swap_limit = plan_memory(1024, 4 * GIB, -1, 64 * GIB, 8 * GIB)
    assert no_swap_limit.memswap_limit == 0  # unlimited swap stays as it is
    short = plan_memory(40960, 8 * GIB, 0, host_available=48 * GIB, reserve=8 * GIB)
    assert not short.ok and "44.0 GiB" in short.why and "8.0 GiB in reserve" in short.why


# -- the state machine, against a stand-in engine ----------------------------------------------------

class Engine:
    """Containers by id (inspect form); records pause, unpause and limit changes."""

    def __init__(self, *containers):
        self.c = {c["Id"]: c for c in containers}
        self.calls = []

    async def __call__(self, method, *args, **kwargs):
        self.calls.append((method, *args))
        if method == "containers":
            return [{"Id": i} for i in self.c]
        if args and args[0] not in self.c:
            raise NotFound("gone")
        c = self.c.get(args[0]) if args else None
        if method == "inspect_container":
            return json.loads(json.dumps(c))
        if method in ("pause", "unpause"):
            c["State"].update(Paused=method == "pause", Status="paused" if method == "pause" else "running")
            return None
        if method == "update_container":
            c["HostConfig"]["Memory"] = kwargs["mem_limit"]
            c["HostConfig"]["MemorySwap"] = kwargs.get("memswap_limit", c["HostConfig"]["MemorySwap"])
            return None
        raise AssertionError(method)


class Tool:
    """The checkpoint seam: what gpu-park would answer, and the GPU memory it frees."""

    def __init__(self, gpu, fail=None):
        self.gpu, self.fail, self.calls = gpu, fail, []

    async def park(self, c):
        self.calls.append(("park", c["Id"]))
        if self.fail == "park":
            return {"ok": False, "error": "checkpoint: CUDA_ERROR_UNKNOWN"}
        self.gpu["used"] = self.gpu["rest"] if self.fail != "memory" else self.gpu["used"]
        return {"ok": True, "processes": [{"pid": 41}, {"pid": 42}]}

    async def resume(self, c, pids=()):
        self.calls.append(("resume", c["Id"], tuple(pids)))
        if self.fail == "resume-once":  # a driver error that passes: the next try restores
            self.fail = None
            return {"ok": False, "error": "restore: CUDA_ERROR_OPERATING_SYSTEM",
                    "processes": [{"pid": 41, "before": "CHECKPOINTED", "state": "CHECKPOINTED",
                                   "error": "restore: CUDA_ERROR_OPERATING_SYSTEM"}]}
        self.gpu["used"] = 10240
        if self.fail == "stopped-meanwhile":  # the person's stop came during the restore
            self.engine.c.pop(c["Id"], None)
            return {"ok": False, "error": "restore: CUDA_ERROR_OPERATING_SYSTEM",
                    "processes": [{"pid": 41, "before": "checkpointed", "state": None,
                                   "error": "restore: CUDA_ERROR_OPERATING_SYSTEM"}]}
        if self.fail == "resume-stuck":  # the driver's answer for ever after a failed restore
            return {"ok": False, "error": "restore: CUDA_ERROR_OPERATING_SYSTEM",
                    "processes": [{"pid": 41, "before": "checkpointed", "state": "checkpointed",
                                   "error": "restore: CUDA_ERROR_OPERATING_SYSTEM"},
                                  {"pid": 42, "before": "checkpointed", "state": "running", "error": None}]}
        return {"ok": self.fail != "resume", "error": "restore: CUDA_ERROR_OUT_OF_MEMORY" if self.fail == "resume" else None}

    async def end(self, c, pids):
        self.calls.append(("end", c["Id"], tuple(pids)))
        return {"ok": True, "exit_code": 0}


class Audit(AuditLog):
    """The audit log in memory (``write`` is the real one's)."""

    def __init__(self):
        self.entries = []

    def append(self, entry):
        self.entries.append(entry)


def parker(tmp_path, engine, tool, gpu, host=64 * GIB, stopped=None, clock=None):
    async def stop_server(user, server):
        stopped.append((user, server))
        engine.c.pop(f"c-{user}", None)

    async def no_sleep(_):
        if clock:
            clock[0] += 0.25

    return Parker(engine, tool, ParkedFile(tmp_path / "gpu-parked.json"), lambda uuid: gpu["used"], stop_server,
                  ParkSettings(max_parked=3600, host_reserve=8 * GIB, rest_mib=1024, settle=0.0),
                  audit=Audit(), host_memory=lambda: host, clock=lambda: clock[0] if clock else 5000.0,
                  sleep=no_sleep)


def test_park_then_resume(tmp_path):
    gpu = {"used": 10240, "rest": 500}
    engine, tool = Engine(inspected("c-alice", "GPU-0", "alice")), Tool(gpu)
    p = parker(tmp_path, engine, tool, gpu)
    out = asyncio.run(p.park("alice", "", "GPU-0", "c-alice"))
    assert out.action == "parked", out.detail
    assert engine.c["c-alice"]["State"]["Paused"]
    assert engine.c["c-alice"]["HostConfig"]["Memory"] == 4 * GIB + int(10240 * MIB * 1.1)
    assert out.record.pids == (41, 42) and out.record.mem_limit == 4 * GIB and out.record.gpu_mib == 10240
    # the checkpoint comes before the pause (a paused process cannot be checkpointed)
    order = [m for m, *_ in engine.calls if m in ("update_container", "pause")]
    assert order == ["update_container", "pause"] and tool.calls == [("park", "c-alice")]
    assert p.audit.entries[-1]["action"] == "park"
    back = asyncio.run(p.resume("alice", ""))
    assert back.action == "resumed", back.detail
    # by the parked processes' pids: a checkpointed process has no GPU device node open, so
    # gpu-park's own search would find none of them (the first whole-stack run on an H100)
    assert tool.calls[-1] == ("resume", "c-alice", (41, 42))
    assert not engine.c["c-alice"]["State"]["Paused"] and engine.c["c-alice"]["HostConfig"]["Memory"] == 4 * GIB
    assert engine.c["c-alice"]["HostConfig"]["MemorySwap"] == 8 * GIB
    assert p.parked.all() == {} and p.audit.entries[-1]["action"] == "park-resume"
    # the audit entry splits the resume: the driver's restore and unlock, the limit put back
    assert back.timings["limit_back"] is True and {"restore_s", "unlock_s", "limit_s"} <= set(back.timings)
    assert p.audit.entries[-1]["timings"] == back.timings
    assert asyncio.run(p.resume("alice", "")).action == "not-parked"


def test_resume_while_the_gpu_is_held(tmp_path):
    gpu = {"used": 10240, "rest": 500}
    engine, tool = Engine(inspected("c-alice", "GPU-0", "alice")), Tool(gpu)
    p = parker(tmp_path, engine, tool, gpu)
    assert asyncio.run(p.park("alice", "", "GPU-0", "c-alice")).action == "parked"
    engine.c["c-bob"] = inspected("c-bob", "GPU-0", "bob")  # the allocator gave GPU-0 to bob
    held = asyncio.run(p.resume("alice", ""))
    assert held.action == "held" and "held by bob" in held.detail
    assert engine.c["c-alice"]["State"]["Paused"] and p.parked.get(("alice", "")) is not None
    del engine.c["c-bob"]
    assert asyncio.run(p.resume("alice", "")).action == "resumed"


def test_refused_when_the_host_reserve_would_not_hold_it(tmp_path):
    gpu = {"used": 40960, "rest": 500}
    engine, tool = Engine(inspected("c-alice", "GPU-0", "alice")), Tool(gpu)
    p = parker(tmp_path, engine, tool, gpu, host=40 * GIB)
    out = asyncio.run(p.park("alice", "", "GPU-0", "c-alice"))
    assert out.action == "refused" and "in reserve" in out.detail
    assert tool.calls == [] and [m for m, *_ in engine.calls] == ["inspect_container"]  # nothing done
    assert p.audit.entries[-1]["action"] == "park-refused" and "in reserve" in p.audit.entries[-1]["detail"]


@pytest.mark.parametrize("fail,paused", [("park", False), ("memory", True)])
def test_a_failed_park_is_undone(tmp_path, fail, paused):
    gpu = {"used": 10240, "rest": 500}
    engine, tool = Engine(inspected("c-alice", "GPU-0", "alice")), Tool(gpu, fail=fail)
    p = parker(tmp_path, engine, tool, gpu)
    out = asyncio.run(p.park("alice", "", "GPU-0", "c-alice"))
    assert out.action == "failed"
    assert ("checkpoint failed" in out.detail) if fail == "park" else ("read 10240 MiB" in out.detail)
    assert not engine.c["c-alice"]["State"]["Paused"] and engine.c["c-alice"]["HostConfig"]["Memory"] == 4 * GIB
    undone = (41, 42) if fail == "memory" else ()  # a failed checkpoint names no processes
    assert tool.calls == [("park", "c-alice"), ("resume", "c-alice", undone)]
    assert ("pause" in [m for m, *_ in engine.calls]) == paused
    assert p.parked.all() == {}


def test_refused_without_a_reading_or_on_a_shared_gpu(tmp_path):
    gpu = {"used": None, "rest": 500}
    engine, tool = Engine(inspected("c-alice", "GPU-0", "alice")), Tool(gpu)
    assert "cannot be read" in asyncio.run(parker(tmp_path, engine, tool, gpu).park("alice", "", "GPU-0", "c-alice")).detail
    gpu["used"] = 2048
    engine.c["c-alice"]["Config"]["Labels"]["gpuhub.gpu.shared_by"] = "2"
    assert "shares its GPU" in asyncio.run(parker(tmp_path, engine, tool, gpu).park("alice", "", "GPU-0", "c-alice")).detail
    assert tool.calls == []


def test_expiry_and_stop_while_parked(tmp_path):
    gpu = {"used": 10240, "rest": 500}
    clock, stopped = [5000.0], []
    engine = Engine(inspected("c-alice", "GPU-0", "alice"), inspected("c-bob", "GPU-1", "bob"))
    p = parker(tmp_path, engine, Tool(gpu), gpu, stopped=stopped, clock=clock)
    assert asyncio.run(p.park("alice", "", "GPU-0", "c-alice")).action == "parked"
    gpu["used"] = 10240
    clock[0] += 1800
    assert asyncio.run(p.park("bob", "", "GPU-1", "c-bob")).action == "parked"
    clock[0] += 1800  # alice: 3600 s parked, bob 1800 s
    out = asyncio.run(p.expire())
    assert [(o.action, o.user) for o in out] == [("expired", "alice")] and stopped == [("alice", "")]
    assert "longer than the 1 h allowed" in out[0].detail and set(p.parked.all()) == {("bob", "")}
    assert ("unpause", "c-alice") in engine.calls  # unpaused before the stop
    out = asyncio.run(p.stop("bob", ""))
    assert out.action == "stopped" and stopped == [("alice", ""), ("bob", "")] and p.parked.all() == {}
    assert [e["action"] for e in p.audit.entries][-2:] == ["park-expired", "park-stop"]


def test_resume_of_a_container_that_is_gone(tmp_path):
    gpu = {"used": 10240, "rest": 500}
    engine = Engine(inspected("c-alice", "GPU-0", "alice"))
    p = parker(tmp_path, engine, Tool(gpu), gpu)
    assert asyncio.run(p.park("alice", "", "GPU-0", "c-alice")).action == "parked"
    del engine.c["c-alice"]
    assert asyncio.run(p.resume("alice", "")).action == "gone" and p.parked.all() == {}


def parked_alice(tmp_path):
    """alice's server parked on GPU-0: its engine, the checkpoint seam and the Parker."""
    gpu = {"used": 10240, "rest": 500}
    engine, tool = Engine(inspected("c-alice", "GPU-0", "alice")), Tool(gpu)
    p = parker(tmp_path, engine, tool, gpu)
    assert asyncio.run(p.park("alice", "", "GPU-0", "c-alice")).action == "parked"
    return engine, tool, p


def test_a_failed_restore_says_so(tmp_path):
    engine, tool, p = parked_alice(tmp_path)
    tool.fail = "resume"
    out = asyncio.run(p.resume("alice", ""))
    assert out.action == "resume-failed" and "OUT_OF_MEMORY" in out.detail and "3 tries" in out.detail
    assert [c[0] for c in tool.calls].count("resume") == 3 and out.timings["tries"] == 3
    assert not engine.c["c-alice"]["State"]["Paused"] and p.parked.all() == {}  # running, holding its GPU


def test_a_driver_error_at_restore_is_tried_again(tmp_path):
    """The first restores through the whole stack on an H100 failed at once with
    CUDA_ERROR_OPERATING_SYSTEM: a second try of gpu-park resume (which reads each process's
    state first) restores what is left."""
    _, tool, p = parked_alice(tmp_path)
    tool.fail = "resume-once"
    out = asyncio.run(p.resume("alice", ""))
    assert out.action == "resumed" and out.timings["tries"] == 2, out
    assert [c for c in tool.calls if c[0] == "resume"] == [("resume", "c-alice", (41, 42))] * 2
    assert not [c for c in tool.calls if c[0] == "end"]


def test_a_process_left_stuck_by_the_restore_is_ended(tmp_path):
    """Still checkpointed after the tries (NVIDIA/cuda-checkpoint#44: for ever): that process is
    killed, so Jupyter restarts the kernel instead of it hanging at its next CUDA call; one that
    runs is left alone."""
    _, tool, p = parked_alice(tmp_path)
    tool.fail = "resume-stuck"
    out = asyncio.run(p.resume("alice", ""))
    assert out.action == "resume-failed" and out.timings["tries"] == 3
    assert [c for c in tool.calls if c[0] == "end"] == [("end", "c-alice", (41,))]
    assert "41, stuck and ended: Jupyter restarts the kernel" in out.detail and "pid 42: checkpointed -> running" in out.detail


def test_a_stop_during_the_restore_is_said_and_not_tried_again(tmp_path):
    """The second whole-stack run on the H100: the script stopped A's server while the hub
    restored it, and the driver answered CUDA_ERROR_OPERATING_SYSTEM. That is a stop, not a
    driver fault: no second try, nothing to end, and the outcome says what happened."""
    engine, tool, p = parked_alice(tmp_path)
    tool.fail, tool.engine = "stopped-meanwhile", engine
    out = asyncio.run(p.resume("alice", ""))
    assert out.action == "resume-failed" and out.detail.startswith("stopped while it resumed"), out
    assert out.timings["tries"] == 1 and not [c for c in tool.calls if c[0] == "end"]
    assert p.audit.entries[-1]["action"] == "park-resume-failed"


# -- the GPU host's proof script, in its fake mode (no GPU) -------------------------------------------

def test_proof_script_help_names_its_modes():
    out = subprocess.run([sys.executable, str(TOOL_PATH.parents[2] / "tests/gpu_host/park_proof.py"), "--help"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "--container" in out.stdout and "--sizes" in out.stdout


@pytest.mark.parametrize("freeze", [True, False])
def test_the_proof_script_runs_and_its_frozen_check_can_fail(tmp_path, freeze):
    """tests/gpu_host/park_proof.py --fake: the worker's checksum and note survive a park; without
    the freeze (SIGSTOP, as docker pause) the stand-in parks nothing for real, the worker goes on
    ticking, and the script says not ok."""
    out = tmp_path / "proof.json"
    run = subprocess.run([sys.executable, str(TOOL_PATH.parents[2] / "tests/gpu_host/park_proof.py"), "--fake",
                          "--sizes", "1,2,100000", "--hold-s", "0.6", "--out", str(out),
                          *([] if freeze else ["--no-freeze"])], capture_output=True, text=True, timeout=60)
    report = json.loads(out.read_text())
    ran = [r for r in report["sizes"] if "skipped" not in r]
    assert [r["gb"] for r in ran] == [1.0, 2.0] and "free on the GPU" in report["sizes"][2]["skipped"]
    assert all(r["checksum_same"] and r["note_same"] and r["park"]["state_parked"] == "checkpointed" for r in ran)
    assert all(r["mem_parked_mib"] == report["mem_rest_mib"] < r["mem_loaded_mib"] for r in ran)
    if freeze:
        assert run.returncode == 0 and report["ok"] and all(r["ticks_while_parked"] == 0 for r in ran)
    else:
        assert run.returncode == 1 and not report["ok"] and all(r["ticks_while_parked"] > 0 for r in ran)


def test_gpu_reclaim_does_not_judge_a_parked_server(tmp_path):
    """A parked server holds no GPU for gpu-reclaim either: no reading is pinned on it, no
    warning, no stop; a paused container without a record is judged as before."""
    from test_gpu_activity import Feed
    from test_reclaim_service import Engine as ListingEngine, Hub, running

    from hub.common.audit import AuditLog
    from hub.gpus.activity import ActivitySampler, ActivityStore
    from hub.gpus.reclaim_policy import ReclaimPolicy
    from hub.service_process.reclaim.service import Reclaimer
    from hub.common.stop_reasons import ReasonFile

    clock = [2000.0]
    alice, bob = running("alice", "GPU-a"), running("bob", "GPU-b")
    alice["State"] = bob["State"] = "paused"
    engine = ListingEngine([alice, bob])
    hub = Hub(engine)
    ParkedFile(tmp_path / "gpu-parked.json").put(record("alice", alice["Id"], "GPU-a"))
    sampler = ActivitySampler(Feed(**{"GPU-a": 0, "GPU-b": 0}), interval=10, clock=lambda: clock[0],
                              store=ActivityStore(tmp_path / "a.sqlite"))
    r = Reclaimer(ReclaimPolicy(threshold_pct=5, timeout=60, grace=30), sampler, engine, hub,
                  AuditLog(tmp_path / "audit.jsonl"), ReasonFile(tmp_path / "reasons.json"), tmp_path / "r.json",
                  instance="gpuhubtest", clock=lambda: clock[0], parked_file=tmp_path / "gpu-parked.json")
    decisions = []
    for _ in range(10):
        decisions += asyncio.run(r.round())
        clock[0] += 10
    assert set(r.holders) == {"GPU-b"}
    assert [(d.action, d.key[0]) for d in decisions] == [("warn", "bob"), ("stop", "bob")]
    assert hub.stopped == [("bob", "")]


def test_the_console_shows_the_holders_container_not_the_parked_one(tmp_path):
    """GPU-0 given to bob while alice is parked on it: the console's view names bob's container."""
    from test_gpu_manager import fake_docker

    from hub.service_process.console.state import Console

    gpus = [GPU("GPU-0", 0)]
    manager = GPUManager(gpus, "cdi", "cdi", str(tmp_path / "gpu-intent.json"), "gpuhub")
    ParkedFile(tmp_path / "gpu-parked.json").put(record())
    engine = [inspected("c-alice", "GPU-0", "alice", "paused"), inspected("c-bob", "GPU-0", "bob")]
    console = Console(manager, fake_docker(engine), hub=None, sampler=None, audit=None, instance="gpuhubtest",
                      clock=lambda: 5000.0)
    view = asyncio.run(console.view())
    assert view.holders["GPU-0"].user == "bob" and view.containers["GPU-0"]["Id"] == "c-bob"
    assert [h.user for h in view.all_holders["GPU-0"]] == ["bob"]


def test_engine_failures_on_the_way(tmp_path):
    """docker pause failing after the checkpoint: undone (resumed), not parked; docker unpause
    failing on resume: resume-failed, the container keeps its GPU (paused, no record)."""
    from docker.errors import APIError

    gpu = {"used": 10240, "rest": 500}
    engine, tool = Engine(inspected("c-alice", "GPU-0", "alice")), Tool(gpu)
    real = engine.__call__
    broken = set()

    async def call(method, *args, **kwargs):
        if method in broken:
            raise APIError(f"{method} refused")
        return await real(method, *args, **kwargs)
    p = parker(tmp_path, engine, tool, gpu)
    p.docker = call
    broken.add("pause")
    out = asyncio.run(p.park("alice", "", "GPU-0", "c-alice"))
    assert out.action == "failed" and "pause refused" in out.detail and tool.calls[-1] == ("resume", "c-alice", (41, 42))
    assert engine.c["c-alice"]["HostConfig"]["Memory"] == 4 * GIB and p.parked.all() == {}
    broken.clear()
    assert asyncio.run(p.park("alice", "", "GPU-0", "c-alice")).action == "parked"
    broken.add("unpause")
    out = asyncio.run(p.resume("alice", ""))
    assert out.action == "resume-failed" and "unpause refused" in out.detail
    assert engine.c["c-alice"]["State"]["Paused"] and p.parked.all() == {}  # held again: paused, no record


def test_exec_checkpointer_reads_the_tools_answer():
    from hub.common.park import ExecCheckpointer

    class Exec:
        def __init__(self, out, code, fail=None):
            self.out, self.code, self.fail, self.calls = out, code, fail, []

        async def __call__(self, method, *args, **kwargs):
            self.calls.append((method, args, kwargs))
            if method == self.fail:
                raise TimeoutError("read timed out")
            return {"exec_create": {"Id": "e1"}, "exec_start": (self.out, b""),
                    "exec_inspect": {"ExitCode": self.code}}[method]

    container = {"Id": "c1", "Config": {"User": "1000:100"}}
    ok = Exec(b'{"ok": true, "processes": [{"pid": 7}]}\n', 0)
    answer = asyncio.run(ExecCheckpointer(ok, fake=True).park(container))
    assert answer["ok"] and answer["processes"] == [{"pid": 7}]
    method, args, kwargs = ok.calls[0]
    assert args[1] == ["gpu-park", "park", "--timeout-ms", "10000"]
    assert kwargs == {"user": "1000:100", "environment": {"GPU_PARK_FAKE": "1"}}
    assert not asyncio.run(ExecCheckpointer(Exec(b'{"ok": true}', 1)).park(container))["ok"]  # exit code counts
    back = Exec(b'{"ok": true, "processes": [{"pid": 7}]}\n', 0)
    asyncio.run(ExecCheckpointer(back).resume(container, (7, 9)))
    assert back.calls[0][1][1] == ["gpu-park", "resume", "--pid", "7", "--pid", "9"]
    missing = asyncio.run(ExecCheckpointer(Exec(b"exec: gpu-park: not found", 127)).resume(container))
    assert not missing["ok"] and "gave no answer (exit 127)" in missing["error"]
    late = asyncio.run(ExecCheckpointer(Exec(b"", 0, fail="exec_start")).park(container))
    assert not late["ok"] and "TimeoutError" in late["error"]
    ended = Exec(b"", 0)
    assert asyncio.run(ExecCheckpointer(ended).end(container, [7]))["ok"]
    assert ended.calls[0][1][1] == ["sh", "-c", 'kill -KILL "$@"', "kill", "7"]  # the shell's kill: no procps needed
    assert ended.calls[0][2] == {"user": "1000:100"}
    assert not asyncio.run(ExecCheckpointer(Exec(b"", 1)).end(container, [7]))["ok"]


class LibCuda:
    """libcuda.so.1's checkpoint functions as ctypes calls them: what each got, and CUresults."""

    def __init__(self, fail=None):
        self.calls, self.state, self.fail = [], gpu_park.RUNNING, fail or {}

    def __getattr__(self, name):
        if not name.startswith("cu"):
            raise AttributeError(name)

        def call(*args):
            self.calls.append((name, args))
            if name == "cuDriverGetVersion":
                args[0]._obj.value = 13000
            elif name == "cuGetErrorName":
                args[1]._obj.value = b"CUDA_ERROR_OUT_OF_MEMORY"
            elif name == "cuCheckpointProcessGetState":
                args[1]._obj.value = self.state
            elif name in self.fail:
                return self.fail[name]
            else:
                self.state = {"cuCheckpointProcessLock": gpu_park.LOCKED, "cuCheckpointProcessCheckpoint":
                              gpu_park.CHECKPOINTED, "cuCheckpointProcessRestore": gpu_park.LOCKED,
                              "cuCheckpointProcessUnlock": gpu_park.RUNNING}.get(name, self.state)
            return 0
        return call


def test_the_driver_path_calls_the_checkpoint_api_in_order():
    lib = LibCuda()
    driver = gpu_park.Driver(cuda=lib)
    assert [n for n, _ in lib.calls] == ["cuDriverGetVersion", "cuInit"] and driver.version == 13000
    assert gpu_park.park(driver, [41], timeout_ms=2500)["ok"]
    lock = next(a for n, a in lib.calls if n == "cuCheckpointProcessLock")
    assert lock[0] == 41 and lock[1]._obj.timeoutMs == 2500 and list(lock[1]._obj.reserved1) == [0] * 7
    pair = ("GPU-fa4e0000-0000-4000-8000-000000000000", "GPU-fa4e0000-0000-4000-8000-000000000001")
    assert gpu_park.resume(driver, [41], [pair])["ok"]
    restore = next(a for n, a in lib.calls if n == "cuCheckpointProcessRestore")[1]._obj
    assert restore.gpuPairsCount == 1 and bytes(restore.gpuPairs[0].newUuid).hex().endswith("0001")
    assert [n for n, _ in lib.calls if "ProcessGetState" not in n][2:] == [
        "cuCheckpointProcessLock", "cuCheckpointProcessCheckpoint", "cuCheckpointProcessRestore",
        "cuCheckpointProcessUnlock"]


def test_a_failed_look_after_the_unlock_is_no_failed_resume():
    """On the H100 a resume's last GetState (after restore and unlock) answered
    CUDA_ERROR_NOT_INITIALIZED: the resume itself had been done."""
    lib = LibCuda()
    driver = gpu_park.Driver(cuda=lib)
    assert gpu_park.park(driver, [41])["ok"]
    real = lib.__getattr__

    def after_unlock(name):
        call = real(name)
        if name == "cuCheckpointProcessGetState" and any(n == "cuCheckpointProcessUnlock" for n, _ in lib.calls):
            return lambda *args: 3  # CUDA_ERROR_NOT_INITIALIZED
        return call
    lib.__class__ = type("LibCudaLate", (LibCuda,), {"__getattr__": lambda self, name: after_unlock(name)})
    answer = gpu_park.resume(driver, [41])
    (row,) = answer["processes"]
    assert answer["ok"] and row["error"] is None and row["restore_s"] is not None and row["unlock_s"] is not None
    assert row["state"] is None and "not read" in row["note"]


def test_a_driver_error_is_named_and_rolled_back():
    lib = LibCuda(fail={"cuCheckpointProcessCheckpoint": 2})
    answer = gpu_park.park(gpu_park.Driver(cuda=lib), [41])
    assert not answer["ok"] and answer["error"] == "checkpoint: CUDA_ERROR_OUT_OF_MEMORY"
    assert answer["processes"][0]["state"] == "locked" and answer["rolled_back"][0]["state"] == "running"


def test_an_old_driver_is_refused_by_name():
    class Old(LibCuda):
        def __getattr__(self, name):
            if name.startswith("cuCheckpoint"):
                raise AttributeError(name)
            return super().__getattr__(name)
    with pytest.raises(gpu_park.ParkError, match="driver 570 or newer"):
        gpu_park.Driver(cuda=Old())


# -- the park_proof.py hang: a driver call on a process that cannot run -------------------------

def test_a_stopped_process_is_refused_before_the_driver_is_asked(tmp_path):
    """The driver's checkpoint calls are answered by a thread of the target: on a process under
    SIGSTOP they never return (park_proof.py read the state after SIGSTOP and hung). gpu-park
    refuses such a process by its /proc state instead of asking."""
    import signal
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert gpu_park.stopped(child.pid) is None
        os.kill(child.pid, signal.SIGSTOP)
        for _ in range(100):
            if gpu_park.stopped(child.pid):
                break
            time.sleep(0.01)
        assert "stopped" in gpu_park.stopped(child.pid)
        lib = LibCuda()
        driver = gpu_park.Driver(cuda=lib)
        before = len(lib.calls)
        for answer in (gpu_park.park(driver, [child.pid]), gpu_park.resume(driver, [child.pid]),
                       gpu_park.states(driver, [child.pid])):
            assert not answer["ok"] and "stopped" in answer["processes"][0]["error"]
        assert len(lib.calls) == before  # the driver was never asked
        os.kill(child.pid, signal.SIGCONT)
        assert gpu_park.park(driver, [child.pid])["ok"]
    finally:
        child.kill()
        child.wait()


def test_a_frozen_cgroup_counts_as_stopped(tmp_path):
    proc = tmp_path / "proc"
    (proc / "7").mkdir(parents=True)
    (proc / "7" / "stat").write_text("7 (python (x)) S 1 7 7 0 -1")
    (proc / "7" / "cgroup").write_text("0::/no/such/cgroup/here\n")
    assert gpu_park.stopped(7, str(proc)) is None
    (proc / "7" / "stat").write_text("7 (python (x)) t 1 7 7 0 -1")
    assert "stopped" in gpu_park.stopped(7, str(proc))
    assert gpu_park.stopped(8, str(proc)) is None  # gone: the driver's answer says so


def test_a_driver_call_past_its_deadline_is_an_error_not_a_hang():
    import threading

    release = threading.Event()

    class Stuck(LibCuda):
        def __getattr__(self, name):
            call = super().__getattr__(name)
            if name != "cuCheckpointProcessCheckpoint":
                return call
            return lambda *a: (release.wait(30), call(*a))[1]

    driver = gpu_park.Driver(cuda=Stuck(), deadline=0.3)
    t = time.monotonic()
    answer = gpu_park.park(driver, [os.getpid()])
    assert time.monotonic() - t < 5
    assert not answer["ok"] and "no answer from the driver in 0.3 s" in answer["error"]
    release.set()


@pytest.mark.parametrize("answer", ["parked", "refused"])
def test_gpu_reclaim_parks_where_the_policy_says_so_else_stops(tmp_path, answer):
    """The policy's action ``park``: the reclaim stop becomes a park (its container by id);
    refused (or failed) parking falls back to the stop. Parked longer than the policy's
    max_parked: stopped at the next round (the Parker's expire with the policy's limit)."""
    from test_gpu_activity import Feed
    from test_reclaim_service import Engine as ListingEngine, Hub, running

    from hub.common.audit import AuditLog
    from hub.gpus.activity import ActivitySampler, ActivityStore
    from hub.common.park import Outcome
    from hub.gpus.reclaim_policy import ReclaimPolicy
    from hub.service_process.reclaim.service import Reclaimer
    from hub.common.stop_reasons import ReasonFile

    class StubParker:
        def __init__(self):
            self.parked, self.limits = [], []

        async def park(self, user, server, uuid, container):
            self.parked.append((user, server, uuid, container))
            return Outcome(answer, user, server, "why")

        async def expire(self, limit=None):
            self.limits.append(limit(record("alice", "c-x", "GPU-a")))
            return []

    clock = [2000.0]
    alice = running("alice", "GPU-a")
    engine = ListingEngine([alice])
    hub = Hub(engine)
    sampler = ActivitySampler(Feed(**{"GPU-a": 0}), interval=10, clock=lambda: clock[0],
                              store=ActivityStore(tmp_path / "a.sqlite"))
    r = Reclaimer(ReclaimPolicy(threshold_pct=5, timeout=60, grace=30, action="park", max_parked=600), sampler,
                  engine, hub, AuditLog(tmp_path / "audit.jsonl"), ReasonFile(tmp_path / "reasons.json"),
                  tmp_path / "r.json", instance="gpuhubtest", clock=lambda: clock[0],
                  parked_file=tmp_path / "gpu-parked.json")
    r.parker = StubParker()
    decisions = []
    for _ in range(10):
        decisions += asyncio.run(r.round())
        clock[0] += 10
        if decisions and decisions[-1].action == "stop":
            break
    assert [d.action for d in decisions] == ["warn", "stop"]
    assert r.parker.parked == [("alice", "", "GPU-a", alice["Id"])]
    assert hub.stopped == ([] if answer == "parked" else [("alice", "")])
    assert set(r.parker.limits) == {600}


def test_a_profile_may_park_and_limit_the_parked_time():
    from hub.gpus.reclaim_policy import PolicyTable, ReclaimPolicy, parse_override

    table = PolicyTable(ReclaimPolicy(), {"big": parse_override({"action": "park", "max_parked": 3600}, "big")})
    assert table.of("big").parks and table.of("big").max_parked == 3600 and not table.of("other").parks
    assert ReclaimPolicy().action == "stop"  # the default stays the stop
    with pytest.raises(ValueError, match="'stop' or 'park'"):
        parse_override({"action": "hibernate"}, "big")
    with pytest.raises(ValueError, match="max_parked"):
        parse_override({"max_parked": 0}, "big")


def test_the_hub_shows_a_parked_servers_notice(tmp_path):
    """hub/hub_process/parking.py: the home page's notice for each parked server, from the
    records beside the spawner's intent file; none for a server that is not parked."""
    from types import SimpleNamespace

    from hub.hub_process import parking as hub_parking

    ParkedFile(tmp_path / "gpu-parked.json").put(Parked("alice", "big", "c-1", "GPU-0", 1_700_000_000.0,
                                                        gpu_mib=12288))
    user = SimpleNamespace(name="alice")
    user.spawners = {name: SimpleNamespace(user=user, name=name, gpu_intent_file=str(tmp_path / "gpu-intent.json"))
                     for name in ("", "big")}
    shown = hub_parking.parked_of(user)
    assert [p["server"] for p in shown] == ["big"] and shown[0]["url"] == "parked/big"
    assert shown[0]["message"].startswith("Your session is parked since ")
    assert "12.0 GB of GPU state kept in memory" in shown[0]["message"]
    no_intent = SimpleNamespace(user=user, name="", gpu_intent_file="")
    assert hub_parking.record_of(no_intent) is None
