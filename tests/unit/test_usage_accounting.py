"""GPU accounting (hub/usage/): seats from containers, intervals that never count twice, the
SQLite store, reports and quotas."""
from __future__ import annotations

import sqlite3
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from hub.gpus.claim import Assignment, Labels, device_request
from hub.gpus.model import GPU
from hub.usage import accounting, quota
from hub.usage.accounting import Interval, Seat, advance, docker_time, report, seats_of_container, seats_of_event
from hub.usage.store import UsageStore

GPUS = [GPU("GPU-a", 0, "NVIDIA H100", 81920), GPU("GPU-b", 1, "NVIDIA H100", 81920),
        GPU("MIG-c", 1, "NVIDIA A100 MIG 3g.40gb", 40000, parent_uuid="GPU-p"),
        GPU("GPU-p", 2, "NVIDIA A100-SXM4-80GB", 81920)]


def container(cid, uuid, user, started="2026-11-30T10:00:00.5Z", shared_by=1, status="running"):
    labels = {"gpuhub.user": user, "gpuhub.server": "", "gpuhub.instance": "t", "gpuhub.gpu.uuid": uuid,
              "gpuhub.gpu.since": "1"}
    env = [f"GPUHUB_GPU_SHARED_BY={shared_by}"] if shared_by > 1 else []
    return {"Id": cid, "Name": f"/{cid}", "State": {"Status": status, "StartedAt": started},
            "Config": {"Labels": labels, "Env": env},
            "HostConfig": {"DeviceRequests": [device_request(uuid, "cdi")]}}


def test_docker_time_reads_nanoseconds_and_the_zero_time():
    from datetime import datetime, timezone
    base = datetime(2026, 11, 30, 10, tzinfo=timezone.utc).timestamp()
    assert docker_time("2026-11-30T10:00:00.123456789Z") == pytest.approx(base + 0.123456789, abs=1e-6)
    assert docker_time("0001-01-01T00:00:00Z") is None
    assert docker_time("2026-11-30T11:00:00+01:00") == docker_time("2026-11-30T10:00:00Z")


def test_seats_weigh_whole_shared_and_mig():
    whole, = seats_of_container(container("c1", "GPU-a", "alice"), GPUS)
    assert (whole.user, whole.weight, whole.model, whole.start) == ("alice", 1.0, "NVIDIA H100", docker_time("2026-11-30T10:00:00.5Z"))
    seat, = seats_of_container(container("c2", "GPU-b", "bob", shared_by=4), GPUS)
    assert seat.weight == 0.25
    mig, = seats_of_container(container("c3", "MIG-c", "carol"), GPUS)
    assert mig.weight == pytest.approx(3 / 7)
    assert seats_of_container(container("c4", "GPU-a", "x", status="exited"), GPUS) == []


def test_a_start_event_names_the_same_seat_and_the_shared_label():
    labels = {**Assignment(GPUS[1], "cdi", shared_by=2, since=5).labels(Labels()), "gpuhub.user": "bob",
              "gpuhub.server": "", "name": "gpuhub-bob"}
    assert labels["gpuhub.gpu.shared_by"] == "2"
    seat, = seats_of_event({"Action": "start", "timeNano": 7_500_000_000, "Actor": {"ID": "c9", "Attributes": labels}}, GPUS)
    assert (seat.container_id, seat.gpu_uuid, seat.user, seat.start, seat.weight) == ("c9", "GPU-b", "bob", 7.5, 0.5)
    # a container that this hub did not start (no gpu.since label): the event's time is its start
    del labels["gpuhub.gpu.since"]
    seat, = seats_of_event({"Action": "start", "timeNano": 8_000_000_000, "Actor": {"ID": "c8", "Attributes": labels}}, GPUS)
    assert (seat.container_id, seat.start) == ("c8", 8.0)


class Util:
    def __init__(self, pct):
        self.pct = pct

    def now(self, uuid):
        return None if self.pct is None else type("R", (), {"utilization_pct": self.pct})()


def test_live_seat_grows_then_closes_at_its_die_time_and_replay_changes_nothing():
    s = Seat("c1", "GPU-a", "alice", "", 100.0)
    changed, new = advance([], [s], 160.0, util=Util(50))
    assert new == changed and changed[0].end == 160 and changed[0].used_s == pytest.approx(30)
    iv = changed[0]
    changed, _ = advance([iv], [s], 220.0, util=Util(None))
    iv = changed[0]
    assert (iv.end, iv.used_s, iv.sampled_s) == (220.0, pytest.approx(30), 60.0)
    changed, _ = advance([iv], [], 300.0, ended={"c1": 250.0})
    iv = changed[0]
    assert (iv.open, iv.end, iv.held_s) == (False, 250.0, 150.0)
    assert advance([iv], [], 400.0, ended={"c1": 250.0}) == ([], [])  # replay
    assert advance([iv], [], 400.0, started=[s], ended={"c1": 250.0}) == ([], [])  # events seen twice


def test_a_server_seen_only_in_the_events_is_counted_once():
    s = Seat("c2", "GPU-a", "bob", "", 500.0)
    changed, new = advance([], [], 900.0, started=[s], ended={"c2": 560.0})
    assert [(iv.start, iv.end, iv.open) for iv in changed] == [(500.0, 560.0, False)] and new == changed
    # the next sync reads the same events again: the interval is known, nothing changes
    assert advance(changed, [], 950.0, started=[replace(s, start=500.002)], ended={"c2": 560.0}) == ([], [])
    # a start without its die (the engine lost its events): not counted
    assert advance([], [], 900.0, started=[Seat("c3", "GPU-a", "x", "", 1.0)]) == ([], [])


def test_without_a_die_event_the_interval_ends_where_it_was_last_seen():
    iv = Interval("c1", "GPU-a", 0.0, 50.0)
    changed, _ = advance([iv], [], 900.0)
    assert (changed[0].end, changed[0].open) == (50.0, False)


def test_a_run_closed_where_last_seen_gets_its_true_end_from_a_later_die_event():
    """The container stopped as a sync listed the engine (or the console went down before the
    sync its die brought): closed where it was last seen; the next sync reads its die event."""
    s = Seat("c1", "GPU-a", "alice", "", 100.0)
    [iv], _ = advance([], [s], 101.0)
    [iv], _ = advance([iv], [], 102.0)  # not live, no die event yet: closed at 101
    assert (iv.open, iv.end) == (False, 101.0)
    [iv], _ = advance([iv], [], 120.0, ended={"c1": 104.0})
    assert (iv.open, iv.end, iv.held_s) == (False, 104.0, 4.0)
    assert advance([iv], [], 130.0, ended={"c1": 104.0}) == ([], [])  # replay: nothing changes
    # a die of a later run of the same container (started again) is not this run's
    again = Seat("c1", "GPU-a", "alice", "", 200.0)
    runs = [iv, Interval("c1", "GPU-a", 200.0, 210.0, False, "alice")]
    assert [x.end for x in advance(runs, [], 300.0, started=[again], ended={"c1": 250.0})[0]] == [250.0]


# ---- property: intervals never double count -----------------------------------------------

containers_st = st.lists(st.tuples(st.floats(0, 1000), st.floats(0.5, 400), st.sampled_from([1.0, 0.5, 0.25])),
                         min_size=1, max_size=8)
syncs_st = st.lists(st.tuples(st.floats(0, 1600), st.booleans(), st.booleans()), min_size=1, max_size=25)


@settings(max_examples=60, deadline=None)
@given(containers_st, syncs_st, st.sampled_from([0.0, 5.0, 60.0]))
def test_property_syncs_never_count_a_second_twice(containers, syncs, overlap):
    """Whatever the order of syncs, replays, lost events or downtime: per container the store
    holds non-overlapping intervals inside its true lifetime, and with the events at hand and a
    last sync after everything ended, exactly its lifetime."""
    with tempfile.TemporaryDirectory() as tmp:
        store = UsageStore(Path(tmp) / "u.sqlite")
        truth = {f"c{i}": (s, s + d, w) for i, (s, d, w) in enumerate(containers)}
        last = -1.0  # the store starts before the first container
        times = sorted(syncs) + [(2000.0, True, False)]
        all_events = True
        for t, events, replay in times:
            if t < last:
                continue
            live = [Seat(c, "GPU-a", c, "", s, w) for c, (s, e, w) in truth.items() if s <= t < e]
            # events are read from a little before the last sync (reconcile.EVENT_OVERLAP): some twice
            since = last - overlap
            started = [Seat(c, "GPU-a", c, "", s + 0.001, w) for c, (s, e, w) in truth.items() if since < s <= t] if events else []
            ended = {c: e for c, (s, e, w) in truth.items() if since < e <= t} if events else {}
            all_events &= events
            for _ in range(2 if replay else 1):
                known = store.open_intervals() + store.of_containers([*(x.container_id for x in started), *ended])
                changed, _ = advance(known, live, t, started=started, ended=ended)
                store.save(changed, t)
            last = t
        for c, (s, e, w) in truth.items():
            ivs = sorted(store.of_containers([c]), key=lambda iv: iv.start)
            assert all(not iv.open for iv in ivs)
            for a, b in zip(ivs, ivs[1:]):
                assert a.end <= b.start + accounting.START_TOLERANCE
            held = sum(iv.held_s for iv in ivs)
            assert held <= (e - s) * w + 1e-6
            assert all(s - 1e-6 <= iv.start and iv.end <= e + 1e-6 for iv in ivs)
            assert len(ivs) <= 1
            if all_events:
                assert held == pytest.approx((e - s) * w, abs=0.002)
        store.close()


# ---- the store -------------------------------------------------------------------------------

def test_store_is_wal_and_never_moves_an_end_back_or_reopens(tmp_path):
    store = UsageStore(tmp_path / "u.sqlite")
    iv = Interval("c1", "GPU-a", 0.0, 100.0, True, "alice", groups=("ml",), courses=("ml101",))
    store.save([iv], 100.0)
    store.save([replace(iv, end=50.0)])  # stale writer
    store.save([replace(iv, end=120.0, open=False)])
    store.save([replace(iv, end=130.0, open=True)])
    got, = store.of_containers(["c1"])
    assert (got.end, got.open, got.groups, got.courses) == (130.0, False, ("ml",), ("ml101",))
    assert store.last_sync() == 100.0 and store.open_intervals() == []
    assert sqlite3.connect(tmp_path / "u.sqlite").execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert UsageStore(tmp_path / "u.sqlite").between(0, 10) == [got]  # reopened: the same data


def test_store_quotas_notices_refusals(tmp_path):
    store = UsageStore(tmp_path / "u.sqlite")
    store.set_quota("user", "alice", 20, 7 * 86400, "admin")
    store.set_quota("user", "alice", 10, 86400, "admin")
    assert [(q["hours"], q["window_s"]) for q in store.quotas()] == [(10, 86400)]
    assert store.notice("alice", "", "warn", "90 %", 1.0) and not store.notice("alice", "", "warn", "again", 2.0)
    assert store.notices("alice")["warn"]["message"] == "90 %"
    store.clear_notices("alice")
    assert store.notices("alice") == {}
    store.count_refusal("quota")
    store.count_refusal("quota")
    assert store.refusals() == {"quota": 2}
    assert store.delete_quota("user", "alice") and not store.delete_quota("user", "alice")


# ---- reports ---------------------------------------------------------------------------------

def test_report_by_user_group_and_day_buckets():
    day = 86400.0
    ivs = [Interval("c1", "GPU-a", day - 3600, day + 7200, False, "alice", groups=("ml",), courses=("ml101",),
                    used_s=5400, sampled_s=10800),
           Interval("c2", "GPU-b", day, day + 3600, False, "bob", weight=0.5)]
    rows = report(ivs, 0, 10 * day, "user", "day")
    assert [(r["user"], r["start"], r["gpu_hours"]) for r in rows] == [
        ("alice", 0.0, 1.0), ("alice", day, 2.0), ("bob", day, 0.5)]
    assert rows[0]["used_gpu_hours"] == pytest.approx(0.5) and rows[2]["used_gpu_hours"] is None
    by_course = report(ivs, 0, 10 * day, "course")
    assert {r["course"]: r["gpu_hours"] for r in by_course} == {"ml101": 3.0, "(no course)": 0.5}
    assert report(ivs, day + 3600, day + 5400, "group") == [
        {"group": "ml", "start": day + 3600, "gpu_hours": 0.5, "used_gpu_hours": 0.25, "sampled_hours": 0.5, "servers": 1}]
    with pytest.raises(ValueError, match="by='x'"):
        report(ivs, 0, 1, "x")


def test_buckets_week_and_month():
    t = docker_time("2026-11-26T15:00:00Z")  # a Thursday
    assert accounting.bucket_start(t, "week") == docker_time("2026-11-23T00:00:00Z")
    assert accounting.bucket_start(t, "month") == docker_time("2026-11-01T00:00:00Z")
    assert accounting.next_bucket(t, "month") == docker_time("2026-12-01T00:00:00Z")


# ---- quotas ------------------------------------------------------------------------------------

def test_quota_checks_refuse_bad_input():
    for args, fragment in ((("user", "alice", -1, 7), "above 0"), (("user", "alice", 1e9, 7), "at most"),
                           (("user", "alice", 20, 0), "window_days"), (("user", "alice", float("nan"), 7), "number"),
                           (("user", "alice", True, 7), "number"), (("planet", "x", 1, 1), "scope"),
                           (("group", "", 1, 1), "name")):
        with pytest.raises(quota.QuotaError, match=fragment):
            quota.check(*args)
    assert quota.check("default", "ignored", 20, 7) == quota.Quota("default", "", 20.0, 7 * 86400)
    assert quota.parse_spec("20h/7d") == (20.0, 7.0) and quota.parse_spec("12h / 24h") == (12.0, 1.0)
    with pytest.raises(quota.QuotaError, match="20h/7d"):
        quota.parse_spec("20 hours")


def test_quota_status_renews_when_old_usage_leaves_the_window():
    now, h = 10 * 86400.0, 3600.0
    q = quota.Quota("course", "ml101", 2.0, 86400)
    ivs = [Interval("c1", "GPU-a", now - 20 * h, now - 19 * h, False, "alice"),  # 1 h, leaves in 4 h
           Interval("c2", "GPU-b", now - 2 * h, now - h, False, "alice"),  # 1 h
           Interval("c0", "GPU-b", now - 30 * h, now - 25 * h, False, "alice")]  # outside the window
    s = quota.status(q, ivs, now)
    assert (s.used_h, s.fraction) == (pytest.approx(2.0), pytest.approx(1.0))
    assert s.renews_at == pytest.approx(now + 4 * h, abs=2)
    assert "2.0 of 2 GPU-hours" in quota.refusal_message(s) and "course ml101" in quota.refusal_message(s)
    half = quota.status(quota.Quota("user", "alice", 4, 86400), ivs, now)
    assert (half.fraction, half.renews_at, half.remaining_h) == (pytest.approx(0.5), None, pytest.approx(2))
    chosen = quota.applicable([q, quota.Quota("user", "bob", 1, 1), quota.Quota("group", "ml", 1, 1),
                               quota.Quota("default", "", 9, 1)], "alice", ["ml"], ["ml101"])
    assert [c.scope for c in chosen] == ["course", "group", "default"]
    assert quota.tightest([s, half]) is s
    assert quota.from_rows([], (20, 7)) == [quota.Quota("default", "", 20, 7 * 86400)]


def test_every_hub_package_is_shipped_in_the_image():
    """The hub image installs the project (pyproject's package list): a package left out of it
    is missing in the container only."""
    import tomllib

    root = Path(__file__).resolve().parents[2]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(root).parts) for p in (root / "hub").rglob("__init__.py")}
    assert found == listed
