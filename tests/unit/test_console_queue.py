"""The GPU console's view of the line for GPUs: admins see it and can take a user out of it
(the hub cancels the waiting start); non-admins and bad names get a 4xx and change nothing."""
import json
import threading

import pytest
import requests
from console_fakes import ADMIN_TOKEN, USER_TOKEN, ServedApp, app_for, make_console

from hub.gpus.queue import GPUQueue

API = "/services/gpu-console/api/"


@pytest.fixture
def served(tmp_path):
    console, engine, hub = make_console(tmp_path)
    line = GPUQueue(tmp_path / "gpu-queue.json", clock=lambda: 1000.0)
    line.join("alice", "")
    line.join("carol", "big")
    line.join("dave", "")
    app = app_for(console)
    app.settings["gpu_desk"].move_timeout = 2.0
    hub_looks = threading.Event()  # the hub's waiters look for moves (every 5 s there)
    stop = threading.Event()

    def waiters():
        while not stop.wait(0.1):
            if hub_looks.is_set():
                line.apply_moves()
    threading.Thread(target=waiters, daemon=True).start()
    with ServedApp(app) as s:
        def call(method, path, token=ADMIN_TOKEN, body=None):
            return requests.request(method, s.url + API + path, headers={"Authorization": f"token {token}"},
                                    data=json.dumps(body) if body is not None else None, timeout=10)
        call.line, call.hub_looks = line, hub_looks
        yield call, hub, tmp_path
    stop.set()


def test_admin_sees_the_line_and_takes_a_user_out(served):
    call, hub, tmp = served
    r = call("GET", "queue")
    assert r.status_code == 200
    assert [(e["user"], e["server"], e["position"]) for e in r.json()["waiting"]] == \
        [("alice", "", 1), ("carol", "big", 2), ("dave", "", 3)]
    assert [e["user"] for e in call("GET", "gpus").json()["queue"]] == ["alice", "carol", "dave"]
    r = call("DELETE", "queue/carol", body={"note": "course over"})
    assert r.status_code == 200 and "place 2" in r.json()["message"], r.text
    assert hub.stopped == [("carol", "big")]
    entry = call("GET", "audit?limit=1").json()["entries"][0]
    assert entry["action"] == "unqueue" and entry["user"] == "carol" and entry["note"] == "course over"


def test_non_admins_and_bad_names_change_nothing(served):
    call, hub, tmp = served
    audit = tmp / "gpu-audit.jsonl"
    for method, path, token, status in [("GET", "queue", USER_TOKEN, 403), ("DELETE", "queue/alice", USER_TOKEN, 403),
                                        ("DELETE", "queue/bob", ADMIN_TOKEN, 404),  # not in line
                                        ("DELETE", "queue/nobody", ADMIN_TOKEN, 400)]:  # no such user
        r = call(method, path, token)
        assert r.status_code == status, (method, path, r.text)
        assert r.json()["message"]
    assert call("DELETE", "queue/alice", body={"user": "x"}).status_code == 400  # not in the schema
    assert hub.stopped == [] and not audit.exists()


def test_admin_moves_a_waiter_and_the_hub_applies_it(served):
    call, hub, tmp = served
    call.hub_looks.set()
    r = call("POST", "queue/dave/move", body={"position": 1, "note": "deadline today"})
    assert r.status_code == 200, r.text
    assert "from place 3 to 1" in r.json()["message"]
    assert [e["user"] for e in r.json()["waiting"]] == ["dave", "alice", "carol"]
    assert [w.user for w in call.line.waiters] == ["dave", "alice", "carol"]  # the hub's own line
    entry = call("GET", "audit?limit=1").json()["entries"][0]
    assert (entry["action"], entry["user"], entry["note"]) == ("queue-move", "dave", "deadline today")
    r = call("POST", "queue/carol/move", body={"position": 2, "server": "big"})
    assert r.status_code == 200 and [e["user"] for e in r.json()["waiting"]] == ["dave", "carol", "alice"]


def test_bad_moves_and_non_admins_change_nothing(served):
    call, hub, tmp = served
    call.hub_looks.set()
    audit = tmp / "gpu-audit.jsonl"
    cases = [
        ("queue/dave/move", {"position": 1}, USER_TOKEN, 403),  # not an admin
        ("queue/dave/move", {}, ADMIN_TOKEN, 400),  # no position
        ("queue/dave/move", {"position": 0}, ADMIN_TOKEN, 400),
        ("queue/dave/move", {"position": "1"}, ADMIN_TOKEN, 400),
        ("queue/dave/move", {"position": 1.5}, ADMIN_TOKEN, 400),
        ("queue/dave/move", {"position": 4}, ADMIN_TOKEN, 400),  # the line has 3 places
        ("queue/dave/move", {"position": 1, "user": "alice"}, ADMIN_TOKEN, 400),  # not in the schema
        ("queue/dave/move", {"position": 3}, ADMIN_TOKEN, 409),  # there already
        ("queue/carol/move", {"position": 1, "server": ""}, ADMIN_TOKEN, 404),  # carol waits with 'big'
        ("queue/bob/move", {"position": 1}, ADMIN_TOKEN, 404),  # not in line
        ("queue/nobody/move", {"position": 1}, ADMIN_TOKEN, 400),  # no such user
    ]
    for path, body, token, status in cases:
        r = call("POST", path, token, body)
        assert r.status_code == status, (path, body, r.text)
        assert r.json()["status"] == status and r.json()["message"]
    assert [w.user for w in call.line.waiters] == ["alice", "carol", "dave"] and not audit.exists()


def test_a_move_the_hub_does_not_apply_is_withdrawn(served):
    call, hub, tmp = served
    r = call("POST", "queue/dave/move", body={"position": 1})  # no waiter looks (the hub is down)
    assert r.status_code == 503 and "nothing changed" in r.json()["message"], r.text
    call.hub_looks.set()
    import time
    time.sleep(0.5)
    assert [w.user for w in call.line.waiters] == ["alice", "carol", "dave"]  # not applied later either
    assert not (tmp / "gpu-audit.jsonl").exists()
