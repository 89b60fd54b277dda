"""The console's side of GPU accounting against a stand-in engine and hub: the periodic sync
(live containers and the engine's events), quota enforcement on running servers, the usage and
quota API (bad input: a 4xx and nothing changed), the Prometheus endpoint and the CLI."""
from __future__ import annotations

import asyncio
import json
import re
import sqlite3

import pytest
import requests
from console_fakes import ADMIN_TOKEN, GPUS, USER_TOKEN, FakeNVML, ServedApp, StubAuth, container, make_console

from hub.service_process.console import cli
from hub.service_process.console.app import make_app, usage_keeper
from hub.settings.gpu_settings import GPUSettings
from hub.usage import gate
from hub.usage.accounting import Interval

API = "/services/gpu-console/api/"
METRICS_TOKEN = "metrics-token"
T0 = 1_700_000_000.0


class Clock:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


class Events:
    def __init__(self):
        self.events: list[dict] = []
        self.asked: list[tuple] = []

    async def __call__(self, since, until, filters):
        self.asked.append((since, until, filters))
        return [e for e in self.events if since <= e["timeNano"] / 1e9 <= until]

    def add(self, action, cid, t, labels=None):
        self.events.append({"Action": action, "timeNano": int(t * 1e9), "Actor": {"ID": cid, "Attributes": labels or {}}})


def labelled(cid, uuid, user, since):
    c = container(cid, uuid, user, since=since)
    return c, {**c["Config"]["Labels"], "name": cid}


@pytest.fixture
def setup(tmp_path):
    console, engine, hub = make_console(tmp_path, FakeNVML())
    settings = GPUSettings(name_prefix="gpuhubtest", usage_db=str(tmp_path / "usage.sqlite"))
    events = Events()
    console.usage = keeper = usage_keeper(console, settings, events)
    keeper.clock = Clock(T0)
    return console, engine, hub, keeper, events


def run(coro):
    return asyncio.run(coro)


def test_sync_counts_live_servers_and_what_happened_while_the_console_was_down(setup):
    console, engine, hub, keeper, events = setup
    hub.groups["ml101"] = ["alice"]
    hub.properties["ml101"] = {"gpuhub.course": {}}
    c1, _ = labelled("c1", GPUS[0].uuid, "alice", T0 - 100)
    engine.containers = [c1]
    run(keeper.sync())
    iv, = keeper.store.open_intervals()
    assert (iv.user, iv.start, iv.end, iv.courses, iv.groups) == ("alice", T0 - 100, T0, ("ml101",), ("ml101",))
    # the console is down for an hour: alice's server died at +600; bob's started and died meanwhile
    _, bob_labels = labelled("c2", GPUS[1].uuid, "bob", T0 + 1000)
    events.add("die", "c1", T0 + 600)
    events.add("start", "c2", T0 + 1000, bob_labels)
    events.add("die", "c2", T0 + 1300)
    engine.containers = []
    keeper.clock.t = T0 + 3600
    result = run(keeper.sync())
    assert (result.live, result.created, result.events) == (0, 1, 3)
    assert events.asked[-1][0] == T0 - 5 and events.asked[-1][2]["label"] == ["gpuhub.instance=gpuhubtest"]
    got = {iv.user: (iv.start, iv.end, iv.open) for iv in keeper.store.between(0, T0 + 9999)}
    assert got == {"alice": (T0 - 100, T0 + 600, False), "bob": (T0 + 1000, T0 + 1300, False)}
    run(keeper.sync())  # the same events again: nothing counted twice
    assert sum(iv.held_s for iv in keeper.store.between(0, T0 + 9999)) == 700 + 300


def test_sync_inspects_a_live_container_once_and_again_after_a_start_event(setup, monkeypatch):
    from hub.usage import reconcile
    console, engine, hub, keeper, events = setup
    c1, _ = labelled("c1", GPUS[0].uuid, "alice", T0 - 100)
    c2, _ = labelled("c2", GPUS[1].uuid, "bob", T0 - 50)
    engine.containers = [c1, c2]
    inspected = []
    listing = keeper.docker

    async def counting(method, *args, **kwargs):
        if method == "inspect_container":
            inspected.append(args[0])
        return await listing(method, *args, **kwargs)
    keeper.docker = counting
    run(keeper.sync())
    assert sorted(inspected) == ["c1", "c2"]
    keeper.clock.t = T0 + 15
    run(keeper.sync())
    assert sorted(inspected) == ["c1", "c2"]  # nothing changed: no inspect
    # bob's container was restarted: its StartedAt moved, so it is read again
    c2["State"] = {**c2["State"], "StartedAt": "2023-11-14T22:13:30Z"}  # T0 + 10
    events.add("start", "c2", T0 + 10)
    keeper.clock.t = T0 + 30
    run(keeper.sync())
    assert sorted(inspected) == ["c1", "c2", "c2"]
    monkeypatch.setattr(reconcile, "INSPECT_MAX_AGE", -1)  # and every one after a while
    run(keeper.sync())
    assert sorted(inspected) == ["c1", "c1", "c2", "c2", "c2"]
    assert {iv.user for iv in keeper.store.open_intervals()} == {"alice", "bob"}


def test_without_events_an_exited_containers_finished_at_closes_its_interval(setup):
    console, engine, hub, keeper, events = setup
    c = container("c1", GPUS[0].uuid, "alice", since=T0)
    engine.containers = [c]
    run(keeper.sync())
    # the daemon restarted (no events) and the container stopped meanwhile; nobody removed it yet
    c["State"] = {"Status": "exited", "FinishedAt": "2023-11-14T22:16:40.5Z"}  # T0 + 200.5
    keeper.clock.t = T0 + 900
    engine_containers = engine.containers
    engine.containers = []  # not in the live listing ...

    async def inspecting(method, *args, **kwargs):  # ... but inspect still finds it
        if method == "inspect_container":
            return next((x for x in engine_containers if x["Id"] == args[0]), None)
        return await FakeEngineCall(method, *args, **kwargs)
    FakeEngineCall = keeper.docker
    keeper.docker = inspecting
    run(keeper.sync())
    iv, = keeper.store.between(0, T0 + 9999)
    assert (iv.open, iv.end) == (False, T0 + 200.5)


def test_used_time_weighs_held_time_by_the_samplers_utilisation(setup):
    console, engine, hub, keeper, events = setup
    engine.containers = [container("c1", GPUS[0].uuid, "alice", since=T0)]
    console.sampler.clock = keeper.clock
    run(keeper.sync())
    console.sampler.reader.util[GPUS[0].uuid] = 40
    keeper.clock.t = T0 + 100
    console.sampler.sample()
    run(keeper.sync())
    iv, = keeper.store.open_intervals()
    assert (iv.held_s, iv.used_s, iv.sampled_s) == (100, pytest.approx(40), 100)


def test_quota_warns_at_90_and_stops_at_100_percent_with_the_reason_kept(setup, tmp_path):
    console, engine, hub, keeper, events = setup
    keeper.store.set_quota("user", "alice", 1.0, 86400, "admin")
    engine.containers = [container("c1", GPUS[0].uuid, "alice", since=T0)]
    run(keeper.sync())
    keeper.clock.t = T0 + 3300  # 55 of 60 minutes: 92 %
    run(keeper.sync())
    result = run(keeper.enforce())
    assert result.warned == ["alice"] and result.stopped == [] and hub.stopped == []
    assert "0.9 of 1 GPU-hours (92%)" in keeper.store.notices("alice")["warn"]["message"]
    keeper.clock.t = T0 + 3601
    run(keeper.sync())
    result = run(keeper.enforce())
    assert result.stopped == [("alice", "")] and hub.stopped == [("alice", "")]
    stop = keeper.store.notices("alice")["stop"]["message"]
    assert "quota of 1 GPU-hours per 1 day is used up" in stop and "files in work/ are kept" in stop
    assert console.audit.tail(1)[0]["action"] == "quota-stop"
    # the next start is refused with the usage and when it renews; the page shows why it stopped
    refusal = gate.start_refusal(keeper.store.path, "alice", [], [], now=T0 + 3700)
    assert "used 1.0 of 1 GPU-hours in the last 1 day" in refusal and "2023-11-15 22:13 UTC" in refusal
    assert gate.summary(keeper.store.path, "alice", [], [], now=T0 + 3700)["stopped"] == stop
    assert gate.start_refusal(keeper.store.path, "alice", [], [], now=T0 + 86400 + 3700) is None
    assert keeper.store.notices("alice") == {}  # a new session: old notices cleared
    assert keeper.store.refusals() == {"quota": 1}


def test_a_shared_seat_counts_its_share_against_the_quota(setup):
    console, engine, hub, keeper, events = setup
    c = container("c1", GPUS[0].uuid, "alice", since=T0)
    c["Config"]["Env"] = ["GPUHUB_GPU_SHARED_BY=4"]
    engine.containers = [c]
    run(keeper.sync())
    keeper.clock.t = T0 + 3600
    run(keeper.sync())
    assert run(console.usage.sync()).live == 1
    assert sum(iv.held_s for iv in keeper.store.between(0, T0 + 9999)) == 900


# ---- the API ---------------------------------------------------------------------------------------

class Auth(StubAuth):
    async def identify(self, handler):
        if handler.request.headers.get("Authorization", "") in (f"Bearer {METRICS_TOKEN}", f"token {METRICS_TOKEN}"):
            return {"name": "prometheus", "kind": "service", "scopes": ["custom:gpuhub-metrics:read"]}, False
        return await super().identify(handler)


@pytest.fixture
def api(setup):
    console, engine, hub, keeper, events = setup
    app = make_app(console, "/services/gpu-console/", "/", authenticator=Auth(), cookie_secret=b"x" * 32)
    with ServedApp(app) as served:
        yield served.url, console, hub, keeper


def call(url, method, path, body=None, token=ADMIN_TOKEN):
    return requests.request(method, url + API + path, data=json.dumps(body) if body is not None else None,
                            headers={"Authorization": f"token {token}"}, timeout=10)


def seed(keeper):
    day = 86400
    keeper.store.save([Interval("c1", GPUS[0].uuid, T0 - 2 * day, T0 - 2 * day + 7200, False, "alice",
                                model="Fake GPU", groups=("ml",), courses=("ml101",)),
                       Interval("c2", GPUS[1].uuid, T0 - 3600, T0, True, "bob", weight=0.5, model="Fake GPU")], T0)


def test_usage_report_json_and_csv(api):
    url, console, hub, keeper = api
    seed(keeper)
    since, until = T0 - 7 * 86400, T0 + 1
    r = call(url, "GET", f"usage?since={since}&until={until}&by=user")
    assert r.status_code == 200
    assert {row["user"]: row["gpu_hours"] for row in r.json()["rows"]} == {"alice": 2.0, "bob": 0.5}
    assert r.json()["total_gpu_hours"] == 2.5
    r = call(url, "GET", f"usage?since={since}&until={until}&by=course&bucket=day")
    rows = [(x["course"], x["start"], round(x["gpu_hours"], 4)) for x in r.json()["rows"]]
    midnight = 1_699_833_600.0  # alice's 2 hours cross it: split into two days
    assert rows == [("ml101", midnight - 86400, 1.7778), ("ml101", midnight, 0.2222), ("(no course)", midnight + 86400, 0.5)]
    r = call(url, "GET", f"usage?since={since}&until={until}&format=csv")
    assert r.headers["Content-Type"].startswith("text/csv")
    assert r.text.splitlines()[0] == "user,start,gpu_hours,used_gpu_hours,sampled_hours,servers"
    assert r.text.splitlines()[1].startswith("alice,2023-11-07T22:13:20Z,2.0000,,")
    for query, fragment in (("since=yesterday", "since='yesterday'"), ("by=planet", "by='planet'"),
                            ("bucket=year", "bucket='year'"), ("since=1e400", "between 1970"),
                            (f"since={T0}&until={T0 - 1}", "before until"), ("format=xml", "format")):
        r = call(url, "GET", f"usage?{query}")
        assert r.status_code == 400 and fragment in r.json()["message"], (query, r.text)
    assert call(url, "GET", "usage", token=USER_TOKEN).status_code == 403  # users see only their own, on the hub's pages


def test_user_usage_and_unknown_user(api):
    url, console, hub, keeper = api
    r = call(url, "GET", "usage/users/alice")
    assert r.status_code == 200 and r.json()["hours"] == {"day": 0, "week": 0, "month": 0}
    r = call(url, "GET", "usage/users/mallory")
    assert r.status_code == 400 and "no user 'mallory'" in r.json()["message"]


def test_quotas_set_list_delete_and_bad_input_changes_nothing(api, tmp_path):
    url, console, hub, keeper = api
    r = call(url, "PUT", "quotas", {"scope": "user", "name": "alice", "hours": 20, "window_days": 7, "note": "fair"})
    assert r.status_code == 200 and r.json()["message"] == "Set the GPU quota of user alice to 20 h per 7 days"
    hub.properties["ml"] = {"gpuhub.course": {}}
    assert call(url, "PUT", "quotas", {"scope": "course", "name": "ml", "hours": 3, "window_days": 1}).status_code == 200
    before = (keeper.store.quotas(), (tmp_path / "gpu-audit.jsonl").read_bytes())
    for body, status, fragment in (
            ({"scope": "user", "name": "alice", "hours": -5, "window_days": 7}, 400, "'hours'"),
            ({"scope": "user", "name": "alice", "hours": 1e12, "window_days": 7}, 400, "'hours'"),
            ({"scope": "user", "name": "alice", "hours": 5, "window_days": 0}, 400, "'window_days'"),
            ({"scope": "user", "name": "alice", "hours": "5", "window_days": 7}, 400, "'hours'"),
            ({"scope": "group", "name": "nogroup", "hours": 5, "window_days": 7}, 400, "no group 'nogroup'"),
            ({"scope": "course", "name": "nocourse", "hours": 5, "window_days": 7}, 400, "no course 'nocourse'"),
            ({"scope": "user", "name": "mallory", "hours": 5, "window_days": 7}, 400, "no user 'mallory'"),
            ({"scope": "user", "name": "alice", "hours": 5, "window_days": 7, "who": "root"}, 400, "unknown field 'who'"),
            ({"scope": "user", "hours": 5, "window_days": 7}, 400, "needs the user's name"),
            ({"scope": "planet", "name": "x", "hours": 5, "window_days": 7}, 400, "scope")):
        r = call(url, "PUT", "quotas", body)
        assert r.status_code == status and fragment in r.json()["message"], (body, r.text)
    r = call(url, "PUT", "quotas", {"scope": "user", "name": "alice", "hours": 1, "window_days": 1}, token=USER_TOKEN)
    assert r.status_code == 403
    assert call(url, "DELETE", "quotas/user/nobody").status_code == 404
    assert (keeper.store.quotas(), (tmp_path / "gpu-audit.jsonl").read_bytes()) == before
    listing = call(url, "GET", "quotas").json()["quotas"]
    assert [(q["scope"], q["name"], q["text"]) for q in listing] == [("course", "ml", "3 h per 1 day"),
                                                                       ("user", "alice", "20 h per 7 days")]
    assert call(url, "DELETE", "quotas/user/alice").status_code == 200
    assert [q["scope"] for q in call(url, "GET", "quotas").json()["quotas"]] == ["course"]


def test_metrics_need_the_scope_and_name_gpu_seconds_per_user(api):
    url, console, hub, keeper = api
    seed(keeper)
    keeper.store.set_quota("default", "", 10, 7 * 86400, "admin")
    keeper.store.count_refusal("quota")
    metrics = url + "/services/gpu-console/metrics"
    assert requests.get(metrics, timeout=10).status_code == 401
    r = requests.get(metrics, headers={"Authorization": f"token {USER_TOKEN}"}, timeout=10)
    assert r.status_code == 403 and "custom:gpuhub-metrics:read" in r.text
    r = requests.get(metrics, headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = r.text
    assert 'gpuhub_gpu_seconds_total{user="alice"} 7200.0' in text
    assert 'gpuhub_gpu_seconds_total{user="bob"} 1800.0' in text
    assert 'gpuhub_course_gpu_seconds_total{course="ml101"} 7200.0' in text
    assert 'gpuhub_spawn_refusals_total{reason="quota"} 1.0' in text
    assert f'gpuhub_gpu_holder_info{{container="c2",index="1",model="Fake GPU",node="",server="",user="bob",uuid="{GPUS[1].uuid}"}} 1.0' in text
    assert 'gpuhub_gpu_utilization_ratio{index="0",model="Fake GPU",node=""' not in text  # not sampled yet
    assert 'gpuhub_quota_limit_gpu_seconds{name="",scope="default",user="alice"} 36000.0' in text
    console.sampler.sample()
    text = requests.get(metrics, headers={"Authorization": f"token {ADMIN_TOKEN}"}, timeout=10).text
    assert f'gpuhub_gpu_utilization_ratio{{index="1",model="Fake GPU",node="",user="bob",uuid="{GPUS[1].uuid}"}} 0.0' in text
    assert 'gpuhub_gpu_memory_total_bytes{index="0",model="Fake GPU",node="",uuid="GPU-0000"} 8.5520809984e+10' in text
    assert "gpuhub_queue_length 0.0" in text and "gpuhub_queue_oldest_wait_seconds 0.0" in text

    # the line for GPUs, as the hub writes it: who waits and for how long (not a start let through)
    from hub.gpus.queue import GPUQueue
    line = GPUQueue(console.queue_file, clock=lambda: keeper.clock() - 90)
    line.join("carol", "")
    line.join("dave", "big").passed = True  # starting: no longer waiting
    line.save()
    text = requests.get(metrics, headers={"Authorization": f"token {ADMIN_TOKEN}"}, timeout=10).text
    assert "gpuhub_queue_length 1.0" in text and 'gpuhub_queue_wait_seconds{server="",user="carol"}' in text
    oldest = float(re.search(r"^gpuhub_queue_oldest_wait_seconds (\S+)$", text, re.M).group(1))
    assert 90 <= oldest < 120 and "dave" not in text


def test_cli_usage_csv_and_quota(api, capsys):
    url, console, hub, keeper = api
    seed(keeper)
    assert cli.main(["--url", url, "--token", ADMIN_TOKEN, "usage", "--since", str(T0 - 7 * 86400), "--until", str(T0 + 1), "--csv"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("user,start,gpu_hours") and "bob," in out
    assert cli.main(["--url", url, "--token", ADMIN_TOKEN, "usage", "--since", str(T0 - 7 * 86400), "--until", str(T0 + 1), "--by", "course"]) == 0
    out = capsys.readouterr().out
    assert "ml101" in out and "2.00" in out
    assert cli.main(["--url", url, "--token", ADMIN_TOKEN, "quota", "set", "user", "alice", "20h/7d"]) == 0
    assert "20 h per 7 days" in capsys.readouterr().out
    assert cli.main(["--url", url, "--token", ADMIN_TOKEN, "quota", "set", "user", "alice", "0h/7d"]) == 1  # API: hours above 0
    assert cli.main(["--url", url, "--token", ADMIN_TOKEN, "quota", "set", "user", "alice", "lots"]) == 2
    assert cli.main(["--url", url, "--token", ADMIN_TOKEN, "quota", "list"]) == 0
    assert "user alice: 20 h per 7 days" in capsys.readouterr().out
    assert cli.main(["--url", url, "--token", ADMIN_TOKEN, "quota", "remove", "user", "alice"]) == 0
    assert keeper.store.quotas() == []


# ---- the hub's side: configuration and pages ---------------------------------------------------

def test_configure_usage_adds_the_page_variable_and_a_least_privilege_prometheus_service(tmp_path):
    from jupyterhub.scopes import scope_definitions
    from traitlets.config import Config

    from hub.hub_process.config.configure import METRICS_SCOPE, configure_usage

    c = Config()
    configure_usage(c, {}, token_file=str(tmp_path / "absent"))
    assert "gpuhub_usage" in c.JupyterHub.template_vars and "services" not in c.JupyterHub
    assert c.JupyterHub.template_vars["gpuhub_usage"](None) == {}
    (tmp_path / "token").write_text("s3cret\n")
    c = Config()
    configure_usage(c, {}, token_file=str(tmp_path / "token"))
    (service,) = c.JupyterHub.services
    (role,) = c.JupyterHub.load_roles
    assert service == {"name": "prometheus", "api_token": "s3cret", "info": service["info"]}
    assert role["scopes"] == [METRICS_SCOPE, "read:metrics"] and role["services"] == ["prometheus"]
    assert "read:metrics" in scope_definitions and METRICS_SCOPE in c.JupyterHub.custom_scopes


def test_pages_show_usage_warning_and_quota_stop(tmp_path):
    from jinja2 import ChoiceLoader, DictLoader, Environment, FileSystemLoader

    from hub.hub_process.config.configure import TEMPLATES_DIR

    env = Environment(loader=ChoiceLoader([FileSystemLoader(TEMPLATES_DIR), DictLoader({})]))
    template = env.get_template("gpuhub_usage.html")
    usage = {"hours": {"day": 1.5, "week": 3, "month": 3}, "warning": "", "stopped": "Your server was stopped because ...",
             "quota": {"text": "4 h per 7 days", "scope": "course", "name": "ml101", "remaining_hours": 1,
                       "renews_at_iso": None}}
    html = template.render(gpuhub_usage=usage, user=None)
    assert 'id="gpuhub-quota-stop"' in html and "1.50 GPU-hours in the last 24 hours" in html
    assert "Quota: 4 h per 7 days (course ml101); 1.00 GPU-hours left." in " ".join(html.split())
    assert template.render(gpuhub_usage={}, user=None).strip() == ""


# ---- the spawner asks the store at each GPU start ---------------------------------------------

from test_console_intent import manager, spawner_for  # noqa: E402,F401 (a fixture, and its spawner)


def test_spawner_refuses_a_gpu_start_over_quota_with_usage_and_renewal(manager, tmp_path):
    from hub.hub_process.spawner import GPUUnavailable
    from hub.usage.store import UsageStore

    db = tmp_path / "usage.sqlite"
    store = UsageStore(db)
    now = __import__("time").time()
    store.save([Interval("c1", "GPU-0", now - 7200, now - 3600, False, "amy")])
    store.set_quota("user", "amy", 1, 86400, "admin")
    spawner = spawner_for("amy", [], tmp_path)
    spawner.usage_db = str(db)
    with pytest.raises(GPUUnavailable) as exc:
        asyncio.run(spawner.create_object())
    assert exc.value.status_code == 403 and "used 1.0 of 1 GPU-hours in the last 1 day" in exc.value.jupyterhub_message
    assert manager.created == [] and store.refusals() == {"quota": 1}
    fallback = spawner_for("amy", [], tmp_path, fallback=True)
    fallback.usage_db = str(db)
    asyncio.run(fallback.create_object())
    assert manager.created == [("amy", None)]  # with GPU_CPU_FALLBACK: a server without a GPU
    store.delete_quota("user", "amy")
    asyncio.run(spawner.create_object())
    assert manager.created[-1] == ("amy", "GPU-0")


def test_spawner_without_a_store_yet_starts_and_creates_nothing(manager, tmp_path):
    spawner = spawner_for("amy", [], tmp_path)
    spawner.usage_db = str(tmp_path / "absent.sqlite")
    spawner.gpu_quota_default = "1h/1d"
    asyncio.run(spawner.create_object())
    assert manager.created == [("amy", "GPU-0")] and not (tmp_path / "absent.sqlite").exists()
    with pytest.raises(Exception, match="gpu_quota_default"):
        spawner.gpu_quota_default = "lots"


# ---- syncing right after a server starts or dies (the engine's event stream) ------------------

class StreamingEngine:
    """docker-py's ``events(filters=..., decode=True)``: each connection streams its share of
    ``streams`` then breaks as a daemon restart breaks it (or, the last one, ends)."""

    def __init__(self, streams, stop):
        self.streams, self.stop, self.connections, self.filters = list(streams), stop, 0, []

    def connect(self):
        self.connections += 1
        if not self.streams:
            self.stop.set()
            raise ConnectionError("no daemon")
        return self

    def events(self, filters, decode):
        assert decode is True
        self.filters.append(filters)
        events = self.streams.pop(0)

        def stream():
            yield from events
            raise ConnectionError("daemon restarted")
        return stream()


def test_watch_events_notifies_each_event_and_connects_again_after_a_daemon_restart():
    import threading

    from hub.usage.reconcile import watch_events
    stop = threading.Event()
    engine = StreamingEngine([[{"Action": "start", "id": "a"}, {"Action": "die", "id": "a"}],
                              [{"Action": "start", "id": "b"}]], stop)
    seen = []
    watch_events(engine.connect, {"type": "container"}, seen.append, stop, retry=0.01)
    assert [(e["Action"], e["id"]) for e in seen] == [("start", "a"), ("die", "a"), ("start", "b")]
    assert engine.connections == 3 and engine.filters == [{"type": "container"}] * 2


def test_a_burst_of_engine_events_brings_one_sync_a_second_later(setup, monkeypatch):
    import threading

    from hub.service_process.console import app as console_app
    console, _engine, _hub, keeper, _events = setup
    stop = threading.Event()
    engine = StreamingEngine([[{"Action": "start", "id": str(i)} for i in range(5)]], stop)
    monkeypatch.setattr(console_app, "engine_client", engine.connect)
    monkeypatch.setattr(console_app, "EVENT_SYNC_DELAY", 0.05)
    console.docker.client = object()  # a real engine's client (the stand-in has none)
    syncs = []

    async def usage_sync():
        syncs.append(asyncio.get_running_loop().time())

    async def main():
        flag = console_app.watch_engine_events(console, usage_sync)
        assert flag is not None
        await asyncio.sleep(0.5)
        flag.set()
        return flag

    run(main())
    assert len(syncs) == 1  # five events, one sync
    assert engine.filters[0] == keeper.event_filter == {
        "type": "container", "event": ["start", "die"], "label": ["gpuhub.instance=gpuhubtest"]}


def test_parked_time_is_not_gpu_time(setup, tmp_path):
    """A parked server (paused, its GPU given back: hub.gpus.parked) holds no seat; after its
    resume it holds one again from the resume on (docker unpause keeps State.StartedAt)."""
    from hub.gpus.parked import Parked, ParkedFile

    console, engine, hub, keeper, events = setup
    assert keeper.parked.path.name == "gpu-parked.json"  # the console's keeper reads the parked servers
    parked = ParkedFile(tmp_path / "gpu-parked.json")
    keeper.parked = parked
    c1, _ = labelled("c1", GPUS[0].uuid, "alice", T0 - 100)
    c1["State"] = {"Status": "running", "StartedAt": "2023-11-14T22:11:40Z"}  # T0 - 100
    engine.containers = [c1]
    run(keeper.sync())
    keeper.clock.t = T0 + 100
    run(keeper.sync())
    # parked at T0 + 100: paused, and a record names it
    c1["State"] = {"Status": "paused", "Paused": True, "Running": True, "StartedAt": "2023-11-14T22:11:40Z"}
    parked.put(Parked("alice", "", "c1", GPUS[0].uuid, T0 + 100))
    for t in (T0 + 200, T0 + 900):
        keeper.clock.t = t
        assert run(keeper.sync()).live == 0
    # resumed at T0 + 1000
    parked.pop(("alice", ""), resumed=T0 + 1000)
    c1["State"] = {"Status": "running", "Running": True, "StartedAt": "2023-11-14T22:11:40Z"}
    keeper.clock.t = T0 + 1500
    assert run(keeper.sync()).live == 1
    got = sorted((iv.start, iv.end) for iv in keeper.store.between(0, T0 + 9999))
    assert got == [(T0 - 100, T0 + 100), (T0 + 1000, T0 + 1500)]
    assert sum(iv.held_s for iv in keeper.store.between(0, T0 + 9999)) == 200 + 500
    # a record for a container that runs (not paused) frees nothing: still counted
    parked.put(Parked("alice", "", "c1", GPUS[0].uuid, T0 + 1500))
    keeper.clock.t = T0 + 1600
    assert run(keeper.sync()).live == 1
