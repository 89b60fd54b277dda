"""Exclusive GPU allocation (hub.gpus.allocator): policy, pins, drains, engine snapshots."""

import json
import pickle

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from hub.gpus.allocator import Allocator, first_free
from hub.gpus.claim import held_from_containers
from hub.gpus.model import GPU, Holder, Intent, NoGPUAvailable


def uuid(i: int) -> str:
    return f"GPU-fa4e0000-0000-4000-8000-{i:012d}"


def gpus(n: int) -> list[GPU]:
    return [GPU(uuid(i), i, "Fake GPU", 81559) for i in range(n)]


# --- docker inspect dicts, as docker-py's APIClient.inspect_container returns them -------
def inspect(name, status="running", labels=None, device_requests=None, cid="0" * 64):
    running = status in ("running", "paused", "restarting")
    return {
        "Id": cid,
        "Created": "2025-05-01T09:00:00.000000000Z",
        "Name": f"/{name}",
        "State": {"Status": status, "Running": running, "Paused": status == "paused",
                  "Restarting": status == "restarting", "OOMKilled": False,
                  "Dead": status == "dead", "Pid": 4242 if running else 0,
                  "ExitCode": 0 if running else 137, "Error": "",
                  "StartedAt": "2025-05-01T09:00:01.0Z", "FinishedAt": "0001-01-01T00:00:00Z"},
        "Image": "sha256:" + "ab" * 32,
        "HostConfig": {"NetworkMode": "gpuhub", "ShmSize": 1073741824, "PidsLimit": 1024,
                       "DeviceRequests": device_requests},
        "Config": {"Hostname": "abc", "Image": "gpuhub/pytorch-notebook:0.1.0",
                   "Env": ["NVIDIA_VISIBLE_DEVICES=void", "JUPYTERHUB_USER=x"],
                   "Labels": labels or {}},
    }


def cdi_request(*names):
    return [{"Driver": "cdi", "Count": 0, "DeviceIDs": [f"nvidia.com/gpu={n}" for n in names],
             "Capabilities": None, "Options": None}]


def nvidia_request(*ids, count=0):
    return [{"Driver": "nvidia", "Count": count, "DeviceIDs": list(ids) or None,
             "Capabilities": [["gpu"]], "Options": {}}]


def hub_labels(user, server="", gpu=None, since=None):
    labels = {"gpuhub.user": user, "gpuhub.server": server, "gpuhub.instance": f"/user/{user}/"}
    if gpu:
        labels["gpuhub.gpu.uuid"] = gpu
    if since is not None:
        labels["gpuhub.gpu.since"] = str(since)
    return labels


# --- policy and plain allocation ---------------------------------------------------------
def test_first_free_takes_the_allocators_first_choice_lowest_index_whatever_the_order():
    a, b, c = GPU("GPU-c", 2), GPU("GPU-a", 0), GPU("GPU-b", 1)
    assert first_free([a, b, c], {}, "alice") == a  # the candidates come in preference order
    assert first_free([], {}, "alice") is None
    assert Allocator([a, b, c]).candidates("alice") == [b, c, a]
    assert Allocator([a, b, c]).allocate("alice") == b


def test_allocate_hands_out_lowest_free_gpu_exclusively():
    alloc = Allocator(list(reversed(gpus(3))), Intent())
    got = [alloc.allocate(u) for u in ("alice", "bob", "carol")]
    assert [g.index for g in got] == [0, 1, 2]
    assert alloc.holder_of(uuid(1)) == Holder("bob", "")
    assert alloc.gpu_of("carol") == gpus(3)[2]


def test_allocate_is_idempotent_per_server():
    alloc = Allocator(gpus(2), Intent())
    first = alloc.allocate("alice", since=100.0)
    assert alloc.allocate("alice", since=200.0) == first
    assert alloc.holder_of(first.uuid) == Holder("alice", "", 100.0)
    assert [g.uuid for g in alloc.free()] == [uuid(1)]


def test_named_servers_of_one_user_get_their_own_gpus():
    alloc = Allocator(gpus(2), Intent())
    assert alloc.allocate("alice") != alloc.allocate("alice", "train")
    assert alloc.gpu_of("alice", "train").index == 1


def test_exhaustion_says_all_in_use():
    alloc = Allocator(gpus(4), Intent())
    for user in "abcd":
        alloc.allocate(user)
    with pytest.raises(NoGPUAvailable) as err:
        alloc.allocate("eve")
    e = err.value
    assert (e.total, e.free, e.drained, e.reason) == (4, 0, 0, "all 4 GPUs are in use")
    assert str(e).startswith("No GPU could be assigned to your server: all 4 GPUs are in use.")
    assert alloc.gpu_of("eve") is None


def test_exhaustion_with_one_gpu_and_with_none():
    alloc = Allocator(gpus(1), Intent())
    alloc.allocate("alice")
    with pytest.raises(NoGPUAvailable, match="the only GPU is in use"):
        alloc.allocate("bob")
    with pytest.raises(NoGPUAvailable) as err:
        Allocator([], Intent()).allocate("bob")
    assert err.value.reason == "this host has no GPUs" and err.value.total == 0


def test_exception_survives_pickling():
    e = pickle.loads(pickle.dumps(NoGPUAvailable("all 2 GPUs are in use", 2, 0, 0)))
    assert (e.reason, e.total) == ("all 2 GPUs are in use", 2)


def test_a_stopped_server_frees_its_gpu_at_the_next_reconcile():
    alloc = Allocator(gpus(1), Intent())
    gpu = alloc.allocate("alice", "nb")
    assert alloc.gpu_of("alice") is None  # the default server holds nothing
    alloc.reconcile({})  # the engine shows alice's container gone
    assert alloc.holder_of(gpu.uuid) is None and alloc.gpu_of("alice", "nb") is None
    assert alloc.allocate("bob") == gpu


def test_duplicate_inventory_uuid_is_rejected():
    with pytest.raises(ValueError, match="twice"):
        Allocator([GPU("GPU-a", 0), GPU("GPU-a", 1)], Intent())


# --- drains --------------------------------------------------------------------------------
def test_drained_gpu_is_never_handed_out_but_holder_keeps_it():
    alloc = Allocator(gpus(2), Intent())
    held = alloc.allocate("alice")
    alloc.intent = alloc.intent.with_drained(uuid(0))
    alloc.intent = alloc.intent.with_drained(uuid(1))
    assert alloc.allocate("alice") == held  # draining does not evict
    with pytest.raises(NoGPUAvailable) as err:
        alloc.allocate("bob")
    assert err.value.reason == "no GPU is free (1 in use, 1 drained)"
    assert err.value.drained == 2
    alloc.intent = alloc.intent.without_drained(uuid(1))
    assert alloc.allocate("bob").uuid == uuid(1)


def test_all_drained_message():
    alloc = Allocator(gpus(3), Intent(drained={uuid(0), uuid(1), uuid(2)}))
    with pytest.raises(NoGPUAvailable, match="all 3 GPUs are drained"):
        alloc.allocate("bob")


# --- pins ----------------------------------------------------------------------------------
def test_pinned_user_gets_only_their_gpu():
    alloc = Allocator(gpus(3), Intent())
    alloc.intent = alloc.intent.with_pin("alice", uuid(2))
    assert alloc.allocate("alice").uuid == uuid(2)


def test_pinned_gpu_is_reserved_even_while_its_user_is_away():
    alloc = Allocator(gpus(2), Intent(pins={"alice": uuid(0)}))
    assert alloc.allocate("bob").uuid == uuid(1)
    assert alloc.free() == []
    with pytest.raises(NoGPUAvailable) as err:
        alloc.allocate("carol")
    assert err.value.reason == "no GPU is free (1 in use, 1 reserved for pinned users)"
    alloc.intent = alloc.intent.without_pin("alice")
    assert alloc.allocate("carol").uuid == uuid(0)


def test_pinned_gpu_held_by_someone_else():
    alloc = Allocator(gpus(2), Intent())
    alloc.reconcile({uuid(0): Holder("bob")})  # bob had it before alice was pinned
    alloc.intent = alloc.intent.with_pin("alice", uuid(0))
    with pytest.raises(NoGPUAvailable) as err:
        alloc.allocate("alice")
    assert err.value.reason == f"your pinned GPU {uuid(0)} is held by bob"
    assert alloc.gpu_of("alice") is None  # no fallback to the free GPU 1


def test_pinned_gpu_held_by_own_other_server():
    alloc = Allocator(gpus(2), Intent(pins={"alice": uuid(1)}))
    alloc.allocate("alice")
    with pytest.raises(NoGPUAvailable, match="held by your other server '\\(default\\)'"):
        alloc.allocate("alice", "second")


def test_pinned_gpu_drained_or_gone():
    alloc = Allocator(gpus(2), Intent(pins={"alice": uuid(0), "bob": "GPU-gone"}))
    alloc.intent = alloc.intent.with_drained(uuid(0))
    with pytest.raises(NoGPUAvailable, match=f"your pinned GPU {uuid(0)} is drained"):
        alloc.allocate("alice")
    with pytest.raises(NoGPUAvailable, match="your pinned GPU GPU-gone is not on this host"):
        alloc.allocate("bob")


def test_users_pinned_to_one_gpu_take_turns():
    alloc = Allocator(gpus(2), Intent(pins={"alice": uuid(1), "bob": uuid(1)}))
    assert alloc.allocate("alice").uuid == uuid(1)
    with pytest.raises(NoGPUAvailable, match="held by alice"):
        alloc.allocate("bob")
    alloc.reconcile({})  # alice's server stopped
    assert alloc.allocate("bob").uuid == uuid(1)


def test_repinning_does_not_move_a_running_server():
    alloc = Allocator(gpus(2), Intent())
    alloc.allocate("alice")
    alloc.intent = alloc.intent.with_pin("alice", uuid(1))
    assert alloc.allocate("alice").uuid == uuid(0)


def test_pin_validates_the_user_and_changes_a_copy():
    intent = Intent()
    with pytest.raises(ValueError, match="username is empty"):
        intent.with_pin("", uuid(0))
    pinned = intent.with_pin("alice", uuid(0))
    assert intent.pins == {} and pinned.pins == {"alice": uuid(0)}


# --- policies ------------------------------------------------------------------------------
def test_policy_sees_only_allocatable_candidates():
    seen = []

    def last(candidates, held, user):
        seen.append(([g.uuid for g in candidates], dict(held), user))
        return candidates[-1]

    alloc = Allocator(gpus(4), Intent(pins={"zed": uuid(3)}, drained={uuid(2)}), policy=last)
    alloc.reconcile({uuid(0): Holder("bob")})
    assert alloc.allocate("alice").uuid == uuid(1)
    assert seen == [([uuid(1)], {uuid(0): Holder("bob")}, "alice")]


def test_buggy_policy_cannot_break_exclusivity():
    taken = gpus(2)[0]
    alloc = Allocator(gpus(2), Intent(), policy=lambda candidates, held, user: taken)
    alloc.reconcile({uuid(0): Holder("bob")})
    with pytest.raises(RuntimeError, match="not one of the candidates"):
        alloc.allocate("alice")
    assert alloc.holder_of(uuid(0)) == Holder("bob")


def test_policy_may_decline():
    alloc = Allocator(gpus(2), Intent(), policy=lambda c, held, u: None)
    with pytest.raises(NoGPUAvailable, match="policy declined"):
        alloc.allocate("alice")


# --- engine snapshots ----------------------------------------------------------------------
ENGINE = [
    inspect("jupyter-alice", labels=hub_labels("alice", gpu=uuid(0), since=1714554001.5),
            device_requests=cdi_request(uuid(0)), cid="a" * 64),
    inspect("jupyter-bob-train", labels=hub_labels("bob", "train", gpu=uuid(1)),
            device_requests=nvidia_request(uuid(1)), cid="b" * 64),
    inspect("jupyter-carol", status="exited", labels=hub_labels("carol", gpu=uuid(2)),
            device_requests=cdi_request(uuid(2)), cid="c" * 64),
    inspect("jupyter-dan", status="dead", device_requests=nvidia_request(uuid(3)), cid="d" * 64),
    inspect("stray", device_requests=cdi_request("GPU-99999999-0000-4000-8000-000000000000")),
]


def test_reconcile_from_engine_snapshot():
    alloc = Allocator(gpus(4), Intent())
    alloc.reconcile(held_from_containers(ENGINE))
    assert alloc.gpu_of("alice").uuid == uuid(0)
    assert alloc.holder_of(uuid(0)) == Holder("alice", "", 1714554001.5)
    assert alloc.gpu_of("bob", "train").uuid == uuid(1)
    assert [g.uuid for g in alloc.free()] == [uuid(2), uuid(3)]  # exited and dead free them
    assert alloc.unknown_held() == {"GPU-99999999-0000-4000-8000-000000000000": Holder("stray")}
    assert alloc.allocate("erin").uuid == uuid(2)
    assert alloc.allocate("alice").uuid == uuid(0)  # already holds one: same again


def test_unknown_held_gpu_is_reported_by_gpu_of_but_never_allocated():
    alloc = Allocator(gpus(1), Intent())
    alloc.reconcile({"GPU-gone": Holder("alice")})
    assert alloc.gpu_of("alice") == GPU("GPU-gone", -1, "unknown")
    assert alloc.allocate("bob").uuid == uuid(0)


def test_reconcile_replaces_the_held_map():
    """Why the caller must hold its lock until the container exists (see module doc)."""
    alloc = Allocator(gpus(2), Intent())
    alloc.allocate("alice")
    alloc.reconcile({uuid(1): Holder("bob")})
    assert alloc.gpu_of("alice") is None
    assert alloc.holder_of(uuid(1)) == Holder("bob")


def test_snapshot_for_uis():
    alloc = Allocator(gpus(4), Intent(pins={"zed": uuid(3), "amy": uuid(3)}, drained={uuid(2)}))
    alloc.reconcile({uuid(0): Holder("alice", "", 5.0)})
    rows = alloc.snapshot()
    assert [r["state"] for r in rows] == ["held", "free", "drained", "pinned"]
    assert rows[0]["holder"] == {"user": "alice", "server": "", "since": 5.0}
    assert rows[3]["pinned_to"] == ["amy", "zed"] and rows[2]["drained"] is True
    assert set(rows[1]) >= {"uuid", "index", "name", "memory_total_mib", "state", "holder",
                            "pinned_to", "drained"}
    json.dumps(rows)


# --- held_from_containers edge cases -----------------------------------------------------
@pytest.mark.parametrize("status, holds", [
    ("created", True), ("running", True), ("restarting", True), ("paused", True),
    ("exited", False), ("dead", False), ("removing", False)])
def test_container_states(status, holds):
    held = held_from_containers([inspect("c", status, device_requests=cdi_request(uuid(0)))])
    assert (uuid(0) in held) is holds


def test_old_engines_without_status_use_the_flags():
    c = inspect("c", device_requests=cdi_request(uuid(0)))
    del c["State"]["Status"]
    assert uuid(0) in held_from_containers([c])
    c["State"]["Running"] = False
    assert held_from_containers([c]) == {}


def test_device_request_without_labels_still_holds_the_gpu():
    held = held_from_containers([inspect("someone-elses-job",
                                         device_requests=nvidia_request(uuid(2)))])
    assert held == {uuid(2): Holder("someone-elses-job")}


def test_labels_without_device_requests_hold():
    held = held_from_containers([inspect("x", "created", labels=hub_labels("amy", "big", uuid(1)))])
    assert held == {uuid(1): Holder("amy", "big")}


def test_labels_and_device_requests_are_united():
    c = inspect("x", labels=hub_labels("amy", gpu=f"{uuid(0)}, {uuid(1)}"),
                device_requests=cdi_request(uuid(2)) + nvidia_request(uuid(3)))
    assert sorted(held_from_containers([c])) == [uuid(i) for i in range(4)]


def test_docker_cli_gpus_flag_form_holds():
    """`docker run --gpus device=GPU-...` stores Driver "" with the gpu capability."""
    req = [{"Driver": "", "Count": 0, "DeviceIDs": [uuid(1)], "Capabilities": [["gpu"]],
            "Options": {}}]
    assert uuid(1) in held_from_containers([inspect("x", device_requests=req)])


def test_non_gpu_requests_and_other_cdi_kinds_are_ignored():
    reqs = [{"Driver": "", "Count": -1, "DeviceIDs": None, "Capabilities": [["tpu"]]},
            {"Driver": "cdi", "DeviceIDs": ["vendor.com/fpga=GPU-looks-like-one"]}]
    assert held_from_containers([inspect("x", device_requests=reqs)], inventory=gpus(2)) == {}


def test_indexes_all_and_counts_need_the_inventory():
    inv = gpus(4)
    by_index = inspect("x", device_requests=cdi_request("2"))
    everything = inspect("y", device_requests=nvidia_request(count=-1))
    two = inspect("z", device_requests=nvidia_request(count=2))
    cdi_all = inspect("w", device_requests=cdi_request("all"))
    assert held_from_containers([by_index, everything, two, cdi_all]) == {}
    assert list(held_from_containers([by_index], inventory=inv)) == [uuid(2)]
    assert sorted(held_from_containers([everything], inventory=inv)) == [uuid(i) for i in range(4)]
    assert sorted(held_from_containers([two], inventory=inv)) == [uuid(0), uuid(1)]
    assert sorted(held_from_containers([cdi_all], inventory=inv)) == [uuid(i) for i in range(4)]


def test_index_of_mig_parent_covers_its_instances():
    inv = [GPU("MIG-a", 0, parent_uuid="GPU-p"), GPU("MIG-b", 0, parent_uuid="GPU-p"),
           GPU("GPU-q", 1)]
    held = held_from_containers([inspect("x", device_requests=nvidia_request("0"))], inventory=inv)
    assert sorted(held) == ["MIG-a", "MIG-b"]


def test_container_list_form_and_name_fallback():
    listed = {"Id": "f" * 64, "Names": ["/jupyter-x"], "State": "running",
              "Labels": {"gpuhub.gpu.uuid": uuid(0)}}
    assert held_from_containers([listed]) == {uuid(0): Holder("jupyter-x")}


def test_since_label_parsing_and_custom_prefix():
    good = inspect("a", labels={"lab.user": "amy", "lab.gpu.uuid": uuid(0),
                                "lab.gpu.since": "12.5"})
    bad = inspect("b", labels={"lab.user": "bo", "lab.gpu.uuid": uuid(1),
                               "lab.gpu.since": "soon"})
    held = held_from_containers([good, bad], label_prefix="lab")
    assert held == {uuid(0): Holder("amy", "", 12.5), uuid(1): Holder("bo", "", None)}
    assert held_from_containers([good]) == {}  # other prefix: its labels mean nothing


def test_first_container_wins_a_double_claim():
    a = inspect("a", labels=hub_labels("amy"), device_requests=cdi_request(uuid(0)))
    b = inspect("b", labels=hub_labels("bo"), device_requests=nvidia_request(uuid(0)))
    assert held_from_containers([a, b])[uuid(0)].user == "amy"


def test_no_device_requests_hold_nothing():
    assert held_from_containers([inspect("plain", labels=hub_labels("amy"))]) == {}


# --- intent --------------------------------------------------------------------------------
def test_intent_json_round_trip_is_stable_and_sorted():
    intent = Intent(pins={"zed": uuid(1), "amy": uuid(0)}, drained={uuid(3), uuid(2)})
    data = intent.to_json()
    assert json.dumps(data) == json.dumps({"pins": {"amy": uuid(0), "zed": uuid(1)},
                                           "drained": [uuid(2), uuid(3)]})
    assert Intent.from_json(data) == intent
    assert Intent.from_json(json.dumps(data)) == intent
    assert Intent.from_json(None) == Intent() == Intent.from_json({})


@pytest.mark.parametrize("bad", [{"pins": ["amy"]}, {"pins": {"amy": 3}},
                                 {"drained": "GPU-a"}, {"drained": [1]}])
def test_intent_from_json_rejects_bad_types(bad):
    with pytest.raises(ValueError, match="intent"):
        Intent.from_json(bad)


def test_intent_changes_are_persisted():
    alloc = Allocator(gpus(2), Intent())
    alloc.intent = alloc.intent.with_pin("amy", uuid(1))
    alloc.intent = alloc.intent.with_drained(uuid(0))
    assert alloc.intent.to_json() == {"pins": {"amy": uuid(1)}, "drained": [uuid(0)]}
    alloc.intent = alloc.intent.without_pin("amy")
    alloc.intent = alloc.intent.without_drained(uuid(0))
    alloc.intent = alloc.intent.without_pin("nobody")
    alloc.intent = alloc.intent.without_drained("GPU-stale")  # cleaning up stale intent never fails
    assert alloc.intent.to_json() == {"pins": {}, "drained": []}


# --- properties: exclusivity through allocate / release / crash / restart ------------------
USERS = st.sampled_from(["alice", "bob", "carol", "dave"])
SERVERS = st.sampled_from(["", "train"])
INVENTORY = gpus(3)
UUIDS = st.sampled_from([g.uuid for g in INVENTORY])
STYLES = st.sampled_from(["cdi", "nvidia", "labels"])


class AllocationMachine(RuleBasedStateMachine):
    """An engine (container dicts) and an allocator driven the way the spawner will."""

    def __init__(self):
        super().__init__()
        self.engine: dict[tuple[str, str], dict] = {}
        self.alloc = Allocator(INVENTORY, Intent())

    def engine_held(self):
        return held_from_containers(list(self.engine.values()))

    @rule(user=USERS, server=SERVERS, style=STYLES)
    def spawn(self, user, server, style):
        alloc, before = self.alloc, self.alloc.gpu_of(user, server)
        pinned = alloc.intent.pins.get(user)
        try:
            gpu = alloc.allocate(user, server)
        except NoGPUAvailable as e:
            assert before is None
            if pinned is None:
                assert alloc.free() == [] and e.free == 0
            else:
                assert pinned in alloc.intent.drained or alloc.holder_of(pinned) is not None \
                    or pinned not in {g.uuid for g in INVENTORY}
            return
        if before is not None:
            assert gpu == before
            return
        assert gpu.uuid not in self.engine_held(), "handed out a GPU a container holds"
        assert gpu.uuid not in alloc.intent.drained, "handed out a drained GPU"
        pinned_to = {u for u, pin in alloc.intent.pins.items() if pin == gpu.uuid}
        assert not pinned_to or user in pinned_to, "handed out a GPU pinned to others only"
        assert pinned in (None, gpu.uuid)
        requests = {"cdi": cdi_request(gpu.uuid), "nvidia": nvidia_request(gpu.uuid),
                    "labels": None}[style]
        labels = hub_labels(user, server, gpu.uuid if style == "labels" else None)
        self.engine[(user, server)] = inspect(f"jupyter-{user}-{server}", "created", labels,
                                              requests)

    @rule(user=USERS, server=SERVERS)
    def stop(self, user, server):
        gpu = self.alloc.gpu_of(user, server)
        container = self.engine.pop((user, server), None)
        assert (gpu is None) == (container is None or container["State"]["Status"] == "exited")
        self.alloc.reconcile(self.engine_held())
        assert self.alloc.gpu_of(user, server) is None

    @precondition(lambda self: self.engine)
    @rule(data=st.data(), remove=st.booleans())
    def crash(self, data, remove):
        """A container dies behind the hub's back; the next reconcile notices."""
        key = data.draw(st.sampled_from(sorted(self.engine)))
        if remove:
            del self.engine[key]
        else:
            self.engine[key]["State"].update(Status="exited", Running=False, ExitCode=137)
        self.alloc.reconcile(self.engine_held())

    @rule()
    def restart_hub(self):
        intent = Intent.from_json(json.loads(json.dumps(self.alloc.intent.to_json())))
        self.alloc = Allocator(INVENTORY, intent)
        self.alloc.reconcile(self.engine_held())

    @rule(user=USERS, uuid_=UUIDS)
    def pin(self, user, uuid_):
        self.alloc.intent = self.alloc.intent.with_pin(user, uuid_)

    @rule(user=USERS)
    def unpin(self, user):
        self.alloc.intent = self.alloc.intent.without_pin(user)

    @rule(uuid_=UUIDS, on=st.booleans())
    def drain(self, uuid_, on):
        intent = self.alloc.intent
        self.alloc.intent = intent.with_drained(uuid_) if on else intent.without_drained(uuid_)

    @invariant()
    def one_holder_per_gpu_in_the_engine(self):
        claims = [u for c in self.engine.values() for u in held_from_containers([c])]
        assert len(claims) == len(set(claims)), "two containers hold one GPU"

    @invariant()
    def allocator_agrees_with_the_engine(self):
        engine = self.engine_held()
        assert {g.uuid: self.alloc.holder_of(g.uuid) for g in INVENTORY} == {
            g.uuid: engine.get(g.uuid) for g in INVENTORY}


AllocationMachine.TestCase.settings = settings(
    max_examples=300, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestAllocationMachine = AllocationMachine.TestCase
