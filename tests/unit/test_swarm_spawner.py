"""GPUSwarmSpawner (hub/hub_process/spawner/swarm.py): the service it creates, from a GPU decision on the
swarm's nodes and tasks (recorded JSON) down to the spec Swarm gets; poll after a node died."""
import asyncio
import copy
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from traitlets.config import Config

from hub.gpus import swarm
from hub.hub_process.spawner.spawner import PROCESS
from hub.hub_process.spawner.node_events import NodeEvents
from hub.hub_process.spawner.swarm import NODES, GPUSwarmSpawner, nfs_driver

ENGINE = json.loads((Path(__file__).parent / "recorded" / "swarm-four-nodes.json").read_text())
GPU_C0 = "GPU-5a300000-0000-4000-8000-000000000000"


class FakeEngine:
    """docker-py's APIClient as the spawner calls it, answering from the recorded swarm."""

    def __init__(self):
        self.nodes = copy.deepcopy(ENGINE["nodes"])
        for n in self.nodes:  # all nodes up and active: gpu-a is full, gpu-b and gpu-c are free
            n["Spec"]["Availability"], n["Status"]["State"] = "active", "ready"
        self.services = [s for s in ENGINE["services"] if s["ID"] in ("svcalice", "svcrender")]
        self.tasks = [t for t in ENGINE["tasks"] if t["ServiceID"] in ("svcalice", "svcrender")]
        self.created = []

    def __call__(self, method, *args, **kwargs):
        if method == "nodes":
            return self.nodes
        if method == "services":
            return self.services
        if method == "tasks":
            service = (kwargs.get("filters") or {}).get("service")
            node = (kwargs.get("filters") or {}).get("node")
            names = {s["ID"]: s["Spec"]["Name"] for s in self.services}
            return [t for t in self.tasks if service in (None, names.get(t["ServiceID"])) and node in (None, t.get("NodeID"))]
        if method == "inspect_image":
            return {"Config": {"Cmd": ["jupyterhub-singleuser"], "Labels": {}}}
        if method == "inspect_service":
            found = [s for s in self.services if s["ID"] == args[0] or s["Spec"]["Name"] == args[0]]
            if not found:
                import docker.errors
                raise docker.errors.NotFound("no such service", response=SimpleNamespace(status_code=404))
            return found[0]
        if method == "inspect_volume":
            import docker.errors
            raise docker.errors.NotFound("no such volume")
        if method == "create_service":
            self.created.append(kwargs)
            sid = f"svc{len(self.created)}"
            gpu = (kwargs["labels"] or {}).get("gpuhub.gpu.uuid")
            node = next((c.split("==")[1] for c in kwargs["task_template"]["Placement"]["Constraints"]
                         if c.startswith("node.id==")), None)
            self.services.append({"ID": sid, "Spec": {"Name": kwargs["name"], "Labels": kwargs["labels"]}})
            task = {"ID": f"t{sid}", "ServiceID": sid, "NodeID": node, "DesiredState": "running",
                    "Status": {"State": "running", "Timestamp": "2026-11-30T04:00:00Z"}}
            if gpu:
                task["GenericResources"] = [{"NamedResourceSpec": {"Kind": swarm.kind_for(gpu), "Value": gpu}}]
            self.tasks.append(task)
            return {"ID": sid}
        raise AssertionError(f"unexpected engine call {method}")


@pytest.fixture
def engine(monkeypatch, tmp_path):
    fake = FakeEngine()
    saved = (PROCESS.gpu_manager, PROCESS.executor)
    PROCESS.gpu_manager = PROCESS.executor = None
    # no event stream of a real engine: the node events are handed in by the tests
    monkeypatch.setattr(NODES, "loss", None)
    monkeypatch.setattr(NODES, "events", None)
    monkeypatch.setattr(NODES, "folder_slots", None)
    monkeypatch.setattr(NodeEvents, "start", lambda self, loop: None)
    monkeypatch.setattr("dockerspawner.DockerSpawner.get_env", lambda self: {"JUPYTERHUB_API_TOKEN": "t"})
    monkeypatch.setattr("dockerspawner.DockerSpawner.get_args", lambda self: ["--ip=0.0.0.0"])
    yield fake
    PROCESS.gpu_manager, PROCESS.executor = saved


def make_spawner(engine, tmp_path, name="zoe", **config):
    c = Config()
    c.GPUSwarmSpawner.gpu_intent_file = str(tmp_path / "intent.json")
    c.GPUSwarmSpawner.usage_db = str(tmp_path / "usage.sqlite")
    c.GPUSwarmSpawner.network_name = "gpuhub-net"
    c.GPUSwarmSpawner.use_internal_ip = True
    c.GPUSwarmSpawner.volumes = {"gpuhub-user-{username}": "/home/jovyan/work"}
    c.GPUSwarmSpawner.prefix = "gpuhub"
    for key, value in config.items():
        setattr(c.GPUSwarmSpawner, key, value)
    user = SimpleNamespace(name=name, id=1, url=f"/user/{name}/", server=None, groups=[])
    s = GPUSwarmSpawner(config=c, user=user)
    s._docker = engine
    return s


def test_a_gpu_server_is_a_service_holding_one_unit_of_its_gpu_on_its_node(engine, tmp_path):
    PROCESS.nfs_dirs.add("gpuhub-user-zoe")  # made already (the next test makes them)
    s = make_spawner(engine, tmp_path, swarm_nfs_server="nfs.lab", swarm_nfs_export="/export/hub/",
                     swarm_constraints=["node.role==worker"], pids_limit=500)
    asyncio.run(s.create_object())
    [created] = engine.created
    task = created["task_template"]
    gpu = s.assignment.gpu
    assert gpu.node == "gpu-b" and s.gpu_uuid == gpu.uuid  # gpu-a's two GPUs are held
    assert task["Resources"]["Reservations"]["GenericResources"] == [
        {"DiscreteResourceSpec": {"Kind": swarm.kind_for(gpu.uuid), "Value": 1}}]
    assert task["Placement"]["Constraints"] == ["node.role==worker", "node.id==p7bb00000000000000000000b2"]
    assert task["RestartPolicy"]["Condition"] == "none"
    assert task["Resources"]["Limits"]["Pids"] == 500
    spec = task["ContainerSpec"]
    assert spec["CapabilityDrop"] == ["ALL"] and spec["Healthcheck"] == {"Test": ["NONE"]}
    assert spec["Privileges"]["NoNewPrivileges"] is True
    assert spec["Labels"]["gpuhub.user"] == "zoe" and spec["Labels"]["gpuhub.gpu.uuid"] == gpu.uuid
    assert created["labels"]["gpuhub.gpu.uuid"] == gpu.uuid
    assert "NVIDIA_VISIBLE_DEVICES" not in spec["Env"]  # the runtime maps DOCKER_RESOURCE_* instead
    assert created["endpoint_spec"] == {"Mode": "dnsrr"}
    [work, shm] = spec["Mounts"]
    assert work["Type"] == "volume" and work["Source"] == "gpuhub-user-zoe" and work["Target"] == "/home/jovyan/work"
    assert work["VolumeOptions"]["DriverConfig"] == {"Name": "local", "Options": {
        "type": "nfs", "o": "addr=nfs.lab,rw,nfsvers=4.1,hard", "device": ":/export/hub/gpuhub-user-zoe"}}
    assert shm == {"Target": "/dev/shm", "Source": None, "Type": "tmpfs", "ReadOnly": False,
                   "TmpfsOptions": {"SizeBytes": 1024**3}}

    # the next start sees zoe's GPU held (the engine's task), and gets the other one of gpu-b
    other = make_spawner(engine, tmp_path, name="yan")
    asyncio.run(other.create_object())
    assert other.assignment.gpu.node == "gpu-b" and other.assignment.gpu.uuid != gpu.uuid


def test_a_cpu_server_reserves_no_gpu_and_sees_none(engine, tmp_path):
    s = make_spawner(engine, tmp_path)
    s.gpu_enabled = False
    asyncio.run(s.create_object())
    [created] = engine.created
    task = created["task_template"]
    assert "GenericResources" not in (task["Resources"].get("Reservations") or {})
    assert task["Placement"]["Constraints"] == []
    assert "NVIDIA_VISIBLE_DEVICES=void" in task["ContainerSpec"]["Env"]
    assert "gpuhub.gpu.uuid" not in created["labels"]
    work = task["ContainerSpec"]["Mounts"][0]
    assert work["Type"] == "volume" and "VolumeOptions" not in work  # no NFS configured: node-local volume


def test_poll_a_server_whose_node_died_is_stopped_and_says_why(engine, tmp_path):
    s = make_spawner(engine, tmp_path)
    asyncio.run(s.create_object())
    s.object_id = engine.created and engine.services[-1]["ID"]
    assert asyncio.run(s.poll()) is None
    for n in engine.nodes:
        if n["Description"]["Hostname"] == s.assignment.gpu.node:
            n["Status"]["State"] = "down"
    assert asyncio.run(s.poll()) == 1
    assert "gpu-b your server ran on went down" in PROCESS.stop_reasons._reasons[("zoe", "")][0]
    PROCESS.stop_reasons.running(("zoe", ""))
    # and its GPU no longer counts as held
    manager = asyncio.run(s.gpu_manager())
    asyncio.run(manager.reconcile(s.engine))
    assert manager.allocator.holder_of(s.gpu_uuid) is None


def test_a_node_down_event_stops_its_servers_at_once_and_tells_the_console(engine, tmp_path):
    """The manager's node event, not the next poll: the servers with a task on the lost node
    are polled at once, JupyterHub's stop callbacks run, the GPU console's audit log says so;
    a server on another node is left alone."""
    audit = tmp_path / "gpu-audit.jsonl"
    zoe, yan = (make_spawner(engine, tmp_path, name=n, gpu_audit_file=str(audit)) for n in ("zoe", "yan"))
    stopped = []

    async def scenario():
        for s in (zoe, yan):
            await s.create_object()
            s.object_id = engine.services[-1]["ID"]
            assert await s.poll() is None  # running: tracked
            s.add_poll_callback(stopped.append, s.user.name)  # what JupyterHub adds (user_stopped)
        yan_task = next(t for t in engine.tasks if t["ServiceID"] == yan.object_id)
        yan_task["NodeID"] = "p7aa00000000000000000000a1"  # yan runs elsewhere
        for n in engine.nodes:
            if n["Description"]["Hostname"] == "gpu-b":
                n["Status"]["State"] = "down"
        return await NODES.loss.act(swarm.NodeChange("p7bb00000000000000000000b2", "gpu-b", "down"))

    assert asyncio.run(scenario()) == ["zoe"] and stopped == ["zoe"]
    assert zoe.assignment.gpu.node == "gpu-b"
    assert "gpu-b your server ran on went down" in PROCESS.stop_reasons._reasons[("zoe", "")][0]
    PROCESS.stop_reasons.running(("zoe", ""))
    [entry] = [json.loads(line) for line in audit.read_text().splitlines()]
    assert entry["action"] == "node down" and entry["who"] == "hub" and entry["users"] == ["zoe"]
    assert zoe.gpu_uuid in entry["detail"] and "yan" not in entry["detail"]


def test_nfs_driver_options():
    assert nfs_driver("", "/x", "rw", "v") is None
    assert nfs_driver("10.0.0.5", "/srv/gpuhub", "", "v").get("Options") == {
        "type": "nfs", "o": "addr=10.0.0.5", "device": ":/srv/gpuhub/v"}


def folder_making_engine(engine, monkeypatch):
    """The engine as the hub's folder-making container sees it: each container it creates is
    recorded (``runs``), starts, exits 0 and is removed; everything else goes to ``engine``."""
    monkeypatch.setattr(GPUSwarmSpawner, "client", property(lambda self: SimpleNamespace(
        create_host_config=lambda **kw: kw)))
    PROCESS.nfs_dirs.clear()
    runs = []

    def fake(method, *args, **kwargs):
        if method == "create_container":
            runs.append(kwargs)
            return {"Id": "c1"}
        if method == "wait":
            return {"StatusCode": 0}
        if method in ("start", "remove_container"):
            return None
        return engine(method, *args, **kwargs)
    return fake, runs


def test_nfs_folders_are_made_once_by_a_root_container_that_may_only_chown(engine, tmp_path, monkeypatch):
    fake, runs = folder_making_engine(engine, monkeypatch)
    s = make_spawner(fake, tmp_path, swarm_nfs_server="nfs.lab", swarm_nfs_export="/export")
    asyncio.run(s.prepare_volumes({}))
    [run] = runs
    assert run["user"] == "root" and run["command"][-1] == "gpuhub-user-zoe:/home/jovyan/work"
    assert 'cp -R "$from/." "/nfs/$d/"; } && chown -R 1000:100' in run["command"][2]  # no chmod after chown: no CAP_FOWNER
    host = run["host_config"]
    assert host["cap_drop"] == ["ALL"] and host["cap_add"] == ["CHOWN"] and host["network_mode"] == "none"
    [export] = host["mounts"]
    assert export["VolumeOptions"]["DriverConfig"]["Options"]["device"] == ":/export"
    asyncio.run(s.prepare_volumes({}))
    assert len(runs) == 1  # once per volume and hub process
    PROCESS.nfs_dirs.clear()
    # without NFS: nothing to prepare
    asyncio.run(make_spawner(fake, tmp_path).prepare_volumes({}))
    assert len(runs) == 1


def test_a_start_makes_the_folders_while_it_does_its_other_steps(engine, tmp_path, monkeypatch):
    """start() begins the one-off folder container at once; create_object's prepare_volumes
    waits for that one instead of making another; its removal is not waited for."""
    fake, runs = folder_making_engine(engine, monkeypatch)
    s = make_spawner(fake, tmp_path, swarm_volume_root="/srv/shared")
    order = []

    async def other_steps(self):
        order.append(("other steps", len(runs)))
        await asyncio.sleep(0.01)  # the image check, the turn: the folder container runs meanwhile
        await self.prepare_volumes({})
        order.append(("service", len(runs)))
        return "10.0.0.9", 8888
    monkeypatch.setattr("hub.hub_process.spawner.spawner.GPUDockerSpawner.start", other_steps)
    assert asyncio.run(s.start()) == ("10.0.0.9", 8888)
    assert order == [("other steps", 0), ("service", 1)] and len(runs) == 1
    assert runs[0]["host_config"]["mounts"][0]["Source"] == "/srv/shared"
    PROCESS.nfs_dirs.clear()


def test_a_service_removed_behind_the_hubs_back_is_stopped_and_removing_it_again_is_done(engine, tmp_path):
    s = make_spawner(engine, tmp_path)
    s.object_id = "gone"
    assert asyncio.run(s.poll()) == 0
    calls = []

    def fake(method, *args, **kwargs):
        calls.append(method)
        import docker.errors
        raise docker.errors.NotFound("no such service")
    s._docker = fake
    asyncio.run(s.remove_object())
    assert calls == ["remove_service"]


def test_start_waits_for_the_task_telling_what_swarm_says_and_fails_at_once_when_it_ends(engine, tmp_path):
    s = make_spawner(engine, tmp_path)
    s.object_id = "svc-new"
    states = iter([
        [],
        [{"DesiredState": "running", "Status": {"State": "pending", "Timestamp": "1",
                                                 "Err": "no suitable node (insufficient resources on 3 nodes)"}}],
        [{"DesiredState": "running", "Status": {"State": "preparing", "Timestamp": "2", "Message": "preparing"}}],
        [{"DesiredState": "running", "Status": {"State": "running", "Timestamp": "3", "Message": "started"}}],
    ])

    async def fake(method, *args, **kwargs):
        assert method == "tasks" and kwargs["filters"] == {"service": s.service_name}
        return next(states)
    s.engine = fake
    asyncio.run(asyncio.wait_for(s.start_object(), 20))
    told = [e["message"] for e in s.progress_log.events]
    assert told == ["Swarm: new", "Swarm: pending: no suitable node (insufficient resources on 3 nodes)",
                    "Swarm: preparing"]

    async def rejected(method, *args, **kwargs):
        return [{"DesiredState": "shutdown", "Status": {"State": "rejected", "Timestamp": "4",
                                                         "Err": "No such image: gpuhub/pytorch-notebook:0.1.0"}}]
    s.engine = rejected
    with pytest.raises(RuntimeError, match="rejected: No such image"):
        asyncio.run(asyncio.wait_for(s.start_object(), 5))


def test_a_volume_root_on_every_node_gives_bind_mounts_made_by_the_hub(engine, tmp_path, monkeypatch):
    fake, runs = folder_making_engine(engine, monkeypatch)
    s = make_spawner(fake, tmp_path, swarm_volume_root="/srv/shared/")
    asyncio.run(s.create_object())
    [export] = runs[0]["host_config"]["mounts"]
    assert (export["Type"], export["Source"], export["Target"]) == ("bind", "/srv/shared/", "/nfs")
    work = engine.created[0]["task_template"]["ContainerSpec"]["Mounts"][0]
    assert (work["Type"], work["Source"], work["Target"]) == ("bind", "/srv/shared/gpuhub-user-zoe", "/home/jovyan/work")
    PROCESS.nfs_dirs.clear()


def test_a_refusal_on_a_swarm_counts_the_swarms_gpus(engine, tmp_path):
    from hub.gpus.model import NoGPUAvailable
    error = make_spawner(engine, tmp_path).gpu_refusal(NoGPUAvailable("all 6 GPUs are in use", total=6))
    assert "This swarm has 6 GPUs" in error.jupyterhub_message
    assert "This host" not in error.jupyterhub_message
