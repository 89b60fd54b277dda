"""The GPU console's REST API against a stand-in engine and hub: every action, and bad input of
every kind answered with a 4xx and {"status", "message"}, leaving intent and audit untouched."""
import json
import re

import pytest
import requests
from console_fakes import ADMIN_TOKEN, GPUS, USER_TOKEN, FakeNVML, ServedApp, app_for, container, make_console

API = "/services/gpu-console/api/"


class Client:
    def __init__(self, served, tmp_path, console, engine, hub):
        self.url, self.tmp_path = served.url + API, tmp_path
        self.console, self.engine, self.hub = console, engine, hub
        self.s = requests.Session()
        self.s.headers["Authorization"] = f"token {ADMIN_TOKEN}"

    def call(self, method, path, body=None, raw=None, token=ADMIN_TOKEN):
        headers = {"Authorization": f"token {token}"} if token else {"Authorization": ""}
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        return requests.request(method, self.url + path, data=data, headers=headers, timeout=10)

    def files(self):
        """The intent file and the audit log, byte for byte (None when absent)."""
        out = []
        for name in ("gpu-intent.json", "gpu-audit.jsonl"):
            path = self.tmp_path / name
            out.append(path.read_bytes() if path.exists() else None)
        return tuple(out)

    def audit(self):
        path = self.tmp_path / "gpu-audit.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def intent(self):
        return json.loads((self.tmp_path / "gpu-intent.json").read_text())


@pytest.fixture
def api(tmp_path):
    console, engine, hub = make_console(tmp_path)
    with ServedApp(app_for(console)) as served:
        yield Client(served, tmp_path, console, engine, hub)


def test_gpu_table_shows_every_gpu_with_state_and_holder(api):
    api.engine.containers = [container("gpuhubtest-alice", GPUS[1].uuid, "alice")]
    r = api.call("GET", "gpus")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    state = r.json()
    assert [g["uuid"] for g in state["gpus"]] == [g.uuid for g in GPUS]
    held = state["gpus"][1]
    assert held["state"] == "held" and held["holder"]["user"] == "alice"
    assert held["holder"]["server_url"] == "/user/alice/" and held["holder"]["this_hub"]
    assert held["holder"]["since"] == 1_700_000_000.0 and held["holder"]["since_iso"] == "2023-11-14T22:13:20Z"
    assert state["gpus"][0]["state"] == "free" and state["gpus"][0]["holder"] is None
    assert state["usage"]["source"] == "n/a" and state["gpus"][0]["utilization_pct"] is None
    assert state["access"] == {"users": [], "groups": [], "everyone": True}


def test_each_holder_shows_what_gpu_reclaim_last_saw(api):
    """Utilisation now, memory held and idle for how long, per holder, from gpu-reclaim's own
    rounds (its gpu-holders.json on the state volume), not from a second judgement here."""
    import asyncio
    import time

    from test_gpu_activity import Feed

    from hub.common.audit import AuditLog
    from hub.gpus.activity import ActivitySampler, ActivityStore
    from hub.gpus.reclaim_policy import ReclaimPolicy
    from hub.service_process.reclaim.service import Reclaimer
    from hub.common.stop_reasons import ReasonFile

    alice = container("gpuhubtest-alice", GPUS[1].uuid, "alice", since=time.time() - 100)
    alice["Config"]["Labels"]["gpuhub.profile"] = "gpu"
    api.engine.containers = [alice]

    async def engine(method, *args, **kwargs):
        return [alice]
    clock = [time.time() - 30]
    tmp = api.tmp_path
    r = Reclaimer(ReclaimPolicy(timeout=20, grace=600), ActivitySampler(Feed(**{GPUS[1].uuid: 0}), interval=10,
                  clock=lambda: clock[0], store=ActivityStore(tmp / "a.sqlite")), engine, None,
                  AuditLog(tmp / "reclaim-audit.jsonl"), ReasonFile(tmp / "reasons.json"), tmp / "reclaim.json",
                  instance="gpuhubtest", clock=lambda: clock[0], holders_file=tmp / "gpu-holders.json")
    assert api.call("GET", "gpus?fresh=1").json()["gpus"][1]["holder"]["activity"] is None  # no round yet
    for _ in range(4):  # idle for 30 s, warned at 20 s
        asyncio.run(r.round())
        clock[0] += 10
    state = api.call("GET", "gpus?fresh=1").json()
    activity = state["gpus"][1]["holder"]["activity"]
    assert state["holder_activity"] and state["gpus"][1]["holders"][0]["activity"] == activity
    assert activity["utilization_pct"] == 0 and activity["memory_used_mib"] == 1000
    assert 29 <= activity["idle_seconds"] <= 40 and activity["profile"] == "gpu"
    assert activity["warning_deadline"] == pytest.approx(clock[0] - 20 + 600, abs=0.1)  # warned in round 3
    # a service that stopped sampling: nothing shown rather than old figures
    (tmp / "gpu-holders.json").write_text(json.dumps({**json.loads((tmp / "gpu-holders.json").read_text()),
                                                      "time": time.time() - 3600}))
    assert api.call("GET", "gpus?fresh=1").json()["gpus"][1]["holder"]["activity"] is None


def test_non_admins_get_403_json_and_strangers_401(api):
    for token, status in ((USER_TOKEN, 403), (None, 401)):
        for method, path, body in (("GET", "gpus", None), ("POST", "pins", {"user": "bob", "gpu": GPUS[0].uuid}),
                                   ("PUT", "access", {"users": [], "groups": []}), ("GET", "audit", None)):
            r = api.call(method, path, body, token=token)
            assert r.status_code == status, (token, path, r.text)
            assert r.json()["status"] == status and r.json()["message"]
    assert "admins only" in api.call("GET", "gpus", token=USER_TOKEN).json()["message"]
    assert api.files() == (None, None)


def test_pin_and_unpin_write_intent_and_audit(api):
    r = api.call("POST", "pins", {"user": "alice", "gpu": GPUS[2].uuid, "note": "thesis deadline"})
    assert r.status_code == 200, r.text
    assert "Pinned alice to GPU #2" in r.json()["message"]
    assert api.intent() == {"pins": {"alice": GPUS[2].uuid}, "drained": []}
    (entry,) = api.audit()
    assert entry["who"] == "admin" and entry["via"] == "token" and entry["action"] == "pin"
    assert entry["user"] == "alice" and entry["gpu"] == GPUS[2].uuid and entry["note"] == "thesis deadline"
    assert entry["time"].endswith("Z")
    state = api.call("GET", "gpus").json()
    assert state["gpus"][2]["pinned_to"] == ["alice"] and state["pins"] == {"alice": GPUS[2].uuid}

    r = api.call("POST", "pins", {"user": "alice", "gpu": GPUS[3].uuid})  # re-pin moves it
    assert r.status_code == 200 and f"(was {GPUS[2].uuid})" in r.json()["message"]
    r = api.call("DELETE", "pins/alice")
    assert r.status_code == 200, r.text
    assert api.intent() == {"pins": {}, "drained": []}
    assert [e["action"] for e in api.audit()] == ["pin", "pin", "unpin"]


def test_drain_keeps_the_holder_and_undrain(api):
    api.engine.containers = [container("gpuhubtest-bob", GPUS[0].uuid, "bob")]
    r = api.call("POST", "drained", {"gpu": GPUS[0].uuid})
    assert r.status_code == 200 and "bob keeps it until their server stops" in r.json()["message"]
    gpu = api.call("GET", "gpus").json()["gpus"][0]
    assert gpu["drained"] and gpu["holder"]["user"] == "bob"
    assert api.intent()["drained"] == [GPUS[0].uuid]
    r = api.call("DELETE", f"drained/{GPUS[0].uuid}")
    assert r.status_code == 200
    assert api.intent()["drained"] == []
    assert [e["action"] for e in api.audit()] == ["drain", "undrain"]


def test_free_stops_the_holders_server_through_the_hub(api):
    api.engine.containers = [container("gpuhubtest-bob", GPUS[3].uuid, "bob"),
                             container("gpuhubtest-carol-x", GPUS[1].uuid, "carol", server="x")]
    r = api.call("POST", "free", {"gpu": GPUS[3].uuid})
    assert r.status_code == 200, r.text
    assert r.json()["result"] == "stopped" and api.hub.stopped == [("bob", "")]
    r = api.call("POST", "free", {"user": "carol", "server": "x", "note": "idle all weekend"})
    assert r.status_code == 200 and api.hub.stopped[-1] == ("carol", "x")
    assert all(g["state"] == "free" for g in api.call("GET", "gpus").json()["gpus"])
    assert [(e["action"], e["user"], e["gpu"]) for e in api.audit()] == [
        ("free", "bob", GPUS[3].uuid), ("free", "carol", GPUS[1].uuid)]
    assert api.files()[0] is None  # freeing writes no intent


def test_free_answers_202_while_the_hub_is_still_stopping(api):
    api.engine.containers = [container("gpuhubtest-bob", GPUS[0].uuid, "bob")]
    api.hub.stop_status = 202
    r = api.call("POST", "free", {"gpu": GPUS[0].uuid})
    assert r.status_code == 202 and r.json()["result"] == "stopping"


def test_access_allow_list(api):
    r = api.call("PUT", "access", {"users": ["alice", "alice"], "groups": ["ml"]})
    assert r.status_code == 200, r.text
    assert api.intent()["access"] == {"users": ["alice"], "groups": ["ml"]}
    assert api.call("GET", "access").json() == {"users": ["alice"], "groups": ["ml"], "everyone": False}
    # pins follow the allow-list: carol (group ml) yes, bob no
    assert api.call("POST", "pins", {"user": "carol", "gpu": GPUS[0].uuid}).status_code == 200
    r = api.call("POST", "pins", {"user": "bob", "gpu": GPUS[0].uuid})
    assert r.status_code == 409 and "may not use GPUs" in r.json()["message"]
    before = api.files()
    r = api.call("PUT", "access", {"users": ["alice"], "groups": ["ml"]})  # unchanged: no entry
    assert r.status_code == 200 and r.json()["unchanged"] and api.files() == before
    r = api.call("PUT", "access", {"users": [], "groups": []})
    assert r.status_code == 200 and "everyone" in r.json()["message"]
    assert "access" not in api.intent()
    assert [e["action"] for e in api.audit()] == ["access", "pin", "access"]


def test_audit_newest_first_with_limit(api):
    for gpu in GPUS:
        assert api.call("POST", "drained", {"gpu": gpu.uuid}).status_code == 200
    entries = api.call("GET", "audit?limit=2").json()["entries"]
    assert [e["gpu"] for e in entries] == [GPUS[3].uuid, GPUS[2].uuid]
    assert len(api.call("GET", "audit").json()["entries"]) == 4


def test_usage_from_nvml_and_history(tmp_path):
    nvml = FakeNVML()
    console, engine, hub = make_console(tmp_path, nvml)
    for util in (10, 50, 90):
        nvml.util[GPUS[1].uuid] = util
        console.sampler.sample()
    with ServedApp(app_for(console)) as served:
        state = requests.get(served.url + API + "gpus", headers={"Authorization": f"token {ADMIN_TOKEN}"}).json()
    gpu = state["gpus"][1]
    assert state["usage"]["source"] == "nvml"
    assert gpu["utilization_pct"] == 90 and gpu["memory_used_mib"] == 1024 and gpu["memory_total_mib"] == 81559
    assert gpu["name"] == "NVIDIA H100 80GB HBM3"
    assert [s[1] for s in gpu["history"]] == [10, 50, 90]


def test_names_for_the_forms(api):
    assert api.call("GET", "names").json() == {"users": ["admin", "alice", "bob", "carol"], "groups": ["ml"]}


def test_openapi_file_is_served_and_lists_every_route(api):
    import yaml

    r = requests.get(api.url + "openapi.yaml", timeout=10)
    assert r.status_code == 200
    spec = yaml.safe_load(r.text)
    assert set(spec["paths"]) == {"/gpus", "/pins", "/pins/{user}", "/drained", "/drained/{uuid}", "/free",
                                  "/access", "/audit", "/health", "/names", "/openapi.yaml",
                                  "/courses", "/courses/roster", "/courses/{course}", "/courses/{course}/stop",
                                  "/courses/{course}/reset", "/reservations", "/reservations/{id}",
                                  "/shared", "/shared/{uuid}", "/usage", "/usage/users/{user}", "/quotas",
                                  "/quotas/{scope}/{name}", "/queue", "/queue/{user}", "/queue/{user}/move", "/parked"}


def test_every_path_of_the_spec_has_its_handler_and_request_schemas():
    """The routes are the spec's paths; every operation the spec lists is implemented, and its
    request body and path parameters have schemas the console validates with (they compile)."""
    from tornado.web import RequestHandler

    from hub.service_process.console import openapi
    from hub.service_process.console.handlers import API_HANDLERS

    paths = openapi.spec()["paths"]
    assert [h.spec_path for h in API_HANDLERS if h.spec_path not in paths] == []
    assert set(paths) == {h.spec_path for h in API_HANDLERS}
    for handler in API_HANDLERS:
        for method in paths[handler.spec_path]:
            assert getattr(handler, method) is not getattr(RequestHandler, method), (handler, method)
            operation = openapi.operation(handler.spec_path, method)
            assert set(operation.params) == set(re.findall(r"\{(\w+)\}", handler.spec_path))
            assert (operation.body is not None) == (method in ("post", "put", "patch", "delete")), (handler, method)


def _setup_conflicts(api):
    """A state where conflicts are possible: GPU 0 drained, alice pinned to 1, bob holds 2, a
    container of another hub holds 3, access open to everyone."""
    api.call("POST", "drained", {"gpu": GPUS[0].uuid})
    api.call("POST", "pins", {"user": "alice", "gpu": GPUS[1].uuid})
    api.engine.containers = [container("gpuhubtest-bob", GPUS[2].uuid, "bob"),
                             container("otherhub-dave", GPUS[3].uuid, "dave", instance="otherhub")]


U = GPUS[1].uuid
BAD = [
    # (method, path, raw body or JSON-able body, status, words in the message)
    ("POST", "pins", "{", 400, "not valid JSON"),
    ("POST", "pins", "", 400, "empty"),
    ("POST", "pins", "[]", 400, "must be a JSON object"),
    ("POST", "pins", '"alice"', 400, "must be a JSON object"),
    ("POST", "pins", "null", 400, "must be a JSON object"),
    ("POST", "pins", b"\xff\xfe", 400, "not UTF-8"),
    ("PUT", "access", "[" * 1000, 400, "nested too deeply"),
    ("POST", "courses/roster", "[" * 100000, 400, "nested too deeply"),
    ("POST", "pins", {"user": "alice", "gpu": U, "force": True}, 400, "unknown field 'force'"),
    ("POST", "pins", {"user": "alice", "gpu": U, "zz": 1, "aa": 2}, 400,
     "unknown field 'aa'; this request takes 'user', 'gpu', 'note'"),
    ("POST", "pins", {"gpu": U}, 400, "missing field 'user'"),
    ("POST", "pins", {"user": "alice"}, 400, "missing field 'gpu'"),
    ("POST", "pins", {"user": 7, "gpu": U}, 400, "'user' must be a string, not a number"),
    ("POST", "pins", {"user": "alice", "gpu": [U]}, 400, "'gpu' must be a string, not an array"),
    ("POST", "pins", {"user": None, "gpu": U}, 400, "not null"),
    ("POST", "pins", {"user": "", "gpu": U}, 400, "must not be empty"),
    ("POST", "pins", {"user": "   ", "gpu": U}, 400, "must not be empty"),
    ("POST", "pins", {"user": "a" * 300, "gpu": U}, 400, "longer than 255"),
    ("POST", "pins", {"user": "al\nice", "gpu": U}, 400, "control characters"),
    ("POST", "pins", {"user": "mallory", "gpu": U}, 400, "no user 'mallory'"),
    ("POST", "pins", {"user": "bob", "gpu": "GPU-nope"}, 400, "no GPU 'GPU-nope'"),
    ("POST", "pins", {"user": "bob", "gpu": 1}, 400, "'gpu' must be a string"),
    ("POST", "pins", {"user": "bob", "gpu": GPUS[0].uuid}, 409, "is drained"),
    ("POST", "pins", {"user": "alice", "gpu": U}, 409, "already pinned"),
    ("POST", "pins", {"user": "bob", "gpu": U, "note": "x" * 501}, 400, "longer than 500"),
    ("POST", "pins", {"user": "bob", "gpu": U, "note": 5}, 400, "'note' must be a string"),
    ("DELETE", "pins/bob", None, 404, "not pinned"),
    ("DELETE", "pins/al%07ice", None, 400, "'user' contains control characters"),
    ("DELETE", "pins/%20", None, 400, "'user' must not be empty"),
    ("DELETE", "pins/alice", {"force": 1}, 400, "unknown field 'force'"),
    ("DELETE", "pins/alice", "{oops", 400, "not valid JSON"),
    ("POST", "drained", {"gpu": GPUS[0].uuid}, 409, "already drained"),
    ("POST", "drained", {"gpu": "GPU-nope"}, 400, "no GPU 'GPU-nope'"),
    ("POST", "drained", {}, 400, "missing field 'gpu'"),
    ("POST", "drained", {"gpu": U, "uuid": U}, 400, "unknown field 'uuid'"),
    ("POST", "drained", {"gpu": True}, 400, "not a boolean"),
    ("DELETE", f"drained/{U}", None, 409, "is not drained"),
    ("DELETE", "drained/GPU-nope", None, 404, "no GPU 'GPU-nope'"),
    ("POST", "free", {"gpu": U}, 409, "free already"),
    ("POST", "free", {"gpu": "GPU-nope"}, 400, "no GPU"),
    ("POST", "free", {}, 400, "either 'gpu'"),
    ("POST", "free", {"gpu": U, "user": "bob"}, 400, "either 'gpu'"),
    ("POST", "free", {"server": "x"}, 400, "either 'gpu'"),
    ("POST", "free", {"gpu": GPUS[3].uuid}, 409, "this hub did not start"),
    ("POST", "free", {"user": "alice"}, 409, "holds no GPU"),
    ("POST", "free", {"user": "mallory"}, 400, "no user 'mallory'"),
    ("POST", "free", {"user": "bob", "server": 3}, 400, "'server' must be a string"),
    ("PUT", "access", {"users": "alice", "groups": []}, 400, "'users' must be an array"),
    ("PUT", "access", {"users": ["alice", 3], "groups": []}, 400, "'users[1]' must be a string"),
    ("PUT", "access", {"users": ["mallory"], "groups": []}, 400, "no user 'mallory'"),
    ("PUT", "access", {"users": [], "groups": ["nobody"]}, 400, "no group 'nobody'"),
    ("PUT", "access", {"users": []}, 400, "missing field 'groups'"),
    ("PUT", "access", {"users": [], "groups": [], "admins": []}, 400, "unknown field 'admins'"),
    ("PUT", "access", {"users": [""], "groups": []}, 400, "must not be empty"),
    ("PUT", "access", {"users": ["a"] * 1001, "groups": []}, 400, "'users' lists more than 1000 names"),
    ("PUT", "access", {"users": [], "groups": ["ml", "m\tl"]}, 400, "'groups[1]' contains control characters"),
    ("GET", "audit?limit=0", None, 400, "from 1 to 1000"),
    ("GET", "audit?limit=ten", None, 400, "from 1 to 1000"),
    ("GET", "nothing-here", None, 404, "no such API endpoint"),
    ("PATCH", "pins", {"user": "bob", "gpu": U}, 405, ""),
]


@pytest.mark.parametrize("method,path,body,status,words", BAD, ids=[f"{m} {p} {i}" for i, (m, p, *_) in enumerate(BAD)])
def test_bad_input_is_4xx_json_and_changes_nothing(api, method, path, body, status, words):
    _setup_conflicts(api)
    before = api.files()
    raw = body if isinstance(body, (str, bytes)) else None
    r = api.call(method, path, None if raw is not None else body, raw=raw)
    assert r.status_code == status, (r.status_code, r.text)
    data = r.json()
    assert set(data) == {"status", "message"} and data["status"] == status
    assert words in data["message"], data["message"]
    assert api.files() == before, "a refused request changed the intent or the audit log"
    assert api.hub.stopped == []


def test_oversized_body_is_413(api):
    r = api.call("PUT", "access", raw=json.dumps({"users": ["a" * 100] * 1000, "groups": []}))
    assert r.status_code == 413 and r.json()["status"] == 413


def test_concurrent_actions_are_serialised(api):
    from concurrent.futures import ThreadPoolExecutor

    names = [f"user{i}" for i in range(12)]
    for name in names:
        api.hub.users[name] = {"name": name, "groups": []}
    with ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(lambda n: api.call("POST", "pins", {"user": n, "gpu": GPUS[names.index(n) % 4].uuid}).status_code, names))
    assert codes == [200] * 12
    assert api.intent()["pins"] == {n: GPUS[i % 4].uuid for i, n in enumerate(names)}
    assert len(api.audit()) == 12


def test_broken_intent_file_is_a_500_that_says_what_to_do(api):
    (api.tmp_path / "gpu-intent.json").write_text("{broken")
    r = api.call("GET", "gpus")
    assert r.status_code == 500 and "fix or remove it" in r.json()["message"]


def test_page_for_admins_in_the_hubs_look_and_403_page_for_others(api):
    page = api.url.replace(API, "/services/gpu-console/")
    r = requests.get(page, headers={"Authorization": f"token {ADMIN_TOKEN}"}, timeout=10)
    assert r.status_code == 200
    html = r.text
    assert 'href="/hub/static/css/style.min.css"' in html  # the hub's Bootstrap 5 stylesheet
    assert 'id="gpu-table"' in html and 'id="free-dialog"' in html and 'data-xsrf="' in html
    assert "https://" not in html and "http://" not in html.replace('xmlns="http://www.w3.org', "")
    r = requests.get(page, headers={"Authorization": f"token {USER_TOKEN}"}, timeout=10)
    assert r.status_code == 403 and "for the hub&#x27;s admins only" in r.text
    r = requests.get(page, allow_redirects=False, timeout=10)
    assert r.status_code == 302 and "/hub/api/oauth2/authorize" in r.headers["Location"]
    js = requests.get(page + "static/console.js", timeout=10)
    assert js.status_code == 200 and "http" not in js.text.replace("http://www.w3.org/2000/svg", "")


def test_host_health_card_runs_the_doctors_checks(api, monkeypatch):
    from hub.gpus import doctor

    monkeypatch.setattr(doctor, "engine_facts", lambda client=None: (
        {"Version": "27.5.1"}, {"CDISpecDirs": ["/etc/cdi"], "LiveRestoreEnabled": True}, ""))
    monkeypatch.setattr(doctor, "nvml_facts", lambda reader=None, xid_wait=0: (
        [{"uuid": GPUS[0].uuid, "index": 0, "ecc_uncorrected": 2}], {"version": "580.65.06", "cuda": "13.0"}))
    monkeypatch.setenv("NVIDIA_CTK_VERSION", "1.17.8")
    r = api.call("GET", "health")
    assert r.status_code == 200
    data = r.json()
    checks = {c["name"]: c for c in data["checks"]}
    assert data["status"] == "fail"
    assert checks["toolkit.cves"]["status"] == "fail" and "CVE-2026-24260" in checks["toolkit.cves"]["message"]
    assert checks[f"gpu.{GPUS[0].uuid}"]["refuses"] == f"gpu:{GPUS[0].uuid}"
    assert checks["engine.live_restore"]["status"] == "ok"
    assert api.call("GET", "health", token=USER_TOKEN).status_code == 403


def test_no_page_may_frame_the_console():
    """A page served from a user's server shares the hub's origin without per-user origins:
    the console's answers refuse framing (docs/security.md#origins)."""
    from hub.service_process.console.handlers import APIHandler, PageHandler

    for cls in (PageHandler, APIHandler):
        headers = {}
        handler = cls.__new__(cls)
        handler.set_header = headers.__setitem__
        handler.set_default_headers()
        assert headers["X-Frame-Options"] == "DENY", cls
        assert headers["Content-Security-Policy"] == "frame-ancestors 'none'", cls


def test_parked_servers_are_listed_with_their_size_their_gpu_and_its_holder(api):
    """A parked server (recorded in gpu-parked.json and paused) holds no GPU: the table shows
    its GPU as someone else's or free, and GET /parked (and /gpus' "parked") lists it with
    when, its GPU state in host memory, the GPU it resumes on, who holds that now and its
    place in line; a record whose container runs again is not parked."""
    import time
    from hub.gpus.parked import Parked, ParkedFile
    from hub.gpus.queue import GPUQueue
    parked_alice = container("gpuhubtest-alice", GPUS[1].uuid, "alice")
    parked_alice["State"] = {"Status": "paused", "Paused": True}
    api.engine.containers = [parked_alice, container("gpuhubtest-bob", GPUS[1].uuid, "bob"),
                             container("gpuhubtest-carol", GPUS[2].uuid, "carol")]
    since = time.time() - 600
    records = ParkedFile(api.tmp_path / "gpu-parked.json")
    records.put(Parked("alice", "", "gpuhubtest-alice", GPUS[1].uuid, since, gpu_mib=10240,
                       mem_limit=2**30, mem_limit_parked=2**30 + 11 * 2**30))
    records.put(Parked("carol", "", "gpuhubtest-carol", GPUS[2].uuid, since))  # runs again: stale
    GPUQueue(api.tmp_path / "gpu-queue.json").join("alice", "", gpu=GPUS[1].uuid)

    parked = api.call("GET", "parked").json()["parked"]
    assert parked == [{"user": "alice", "server": "", "since": since, "since_iso": parked[0]["since_iso"],
                       "gpu": GPUS[1].uuid, "gpu_index": 1, "gpu_memory_mib": 10240,
                       "host_memory_bytes": 10240 * 2**20, "mem_limit_parked": 12 * 2**30,
                       "gpu_held_by": ["bob"], "in_line": 1, "server_url": "/user/alice/"}]
    state = api.call("GET", "gpus?fresh=1").json()
    assert state["parked"] == parked
    assert state["gpus"][1]["holder"]["user"] == "bob" and [h["user"] for h in state["gpus"][1]["holders"]] == ["bob"]
    assert state["queue"][0]["resume_gpu"] == GPUS[1].uuid

    from hub.service_process.console.cli import format_parked
    text = format_parked(parked)
    assert "alice" in text and "10.0 GiB" in text and "#1" in text and "held by bob" in text and "number 1 in line" in text
    assert format_parked([]) == "no server is parked"
