"""Parking on the real engine (hub/common/park.py): a user container of the single-user test
image, given a fake GPU through CDI, whose "CUDA process" (a Python process with /dev/nvidiaN
open: gpu-park finds it as it finds a real one) counts ticks into a bind-mounted folder.
The checkpoint step is gpu-park's driver stand-in (GPU_PARK_FAKE, run by docker exec as the
container's user); the GPU's memory reading follows the stand-in's states. Everything else is
real: docker exec, pause, unpause, update (the memory limit), stop, and the GPU manager's
reconcile over the engine's containers.

Checked: park (checkpoint, pause, the GPU free for the allocator, the memory limit raised, the
process frozen), resume (same process, same state, ticking again), resume while another
container holds the GPU ("held", still parked), a hub restart while parked (new instances read
the record), expiry and a stop while parked (unpaused, then stopped), a host reserve too small
(refused, audited, nothing changed) and a failing checkpoint (undone)."""
import asyncio
import json
import os
import subprocess
import time
import uuid as uuidlib
from pathlib import Path

import pytest

from hubclient import Stack
from hub.common.audit import AuditLog
from hub.common.engine import DockerCaller
from hub.gpus.manager import GPUManager
from hub.gpus.model import GPU
from hub.gpus.parked import ParkedFile
from hub.common.park import ExecCheckpointer, ParkSettings, Parker

IMAGE = Stack().env["SINGLEUSER_IMAGE"]
UUID = "GPU-fa4e0000-0000-4000-8000-000000000003"  # the engine's fourth fake GPU (CDI)
INSTANCE = "gpuhubtest-park"
GIB = 2**30
# The user's "kernel": holds the GPU's device node open (as a CUDA process does) and ticks; a
# random value chosen at start stands for the state that parking must keep.
KERNEL = """
import os, time, secrets
gpu = open(os.environ["GPU_NODE"], "rb")
state = secrets.token_hex(8)
n = 0
while True:
    n += 1
    with open("/park/ticks.tmp", "w") as f:
        f.write(f"{os.getpid()} {state} {n}")
    os.replace("/park/ticks.tmp", "/park/ticks")
    time.sleep(0.05)
"""


def sh(*args, check=True):
    return subprocess.run(args, capture_output=True, text=True, check=check, timeout=120)


def ticks(folder: Path) -> tuple[int, str, int]:
    pid, state, n = (folder / "ticks").read_text().split()
    return int(pid), state, int(n)


def wait_ticking(folder: Path) -> tuple[int, str, int]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            return ticks(folder)
        except (OSError, ValueError):
            time.sleep(0.1)
    raise AssertionError("the kernel never ticked")


class World:
    """Containers of this test, the stand-in's state file, and the seams around the Parker."""

    def __init__(self, tmp: Path):
        self.tmp, self.names = tmp, []
        self.docker = DockerCaller()
        self.parked = ParkedFile(tmp / "state" / "gpu-parked.json")
        (tmp / "state").mkdir()
        self.audit = AuditLog(tmp / "state" / "gpu-audit.jsonl")
        self.host = 64 * GIB
        self.stopped = []
        self.users: dict[str, str] = {}  # user -> container id

    def running(self, folder: Path) -> bool:
        out = sh("docker", "inspect", "-f", "{{.State.Running}}", self.users[folder.name], check=False)
        return out.stdout.strip() == "true"

    def start(self, user: str, fail: str = "") -> tuple[str, Path]:
        folder = self.tmp / user
        folder.mkdir(mode=0o777)
        os.chmod(folder, 0o777)  # the container's user (1000) writes there
        name = f"{INSTANCE}-{user}-{uuidlib.uuid4().hex[:6]}"
        env = ["-e", "GPU_NODE=/dev/nvidia3", "-e", "GPU_PARK_FAKE_STATE=/park/fake-states.json"]
        if fail:
            env += ["-e", f"GPU_PARK_FAKE_FAIL={fail}"]
        cid = sh("docker", "run", "-d", "--name", name, "--memory", "256m", "--device", f"nvidia.com/gpu={UUID}",
                 "--label", f"gpuhub.user={user}", "--label", "gpuhub.server=", "--label", f"gpuhub.instance={INSTANCE}",
                 "--label", f"gpuhub.gpu.uuid={UUID}", "--label", f"gpuhub.gpu.since={time.time():.0f}",
                 "-v", f"{folder}:/park", *env, IMAGE, "python3", "-c", KERNEL).stdout.strip()
        self.names.append(name)
        self.users[user] = cid
        wait_ticking(folder)
        return cid, folder

    def memory(self, uuid: str) -> int:
        """The GPU's used MiB: 10 GiB while any container's kernel is not checkpointed (per
        container: pids repeat across their pid namespaces)."""
        for folder in (self.tmp / name for name in self.users):
            pid = ticks(folder)[0]
            states = json.loads((folder / "fake-states.json").read_text()) if (folder / "fake-states.json").exists() else {}
            if states.get(str(pid), 0) != 2 and self.running(folder):
                return 10240
        return 300

    async def stop_server(self, user: str, server: str) -> None:
        self.stopped.append(user)
        cid = next(c["Id"] for c in await self.docker("containers", all=True, filters={"label": f"gpuhub.user={user}"}))
        await self.docker("stop", cid, timeout=5)

    def parker(self, **settings) -> Parker:
        return Parker(self.docker, ExecCheckpointer(self.docker, fake=True), self.parked, self.memory,
                      self.stop_server, ParkSettings(host_reserve=4 * GIB, rest_mib=1024, settle=5, **settings),
                      audit=self.audit, host_memory=lambda: self.host)

    def inspect(self, cid: str) -> dict:
        return json.loads(sh("docker", "inspect", cid).stdout)[0]

    def holder(self, uuid: str = UUID) -> set[str]:
        """Who holds the GPU for the hub's GPU manager (a reconcile over the engine)."""
        manager = GPUManager([GPU(UUID, 3)], "cdi", "cdi", str(self.tmp / "state" / "gpu-intent.json"), "gpuhub")
        asyncio.run(manager.reconcile(self.docker))
        return {h.user for h in manager.allocator.holders_of(uuid)}

    def remove(self) -> None:
        for name in self.names:
            sh("docker", "rm", "-f", name, check=False)

pytestmark = pytest.mark.needs_gpus(4)  # its containers get the fourth fake GPU, UUID


@pytest.fixture
def world(tmp_path):
    if sh("docker", "image", "inspect", IMAGE, check=False).returncode:
        pytest.fail(f"image {IMAGE} is missing: build the test images with `make test-images`")
    w = World(tmp_path)
    yield w
    w.remove()


def frozen(folder: Path, seconds: float = 1.0) -> bool:
    before = ticks(folder)
    time.sleep(seconds)
    return ticks(folder) == before


def test_park_resume_and_the_gpu_between(world):
    cid, folder = world.start("parktest-alice")
    pid, state, _ = ticks(folder)
    assert "parktest-alice" in world.holder()
    p = world.parker()
    out = asyncio.run(p.park("parktest-alice", "", UUID, cid))
    assert out.action == "parked", out.detail
    found = out.tool["processes"]
    assert [r["pid"] for r in found] and all(r["state"] == "checkpointed" for r in found), found
    c = world.inspect(cid)
    assert c["State"]["Paused"] and c["HostConfig"]["Memory"] == 256 * 2**20 + int(10240 * 2**20 * 1.1)
    assert frozen(folder), "a parked container still ran"
    assert "parktest-alice" not in world.holder()  # the allocator may give the GPU out
    assert world.audit.tail(1)[0]["action"] == "park"

    # a hub restart: new instances, the same state volume
    back = asyncio.run(world.parker().resume("parktest-alice", ""))
    assert back.action == "resumed", back.detail
    c = world.inspect(cid)
    assert not c["State"]["Paused"] and c["HostConfig"]["Memory"] == 256 * 2**20
    assert not frozen(folder, 0.5)
    again_pid, again_state, _ = ticks(folder)
    assert (again_pid, again_state) == (pid, state)  # the same process, its state kept
    assert all(r["state"] == "running" for r in back.tool["processes"])
    assert "parktest-alice" in world.holder() and world.parked.all() == {}


def test_resume_while_held_then_free(world):
    cid, folder = world.start("parktest-alice")
    p = world.parker()
    assert asyncio.run(p.park("parktest-alice", "", UUID, cid)).action == "parked"
    bob, _ = world.start("parktest-bob")  # the allocator gave the free GPU to bob
    assert world.holder() == {"parktest-bob"}
    held = asyncio.run(p.resume("parktest-alice", ""))
    assert held.action == "held" and "parktest-bob" in held.detail
    assert world.inspect(cid)["State"]["Paused"] and frozen(folder, 0.5)
    assert world.audit.tail(1)[0]["action"] == "park-held"
    sh("docker", "rm", "-f", bob)
    assert asyncio.run(p.resume("parktest-alice", "")).action == "resumed"
    assert not frozen(folder, 0.5)


def test_expiry_and_stop_while_parked(world):
    alice, _ = world.start("parktest-alice")
    p = world.parker(max_parked=1.0)
    assert asyncio.run(p.park("parktest-alice", "", UUID, alice)).action == "parked"
    assert asyncio.run(p.expire()) == []  # not yet
    time.sleep(1.2)
    out = asyncio.run(p.expire())
    assert [(o.action, o.user) for o in out] == [("expired", "parktest-alice")]
    c = world.inspect(alice)
    assert not c["State"]["Running"] and not c["State"]["Paused"]  # unpaused, then stopped
    assert world.stopped == ["parktest-alice"] and world.parked.all() == {}

    bob, _ = world.start("parktest-bob")
    p = world.parker()
    assert asyncio.run(p.park("parktest-bob", "", UUID, bob)).action == "parked"
    assert asyncio.run(p.stop("parktest-bob", "")).action == "stopped"
    assert not world.inspect(bob)["State"]["Running"] and world.parked.all() == {}
    assert [e["action"] for e in world.audit.tail(10)][:2] == ["park-stop", "park"]


def test_refused_when_the_host_reserve_is_too_small(world):
    cid, folder = world.start("parktest-alice")
    world.host = 12 * GIB  # 11 GiB to park + 4 GiB reserve > 12 GiB
    out = asyncio.run(world.parker().park("parktest-alice", "", UUID, cid))
    assert out.action == "refused" and "in reserve" in out.detail
    c = world.inspect(cid)
    assert c["State"]["Running"] and not c["State"]["Paused"] and c["HostConfig"]["Memory"] == 256 * 2**20
    assert not frozen(folder, 0.5) and not (folder / "fake-states.json").exists()  # gpu-park never ran
    entry = world.audit.tail(1)[0]
    assert entry["action"] == "park-refused" and "in reserve" in entry["detail"] and entry["gpu"] == UUID


def test_a_failing_checkpoint_is_undone(world):
    cid, folder = world.start("parktest-alice", fail="checkpoint")
    out = asyncio.run(world.parker().park("parktest-alice", "", UUID, cid))
    assert out.action == "failed" and "GPU_PARK_FAKE_FAIL" in out.detail
    c = world.inspect(cid)
    assert c["State"]["Running"] and not c["State"]["Paused"] and c["HostConfig"]["Memory"] == 256 * 2**20
    states = json.loads((folder / "fake-states.json").read_text())
    assert set(states.values()) == {0}, states  # locked, then unlocked again
    assert "parktest-alice" in world.holder() and world.parked.all() == {}
