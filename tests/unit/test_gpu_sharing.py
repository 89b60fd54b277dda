"""Shared GPUs (capacity K), course reservations and MIG instances in the pure allocator."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.gpus.allocator import Allocator
from hub.gpus.claim import holders_from_containers
from hub.gpus.model import GPU, Holder, Intent, NoGPUAvailable, Reservation
from test_gpu_allocator import cdi_request, gpus, hub_labels, inspect, uuid

NINE, TEN, ELEVEN = 9 * 3600.0, 10 * 3600.0, 11 * 3600.0


def lab(course="ml101", gpu_ids=(0, 1), start=NINE, end=ELEVEN, rid="r1") -> Reservation:
    return Reservation(rid, course, tuple(uuid(i) for i in gpu_ids), start, end)


# --- shared GPUs ---------------------------------------------------------------------------
def test_a_shared_gpu_serves_capacity_users_and_refuses_the_next_with_the_reason():
    alloc = Allocator(gpus(1), Intent(shared={uuid(0): 4}))
    got = {alloc.allocate(f"student{i}").uuid for i in range(4)}
    assert got == {uuid(0)}
    assert [h.user for h in alloc.holders_of(uuid(0))] == [f"student{i}" for i in range(4)]
    with pytest.raises(NoGPUAvailable) as err:
        alloc.allocate("student4")
    assert "shared GPU #0 has all 4 seats taken" in str(err.value)
    alloc.reconcile({uuid(0): [h for h in alloc.holders_of(uuid(0)) if h.user != "student2"]})  # student2 stopped
    assert alloc.allocate("student4").uuid == uuid(0)


def test_whole_gpus_go_first_then_the_least_used_shared_seat():
    intent = Intent(shared={uuid(1): 3, uuid(2): 3})
    alloc = Allocator(gpus(3), intent)
    order = [alloc.allocate(f"u{i}").uuid for i in range(7)]
    assert order == [uuid(0), uuid(1), uuid(2), uuid(1), uuid(2), uuid(1), uuid(2)]
    assert alloc.free() == [] and alloc.seats() == {}


def test_free_counts_whole_gpus_and_seats_separately():
    alloc = Allocator(gpus(3), Intent(shared={uuid(2): 4}))
    alloc.allocate("a")
    alloc.allocate("b")
    alloc.allocate("c")  # the shared one
    assert alloc.free() == []
    assert alloc.seats() == {uuid(2): 3}


def test_a_server_holds_one_seat_and_keeps_it():
    alloc = Allocator(gpus(1), Intent(shared={uuid(0): 2}))
    first = alloc.allocate("alice")
    assert alloc.allocate("alice") == first
    assert len(alloc.holders_of(uuid(0))) == 1


def test_pinned_to_a_shared_gpu_takes_a_seat_while_one_is_left():
    alloc = Allocator(gpus(2), Intent(pins={"a": uuid(1), "b": uuid(1), "c": uuid(1)}, shared={uuid(1): 2}))
    assert alloc.allocate("a").uuid == uuid(1)
    assert alloc.allocate("b").uuid == uuid(1)
    with pytest.raises(NoGPUAvailable, match="shared and all its 2 seats are taken"):
        alloc.allocate("c")


def test_snapshot_lists_every_holder_and_the_capacity():
    alloc = Allocator(gpus(2), Intent(shared={uuid(1): 4}))
    alloc.allocate("a")
    alloc.allocate("b")
    alloc.allocate("c")
    rows = {r["uuid"]: r for r in alloc.snapshot()}
    assert rows[uuid(1)]["shared"] and rows[uuid(1)]["capacity"] == 4
    assert [h["user"] for h in rows[uuid(1)]["holders"]] == ["b", "c"]
    assert rows[uuid(1)]["holder"]["user"] == "b" and rows[uuid(1)]["state"] == "held"
    assert rows[uuid(0)]["capacity"] == 1 and not rows[uuid(0)]["shared"]


def test_the_engine_shows_every_container_on_a_shared_gpu():
    containers = [inspect(f"jupyter-s{i}", labels=hub_labels(f"s{i}", gpu=uuid(0)),
                          device_requests=cdi_request(uuid(0)), cid=str(i) * 64) for i in range(3)]
    held = holders_from_containers(containers)
    assert [h.user for h in held[uuid(0)]] == ["s0", "s1", "s2"]
    alloc = Allocator(gpus(1), Intent(shared={uuid(0): 3}))
    alloc.reconcile(held)
    with pytest.raises(NoGPUAvailable, match="all 3 seats taken"):
        alloc.allocate("s3")


def test_unsharing_a_gpu_never_evicts_its_holders_but_gives_it_to_no_one_else():
    alloc = Allocator(gpus(1), Intent(shared={uuid(0): 2}))
    alloc.allocate("a")
    alloc.intent.shared.clear()
    with pytest.raises(NoGPUAvailable, match="the only GPU is in use"):
        alloc.allocate("b")
    assert alloc.allocate("a").uuid == uuid(0)


# --- course reservations -------------------------------------------------------------------
def test_during_the_window_the_course_gets_its_gpus_first_and_others_get_the_rest():
    alloc = Allocator(gpus(4), Intent(reservations=[lab()]))
    a = [alloc.allocate(f"a{i}", groups=["ml101"], now=TEN).uuid for i in range(2)]
    b = [alloc.allocate(f"b{i}", groups=["nlp"], now=TEN).uuid for i in range(2)]
    assert a == [uuid(0), uuid(1)] and b == [uuid(2), uuid(3)]
    with pytest.raises(NoGPUAvailable) as err:
        alloc.allocate("b2", groups=["nlp"], now=TEN)
    assert "in use" in str(err.value)


def test_others_are_refused_reserved_gpus_with_the_course_named():
    alloc = Allocator(gpus(2), Intent(reservations=[lab()]))
    with pytest.raises(NoGPUAvailable) as err:
        alloc.allocate("outsider", groups=["nlp"], now=TEN)
    assert "2 GPUs reserved for course 'ml101' now" in str(err.value)


def test_course_members_fall_back_to_free_gpus_once_their_reserved_ones_are_taken():
    alloc = Allocator(gpus(3), Intent(reservations=[lab(gpu_ids=(2,))]))
    assert alloc.allocate("a0", groups=["ml101"], now=TEN).uuid == uuid(2)
    assert alloc.allocate("a1", groups=["ml101"], now=TEN).uuid == uuid(0)


@pytest.mark.parametrize("now", [NINE - 1, ELEVEN, ELEVEN + 3600])
def test_outside_the_window_normal_rules_apply(now):
    alloc = Allocator(gpus(2), Intent(reservations=[lab()]))
    assert alloc.allocate("outsider", groups=[], now=now).uuid == uuid(0)
    assert alloc.snapshot(now)[0]["reserved_for"] is None


def test_a_reserved_shared_gpu_seats_the_course_only():
    intent = Intent(shared={uuid(0): 4}, reservations=[lab(gpu_ids=(0,))])
    alloc = Allocator(gpus(1), intent)
    for i in range(4):
        assert alloc.allocate(f"s{i}", groups=["ml101"], now=TEN).uuid == uuid(0)
    with pytest.raises(NoGPUAvailable, match="all 4 seats taken"):
        alloc.allocate("s4", groups=["ml101"], now=TEN)


def test_a_reservation_does_not_evict_a_running_outsider():
    alloc = Allocator(gpus(2))
    alloc.allocate("early", now=NINE - 60)
    alloc.intent.reservations.append(lab())
    assert alloc.allocate("early", now=TEN).uuid == uuid(0)
    assert alloc.allocate("a0", groups=["ml101"], now=TEN).uuid == uuid(1)
    assert alloc.snapshot(TEN)[1]["state"] == "held"


# --- MIG -------------------------------------------------------------------------------------
def test_mig_instances_are_allocated_like_gpus_each_to_one_user():
    parent = "GPU-aaaaaaaa-0000-4000-8000-000000000000"
    migs = [GPU(f"MIG-{i:08x}-0000-4000-8000-000000000000", 0, "MIG 1g.10gb", 9728, parent) for i in range(3)]
    alloc = Allocator([*migs, GPU(uuid(1), 1)])
    got = [alloc.allocate(f"u{i}").uuid for i in range(4)]
    assert sorted(got) == sorted([m.uuid for m in migs] + [uuid(1)])
    held = holders_from_containers([inspect("x", labels=hub_labels("x", gpu=migs[0].uuid),
                                            device_requests=cdi_request(migs[0].uuid))])
    assert held == {migs[0].uuid: [Holder("x")]}


# --- intent file -----------------------------------------------------------------------------
def test_intent_json_round_trips_shared_and_reservations():
    intent = Intent(shared={uuid(0): 4}, reservations=[lab(), lab("nlp", (2,), TEN, ELEVEN, "r2")])
    again = Intent.from_json(intent.to_json())
    assert again.shared == {uuid(0): 4} and again.reservations == intent.reservations
    assert "shared" not in Intent().to_json() and "reservations" not in Intent().to_json()


@pytest.mark.parametrize("data, message", [
    ({"shared": {uuid(0): 1}}, "capacities from 2"),
    ({"shared": {uuid(0): True}}, "capacities from 2"),
    ({"shared": [uuid(0)]}, "must map"),
    ({"reservations": {"r": 1}}, "must be a list"),
    ({"reservations": [{"id": "r", "course": "c", "gpus": [], "start": 1, "end": 2}]}, "non-empty list"),
    ({"reservations": [{"id": "r", "course": "c", "gpus": ["G"], "start": 2, "end": 1}]}, "end after start"),
    ({"reservations": [{"id": "r", "course": "", "gpus": ["G"], "start": 1, "end": 2}]}, "non-empty strings"),
    ({"reservations": [{"id": "r", "course": "c", "gpus": ["G"], "start": 1}]}, "must be"),
    ({"reservations": [{"id": "r", "course": "c", "gpus": ["G"], "start": 1, "end": 2}] * 2}, "same id"),
])
def test_intent_rejects_bad_shared_and_reservations(data, message):
    with pytest.raises(ValueError, match=message):
        Intent.from_json(data)


# --- property: capacity is never exceeded, reservations never leak -------------------------
@settings(max_examples=200, deadline=None)
@given(caps=st.lists(st.integers(1, 4), min_size=1, max_size=4),
       reserved=st.sets(st.integers(0, 3), max_size=2),
       users=st.lists(st.integers(0, 20), max_size=30),
       now=st.sampled_from([NINE - 1, TEN, ELEVEN]))
def test_capacity_and_reservations_hold_whatever_the_order(caps, reserved, users, now):
    inventory = gpus(len(caps))
    shared = {uuid(i): k for i, k in enumerate(caps) if k > 1}
    reserved = tuple(i for i in reserved if i < len(caps))
    reservations = [lab(gpu_ids=reserved)] if reserved else []
    alloc = Allocator(inventory, Intent(shared=shared, reservations=reservations))
    for n in users:
        member = n % 2 == 0  # even users are in the course
        groups = ["ml101"] if member else ["other"]
        try:
            gpu = alloc.allocate(f"u{n}", groups=groups, now=now)
        except NoGPUAvailable:
            continue
        if reservations and reservations[0].active(now) and gpu.uuid in reservations[0].gpus:
            assert member, "a reserved GPU went to someone outside the course"
    for g in inventory:
        assert len(alloc.holders_of(g.uuid)) <= max(1, shared.get(g.uuid, 1))
