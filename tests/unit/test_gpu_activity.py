"""GPU activity per holder (hub/gpus/activity.py); the decisions on it: test_reclaim_policy.py."""
import pytest

from hub.gpus.activity import ActivitySampler, ActivityStore, load_reader
from hub.gpus.model import Holder
from hub.gpus.nvml import NVMLReader, Reading, Unavailable


class Feed:
    """A reader whose next readings the test sets: uuid -> utilisation %."""

    def __init__(self, **utils):
        self.utils = utils
        self.available = True

    def read(self):
        if not self.available:
            raise Unavailable("no NVML in this test")
        return [Reading(uuid, i, "Fake GPU", util, 1000 + i, 81920)
                for i, (uuid, util) in enumerate(sorted(self.utils.items()))]


def sampler_at(tmp_path, feed, clock):
    return ActivitySampler(feed, interval=10, clock=lambda: clock[0], store=ActivityStore(tmp_path / "a.sqlite"))


def test_readings_are_attributed_to_the_holder_and_idle_time_survives_a_restart(tmp_path):
    clock = [1000.0]
    feed = Feed(**{"GPU-a": 50, "GPU-b": 0, "GPU-c": 0})
    alice, bob = Holder("alice", "", 990.0), Holder("bob", "big", 990.0)
    holders = {"GPU-a": [alice], "GPU-b": [bob]}  # GPU-c is free
    sampler = sampler_at(tmp_path, feed, clock)
    got = sampler.sample(holders)
    assert {(r.uuid, r.user, r.server, r.utilization_pct) for r in got} == {("GPU-a", "alice", "", 50),
                                                                           ("GPU-b", "bob", "big", 0)}
    for _ in range(6):  # a minute: alice busy, then idle; bob idle throughout
        clock[0] += 10
        feed.utils["GPU-a"] = 3 if clock[0] >= 1030 else 60
        sampler.sample(holders)
    store = sampler.store
    assert store.idle_since(bob, "GPU-b", 5) == 1000.0
    assert store.idle_since(alice, "GPU-a", 5) == 1030.0
    assert store.idle_since(alice, "GPU-a", 2) is None  # 3 % is busy for a 2 % threshold
    store.close()
    # a restart: a new sampler on the same file knows since when both were idle
    again = sampler_at(tmp_path, feed, clock)
    assert again.store.idle_since(bob, "GPU-b", 5) == 1000.0
    feed.utils["GPU-b"] = 90  # busy again: not idle any more
    clock[0] += 10
    again.sample(holders)
    assert again.store.idle_since(bob, "GPU-b", 5) is None
    # a new holding of the same GPU by the same user does not inherit the old history
    clock[0] += 10
    feed.utils["GPU-b"] = 0
    later = Holder("bob", "big", clock[0])
    again.sample({"GPU-b": [later]})
    assert again.store.idle_since(later, "GPU-b", 5) == clock[0]


def test_no_utilisation_or_no_nvml_is_never_idle(tmp_path):
    clock = [1000.0]
    feed = Feed(**{"MIG-a": None})  # MIG instances give no utilisation
    h = Holder("alice", "", 0.0)
    sampler = sampler_at(tmp_path, feed, clock)
    sampler.sample({"MIG-a": [h]})
    assert sampler.store.idle_since(h, "MIG-a", 5) is None
    feed.available = False
    assert sampler.sample({"MIG-a": [h]}) == [] and sampler.source == "n/a" and "NVML" in sampler.reason


def test_old_readings_are_pruned(tmp_path):
    clock = [1000.0]
    feed = Feed(**{"GPU-a": 0})
    h = Holder("alice", "", 0.0)
    sampler = ActivitySampler(feed, interval=10, clock=lambda: clock[0],
                              store=ActivityStore(tmp_path / "a.sqlite", keep=100))
    sampler.sample({"GPU-a": [h]})
    clock[0] += 200
    sampler.sample({"GPU-a": [h]})
    assert sampler.store.idle_since(h, "GPU-a", 5) == 1200.0  # the first reading is gone


def test_load_reader():
    assert isinstance(load_reader("nvml"), NVMLReader)
    assert isinstance(load_reader("test_gpu_activity:Feed"), Feed)
    with pytest.raises(ValueError, match="module:attribute"):
        load_reader("nonsense")
