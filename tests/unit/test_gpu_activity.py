"""GPU activity per holder (hub/gpus/activity.py) and the idle-reclaim decisions (hub/gpus/reclaim_policy.py)."""
import pytest

from hub.gpus.activity import ActivitySampler, ActivityStore, load_reader
from hub.gpus.model import Holder
from hub.gpus.nvml import NVMLReader, Reading, Unavailable
from hub.gpus.reclaim_policy import (Candidate, PolicyTable, ReclaimOverride, ReclaimPolicy, ReclaimState, decide,
                                next_due, parse_override, stop_message)


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


# ---- decisions ------------------------------------------------------------------------------
POLICY = ReclaimPolicy(threshold_pct=5, timeout=1800, grace=600, exempt_users=frozenset({"root"}),
                       exempt_groups=frozenset({"long-jobs"}))


def c(user, idle_since, groups=(), uuid="GPU-a"):
    return Candidate(user, "", uuid, idle_since, frozenset(groups))


def test_idle_server_is_warned_then_stopped_after_the_grace():
    state = ReclaimState()
    assert decide(POLICY, [c("alice", 0.0)], state, 1799.0) == []
    [warn] = decide(POLICY, [c("alice", 0.0)], state, 1800.0)
    assert (warn.action, warn.deadline) == ("warn", 2400.0)
    assert decide(POLICY, [c("alice", 0.0)], state, 2399.0) == []
    [stop] = decide(POLICY, [c("alice", 0.0)], state, 2400.0)
    assert stop.action == "stop" and stop.key == ("alice", "", "GPU-a") and not state.warned


def test_busy_again_clears_the_warning_and_still_working_counts_once():
    state = ReclaimState()
    decide(POLICY, [c("alice", 0.0)], state, 1800.0)
    key = ("alice", "", "GPU-a")
    assert state.still_working(key, POLICY.grace).deadline == 3000.0
    with pytest.raises(ValueError, match="busy again"):
        state.still_working(key, POLICY.grace)
    assert decide(POLICY, [c("alice", 0.0)], state, 2500.0) == []  # the answer moved the deadline
    [clear] = decide(POLICY, [c("alice", None)], state, 2600.0)  # GPU work resumed
    assert clear.action == "clear" and clear.why == "busy again" and not state.warned
    assert state.still_working(key, POLICY.grace) is None  # no warning: nothing to answer


def test_exempt_users_groups_extensions_and_off_are_never_reclaimed():
    state = ReclaimState()
    assert decide(POLICY, [c("root", 0.0), c("carol", 0.0, ["long-jobs"])], state, 99999.0) == []
    state.extended[("alice", "")] = 5000.0
    assert decide(POLICY, [c("alice", 0.0)], state, 4000.0) == []
    [warn] = decide(POLICY, [c("alice", 0.0)], state, 5000.0)  # the extension ran out
    assert warn.action == "warn" and ("alice", "") not in state.extended
    off = ReclaimPolicy(timeout=0)
    [clear] = decide(off, [c("alice", 0.0)], state, 6000.0)
    assert clear.why == "reclaim is off" and decide(off, [c("bob", 0.0)], state, 9e9) == []


def test_a_server_gone_loses_its_warning_and_state_round_trips():
    state = ReclaimState()
    decide(POLICY, [c("alice", 0.0), c("bob", 100.0, uuid="GPU-b")], state, 2000.0)
    state.extended[("carol", "x")] = 9000.0
    again = ReclaimState.from_json(state.to_json())
    assert again.warned == state.warned and again.extended == state.extended
    [clear] = decide(POLICY, [c("alice", 0.0)], again, 2100.0)
    assert clear.key == ("bob", "", "GPU-b") and clear.why == "no longer holds the GPU"


def test_stop_message_says_why_and_that_files_are_kept():
    text = stop_message("H200 GPU-a", POLICY, 0.0, 2400.0)
    assert "H200 GPU-a" in text and "40 minutes" in text and "5 %" in text and "files" in text


def test_each_profile_is_judged_by_its_own_policy():
    table = PolicyTable(POLICY, {"long": ReclaimOverride(timeout=7200.0, grace=60.0),
                                 "interactive": ReclaimOverride(off=True)})
    state = ReclaimState()
    servers = [Candidate("alice", "", "GPU-a", 0.0, profile="gpu"),
               Candidate("bob", "", "GPU-b", 0.0, profile="long"),
               Candidate("carol", "", "GPU-c", 0.0, profile="interactive"),
               Candidate("dave", "", "GPU-d", 0.0)]  # started before profiles had labels: the settings
    warned = decide(table, servers, state, 1800.0)
    assert sorted(d.key[0] for d in warned if d.action == "warn") == ["alice", "dave"]
    state = ReclaimState()
    [bob] = decide(table, servers[1:2], state, 7200.0)
    assert (bob.action, bob.deadline) == ("warn", 7260.0)  # the profile's grace
    assert decide(table, servers[2:3], ReclaimState(), 9e9) == []  # reclaim: off
    assert table.of("long").threshold_pct == POLICY.threshold_pct  # what it leaves out: the settings
    assert table.enabled and not PolicyTable(ReclaimPolicy(timeout=0)).enabled
    assert PolicyTable(ReclaimPolicy(timeout=0), {"x": ReclaimOverride(timeout=60.0)}).enabled
    assert table.to_json()["profiles"] == {"interactive": "off", "long": {"timeout": 7200.0, "grace": 60.0}}


@pytest.mark.parametrize("value,expected", [
    ("off", ReclaimOverride(off=True)), (False, ReclaimOverride(off=True)),
    ({"threshold": 10, "timeout": 3600, "grace": 900}, ReclaimOverride(False, 10.0, 3600.0, 900.0)),
    ({"timeout": 0}, ReclaimOverride(timeout=0.0)),
])
def test_a_profiles_reclaim_setting_is_parsed(value, expected):
    assert parse_override(value, "profiles[0] (gpu)") == expected


@pytest.mark.parametrize("value,message", [
    (True, "must be 'off' or a mapping"), ({}, "must be 'off' or a mapping"), ("later", "must be 'off'"),
    ({"timout": 5}, "unknown key"), ({"timeout": "1h"}, "must be a number"), ({"grace": True}, "must be a number"),
    ({"threshold": 0}, "from 1 to 100"), ({"threshold": 101}, "from 1 to 100"),
    ({"timeout": -1}, "from 0"), ({"grace": 0}, "from 1"), ({"timeout": 10**9}, "30 days"),
])
def test_a_bad_reclaim_setting_says_what_is_wrong(value, message):
    with pytest.raises(ValueError, match=message):
        parse_override(value, "profiles[0] (gpu)")


def test_the_grace_runs_from_when_the_warning_was_due():
    state = ReclaimState()
    [warn] = decide(POLICY, [c("alice", 0.0)], state, 1807.0)  # noticed one round late
    assert warn.deadline == 2400.0  # idle_since + timeout + grace, not 1807 + grace
    state = ReclaimState()
    [late] = decide(POLICY, [c("alice", 0.0)], state, 9000.0)  # the service was down for hours
    assert late.deadline == 9300.0  # half the grace left to answer the warning


def test_the_next_round_is_due_when_a_warning_or_a_stop_is():
    state = ReclaimState()
    idle, busy, exempt = c("alice", 100.0), c("bob", None, uuid="GPU-b"), c("root", 0.0, uuid="GPU-c")
    assert next_due(POLICY, [idle, busy, exempt], state, 500.0) == 1900.0  # idle_since + timeout
    decide(POLICY, [idle], state, 1900.0)
    assert next_due(POLICY, [idle], state, 1900.0) == 2500.0  # the warning's deadline
    assert next_due(POLICY, [idle], state, 2500.0) is None  # due now: this round decides it
    state.extended[("alice", "")] = 4000.0
    assert next_due(POLICY, [idle], state, 3000.0) == 4000.0  # judged again when the extension ends
    assert next_due(POLICY, [busy, exempt], ReclaimState(), 0.0) is None
