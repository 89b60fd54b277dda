"""The gpu-reclaim service (hub/service_process/reclaim/service.py) against a stand-in engine, hub and GPU
readings: warn, then stop with the reason left for the page and the audit; its REST API, and bad
input answered with a 4xx and nothing changed."""
import asyncio
import json
from pathlib import Path

import pytest
import requests
from console_fakes import ServedApp
from test_gpu_activity import Feed

from hub.common.audit import AuditLog
from hub.gpus.activity import ActivitySampler, ActivityStore
from hub.gpus.reclaim_policy import ReclaimPolicy
from hub.service_process.reclaim.service import Reclaimer, make_app
from hub.common.stop_reasons import ReasonFile

API = "/services/gpu-reclaim/api/"
TOKENS = {"alice-token": {"kind": "user", "name": "alice", "groups": [], "scopes": ["self"]},
          "bob-token": {"kind": "user", "name": "bob", "groups": ["long-jobs"], "scopes": ["self"]},
          "admin-token": {"kind": "user", "name": "admin", "groups": [],
                          "scopes": ["admin:users", "access:services"]},
          "service-token": {"kind": "service", "name": "other", "scopes": ["access:services"]}}


def running(user, uuid, server="", since=1000.0, instance="gpuhubtest", profile=None):
    """A container as the engine's container list shows it."""
    labels = {"gpuhub.user": user, "gpuhub.server": server, "gpuhub.instance": instance,
              "gpuhub.gpu.uuid": uuid, "gpuhub.gpu.since": str(since)}
    return {"Id": f"c-{user}-{server}", "Names": [f"/gpuhubtest-{user}"], "State": "running",
            "Labels": {**labels, **({"gpuhub.profile": profile} if profile else {})}}


class Engine:
    def __init__(self, containers):
        self.containers, self.filters = containers, None

    async def __call__(self, method, *args, **kwargs):
        assert method == "containers", f"the reclaim service must not call {method}"
        self.filters = kwargs["filters"]
        return [c for c in self.containers if c["Labels"]["gpuhub.instance"] == "gpuhubtest"]


class Hub:
    def __init__(self, engine):
        self.engine, self.stopped = engine, []

    async def user(self, name):
        return {"name": name, "groups": TOKENS.get(f"{name}-token", {}).get("groups", [])}

    async def stop_server(self, user, server):
        self.stopped.append((user, server))
        self.engine.containers = [c for c in self.engine.containers if c["Labels"]["gpuhub.user"] != user]
        return 204, ""


@pytest.fixture
def world(tmp_path):
    clock = [2000.0]
    feed = Feed(**{"GPU-a": 0, "GPU-b": 80, "GPU-c": 0, "GPU-d": 0})
    engine = Engine([running("alice", "GPU-a"), running("carol", "GPU-b"), running("bob", "GPU-c"),
                     running("eve", "GPU-d", instance="another-hub")])
    hub = Hub(engine)
    policy = ReclaimPolicy(threshold_pct=5, timeout=60, grace=30, exempt_groups=frozenset({"long-jobs"}))
    sampler = ActivitySampler(feed, interval=10, clock=lambda: clock[0], store=ActivityStore(tmp_path / "a.sqlite"))
    r = Reclaimer(policy, sampler, engine, hub, AuditLog(tmp_path / "audit.jsonl"),
                  ReasonFile(tmp_path / "stop-reasons.json"), tmp_path / "reclaim.json", instance="gpuhubtest",
                  clock=lambda: clock[0])
    return r, clock, feed, hub, tmp_path


def rounds(r, clock, n, loop=None):
    out = []
    for _ in range(n):
        coro = r.round()
        out += asyncio.run_coroutine_threadsafe(coro, loop).result(10) if loop else asyncio.run(coro)
        clock[0] += 10
    return out


def test_idle_holder_is_warned_then_stopped_busy_and_exempt_are_not(world):
    r, clock, feed, hub, tmp = world
    rounds(r, clock, 1)
    assert r.next_due == 2000.0 + 60  # alice's warning: her first idle reading + the timeout
    decisions = rounds(r, clock, 6)  # 0..60 s idle
    assert [(d.action, d.key[0]) for d in decisions] == [("warn", "alice")]
    assert r.next_due == 2060.0 + 30  # the stop: when the warning was due + the grace
    # this hub's containers that hold a GPU only
    assert r.docker.filters["label"] == ["gpuhub.instance=gpuhubtest", "gpuhub.gpu.uuid"]
    assert json.loads((tmp / "reclaim.json").read_text())["warned"][0]["user"] == "alice"
    decisions = rounds(r, clock, 3)  # the grace (30 s) runs out
    assert [(d.action, d.key[0]) for d in decisions] == [("stop", "alice")]
    assert hub.stopped == [("alice", "")]  # carol busy, bob exempt (group), eve another hub's
    reason = ReasonFile(tmp / "stop-reasons.json").get(("alice", ""))
    assert "idle" in reason and "files" in reason
    actions = [(e["action"], e["user"]) for e in AuditLog(tmp / "audit.jsonl").tail()]
    assert actions == [("reclaim", "alice"), ("reclaim-warn", "alice")]


def test_a_restart_keeps_the_warning_and_the_idle_history(world, tmp_path):
    r, clock, feed, hub, tmp = world
    rounds(r, clock, 7)
    again = Reclaimer(r.policy, ActivitySampler(feed, interval=10, clock=lambda: clock[0],
                                                store=ActivityStore(tmp / "a.sqlite")),
                      r.docker, hub, r.audit, r.reasons, tmp / "reclaim.json", instance="gpuhubtest",
                      clock=lambda: clock[0])
    assert ("alice", "", "GPU-a") in again.state.warned
    assert [d.action for d in rounds(again, clock, 3)] == ["stop"]


def test_each_server_is_judged_by_the_policy_of_its_profile(world):
    r, clock, feed, hub, tmp = world
    profiles = tmp / "profiles.yaml"
    profiles.write_text("profiles:\n  - {slug: gpu, name: GPU}\n"
                        "  - {slug: long, name: Long, reclaim: {timeout: 600, grace: 30}}\n"
                        "  - {slug: demo, name: Demo, reclaim: 'off'}\n")
    r.profiles_file = profiles
    feed.utils.update({"GPU-e": 0, "GPU-f": 0})
    hub.engine.containers += [running("frank", "GPU-e", profile="long"), running("gina", "GPU-f", profile="demo")]
    decisions = rounds(r, clock, 10)  # 90 s idle: the settings' timeout (60 s) and grace (30 s) ran out
    assert hub.stopped == [("alice", "")]  # frank's profile allows 600 s, gina's is never reclaimed
    holders = {h["user"]: h for h in r.holdings()}
    assert holders["frank"]["profile"] == "long" and holders["frank"]["policy"]["timeout_s"] == 600
    assert holders["gina"]["policy"]["timeout_s"] == 0 and holders["alice"]["profile"] is None
    rounds(r, clock, 55)  # frank: idle 600 s, then the profile's grace
    assert hub.stopped == [("alice", ""), ("frank", "")] and "gina" in {h["user"] for h in r.holdings()}
    assert [d.action for d in decisions].count("stop") == 1

    # a broken edit of the file keeps the last good policies
    profiles.write_text("profiles:\n  - {slug: demo, name: Demo, reclaim: {timeout: -5}}\n")
    rounds(r, clock, 1)
    assert r.policies.of("demo").timeout == 0


@pytest.fixture
def api(world):
    r, clock, feed, hub, tmp = world

    async def identify(token):
        return TOKENS.get(token)

    with ServedApp(make_app(r, identify)) as served:
        def call(method, path, body=None, token="alice-token", raw=None):
            headers = {"Authorization": f"token {token}"} if token else {}
            data = raw if raw is not None else (json.dumps(body) if body is not None else None)
            return requests.request(method, served.url + API + path, data=data, headers=headers, timeout=10)
        yield call, served, world


def test_me_shows_only_the_callers_gpu_and_the_warning(api):
    call, served, (r, clock, feed, hub, tmp) = api
    rounds(r, clock, 7, served._loop)
    me = call("GET", "me").json()
    assert me["user"] == "alice" and [s["gpu"]["uuid"] for s in me["servers"]] == ["GPU-a"]
    [server] = me["servers"]
    assert server["idle_since"] == 2000.0 and server["gpu"]["utilization_pct"] == 0
    assert server["warning"]["seconds_left"] == 20 and not server["warning"]["still_working"]
    assert call("GET", "me", token="bob-token").json()["exempt"] is True
    r1 = call("POST", "me/still-working", {"server": ""})
    assert r1.status_code == 200 and "stays yours" in r1.json()["message"]
    r2 = call("POST", "me/still-working", {"server": ""})
    assert r2.status_code == 409 and "busy again" in r2.json()["message"]


def test_me_tells_a_user_nothing_about_others(api):
    """api/me says whether the caller is exempt, not who else is: the policy's exempt users and
    groups (a group named for a project, a user's name) are for admins' eyes (api/holders)."""
    call, served, (r, clock, feed, hub, tmp) = api
    rounds(r, clock, 7, served._loop)
    for token, exempt in (("alice-token", False), ("bob-token", True)):  # bob: in the exempt group long-jobs
        reply = call("GET", "me", token=token)
        assert reply.status_code == 200 and reply.json()["exempt"] is exempt
        assert "long-jobs" not in reply.text and "exempt_" not in reply.text, reply.text
        assert {"threshold_pct", "timeout_s", "grace_s"} <= set(reply.json()["policy"])
        assert {s["user"] for s in reply.json()["servers"]} <= {token.split("-")[0]}
    admin = call("GET", "holders", token="admin-token").json()
    assert admin["policy"]["exempt_groups"] == ["long-jobs"]


def test_bodies_over_64_kib_are_not_read(api):
    from test_console_input import announce

    call, served, world = api
    # tornado's own refusal, from the headers alone (the body is never sent), whoever asks
    assert announce(served.url, API + "me/still-working", 100_000_000).startswith(b"HTTP/1.1 400")
    r = call("POST", "me/still-working", raw=b"[" * 60000)
    assert r.status_code == 400 and r.json()["status"] == 400  # json's RecursionError: a 400, not a 500


def test_bad_input_and_strangers_change_nothing(api):
    call, served, (r, clock, feed, hub, tmp) = api
    rounds(r, clock, 7, served._loop)
    before = ((tmp / "reclaim.json").read_bytes(), (tmp / "audit.jsonl").read_bytes())
    cases = [
        ("GET", "me", None, None, 401),  # no token
        ("GET", "me", None, "service-token", 403),  # not a user
        ("POST", "me/still-working", {"user": "carol", "server": ""}, "alice-token", 400),  # forged
        ("POST", "me/still-working", {"server": ""}, "bob-token", 404),  # no warning
        ("POST", "me/still-working", {"server": 3}, "alice-token", 400),
        ("GET", "holders", None, "alice-token", 403),
        ("POST", "extend", {"user": "alice", "server": ""}, "alice-token", 403),
        ("POST", "extend", {"user": "alice", "seconds": -1}, "admin-token", 400),
        ("POST", "extend", {"user": "alice", "seconds": True}, "admin-token", 400),
        ("POST", "extend", {"user": "nobody"}, "admin-token", 404),
        ("POST", "extend", {"user": "alice", "when": 1}, "admin-token", 400),
    ]
    for method, path, body, token, status in cases:
        resp = call(method, path, body, token)
        assert resp.status_code == status, (method, path, body, token, resp.text)
        assert resp.json()["status"] == status and resp.json()["message"]
    assert call("POST", "extend", raw="{not json", token="admin-token").status_code == 400
    assert ((tmp / "reclaim.json").read_bytes(), (tmp / "audit.jsonl").read_bytes()) == before


def test_admin_sees_holders_and_extends_one_server(api):
    call, served, (r, clock, feed, hub, tmp) = api
    rounds(r, clock, 7, served._loop)
    holders = call("GET", "holders", token="admin-token").json()["holders"]
    assert sorted(h["user"] for h in holders) == ["alice", "bob", "carol"]
    resp = call("POST", "extend", {"user": "alice", "server": "", "seconds": 3600}, token="admin-token")
    assert resp.status_code == 200 and "alice" in resp.json()["message"]
    assert AuditLog(tmp / "audit.jsonl").tail(1)[0]["action"] == "reclaim-extend"
    assert rounds(r, clock, 10, served._loop) == [] and hub.stopped == []


# ---- configuration and the reason on the next page load ----------------------------------------
def configured(tmp_path, env=None):
    """configure_console and configure_reclaim, as jupyterhub_config.py calls them."""
    from traitlets.config import Config

    from hub.hub_process.config.configure import configure_console, configure_reclaim

    c = Config()
    configure_console(c, {"HUB_NAME_PREFIX": "lab", **(env or {})}, reclaim_token_file=str(tmp_path / "gpu-reclaim-token"))
    configure_reclaim(c, env or {}, token_file=str(tmp_path / "gpu-reclaim-token"))
    return c


def test_configure_reclaim_runs_a_least_privilege_service_in_the_consoles_process(tmp_path):
    """gpu-reclaim is a service of its own for JupyterHub (URL, token, least-privilege role) but no
    process of its own: the console's environment carries its token, URL and settings."""
    import stat

    from jupyterhub.scopes import scope_definitions
    from traitlets.config import Config
    from traitlets.config.loader import ConfigError

    from hub.hub_process.config.configure import configure_reclaim

    c = configured(tmp_path, {"GPU_IDLE_TIMEOUT": "60", "GPU_IDLE_EXEMPT_GROUPS": "long-jobs", "OTHER": "x"})
    console, service = c.JupyterHub.services
    token = (tmp_path / "gpu-reclaim-token").read_text().strip()
    assert len(bytes.fromhex(token)) == 32 and stat.S_IMODE((tmp_path / "gpu-reclaim-token").stat().st_mode) == 0o600
    # no command: JupyterHub starts no process for it; it takes the persistent token
    assert service == {"name": "gpu-reclaim", "url": "http://hub:10102", "api_token": token,
                       "info": service["info"]}
    assert console["name"] == "gpu-console" and console["command"][-1] == "hub.service_process.console.app"
    env = console["environment"]
    assert env["GPUHUB_RECLAIM_API_TOKEN"] == token and env["GPUHUB_RECLAIM_URL"] == "http://hub:10102"
    assert env["GPU_IDLE_TIMEOUT"] == "60" and env["GPU_IDLE_EXEMPT_GROUPS"] == "long-jobs" and "OTHER" not in env
    assert env["GPUHUB_GPU_INTENT_FILE"].endswith("gpu-intent.json")  # the console's own settings kept
    roles = {r["name"]: r for r in c.JupyterHub.load_roles}
    role = roles["gpu-reclaim"]
    assert role["services"] == ["gpu-reclaim"]
    assert set(role["scopes"]) == {"list:users", "read:users:name", "read:users:groups", "read:servers",
                                   "delete:servers"}
    assert all(s in scope_definitions for s in role["scopes"])
    assert c.GPUDockerSpawner.environment["GPUHUB_GPU_SERVICE_URL"] == "http://proxy:8000/services/gpu-reclaim/"
    with pytest.raises(ConfigError, match="GPU_IDLE_THRESHOLD"):
        configured(tmp_path, {"GPU_IDLE_THRESHOLD": "five"})
    # the order of the two calls does not matter: the same services, roles and environment
    other = Config()
    configure_reclaim(other, {"GPU_IDLE_TIMEOUT": "60"}, token_file=str(tmp_path / "gpu-reclaim-token"))
    from hub.hub_process.config.configure import configure_console
    configure_console(other, {"HUB_NAME_PREFIX": "lab", "GPU_IDLE_TIMEOUT": "60"},
                      reclaim_token_file=str(tmp_path / "gpu-reclaim-token"))
    first = configured(tmp_path, {"GPU_IDLE_TIMEOUT": "60"})
    by_name = lambda services: {s["name"]: s for s in services}  # noqa: E731
    assert by_name(other.JupyterHub.services) == by_name(first.JupyterHub.services)
    assert sorted(r["name"] for r in other.JupyterHub.load_roles) == sorted(r["name"] for r in first.JupyterHub.load_roles)


def test_the_reclaim_token_is_made_once_and_kept(tmp_path):
    """JupyterHub keeps every token the configuration ever gave it: a new one at each start would
    leave the old ones valid. The token is made on the first start (0600) and read after that."""
    import os
    import stat

    path = tmp_path / "gpu-reclaim-token"
    first = configured(tmp_path).JupyterHub.services[1]["api_token"]
    os.chmod(path, 0o644)  # a mode an admin's copy left: made private again
    again = configured(tmp_path).JupyterHub.services[1]["api_token"]
    assert again == first == path.read_text().strip()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("bad", ["short", "two words here", b"\xff\xfe binary", "a directory"])
def test_a_bad_reclaim_token_file_stops_the_hub_naming_the_file(tmp_path, bad):
    from traitlets.config.loader import ConfigError

    path = tmp_path / "gpu-reclaim-token"
    if bad == "a directory":
        path.mkdir()
    elif isinstance(bad, bytes):
        path.write_bytes(bad)
    else:
        path.write_text(bad + "\n")
    with pytest.raises(ConfigError, match=str(path)):
        configured(tmp_path)


def test_reclaim_in_the_console_process_uses_its_own_identity(tmp_path):
    """The environment gpu-reclaim runs with in the console's process: the token, URL and prefix
    configure_reclaim gave it, none of the console's JupyterHub identity; build reads it."""
    from hub.service_process.reclaim.service import build, env_in_console

    c = configured(tmp_path, {"HUB_NAME_PREFIX": "lab", "GPU_IDLE_TIMEOUT": "60"})
    console_env = {**c.JupyterHub.services[0]["environment"], "JUPYTERHUB_API_TOKEN": "the-consoles-token",
                   "JUPYTERHUB_API_URL": "http://hub:8081/hub/api", "JUPYTERHUB_BASE_URL": "/base/",
                   "JUPYTERHUB_SERVICE_NAME": "gpu-console", "JUPYTERHUB_CLIENT_ID": "service-gpu-console",
                   "JUPYTERHUB_SERVICE_PREFIX": "/base/services/gpu-console/", "GPUHUB_STATE_DIR": str(tmp_path)}
    env = env_in_console(console_env)
    token = (tmp_path / "gpu-reclaim-token").read_text().strip()
    assert env["JUPYTERHUB_API_TOKEN"] == token and "GPUHUB_RECLAIM_API_TOKEN" not in env
    assert env["JUPYTERHUB_SERVICE_NAME"] == "gpu-reclaim" and "JUPYTERHUB_CLIENT_ID" not in env
    assert env["JUPYTERHUB_SERVICE_PREFIX"] == "/base/services/gpu-reclaim/"
    assert env["JUPYTERHUB_SERVICE_URL"] == "http://hub:10102"
    assert env["JUPYTERHUB_API_URL"] == "http://hub:8081/hub/api"
    r = build({**env, "GPUHUB_PROFILES_FILE": str(tmp_path / "absent.yaml")}, docker=Engine([]))
    assert r.hub.token == token and r.policy.timeout == 60 and r.instance == "lab"
    assert r.parker is not None  # a profile may park (one host's engine)
    swarm = build({**env, "GPUHUB_PROFILES_FILE": str(tmp_path / "absent.yaml"), "HUB_BACKEND": "swarm"},
                  docker=Engine([]))
    assert swarm.parker is None  # a Swarm's servers run on other nodes: a profile's `park` stops there
    with pytest.raises(ValueError, match="GPUHUB_RECLAIM_API_TOKEN"):
        env_in_console({"JUPYTERHUB_API_URL": "http://hub:8081/hub/api"})


def test_service_reason_is_shown_until_the_server_starts_again(tmp_path):
    from hub.hub_process.spawner import GPUDockerSpawner

    class Spawner:
        active = False

    class User:
        name = "alice"
        spawners = {"": Spawner()}

    path = tmp_path / "stop-reasons.json"
    ReasonFile(path).put(("alice", ""), "Your server was stopped to give its GPU to others")
    assert "give its GPU" in GPUDockerSpawner.stop_reason_for(User(), file=str(path))
    assert GPUDockerSpawner.stop_reason_for(User()) == ""  # no file configured
    User.spawners[""].active = True
    assert GPUDockerSpawner.stop_reason_for(User(), file=str(path)) == ""
    ReasonFile(path).pop(("alice", ""))  # what the next start does
    User.spawners[""].active = False
    assert GPUDockerSpawner.stop_reason_for(User(), file=str(path)) == ""


def test_me_tells_the_caller_their_own_gpu_hours_and_quota(tmp_path):
    """JupyterLab's GPU item shows the user's GPU-hours against their tightest quota: api/me
    reads them from the usage store, for the token's owner only (a course quota through the
    user's groups)."""
    import time

    from hub.service_process.reclaim.service import build
    from hub.usage.accounting import Interval
    from hub.usage.store import UsageStore

    now = time.time()
    store = UsageStore(tmp_path / "gpu-usage.sqlite")
    store.save([Interval("c1", "GPU-a", now - 3 * 3600, now - 3600, False, "bob", model="Fake GPU",
                         groups=("long-jobs",), courses=("long-jobs",)),
                Interval("c2", "GPU-b", now - 600, now, True, "carol", model="Fake GPU")], now)
    store.set_quota("course", "long-jobs", 10, 7 * 86400, "admin")
    engine = Engine([running("bob", "GPU-c")])
    r = build({"GPUHUB_STATE_DIR": str(tmp_path), "HUB_NAME_PREFIX": "gpuhubtest", "GPU_QUOTA_DEFAULT": "20h/7d",
               "GPUHUB_PROFILES_FILE": str(tmp_path / "absent.yaml")}, docker=engine, hub=Hub(engine))

    async def identify(token):
        return TOKENS.get(token)

    with ServedApp(make_app(r, identify)) as served:
        def me(token):
            resp = requests.get(served.url + API + "me", headers={"Authorization": f"token {token}"}, timeout=10)
            assert resp.status_code == 200, resp.text
            return resp.json()["usage"]
        bob = me("bob-token")
        assert bob["hours"]["week"] == pytest.approx(2.0, abs=0.01)
        quota = bob["quota"]
        assert (quota["scope"], quota["name"], quota["hours"]) == ("course", "long-jobs", 10)  # the tightest
        assert quota["used_hours"] == pytest.approx(2.0, abs=0.01)
        alice = me("alice-token")  # nothing used: the default quota, untouched; nobody else's hours
        assert alice["hours"]["week"] == 0 and alice["quota"]["scope"] == "default"
        assert alice["quota"]["used_hours"] == 0


def test_reclaim_reads_the_files_and_labels_the_console_reads(tmp_path):
    """One reader for both components of the service process: GPUSettings (GPUHUB_STATE_DIR,
    GPUHUB_GPU_AUDIT_FILE, GPUHUB_LABEL_PREFIX, GPUHUB_PROFILES_FILE, GPUHUB_USAGE_DB)."""
    from hub.service_process.reclaim.service import build
    from hub.settings.gpu_settings import GPUSettings
    from hub.usage.store import UsageStore

    env = {"GPUHUB_STATE_DIR": str(tmp_path), "GPUHUB_LABEL_PREFIX": "lab", "HUB_NAME_PREFIX": "gpuhubtest",
           "GPUHUB_PROFILES_FILE": str(tmp_path / "absent.yaml"), "GPUHUB_USAGE_DB": str(tmp_path / "u.sqlite")}
    engine = Engine([])
    r, s = build(env, docker=engine, hub=Hub(engine)), GPUSettings.from_env(env)
    assert r.labels.prefix == s.label_prefix == "lab"
    assert r.audit.path == Path(s.audit_file) == tmp_path / "gpu-audit.jsonl"
    assert r.profiles_file == Path(s.profiles_file) == tmp_path / "absent.yaml"
    assert r.usage("nobody", []) == {}  # no store yet at GPUHUB_USAGE_DB
    UsageStore(tmp_path / "gpu-usage.sqlite")  # the default place: not read, as GPUHUB_USAGE_DB is set
    assert r.usage("nobody", []) == {}
    UsageStore(tmp_path / "u.sqlite")
    assert r.usage("nobody", [])["hours"] == {"day": 0, "week": 0, "month": 0}


def test_a_resumed_server_gets_a_new_idle_clock(world):
    """Parked, then resumed after longer than the timeout: judged idle from its resume on, not
    from its GPU label (found on the H100 through the whole stack: resumed, then reclaimed at once)."""
    from hub.gpus.parked import Parked

    r, clock, feed, hub, tmp = world
    records = {}

    class Records:  # the parked file as gpu-reclaim reads it
        def all(self):
            return dict(records)

    r.parked = Records()
    rounds(r, clock, 1)  # alice idle from 2000
    alice = next(c for c in r.docker.containers if c["Labels"]["gpuhub.user"] == "alice")
    alice["State"] = "paused"
    records["alice"] = Parked("alice", "", alice["Id"], "GPU-a", clock[0])
    rounds(r, clock, 12)  # parked for 120 s, longer than the timeout (60 s)
    del records["alice"]  # Resume: the record goes, the container holds its GPU again
    alice["State"] = "running"
    resumed = clock[0]
    assert rounds(r, clock, 5) == []  # 40 s after the resume: no warning
    assert r.resumed_at[("alice", "")] == resumed
    decisions = rounds(r, clock, 3)
    assert [(d.action, d.key[0]) for d in decisions] == [("warn", "alice")]  # 60 s after the resume
    assert decisions[0].idle_since >= resumed
