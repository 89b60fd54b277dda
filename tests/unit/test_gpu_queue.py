"""The line for GPUs (hub/gpus/queue.py): order, who may overtake whom, the file on the state
volume, the old places after a hub restart, and the estimate."""
import asyncio

import pytest

from hub.gpus.queue import GPUQueue, read_line


def test_fifo_and_only_a_waiter_the_gpu_suits_holds_others_up(tmp_path):
    clock = [100.0]
    q = GPUQueue(tmp_path / "q.json", clock=lambda: clock[0])
    a = q.join("a", "")
    clock[0] += 1
    b = q.join("b", "", frozenset({"course-x"}))
    assert q.join("a", "") is a and [q.position(a), q.position(b)] == [1, 2]
    anyone = lambda user, groups: True  # noqa: E731
    assert not q.blocked("a", "", anyone) and q.blocked("b", "", anyone) and q.blocked("newcomer", "", anyone)
    only_course_x = lambda user, groups: "course-x" in groups  # noqa: E731 - a GPU reserved for course-x
    assert not q.blocked("b", "", only_course_x)  # a cannot take it, so b is not held up
    assert [e["user"] for e in read_line(tmp_path / "q.json")] == ["a", "b"]
    q.done(a)
    assert q.position(a) == 0 and q.position(b) == 1 and [e["user"] for e in read_line(tmp_path / "q.json")] == ["b"]


def test_wake_sets_every_waiters_event():
    async def run():
        q = GPUQueue()
        a, b = q.join("a", ""), q.join("b", "")
        q.wake()
        return a.event.is_set() and b.event.is_set()
    assert asyncio.run(run())


def test_a_restarted_hub_gives_old_places_back_to_those_who_rejoin_soon(tmp_path):
    clock = [100.0]
    old = GPUQueue(tmp_path / "q.json", clock=lambda: clock[0])
    old.join("a", "")
    clock[0] += 10
    old.join("b", "")
    clock[0] += 100  # the hub restarts
    new = GPUQueue(tmp_path / "q.json", clock=lambda: clock[0], rejoin_window=60)
    assert [(e["user"], e["position"]) for e in new.recover()] == [("a", 1), ("b", 2)]
    assert read_line(tmp_path / "q.json") == []  # those starts are gone
    c = new.join("c", "")
    clock[0] += 5
    b = new.join("b", "")  # back within the window: before c, who joined after the restart
    assert new.position(b) == 1 and new.position(c) == 2
    clock[0] += 100
    a = new.join("a", "")  # too late: at the end
    assert new.position(a) == 3


def test_estimate_from_the_pace_of_hand_overs():
    clock = [0.0]
    q = GPUQueue(clock=lambda: clock[0])
    assert q.estimate(1) is None
    for t in (0.0, 1.0, 2.0):  # a burst let through on free GPUs: no hand-overs
        clock[0] = t
        q.done(q.join(f"burst{t}", ""))
    assert q.estimate(1) is None
    for t in (10.0, 70.0, 130.0):
        clock[0] = t
        w = q.join(f"u{t}", "")
        w.waited = True
        q.done(w)
    assert q.estimate(3) == 180.0


# ---- the spawner in line ------------------------------------------------------------------------
def test_spawners_wait_in_line_in_order_and_a_cancel_leaves_it(monkeypatch, tmp_path):
    from console_fakes import FakeEngine, container
    from test_spawner import make_spawner

    from hub.gpus.manager import GPUManager
    from hub.gpus.model import GPU
    from hub.hub_process.spawner.spawner import PROCESS

    engine = FakeEngine()
    engine.containers = [container("c-alice", "GPU-0", "alice"), container("c-bob", "GPU-1", "bob")]
    manager = GPUManager([GPU("GPU-0", 0), GPU("GPU-1", 1)], "static", "cdi", str(tmp_path / "intent.json"), "gpuhub")
    monkeypatch.setattr(PROCESS, "gpu_manager", manager)
    monkeypatch.setattr(PROCESS, "gpu_queue", GPUQueue(tmp_path / "q.json"))
    spawners = {n: make_spawner(n, gpu_when_full="queue") for n in ("w1", "w2", "w3")}
    for s in spawners.values():
        s.engine = engine

    def told(name):
        return [e["message"] for e in spawners[name].progress_log.events]

    async def scenario():
        tasks = {}
        for name in ("w1", "w2", "w3"):
            tasks[name] = asyncio.create_task(spawners[name].wait_for_gpu())
            await asyncio.sleep(0.01)
        assert [w["user"] for w in read_line(tmp_path / "q.json")] == ["w1", "w2", "w3"]
        assert "You are next in line" in told("w1")[-1] and "number 3 in line" in told("w3")[-1]
        engine.containers.pop(0)  # alice's server stops: GPU-0 is free
        PROCESS.gpu_queue.wake()
        await asyncio.wait_for(tasks["w1"], 2)  # the first in line may take it
        await asyncio.sleep(0.05)
        assert not tasks["w2"].done()  # w1 keeps its place until its container exists
        engine.containers.append(container("c-w1", "GPU-0", "w1"))
        PROCESS.gpu_queue.done(spawners["w1"]._waiter)
        await asyncio.sleep(0.05)
        assert "You are next in line" in told("w2")[-1] and not tasks["w2"].done()
        tasks["w3"].cancel()  # Cancel on the spawn page
        with pytest.raises(asyncio.CancelledError):
            await tasks["w3"]
        assert [w["user"] for w in read_line(tmp_path / "q.json")] == ["w2"]
        tasks["w2"].cancel()
        with pytest.raises(asyncio.CancelledError):
            await tasks["w2"]
    asyncio.run(asyncio.wait_for(scenario(), 10))  # bounded: a start stuck in line fails the test
    assert read_line(tmp_path / "q.json") == []


def test_a_burst_lets_through_no_more_starts_than_gpus_are_free():
    q = GPUQueue()
    anyone = lambda user, groups: True  # noqa: E731
    let_through = []
    for name in ("a", "b", "c", "d"):
        w = q.join(name, "")
        if not q.blocked(name, "", anyone, free=2):
            w.passed = True  # starting: its container is not there yet
            let_through.append(name)
    assert let_through == ["a", "b"]  # two GPUs free: the third waits, however free they look
    assert not q.blocked("a", "", anyone, free=2)  # a passed start is never held up by the others


def test_an_empty_line_blocks_nobody_so_the_allocator_says_why_no_gpu_is_free():
    from hub.gpus.queue import GPUQueue

    queue = GPUQueue()
    assert not queue.blocked("amy", "", lambda user, groups: True, free=0)  # all GPUs in use, nobody waiting
    assert not queue.blocked("amy", "", lambda user, groups: True, free=2)


def test_an_admins_move_reorders_the_line_once_and_later_arrivals_still_go_last(tmp_path):
    from hub.gpus.queue import move_outcome, request_move, withdraw_move

    clock = [1000.0]
    q = GPUQueue(tmp_path / "gpu-queue.json", clock=lambda: clock[0])
    for name in "abcd":
        q.join(name, "")
        clock[0] += 1
    assert not q.apply_moves()  # no moves file: nothing to do
    first = request_move(tmp_path / "gpu-queue.json", "d", "", 1, clock[0])
    assert move_outcome(tmp_path / "gpu-queue.json", first) is None  # the hub has not looked yet
    assert q.apply_moves() and move_outcome(tmp_path / "gpu-queue.json", first) == "moved"
    assert [e["user"] for e in read_line(tmp_path / "gpu-queue.json")] == ["d", "a", "b", "c"]
    assert all(w.event.is_set() for w in q.waiters)  # every waiter shows its new place
    assert not q.apply_moves()  # applied once
    second = request_move(tmp_path / "gpu-queue.json", "a", "", 3, clock[0])
    gone = request_move(tmp_path / "gpu-queue.json", "zed", "", 1, clock[0])
    q.find("b", "").passed = True  # b is starting: it cannot be moved
    starting = request_move(tmp_path / "gpu-queue.json", "b", "", 4, clock[0])
    q.apply_moves()
    assert [w.user for w in q.waiters] == ["d", "b", "a", "c"]
    assert [move_outcome(tmp_path / "gpu-queue.json", m) for m in (second, gone, starting)] == \
        ["moved", "not in line", "starting"]
    clock[0] += 1
    q.join("e", "")  # a later arrival: the end of the line, whatever the moves
    assert [w.user for w in q.waiters] == ["d", "b", "a", "c", "e"]
    last = request_move(tmp_path / "gpu-queue.json", "d", "", 99, clock[0])  # past the end: last
    withdrawn = request_move(tmp_path / "gpu-queue.json", "c", "", 1, clock[0])
    withdraw_move(tmp_path / "gpu-queue.json", withdrawn)
    q.apply_moves()
    assert [w.user for w in q.waiters] == ["b", "a", "c", "e", "d"]
    assert move_outcome(tmp_path / "gpu-queue.json", withdrawn) is None


def test_moves_from_before_this_hub_process_and_malformed_ones_are_ignored(tmp_path):
    import json

    from hub.gpus.queue import moves_file, request_move

    request_move(tmp_path / "gpu-queue.json", "b", "", 1, 500.0)  # asked of the previous hub process
    moves_file(tmp_path / "gpu-queue.json").write_text(json.dumps({"moves": [
        *json.loads(moves_file(tmp_path / "gpu-queue.json").read_text())["moves"],
        {"id": "x", "user": "b", "server": "", "position": "1", "at": 2000.0}, "junk"]}))
    q = GPUQueue(tmp_path / "gpu-queue.json", clock=lambda: 1000.0)
    q.join("a", "")
    q.join("b", "")
    assert not q.apply_moves() and [w.user for w in q.waiters] == ["a", "b"]


def test_a_moved_place_survives_a_hub_restart_for_who_rejoins(tmp_path):
    from hub.gpus.queue import request_move

    clock = [1000.0]
    old = GPUQueue(tmp_path / "q.json", clock=lambda: clock[0])
    old.join("a", "")
    clock[0] += 1
    old.join("b", "")
    request_move(tmp_path / "q.json", "b", "", 1, clock[0])
    old.apply_moves()
    clock[0] += 10
    new = GPUQueue(tmp_path / "q.json", clock=lambda: clock[0])
    new.recover()
    a, b = new.join("a", ""), new.join("b", "")
    assert new.position(b) == 1 and new.position(a) == 2


def test_a_parked_servers_resume_waits_only_for_its_own_gpu_and_goes_before_those_behind_it(tmp_path):
    """A parked server in line (``gpu=``) can take only the GPU it was parked on: while that is
    held it holds nobody up (another free GPU goes to the next in line); once it is free, it
    resumes before anyone behind it is given that GPU, and after those before it."""
    from hub.gpus.allocator import Allocator
    from hub.gpus.model import GPU, Holder
    alloc = Allocator([GPU("GPU-0", 0), GPU("GPU-1", 1)])
    alloc.reconcile({"GPU-0": Holder("bob"), "GPU-1": Holder("carol")})
    clock = [100.0]
    q = GPUQueue(tmp_path / "q.json", clock=lambda: clock[0])
    parked = q.join("alice", "", gpu="GPU-0")
    clock[0] += 1
    dave = q.join("dave", "")
    assert [e.get("resume_gpu") for e in read_line(tmp_path / "q.json")] == ["GPU-0", None]
    assert not q.may_resume(alloc, parked)  # bob holds it

    alloc.reconcile({"GPU-0": Holder("bob")})  # carol stops: GPU-1 is free, alice cannot take it
    assert not q.may_resume(alloc, parked)
    assert not q.must_wait(alloc, "dave", "", frozenset(), clock[0]), "alice must not hold dave up for GPU-1"

    q.done(dave)  # dave took GPU-1
    alloc.reconcile({"GPU-1": Holder("dave")})  # bob stops: GPU-0 is alice's, not the newcomer's
    assert q.may_resume(alloc, parked)
    assert q.must_wait(alloc, "erin", "", frozenset(), clock[0]), "a later arrival must not take alice's GPU"
    q.done(parked)
    assert not q.must_wait(alloc, "erin", "", frozenset(), clock[0])


def test_a_resume_waits_for_those_before_it_in_line(tmp_path):
    from hub.gpus.allocator import Allocator
    from hub.gpus.model import GPU
    alloc = Allocator([GPU("GPU-0", 0)])
    q = GPUQueue(tmp_path / "q.json")
    first = q.join("bob", "")
    parked = q.join("alice", "", gpu="GPU-0")
    assert not q.may_resume(alloc, parked), "bob came first and can take the free GPU"
    q.leave(first)
    assert q.may_resume(alloc, parked)


def test_after_a_hub_restart_a_resume_is_remembered_to_rejoin_and_told_nothing(tmp_path):
    from hub.hub_process.spawner import spawner as spawner_module
    from hub.hub_process.spawner.process import PROCESS
    old = GPUQueue(tmp_path / "gpu-queue.json")
    old.join("alice", "", gpu="GPU-0")
    old.join("bob", "")
    saved = PROCESS.gpu_queue
    PROCESS.gpu_queue = GPUQueue()
    try:
        spawner_module.recover_gpu_queue(str(tmp_path / "gpu-queue.json"), str(tmp_path / "reasons.json"))
        assert PROCESS.gpu_queue.previous_resumes == {("alice", ""): "GPU-0"}
        reasons = (tmp_path / "reasons.json").read_text()
        assert "bob" in reasons and "alice" not in reasons
        back = PROCESS.gpu_queue.join("alice", "", gpu="GPU-0")
        assert PROCESS.gpu_queue.position(back) == 1 and back.gpu == "GPU-0"
    finally:
        PROCESS.gpu_queue = saved
