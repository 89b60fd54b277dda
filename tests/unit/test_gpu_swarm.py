"""GPUs on a Docker Swarm (hub.gpus.swarm, SwarmGPUManager): inventory, holders and node
states decoded from engine answers, and the allocator's policy on top."""
import asyncio
import json
from pathlib import Path

import pytest

from hub.gpus import swarm
from hub.gpus.allocator import Allocator
from hub.gpus.manager import SwarmGPUManager
from hub.gpus.model import GPU, Holder, Intent, NoGPUAvailable

ENGINE = json.loads((Path(__file__).parent / "recorded" / "swarm-four-nodes.json").read_text())


def uuid(node: int, i: int) -> str:
    return f"GPU-5a{node}00000-0000-4000-8000-{i:012d}"


def nodes():
    return swarm.nodes_from_engine(ENGINE["nodes"])


def test_kind_is_a_shell_name_made_from_the_uuid():
    kind = swarm.kind_for("GPU-45cbf7b3-f919-7228-7a26-b06628ebefa1")
    assert kind == "gpu_45cbf7b3_f919_7228_7a26_b06628ebefa1"
    assert swarm.env_name(kind) == "DOCKER_RESOURCE_GPU_45CBF7B3_F919_7228_7A26_B06628EBEFA1"
    assert swarm.kind_for("MIG-1a2b3c4d-0000-5000-8000-00000000beef").startswith("mig_1a2b3c4d")


def test_node_config_is_what_an_admin_writes():
    gpus = [GPU(uuid(1, 0), 0), GPU(uuid(1, 1), 1)]
    config = swarm.node_config(gpus)
    assert config["node-generic-resources"] == [f"{swarm.kind_for(g.uuid)}={g.uuid}" for g in gpus]
    assert config["swarm-resource"].split(",") == [swarm.env_name(swarm.kind_for(g.uuid)) for g in gpus]


def test_nodes_decoded_with_their_gpus_and_states():
    by_name = {n.hostname: n for n in nodes()}
    assert [n.hostname for n in nodes()] == ["gpu-a", "gpu-b", "gpu-c", "mgr"]
    assert by_name["mgr"].gpus == () and by_name["mgr"].takes_servers
    assert [u for _, u in by_name["gpu-a"].gpus] == [uuid(1, 0), uuid(1, 1)]
    assert by_name["gpu-b"].ready and not by_name["gpu-b"].takes_servers
    assert by_name["gpu-b"].why_not == "node gpu-b is paused"
    assert not by_name["gpu-c"].ready and by_name["gpu-c"].why_not == "node gpu-c is down"


def test_inventory_names_each_gpus_node_and_numbers_across_the_swarm():
    inv = swarm.inventory_from_nodes(nodes())
    assert [(g.index, g.node, g.uuid) for g in inv.gpus] == [
        (0, "gpu-a", uuid(1, 0)), (1, "gpu-a", uuid(1, 1)), (2, "gpu-b", uuid(2, 0)),
        (3, "gpu-b", uuid(2, 1)), (4, "gpu-c", uuid(3, 0)), (5, "gpu-c", uuid(3, 1))]
    assert inv.gpus[0].ref == f"gpu-a/{uuid(1, 0)}"
    assert inv.request(uuid(2, 1)) == (swarm.kind_for(uuid(2, 1)), "p7bb00000000000000000000b2")
    assert inv.unavailable == {uuid(2, 0): "node gpu-b is paused", uuid(2, 1): "node gpu-b is paused",
                               uuid(3, 0): "node gpu-c is down", uuid(3, 1): "node gpu-c is down"}
    assert inv.shared_kinds == []


def test_a_gpu_listed_on_two_nodes_is_kept_once_and_a_shared_kind_is_reported():
    a = swarm.SwarmNode("1", "a", gpus=(("gpu", uuid(1, 0)), ("gpu", uuid(1, 1))))
    b = swarm.SwarmNode("2", "b", gpus=(("gpu_x", uuid(1, 0)),))
    inv = swarm.inventory_from_nodes([a, b])
    assert [(g.uuid, g.node) for g in inv.gpus] == [(uuid(1, 0), "a"), (uuid(1, 1), "a")]
    assert inv.shared_kinds == ["gpu"]


def test_holders_from_live_tasks_on_ready_nodes():
    held = swarm.holders_from_tasks(ENGINE["tasks"], ENGINE["services"], nodes())
    assert held == {
        uuid(1, 0): [Holder("alice", "", 1796010000.0)],
        uuid(2, 0): [Holder("bob", "", 1796010000.0)],  # a paused node's servers keep running
        # another stack's service blocks its GPU; eve's task waits for it (not scheduled yet: her
        # service's label claims it, so the hub's next decision does not hand it out again)
        uuid(1, 1): [Holder("render_worker", "", None), Holder("eve", "", 1796010000.0)],
    }  # carol: node down; dave: task ended


def test_assigned_units_read_under_the_engines_own_key():
    # Docker 26 names a task's assigned units "GenericResources" (the API reference:
    # "AssignedGenericResources"); the multi-node test found the hub reading neither
    unit = [{"NamedResourceSpec": {"Kind": swarm.kind_for(uuid(2, 1)), "Value": uuid(2, 1)}}]
    assert swarm.assigned_uuids({"GenericResources": unit}) == [uuid(2, 1)]
    assert swarm.assigned_uuids({"AssignedGenericResources": unit}) == [uuid(2, 1)]
    assert swarm.assigned_uuids({}) == []


def test_a_task_swarm_shuts_down_holds_nothing_though_its_container_still_runs():
    task = {**ENGINE["tasks"][0], "DesiredState": "shutdown"}
    assert not swarm.task_is_live(task, {n.id: n for n in nodes()})
    assert swarm.task_is_live(ENGINE["tasks"][0], {n.id: n for n in nodes()})


def test_service_state_says_why_a_server_is_gone():
    tasks = {t["ServiceID"]: t for t in ENGINE["tasks"]}
    assert swarm.service_state([tasks["svcalice"]], nodes()) == (True, "")
    assert swarm.service_state([tasks["svceve"]], nodes()) == (True, "")  # pending: still starting
    running, why = swarm.service_state([tasks["svccarol"]], nodes())
    assert not running and "gpu-c" in why and "down" in why
    running, why = swarm.service_state([tasks["svcdave"]], nodes())
    assert not running and "non-zero exit (137)" in why
    # Swarm shuts down the tasks of a node drained with `docker node update --availability drain`
    drained = [swarm.SwarmNode(n.id, n.hostname, "drain" if n.hostname == "gpu-a" else n.availability, n.state, n.gpus)
               for n in nodes()]
    shut = {**tasks["svcalice"], "DesiredState": "shutdown", "Status": {"State": "shutdown", "Message": "shutdown"}}
    running, why = swarm.service_state([shut], drained)
    assert not running and why.startswith("The node gpu-a your server ran on was drained")
    gone = {**tasks["svcalice"], "NodeID": "not-a-node-any-more"}
    assert swarm.service_state([gone], nodes())[1].startswith("The node your server ran on left")
    assert swarm.service_state([], nodes()) == (True, "")  # a service's first task comes right after it


def test_a_node_not_heard_from_yet_keeps_its_servers_and_gpus_but_gets_no_new_ones():
    unknown = [swarm.SwarmNode(n.id, n.hostname, n.availability, "unknown" if n.hostname == "gpu-a" else n.state, n.gpus)
               for n in nodes()]
    alice = next(t for t in ENGINE["tasks"] if t["ServiceID"] == "svcalice")
    assert swarm.service_state([alice], unknown) == (True, "")
    assert "alice" in [h.user for hs in swarm.holders_from_tasks(ENGINE["tasks"], ENGINE["services"], unknown).values()
                       for h in hs]
    assert swarm.inventory_from_nodes(unknown).unavailable["GPU-5a100000-0000-4000-8000-000000000000"] == \
        "node gpu-a is unknown"


def test_service_claim_asks_for_one_unit_on_the_gpus_node():
    claim = swarm.service_claim("gpu_x", "node1")
    assert claim == {"generic_resources": [{"DiscreteResourceSpec": {"Kind": "gpu_x", "Value": 1}}],
                     "constraints": ["node.id==node1"]}


# -- the allocator's policy over a swarm ---------------------------------------------------

def test_allocator_places_no_new_server_on_a_drained_or_down_node():
    inv = swarm.inventory_from_nodes(nodes())
    alloc = Allocator(inv.gpus)
    alloc.unavailable = inv.unavailable
    alloc.reconcile(swarm.holders_from_tasks(ENGINE["tasks"], ENGINE["services"], nodes()))
    assert [g.uuid for g in alloc.free()] == []  # gpu-a: both held; gpu-b paused; gpu-c down
    with pytest.raises(NoGPUAvailable, match="3 in use, 3 on nodes that take no new servers"):
        alloc.allocate("zoe", now=1)
    row = {r["uuid"]: r for r in alloc.snapshot()}
    assert row[uuid(3, 0)]["unavailable"] == "node gpu-c is down" and row[uuid(3, 0)]["node"] == "gpu-c"


def test_a_pin_to_a_gpu_on_a_paused_node_is_refused_with_the_reason():
    inv = swarm.inventory_from_nodes(nodes())
    alloc = Allocator(inv.gpus, Intent(pins={"zoe": uuid(2, 1)}))
    alloc.unavailable = inv.unavailable
    with pytest.raises(NoGPUAvailable, match="node gpu-b is paused"):
        alloc.allocate("zoe", now=1)
    alloc.unavailable = {}
    assert alloc.allocate("zoe", now=1).uuid == uuid(2, 1)


def test_all_nodes_out_says_so():
    inv = swarm.inventory_from_nodes([swarm.SwarmNode("1", "a", "drain", gpus=(("k", uuid(1, 0)),))])
    alloc = Allocator(inv.gpus)
    alloc.unavailable = inv.unavailable
    with pytest.raises(NoGPUAvailable, match="the only GPU is on nodes that take no new servers"):
        alloc.allocate("zoe", now=1)


# -- SwarmGPUManager: the engine as the truth ----------------------------------------------

class FakeSwarmEngine:
    """The three calls the manager makes, answered from the recorded JSON (changeable)."""

    def __init__(self):
        self.nodes, self.services, self.tasks = ENGINE["nodes"], ENGINE["services"], ENGINE["tasks"]
        self.calls = []

    async def __call__(self, method, *args, **kwargs):
        self.calls.append((method, kwargs))
        return {"nodes": self.nodes, "services": self.services, "tasks": self.tasks}[method]


def test_manager_reconciles_inventory_holders_and_node_states(tmp_path):
    manager = SwarmGPUManager(str(tmp_path / "intent.json"), "gpuhub")
    engine = FakeSwarmEngine()
    asyncio.run(manager.reconcile(engine))
    assert manager.source == "swarm" and len(manager.inventory) == 6
    assert ("tasks", {"filters": {"desired-state": ["running", "shutdown", "remove"]}}) in engine.calls
    assert manager.allocator.holder_of(uuid(1, 0)).user == "alice"
    with pytest.raises(NoGPUAvailable):
        manager.assign("zoe", "", set(), now=1)
    # gpu-c comes back: its GPUs are free again (carol's task on it was shut down meanwhile)
    engine.nodes = [{**n, "Status": {**n["Status"], "State": "ready"}} for n in ENGINE["nodes"]]
    engine.tasks = [t for t in ENGINE["tasks"] if t["ServiceID"] != "svccarol"]
    asyncio.run(manager.reconcile(engine))
    assignment = manager.assign("zoe", "", set(), now=1)
    assert (assignment.gpu.uuid, assignment.gpu.node) == (uuid(3, 0), "gpu-c")
    assert (assignment.kind, assignment.node_id, assignment.style) == (
        swarm.kind_for(uuid(3, 0)), "p7cc00000000000000000000c3", "swarm")


def test_a_stopping_tasks_unit_is_releasing_until_its_container_stopped():
    """A removed service's task, desired "remove" but still "running" on a node that is up,
    keeps its unit in Swarm's scheduler: releasing. Once it ended, or on a down node: not."""
    alice = next(t for t in ENGINE["tasks"] if t["ServiceID"] == "svcalice")
    carol = next(t for t in ENGINE["tasks"] if t["ServiceID"] == "svccarol")  # on gpu-c, down
    stopping = {**alice, "DesiredState": "remove"}
    assert swarm.releasing_from_tasks([stopping], nodes()) == {uuid(1, 0): "gpu-a"}
    ended = {**stopping, "Status": {**alice["Status"], "State": "shutdown"}}
    assert swarm.releasing_from_tasks([ended, alice, {**carol, "DesiredState": "shutdown"}], nodes()) == {}
    # and it holds nothing: the hub counts the GPU free
    assert uuid(1, 0) not in swarm.holders_from_tasks([stopping], ENGINE["services"], nodes())


def test_the_allocator_offers_released_gpus_before_releasing_ones():
    alloc = Allocator([GPU(uuid=uuid(1, i), index=i) for i in range(3)])
    alloc.releasing = frozenset({uuid(1, 0), uuid(1, 1)})
    assert alloc.allocate("ann").uuid == uuid(1, 2)  # the one whose unit Swarm has released
    assert alloc.allocate("ben").uuid == uuid(1, 0)  # then releasing ones, by index: Swarm waits
    alloc.releasing = frozenset()
    assert alloc.allocate("cy").uuid == uuid(1, 1)


def test_manager_prefers_a_gpu_whose_unit_swarm_released(tmp_path):
    """The swarm-storm's case: a server on gpu-a's first GPU just stopped (its service removed,
    its task still shutting down); the next start gets a GPU Swarm can schedule at once."""
    manager = SwarmGPUManager(str(tmp_path / "intent.json"), "gpuhub")
    engine = FakeSwarmEngine()
    engine.tasks = [{**t, "DesiredState": "remove"} if t["ServiceID"] == "svcalice" else t
                    for t in ENGINE["tasks"] if t["ServiceID"] not in ("svcrender", "svceve")]
    asyncio.run(manager.reconcile(engine))
    assert manager.releasing == {uuid(1, 0): "gpu-a"}
    assert manager.assign("zoe", "", set(), now=1).gpu.uuid == uuid(1, 1)
    assert manager.assign("yan", "", set(), now=1).gpu.uuid == uuid(1, 0)  # the last one left


def test_manager_sees_a_node_join(tmp_path):
    manager = SwarmGPUManager(str(tmp_path / "intent.json"), "gpuhub")
    engine = FakeSwarmEngine()
    engine.nodes = [n for n in ENGINE["nodes"] if n["Description"]["Hostname"] == "mgr"]
    engine.tasks = []
    asyncio.run(manager.reconcile(engine))
    assert manager.inventory == ()
    engine.nodes = ENGINE["nodes"]
    asyncio.run(manager.reconcile(engine))
    assert {g.node for g in manager.inventory} == {"gpu-a", "gpu-b", "gpu-c"}


def test_manager_rereads_intent(tmp_path):
    intent_file = tmp_path / "intent.json"
    manager = SwarmGPUManager(str(intent_file), "gpuhub")
    engine = FakeSwarmEngine()
    engine.tasks = []
    engine.nodes = [{**n, "Spec": {**n["Spec"], "Availability": "active"}, "Status": {**n["Status"], "State": "ready"}}
                    for n in ENGINE["nodes"]]
    intent_file.write_text(json.dumps({"pins": {}, "drained": [uuid(1, 0), uuid(1, 1)]}))
    asyncio.run(manager.reconcile(engine))
    assert manager.assign("zoe", "", set(), now=1).gpu.node == "gpu-b"


# -- gpuhub-gpus swarm-node-config: what an admin writes on each node -----------------------

SMI_LIST = """GPU 0: NVIDIA H200 (UUID: GPU-0a1b2c3d-0000-4000-8000-000000000001)
GPU 1: NVIDIA H200 (UUID: GPU-0a1b2c3d-0000-4000-8000-000000000002)
  MIG 3g.71gb     Device  0: (UUID: MIG-11112222-3333-5444-8555-666677778888)
  MIG 3g.71gb     Device  1: (UUID: MIG-11112222-3333-5444-8555-666677779999)
"""


def test_nvidia_smi_list_gives_whole_gpus_and_mig_instances_instead_of_their_parent():
    gpus = swarm.gpus_from_smi_list(SMI_LIST)
    assert [(g.index, g.uuid, g.parent_uuid) for g in gpus] == [
        (0, "GPU-0a1b2c3d-0000-4000-8000-000000000001", None),
        (1, "MIG-11112222-3333-5444-8555-666677778888", "GPU-0a1b2c3d-0000-4000-8000-000000000002"),
        (1, "MIG-11112222-3333-5444-8555-666677779999", "GPU-0a1b2c3d-0000-4000-8000-000000000002")]
    assert gpus[0].name == "NVIDIA H200" and swarm.gpus_from_smi_list("No devices were found\n") == []


def test_swarm_node_config_command(tmp_path, capsys):
    from hub.service_process.console import cli

    listing = tmp_path / "smi.txt"
    listing.write_text(SMI_LIST)
    assert cli.main(["--json", "swarm-node-config", "--input", str(listing)]) == 0
    config = json.loads(capsys.readouterr().out)
    assert config["node-generic-resources"][0] == (
        "gpu_0a1b2c3d_0000_4000_8000_000000000001=GPU-0a1b2c3d-0000-4000-8000-000000000001")
    assert config["swarm-resource"].split(",")[2] == "DOCKER_RESOURCE_MIG_11112222_3333_5444_8555_666677779999"
    assert cli.main(["swarm-node-config", "--input", str(listing)]) == 0
    text = capsys.readouterr().out
    assert '"default-runtime": "nvidia"' in text and 'swarm-resource = "DOCKER_RESOURCE_GPU_0A1B2C3D' in text
    # what it prints decodes back to the same GPUs once a node advertises it
    node = {"ID": "n1", "Description": {"Hostname": "gpu1", "Resources": {"GenericResources": [
        {"NamedResourceSpec": dict(zip(("Kind", "Value"), line.split("=", 1)))}
        for line in config["node-generic-resources"]]}}, "Spec": {"Availability": "active"}, "Status": {"State": "ready"}}
    inv = swarm.inventory_from_nodes(swarm.nodes_from_engine([node]))
    assert [g.uuid for g in inv.gpus] == [g.uuid for g in swarm.gpus_from_smi_list(SMI_LIST)]
    listing.write_text("")
    assert cli.main(["swarm-node-config", "--input", str(listing)]) == 1


def test_a_gpu_marked_shared_is_handed_out_whole_on_a_swarm(tmp_path):
    intent_file = tmp_path / "intent.json"
    intent_file.write_text(json.dumps({"shared": {uuid(1, 0): 4}}))
    manager = SwarmGPUManager(str(intent_file), "gpuhub")
    engine = FakeSwarmEngine()
    engine.nodes = [n for n in ENGINE["nodes"] if n["Description"]["Hostname"] in ("mgr", "gpu-a")]
    engine.tasks = []
    asyncio.run(manager.reconcile(engine))
    assert manager.assign("a", "", set(), now=1).shared_by == 1
    manager.assign("b", "", set(), now=1)
    with pytest.raises(NoGPUAvailable):  # one unit each: Swarm would leave a third start pending
        manager.assign("c", "", set(), now=1)


# -- GPU-hours on a swarm: the running tasks' seats ------------------------------------------

def test_seats_of_running_tasks_with_their_node_and_start():
    from hub.usage.accounting import docker_time, seats_of_tasks

    inv = swarm.inventory_from_nodes(nodes())
    seats = seats_of_tasks(ENGINE["tasks"], ENGINE["services"], nodes(), inv.gpus)
    by_user = {s.user: s for s in seats}
    assert set(by_user) == {"alice", "bob", "render_worker"}  # carol: node down; dave ended; eve pending
    alice = by_user["alice"]
    assert (alice.container_id, alice.gpu_uuid, alice.node) == ("talice1", uuid(1, 0), "gpu-a")
    assert alice.start == docker_time("2026-11-30T03:41:00.000Z")


def test_swarm_usage_sync_counts_a_run_until_last_seen(tmp_path):
    from hub.usage.reconcile import SwarmUsageKeeper
    from hub.usage.store import UsageStore

    class Hub:
        async def group_models(self):
            return []

    engine = FakeSwarmEngine()
    engine.tasks = [t for t in ENGINE["tasks"] if t["ServiceID"] == "svcalice"]
    inv = swarm.inventory_from_nodes(nodes())
    now = [1796010000.0]

    async def no_events(since, until, filters):
        return []
    store = UsageStore(tmp_path / "u.sqlite")
    keeper = SwarmUsageKeeper(store, lambda: inv.gpus, engine, no_events, Hub(), "gpuhub", clock=lambda: now[0])
    from hub.usage.accounting import docker_time
    swarm_start = docker_time("2026-11-30T03:41:00.000Z")  # alice's task: running since then
    now[0] = swarm_start + 60
    asyncio.run(keeper.sync())
    now[0] = swarm_start + 120
    asyncio.run(keeper.sync())
    engine.tasks = []  # the node died or the server stopped
    now[0] = swarm_start + 180
    asyncio.run(keeper.sync())
    [iv] = store.of_containers(["talice1"])
    assert (iv.user, iv.node, iv.open, iv.held_s) == ("alice", "gpu-a", False, 120.0)
    assert ("services", {"filters": {"label": ["gpuhub.instance=gpuhub"]}}) in engine.calls
    store.close()


def test_nodes_left_out_by_the_placement_constraints_take_no_new_servers():
    live = [swarm.SwarmNode(n.id, n.hostname, "active", "ready", n.gpus, n.role, n.labels) for n in nodes()]
    assert {n.hostname: n.role for n in live}["mgr"] == "manager"
    assert swarm.node_matches(live[0], ["node.role==worker", "engine.labels.x==y"])  # the engine's: Swarm's to judge
    inv = swarm.inventory_from_nodes(live, ["node.hostname!=gpu-a"])
    assert set(inv.unavailable) == {uuid(1, 0), uuid(1, 1)}
    assert inv.unavailable[uuid(1, 0)] == "node gpu-a is left out by the placement constraints"
    labelled = swarm.SwarmNode("9", "gpu-z", labels=(("gpu", "h200"),), gpus=(("k", uuid(9, 0)),))
    assert swarm.node_matches(labelled, ["node.labels.gpu == h200"])
    assert not swarm.node_matches(labelled, ["node.labels.gpu==a100"])
    assert not swarm.node_matches(labelled, ["node.labels.missing==x"])
    assert swarm.node_matches(labelled, ["node.labels.missing!=x"])


def test_the_console_of_a_swarm_hub_reads_the_swarm(tmp_path):
    from console_fakes import FakeEngine, FakeHub

    from hub.settings.gpu_settings import GPUSettings
    from hub.service_process.console.app import build_console
    from hub.usage.reconcile import SwarmUsageKeeper

    settings = GPUSettings(intent_file=str(tmp_path / "intent.json"), audit_file=str(tmp_path / "audit.jsonl"),
                           usage_db=str(tmp_path / "usage.sqlite"), backend="swarm",
                           swarm_constraints=("node.role==worker",))
    assert GPUSettings.from_env(settings.to_env()) == settings
    engine = FakeEngine()
    console = build_console({**settings.to_env(), "JUPYTERHUB_BASE_URL": "/"}, hub=FakeHub(engine), docker=engine)
    assert isinstance(console.manager, SwarmGPUManager) and console.manager.constraints == ("node.role==worker",)
    assert isinstance(console.usage, SwarmUsageKeeper)
    swarm_engine = FakeSwarmEngine()
    asyncio.run(console.manager.reconcile(swarm_engine))
    rows = {r["uuid"]: r for r in console.manager.allocator.snapshot()}
    assert rows[uuid(1, 0)]["node"] == "gpu-a" and rows[uuid(1, 0)]["holder"]["user"] == "alice"
    assert rows[uuid(2, 1)]["unavailable"] == "node gpu-b is paused"
    from hub.usage.metrics import exposition
    text = exposition(console.usage, console.manager.inventory, console.sampler).decode()
    assert f'gpuhub_gpu_info{{index="0",model="GPU",node="gpu-a",uuid="{uuid(1, 0)}"}} 1.0' in text


def node_event(action: str, **attributes) -> dict:
    """A node event as the manager's engine streams it (Engine API's EventMessage)."""
    return {"Type": "node", "Action": action, "scope": "swarm", "time": 1796010000,
            "Actor": {"ID": "p7bb00000000000000000000b2", "Attributes": {"name": "gpu-b", **attributes}}}


def test_node_events_that_end_a_nodes_servers():
    down = swarm.node_change(node_event("update", **{"state.old": "ready", "state.new": "down"}))
    assert down == swarm.NodeChange("p7bb00000000000000000000b2", "gpu-b", "down")
    assert "gpu-b your server ran on went down" in down.message
    assert swarm.node_change(node_event("update", **{"availability.old": "active", "availability.new": "drain"})).what == "drain"
    assert swarm.node_change(node_event("remove")).what == "removed"
    # back up, paused, a label changed, another type: nothing ends
    assert swarm.node_change(node_event("update", **{"state.old": "down", "state.new": "ready"})) is None
    assert swarm.node_change(node_event("update", **{"availability.new": "pause"})) is None
    assert swarm.node_change(node_event("update")) is None
    assert swarm.node_change({**node_event("update", **{"state.new": "down"}), "Type": "service"}) is None
