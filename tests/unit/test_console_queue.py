"""The GPU console's view of the line for GPUs: admins see it and can take a user out of it
(the hub cancels the waiting start); non-admins and bad names get a 4xx and change nothing."""
import json

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
    with ServedApp(app_for(console)) as s:
        def call(method, path, token=ADMIN_TOKEN, body=None):
            return requests.request(method, s.url + API + path, headers={"Authorization": f"token {token}"},
                                    data=json.dumps(body) if body is not None else None, timeout=10)
        yield call, hub, tmp_path


def test_admin_sees_the_line_and_takes_a_user_out(served):
    call, hub, tmp = served
    r = call("GET", "queue")
    assert r.status_code == 200
    assert [(e["user"], e["server"], e["position"]) for e in r.json()["waiting"]] == [("alice", "", 1), ("carol", "big", 2)]
    assert [e["user"] for e in call("GET", "gpus").json()["queue"]] == ["alice", "carol"]
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
