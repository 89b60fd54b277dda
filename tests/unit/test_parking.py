"""The hub's side of a resume (hub/hub_process/parking.py): a resume whose GPU is held waits in
the GPU line (hub/gpus/queue.py) as a task of the hub process, shows its place and the holder,
resumes by itself when the holder's server stops (the route added back, the line left), and a
cancel (Start fresh) takes it out of the line. The engine, the spawner, gpu-park and the proxy
are stand-ins; tests/e2e/test_park_hub.py does it on the real engine."""
import asyncio
import logging

from hub.common.park import Outcome
from hub.gpus.manager import GPUManager
from hub.gpus.model import GPU
from hub.gpus.parked import Parked, ParkedFile
from hub.gpus.queue import GPUQueue
from hub.hub_process import parking
from hub.hub_process.spawner.process import PROCESS

from console_fakes import FakeEngine, container

UUID = "GPU-0000"


class User:
    name = "alice"
    groups = ()


class Spawner:
    def __init__(self, tmp_path, engine, manager):
        self.user, self.name, self.ready = User(), "", True
        self.gpu_intent_file = str(tmp_path / "gpu-intent.json")
        self.engine, self._manager = engine, manager
        self.log, self._log_name = logging.getLogger("test"), "alice"

    async def gpu_manager(self):
        return self._manager

    def user_groups(self):
        return set()


class FakeParker:
    """take_back/restore as Parker's, on the stand-in engine: the record goes, the container runs."""

    def __init__(self, engine, records):
        self.engine, self.records, self.taken = engine, records, []

    async def take_back(self, record):
        self.records.pop(record.key)
        c = next(c for c in self.engine.containers if c["Id"] == record.container)
        c["State"] = {"Status": "running"}
        self.taken.append(record.key)
        return c

    async def restore(self, record, c, t0=None):
        return Outcome("resumed", *record.key, "resumed")


class Proxy:
    def __init__(self):
        self.added = []

    async def add_user(self, user, server=""):
        self.added.append((user.name, server))


def setup(tmp_path, monkeypatch):
    engine = FakeEngine()
    parked_c = container("c-alice", UUID, "alice")
    parked_c["State"] = {"Status": "paused", "Paused": True}
    engine.containers = [parked_c, container("c-bob", UUID, "bob")]
    records = ParkedFile(tmp_path / "gpu-parked.json")
    records.put(Parked("alice", "", "c-alice", UUID, 1000.0, gpu_mib=600))
    manager = GPUManager([GPU(UUID, 0)], "cdi", "cdi", str(tmp_path / "gpu-intent.json"), "gpuhub")
    fake = FakeParker(engine, records)
    monkeypatch.setattr(parking, "build_parker", lambda spawner, lock: fake)
    monkeypatch.setattr(PROCESS, "gpu_queue", GPUQueue(tmp_path / "gpu-queue.json"))
    monkeypatch.setattr(parking, "_state", {**parking._state, "resumes": {}})
    return engine, manager, fake, Spawner(tmp_path, engine, manager)


def test_a_held_resume_waits_in_line_then_resumes_by_itself_when_the_holder_stops(tmp_path, monkeypatch):
    engine, manager, fake, spawner = setup(tmp_path, monkeypatch)

    async def run():
        proxy = Proxy()
        wait = parking.start_resume(spawner, proxy)
        assert await asyncio.wait_for(wait.first_look(), 5) is None  # held by bob: in line
        assert (wait.position, wait.held_by, wait.uuid) == (1, "bob", UUID)
        assert parking.waiting_of("alice", "") is wait and parking.start_resume(spawner, proxy) is wait
        assert [(e["user"], e["resume_gpu"]) for e in PROCESS.gpu_queue.to_json()] == [("alice", UUID)]
        assert fake.taken == [] and proxy.added == []

        engine.containers = [c for c in engine.containers if c["Id"] != "c-bob"]  # bob's server stops
        PROCESS.gpu_queue.wake()
        out = await asyncio.wait_for(wait.finished, 5)
        assert out.action == "resumed" and fake.taken == [("alice", "")] and proxy.added == [("alice", "")]
        await asyncio.sleep(0)
        assert PROCESS.gpu_queue.waiters == [] and parking.waiting_of("alice", "") is None
        assert manager.reconciled_at == 0.0, "the next look must read the engine: alice holds the GPU now"

    asyncio.run(run())


def test_a_free_gpu_resumes_at_the_first_look(tmp_path, monkeypatch):
    engine, manager, fake, spawner = setup(tmp_path, monkeypatch)
    engine.containers = [c for c in engine.containers if c["Id"] != "c-bob"]

    async def run():
        wait = parking.start_resume(spawner, Proxy())
        out = await asyncio.wait_for(wait.first_look(), 5)
        assert out is not None and out.action == "resumed" and PROCESS.gpu_queue.waiters == []

    asyncio.run(run())


def test_a_cancelled_resume_leaves_the_line_and_resumes_nothing(tmp_path, monkeypatch):
    engine, manager, fake, spawner = setup(tmp_path, monkeypatch)

    async def run():
        wait = parking.start_resume(spawner, Proxy())
        assert await asyncio.wait_for(wait.first_look(), 5) is None
        wait.cancel()
        assert await asyncio.wait_for(wait.finished, 5) is None
        await asyncio.sleep(0)
        assert PROCESS.gpu_queue.waiters == [] and fake.taken == []
        assert ParkedFile(tmp_path / "gpu-parked.json").get(("alice", "")) is not None, "still parked"

    asyncio.run(run())


def test_a_resume_of_a_server_no_longer_parked_ends_at_once(tmp_path, monkeypatch):
    engine, manager, fake, spawner = setup(tmp_path, monkeypatch)
    ParkedFile(tmp_path / "gpu-parked.json").pop(("alice", ""))

    async def run():
        wait = parking.start_resume(spawner, Proxy())
        assert await asyncio.wait_for(wait.first_look(), 5) is None and wait.finished.result() is None
        assert PROCESS.gpu_queue.waiters == []

    asyncio.run(run())


def test_a_new_park_is_seen_within_a_watch_not_at_the_next_round(tmp_path, monkeypatch):
    """gpu-reclaim (another process) writes the record; the hub's task stats the file every
    WATCH_S and syncs the routes at once on a change, and otherwise only every SYNC_S."""
    rounds = []

    async def sync_routes(app):
        rounds.append(asyncio.get_running_loop().time())

    monkeypatch.setattr(parking, "sync_routes", sync_routes)
    monkeypatch.setattr(parking.JupyterHub, "initialized", classmethod(lambda cls: True))
    monkeypatch.setattr(parking.JupyterHub, "instance", classmethod(lambda cls: None))
    monkeypatch.setattr(parking, "WATCH_S", 0.01)
    monkeypatch.setattr(parking, "SYNC_S", 60.0)
    records = ParkedFile(tmp_path / "gpu-parked.json")
    monkeypatch.setattr(parking, "_state", {**parking._state, "file": None, "task": None})

    async def scenario():
        parking._start_sync(Spawner(tmp_path, None, None))  # as the first add_user does
        assert parking._state["file"] == records.path
        task = parking._state["task"]
        await asyncio.sleep(0.1)
        first = len(rounds)  # the first look (no file yet) syncs once, then nothing changes
        await asyncio.sleep(0.1)
        quiet = len(rounds) - first
        await asyncio.to_thread(records.put, Parked("alice", "", "c-alice", UUID, 1000.0, gpu_mib=600))
        await asyncio.sleep(0.1)
        seen = len(rounds) - first - quiet
        task.cancel()
        return first, quiet, seen

    first, quiet, seen = asyncio.run(scenario())
    assert (first, quiet, seen) == (1, 0, 1)
