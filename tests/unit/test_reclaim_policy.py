"""gpu-reclaim's decisions (hub/gpus/reclaim_policy.py): who is warned, who is stopped and when,
per profile; the activity they are made from: test_gpu_activity.py."""
import pytest

from hub.gpus.reclaim_policy import (Candidate, PolicyTable, ReclaimOverride, ReclaimPolicy, ReclaimState, decide,
                                     next_due, parse_override, stop_message)

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


def test_a_warning_from_an_earlier_idle_period_is_not_carried_over():
    """A server stopped while warned and started again at once under the same name and GPU (or
    one resumed from parking) keeps the same key: its new idle period starts a new clock."""
    state = ReclaimState()
    decide(POLICY, [c("alice", 0.0)], state, 1800.0)  # warned: stop due at 2400
    [clear] = decide(POLICY, [c("alice", 2390.0)], state, 2401.0)  # the new server, idle since 2390
    assert (clear.action, clear.why) == ("clear", "a new idle period") and not state.warned
    assert decide(POLICY, [c("alice", 2390.0)], state, 2402.0) == []
    [warn] = decide(POLICY, [c("alice", 2390.0)], state, 2390.0 + 1800)
    assert (warn.action, warn.deadline) == ("warn", 2390.0 + 2400)
