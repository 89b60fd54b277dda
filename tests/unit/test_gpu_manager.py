"""The Docker-facing side of GPU assignment, with a stand-in for the engine's API."""
import asyncio
import json

import pytest
from docker.errors import NotFound

from hub.gpus.claim import choose_style, device_request
from hub.gpus.manager import GPUManager, load_intent
from hub.gpus.model import GPU, NoGPUAvailable

GPUS = [GPU(f"GPU-{i}", i) for i in range(2)]


def test_device_requests_name_one_uuid_never_a_count():
    assert device_request("GPU-1", "cdi") == {"Driver": "cdi", "DeviceIDs": ["nvidia.com/gpu=GPU-1"]}
    assert device_request("GPU-1", "nvidia") == {
        "Driver": "nvidia", "DeviceIDs": ["GPU-1"], "Capabilities": [["gpu", "compute", "utility"]]}


CDI_ON = {"CDISpecDirs": ["/etc/cdi", "/var/run/cdi"]}


@pytest.mark.parametrize("configured,info,cdi_gpus,expected", [
    ("cdi", {}, [], "cdi"),
    ("nvidia", CDI_ON, GPUS, "nvidia"),
    ("auto", CDI_ON, GPUS, "cdi"),
    ("auto", {"CDISpecDirs": []}, GPUS, "nvidia"),  # engine without CDI
    ("auto", {}, GPUS, "nvidia"),  # Docker < 25 reports no spec dirs
    ("auto", CDI_ON, [], "nvidia"),  # no spec lists the GPUs
    ("auto", CDI_ON, GPUS[:1], "nvidia"),  # a spec that misses one GPU
])
def test_style_detection(configured, info, cdi_gpus, expected):
    assert choose_style(configured, info, GPUS, cdi_gpus) == expected


def container(cid, uuid, user, status="running"):
    return {"Id": cid, "Name": f"/{cid}", "State": {"Status": status},
            "Config": {"Labels": {"gpuhub.user": user, "gpuhub.gpu.uuid": uuid}},
            "HostConfig": {"DeviceRequests": [device_request(uuid, "cdi")]}}


def fake_docker(containers, vanished=()):
    async def call(method, *args, **kwargs):
        if method == "containers":
            assert kwargs["filters"] == {"status": ["created", "running", "restarting", "paused"]}
            return [{"Id": c["Id"]} for c in containers]
        if method == "inspect_container":
            if args[0] in vanished:
                raise NotFound("gone")
            return next(c for c in containers if c["Id"] == args[0])
        raise AssertionError(method)
    return call


def test_reconcile_reads_the_engine(tmp_path):
    manager = GPUManager(GPUS, "cdi", "cdi", str(tmp_path / "intent.json"), "gpuhub")
    engine = [container("a", "GPU-0", "alice"), container("b", "GPU-1", "bob")]
    asyncio.run(manager.reconcile(fake_docker(engine, vanished={"b"})))
    assert manager.allocator.holder_of("GPU-0").user == "alice"
    assert manager.allocator.holder_of("GPU-1") is None  # removed between list and inspect
    assert manager.allocator.allocate("carol").uuid == "GPU-1"
    with pytest.raises(NoGPUAvailable, match="all 2 GPUs are in use"):
        manager.allocator.allocate("dave")


def test_intent_persists_atomically(tmp_path):
    path = tmp_path / "intent.json"
    manager = GPUManager(GPUS, "cdi", "cdi", str(path), "gpuhub")
    manager.save_intent(manager.allocator.intent.with_pin("alice", "GPU-1").with_drained("GPU-0"))
    assert manager.allocator.intent.pins == {"alice": "GPU-1"}  # applies at once
    assert json.loads(path.read_text()) == {"pins": {"alice": "GPU-1"}, "drained": ["GPU-0"]}
    again = GPUManager(GPUS, "cdi", "cdi", str(path), "gpuhub")
    assert again.allocator.intent.pins == {"alice": "GPU-1"} and again.allocator.intent.drained == {"GPU-0"}


def test_broken_intent_file_says_what_to_do(tmp_path):
    path = tmp_path / "intent.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="fix or remove it"):
        load_intent(path)
    assert load_intent(tmp_path / "absent.json").pins == {}


def test_intent_is_reread_before_each_decision(tmp_path):
    path = tmp_path / "intent.json"
    manager = GPUManager(GPUS, "cdi", "cdi", str(path), "gpuhub")
    path.write_text(json.dumps({"pins": {}, "drained": ["GPU-0"]}))  # an admin drains GPU-0
    asyncio.run(manager.reconcile(fake_docker([])))
    assert manager.allocator.allocate("alice").uuid == "GPU-1"


def test_policy_is_pluggable(tmp_path):
    def last_free(candidates, held, user):
        return max(candidates, key=lambda g: g.index, default=None)
    manager = GPUManager(GPUS, "cdi", "cdi", str(tmp_path / "i.json"), "gpuhub", policy=last_free)
    assert manager.allocator.allocate("alice").uuid == "GPU-1"
