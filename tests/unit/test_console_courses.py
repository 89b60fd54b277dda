"""The console's teaching-lab API against stand-in engine and hub: rosters, course settings,
stop-all, reset, reservations, shared GPUs, session limits; bad input changes nothing."""
import asyncio
import json

import pytest
from console_fakes import GPUS, ServedApp, app_for, container, make_console
from test_console_api import Client

from hub.service_process.console.course_actions import CourseDesk
from hub.courses import PROPERTY

ROSTER = "username,course,role\n" + "teacher1,ml101,teacher\nta1,ml101,ta\n" + "".join(
    f"s{i:02d},ml101,student\n" for i in range(20)) + "".join(f"n{i:02d},nlp,student\n" for i in range(20))
NOW = 1_800_000_000.0


@pytest.fixture
def api(tmp_path):
    console, engine, hub = make_console(tmp_path)
    console.clock = lambda: NOW
    with ServedApp(app_for(console)) as served:
        yield Client(served, tmp_path, console, engine, hub)


def roster(api, text, **extra):
    return api.call("POST", "courses/roster", {"roster": text, **extra})


def test_import_creates_users_courses_and_roles_and_re_import_changes_nothing(api):
    r = roster(api, ROSTER)
    assert r.status_code == 200, r.text
    report = r.json()["report"]
    assert len(report["users_created"]) == 42 and report["groups_created"] == ["ml101", "nlp"]
    assert report["courses"]["ml101"]["students"] == 20 and report["courses"]["ml101"]["teachers"] == ["teacher1"]
    assert api.hub.properties["ml101"][PROPERTY]["tas"] == ["ta1"]
    assert api.audit()[-1]["action"] == "roster"
    listing = api.call("GET", "courses").json()["courses"]
    assert [c["name"] for c in listing] == ["ml101", "nlp"] and len(listing[0]["students"]) == 20

    writes, files = len(api.hub.changes), api.files()
    again = roster(api, ROSTER)
    assert again.status_code == 200 and again.json()["report"]["unchanged"]
    assert "nothing to change" in again.json()["message"]
    assert len(api.hub.changes) == writes and api.files() == files


def test_re_import_with_changes_reports_them(api):
    roster(api, ROSTER)
    changed = ROSTER.replace("s00,ml101,student\n", "").replace("ta1,ml101,ta", "ta1,ml101,teacher") + "new1,ml101,student\n"
    r = roster(api, changed)
    c = r.json()["report"]["courses"]["ml101"]
    assert c["added"] == ["new1"] and c["removed"] == ["s00"]
    assert c["role_changes"] == [{"user": "ta1", "from": "ta", "to": "teacher"}]
    assert "s00" not in api.hub.groups["ml101"] and "s00" in api.hub.users  # the account (and files) stay
    assert api.hub.properties["ml101"][PROPERTY]["teachers"] == ["ta1", "teacher1"]


def test_bad_rows_refuse_the_whole_import_with_a_report_and_change_nothing(api):
    files = api.files()
    r = roster(api, ROSTER + "x,ML 101,student\ny,ml101,wizard\n")
    assert r.status_code == 400
    body = r.json()
    assert body["status"] == 400 and "2 bad rows" in body["message"] and "nothing was changed" in body["message"]
    assert [b["line"] for b in body["report"]["bad_rows"]] == [44, 45]
    assert api.hub.changes == [] and api.files() == files


def test_skip_bad_rows_applies_the_good_ones_and_dry_run_applies_nothing(api):
    dry = roster(api, ROSTER + "y,ml101,wizard\n", dry_run=True, skip_bad_rows=True)
    assert dry.status_code == 200 and dry.json()["report"]["dry_run"] and api.hub.changes == []
    assert "would import" in dry.json()["message"]
    r = roster(api, ROSTER + "y,ml101,wizard\n", skip_bad_rows=True)
    assert r.status_code == 200 and "1 bad rows skipped" in r.json()["message"]
    assert "y" not in api.hub.users and len(api.hub.groups["ml101"]) == 22


@pytest.mark.parametrize("body, status, message", [
    ({}, 400, "missing field 'roster'"),
    ({"roster": 5}, 400, "must be a string"),
    ({"roster": ""}, 400, "empty"),
    ({"roster": "a,b\n1,2\n"}, 400, "needs a header row"),
    ({"roster": "username,course\na,b\n", "format": "xml"}, 400, "unknown roster format"),
    ({"roster": "username,course\na,b\n", "dry_run": "yes"}, 400, "true or false"),
    ({"roster": "username,course\na,b\n", "extra": 1}, 400, "unknown field"),
    ({"roster": "username,course\na,b\n", "format": 5}, 400, "'format' must be a string, not a number"),
    ({"roster": "username,course\na,ml\n"}, 409, "not a course"),  # the plain group 'ml'
])
def test_bad_roster_requests(api, body, status, message):
    r = api.call("POST", "courses/roster", body)
    assert r.status_code == status and message in r.json()["message"], r.text
    assert api.hub.changes == []


def test_course_settings_and_their_bad_input(api):
    roster(api, ROSTER)
    r = api.call("PATCH", "courses/ml101", {"title": "Machine learning", "max_session_hours": 3})
    assert r.status_code == 200 and r.json()["course"]["max_session_hours"] == 3.0
    assert api.hub.properties["ml101"][PROPERTY]["title"] == "Machine learning"
    assert api.call("PATCH", "courses/ml101", {"max_session_hours": -1}).status_code == 400
    assert api.call("PATCH", "courses/ml101", {}).status_code == 400
    assert api.call("PATCH", "courses/nope", {"title": "x"}).status_code == 404
    assert api.call("PATCH", "courses/ml", {"title": "x"}).status_code == 404  # a group, not a course


def test_stop_all_stops_the_students_only_unless_asked(api):
    roster(api, ROSTER)
    api.hub.started = {("s01", ""): "x", ("s02", ""): "x", ("teacher1", ""): "x", ("n01", ""): "x"}
    r = api.call("POST", "courses/ml101/stop", {})
    assert r.status_code == 200 and sorted(s["user"] for s in r.json()["stopped"]) == ["s01", "s02"]
    assert ("teacher1", "") in api.hub.started and ("n01", "") in api.hub.started
    r = api.call("POST", "courses/ml101/stop", {"include_staff": True})
    assert [s["user"] for s in r.json()["stopped"]] == ["teacher1"]


def test_reset_stops_the_server_and_removes_the_container_and_only_for_members(api):
    roster(api, ROSTER)
    api.engine.containers = [container("c-s01", GPUS[0].uuid, "s01")]
    r = api.call("POST", "courses/ml101/reset", {"user": "s01"})
    assert r.status_code == 200, r.text
    assert "files are untouched" in r.json()["message"]
    assert api.hub.stopped == [("s01", "")]
    assert api.call("POST", "courses/ml101/reset", {"user": "n01"}).status_code == 400
    assert api.call("POST", "courses/ml101/reset", {}).status_code == 400


def test_reservations_pick_gpus_check_windows_and_show_in_the_table(api):
    roster(api, ROSTER)
    window = {"start": "2027-01-15T08:00:00Z", "end": "2027-01-15T10:00:00+00:00"}
    r = api.call("POST", "reservations", {"course": "ml101", "gpus": 2, **window})
    assert r.status_code == 201, r.text
    res = r.json()["reservation"]
    assert res["gpus"] == [GPUS[0].uuid, GPUS[1].uuid] and res["start_iso"] == "2027-01-15T08:00Z"
    # another course, overlapping window: gets the other two, then nothing is left
    r2 = api.call("POST", "reservations", {"course": "nlp", "gpus": 2, "start": "2027-01-15T09:00:00Z",
                                             "end": "2027-01-15T11:00:00Z"})
    assert r2.json()["reservation"]["gpus"] == [GPUS[2].uuid, GPUS[3].uuid]
    r3 = api.call("POST", "reservations", {"course": "nlp", "gpus": [GPUS[0].uuid], **window})
    assert r3.status_code == 409 and "already reserved" in r3.json()["message"]
    assert [x["course"] for x in api.call("GET", "reservations").json()["reservations"]] == ["ml101", "nlp"]
    assert api.call("DELETE", f"reservations/{res['id']}").status_code == 200
    assert api.call("DELETE", f"reservations/{res['id']}").status_code == 404
    assert [x["course"] for x in api.intent()["reservations"]] == ["nlp"]


def test_a_reservation_is_active_in_its_window_in_the_gpu_table(api):
    roster(api, ROSTER)
    api.call("POST", "reservations", {"course": "ml101", "gpus": [GPUS[3].uuid], "start": NOW - 60, "end": NOW + 3600})
    gpus = api.call("GET", "gpus?fresh=1").json()["gpus"]
    assert gpus[3]["state"] == "reserved" and gpus[3]["reserved_for"] == "ml101"


@pytest.mark.parametrize("body, status, message", [
    ({"course": "ml101", "gpus": 2, "start": "2027-01-15T08:00:00", "end": "2027-01-15T10:00:00Z"}, 400, "no time zone"),
    ({"course": "ml101", "gpus": 2, "start": "tomorrow", "end": "2027-01-15T10:00:00Z"}, 400, "not an ISO 8601"),
    ({"course": "ml101", "gpus": 2, "start": "2027-01-15T10:00:00Z", "end": "2027-01-15T08:00:00Z"}, 400, "after"),
    ({"course": "ml101", "gpus": 2, "start": "2020-01-15T08:00:00Z", "end": "2020-01-15T10:00:00Z"}, 400, "in the past"),
    ({"course": "ml101", "gpus": 2, "start": "2027-01-01T08:00:00Z", "end": "2027-03-15T10:00:00Z"}, 400, "at most"),
    ({"course": "ml101", "gpus": 0, "start": NOW, "end": NOW + 60}, 400, "at least 1"),
    ({"course": "ml101", "gpus": True, "start": NOW, "end": NOW + 60}, 400, "number of GPUs"),
    ({"course": "ml101", "gpus": 5, "start": NOW, "end": NOW + 60}, 409, "only 4 of 4"),
    ({"course": "ml101", "gpus": ["GPU-nope"], "start": NOW, "end": NOW + 60}, 400, "no GPU"),
    ({"course": "ml101", "gpus": [], "start": NOW, "end": NOW + 60}, 400, "lists 0 GPUs"),
    ({"course": "ml101", "gpus": 1, "start": float("nan"), "end": NOW + 60}, 400, "'start'=nan is not a time"),
    ({"course": "ml101", "gpus": 1, "start": NOW, "end": float("inf")}, 400, "'end'=inf is not a time"),
    ({"course": "ml101", "gpus": 1, "start": 1e18, "end": 1e18 + 60}, 400, "'start'=1e+18 is not a time"),
    ({"course": "ml101", "gpus": 1, "start": "9999-12-31T23:00:00-05:00", "end": "9999-12-31T23:30:00-05:00"}, 400,
     "not a time between the years 1 and 9999"),
    ({"course": "ml101", "gpus": [GPUS[0].uuid, 3], "start": NOW, "end": NOW + 60}, 400,
     "'gpus[1]' must be a string, not a number"),
    ({"course": "ml101", "gpus": 1, "start": "2027-01-15T08:00:00Z" * 4, "end": NOW + 60}, 400,
     "'start' must be an ISO 8601 time"),
    ({"course": "nope", "gpus": 1, "start": NOW, "end": NOW + 60}, 404, "no course"),
    ({"course": "ml101", "gpus": 1, "start": NOW}, 400, "missing field 'end'"),
])
def test_bad_reservations_change_nothing(api, body, status, message):
    roster(api, ROSTER)
    files = api.files()
    r = api.call("POST", "reservations", body)
    assert r.status_code == status and message in r.json()["message"], r.text
    assert api.files() == files


def test_share_and_unshare_a_gpu(api):
    r = api.call("PUT", "shared", {"gpu": GPUS[2].uuid, "capacity": 4})
    assert r.status_code == 200 and "by up to 4" in r.json()["message"]
    assert api.intent()["shared"] == {GPUS[2].uuid: 4}
    api.engine.containers = [container(f"c{i}", GPUS[2].uuid, u) for i, u in enumerate(("alice", "bob"))]
    g = api.call("GET", "gpus?fresh=1").json()["gpus"][2]
    assert g["shared"] and g["capacity"] == 4 and [h["user"] for h in g["holders"]] == ["alice", "bob"]
    assert api.call("PUT", "shared", {"gpu": GPUS[2].uuid, "capacity": 4}).status_code == 409
    for bad in (1, 65, "4", True, None):
        assert api.call("PUT", "shared", {"gpu": GPUS[2].uuid, "capacity": bad}).status_code == 400
    assert api.call("PUT", "shared", {"gpu": "GPU-x", "capacity": 2}).status_code == 400
    r = api.call("DELETE", f"shared/{GPUS[2].uuid}")
    assert r.status_code == 200 and "keep it until their servers stop" in r.json()["message"]
    assert api.call("DELETE", f"shared/{GPUS[2].uuid}").status_code == 409
    assert "shared" not in api.intent()


def test_session_limits_stop_students_who_ran_too_long_not_staff(tmp_path):
    console, engine, hub = make_console(tmp_path)
    console.clock = lambda: NOW
    desk = CourseDesk(console)

    async def go():
        await desk.import_roster({"roster": ROSTER}, "admin", "test")
        await desk.update("ml101", {"max_session_hours": 2}, "admin", "test")
        long_ago = "2027-01-15T02:00:00Z"  # NOW is 2027-01-15T08:00:00Z
        recent = "2027-01-15T07:00:00Z"
        hub.started = {("s01", ""): long_ago, ("s02", ""): recent, ("teacher1", ""): long_ago, ("n01", ""): long_ago}
        return await desk.enforce_session_limits()

    stopped = asyncio.run(go())
    assert [s["user"] for s in stopped] == ["s01"]
    assert hub.stopped == [("s01", "")]
    entries = [json.loads(line) for line in (tmp_path / "gpu-audit.jsonl").read_text().splitlines()]
    assert entries[-1]["action"] == "max-session" and "allows sessions of 2 h" in entries[-1]["detail"]
