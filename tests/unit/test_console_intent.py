"""The pieces the GPU console adds elsewhere: the access allow-list in the admin intent, its
enforcement in the spawner, the service's configuration, and NVML sampling."""
import asyncio
import json
from types import SimpleNamespace

import pytest
from traitlets.config import Config

from hub.hub_process.config.configure import configure_console, configure_culler, configure_spawner
from hub.gpus.allocator import Allocator
from hub.gpus.manager import GPUManager, load_intent
from hub.gpus.model import ACCESS_REFUSED, GPU, Access, Intent


# ---- Intent.access -------------------------------------------------------------------------
def test_access_round_trip_and_empty_means_everyone():
    intent = Intent(pins={"amy": "GPU-0"}, access=Access(frozenset({"zed", "amy"}), frozenset({"ml"})))
    data = intent.to_json()
    assert data == {"pins": {"amy": "GPU-0"}, "drained": [], "access": {"users": ["amy", "zed"], "groups": ["ml"]}}
    assert Intent.from_json(json.dumps(data)) == intent
    assert "access" not in Intent().to_json()  # files without it (older ones) mean everyone
    assert Intent.from_json({"pins": {}, "drained": []}).access == Access()
    assert Intent.from_json({"access": {"users": [], "groups": []}}).access.everyone


def test_access_allows():
    open_ = Intent()
    assert open_.allows("anyone") and open_.allows("anyone", ["x"])
    closed = Intent(access=Access(frozenset({"amy"}), frozenset({"ml"})))
    assert closed.allows("amy") and closed.allows("bob", ["other", "ml"])
    assert not closed.allows("bob") and not closed.allows("bob", ["other"])
    assert not Intent(access=Access(users=frozenset({"amy"}))).allows("bob", ["ml"])


@pytest.mark.parametrize("bad", [{"access": ["amy"]}, {"access": {"users": "amy"}}, {"access": {"users": [1]}},
                                 {"access": {"groups": [""]}}, {"access": {"admins": []}}])
def test_access_rejects_bad_types(bad):
    with pytest.raises(ValueError, match="intent 'access"):
        Intent.from_json(bad)


def test_access_survives_allocator_changes(tmp_path):
    path = tmp_path / "intent.json"
    manager = GPUManager([GPU("GPU-0", 0)], "cdi", "cdi", str(path), "gpuhub")
    manager.save_intent(manager.allocator.intent.with_access(Access(frozenset({"amy"}))))
    manager.save_intent(manager.allocator.intent.with_pin("amy", "GPU-0"))
    assert load_intent(path).access == Access(frozenset({"amy"}))
    assert Allocator([GPU("GPU-0", 0)], load_intent(path)).intent.pins == {"amy": "GPU-0"}


# ---- the spawner refuses users who may not use GPUs ------------------------------------------
def spawner_for(name, groups, intent_file, fallback=False):
    from hub.hub_process.spawner import GPUDockerSpawner

    c = Config()
    c.GPUDockerSpawner.gpu_cpu_fallback = fallback
    user = SimpleNamespace(name=name, id=1, url=f"/user/{name}/", server=None,
                           groups=[SimpleNamespace(name=g) for g in groups])
    return GPUDockerSpawner(config=c, user=user)


@pytest.fixture
def manager(tmp_path, monkeypatch):
    from hub.hub_process.spawner import GPUDockerSpawner

    path = tmp_path / "gpu-intent.json"
    path.write_text(json.dumps({"pins": {}, "drained": [], "access": {"users": ["amy"], "groups": ["ml"]}}))
    manager = GPUManager([GPU("GPU-0", 0), GPU("GPU-1", 1)], "cdi", "cdi", str(path), "gpuhub")

    async def reconcile(docker):  # an engine with no containers; the intent as on disk
        manager.allocator.intent = load_intent(manager.intent_file)
        manager.allocator.reconcile({})

    monkeypatch.setattr(manager, "reconcile", reconcile)
    from hub.hub_process.spawner.spawner import PROCESS
    monkeypatch.setattr(PROCESS, "gpu_manager", manager)
    created = []

    async def create_object(self):
        created.append((self.user.name, self.gpu_uuid))
        return {"Id": "x"}

    monkeypatch.setattr("dockerspawner.DockerSpawner.create_object", create_object)
    manager.created = created
    return manager


def test_user_not_allowed_is_refused_with_403_and_the_message(manager, tmp_path):
    from hub.hub_process.spawner import GPUUnavailable

    with pytest.raises(GPUUnavailable) as exc:
        asyncio.run(spawner_for("bob", ["other"], tmp_path).create_object())
    assert exc.value.status_code == 403
    assert exc.value.jupyterhub_message == ACCESS_REFUSED and "CPU-only profile" in ACCESS_REFUSED
    assert manager.created == []


def test_allowed_users_and_group_members_get_gpus(manager, tmp_path):
    asyncio.run(spawner_for("amy", [], tmp_path).create_object())
    asyncio.run(spawner_for("carl", ["ml"], tmp_path).create_object())
    assert manager.created == [("amy", "GPU-0"), ("carl", "GPU-0")]  # nothing held in the fake engine


def test_not_allowed_with_cpu_fallback_starts_without_a_gpu(manager, tmp_path):
    spawner = spawner_for("bob", [], tmp_path, fallback=True)
    asyncio.run(spawner.create_object())
    assert manager.created == [("bob", None)] and spawner.gpu_uuid is None


# ---- configuration -----------------------------------------------------------------------
def test_console_is_an_admin_only_least_privilege_service(tmp_path):
    c = Config()
    configure_spawner(c, {"HUB_NAME_PREFIX": "lab"})
    configure_culler(c, {"CULL_IDLE_TIMEOUT": "600"})
    configure_console(c, {"HUB_NAME_PREFIX": "lab"}, reclaim_token_file=str(tmp_path / "token"))
    culler, console = c.JupyterHub.services  # appended, not replacing the culler
    assert culler["name"] == "idle-culler"
    assert console["name"] == "gpu-console" and console["url"] == "http://hub:10101"
    assert console["command"][1:] == ["-m", "hub.service_process.console.app"]
    assert console["display"] is True and console["oauth_no_confirm"] is True
    env = console["environment"]
    assert env["HUB_NAME_PREFIX"] == "lab"
    assert env["GPUHUB_GPU_INTENT_FILE"] == "/srv/jupyterhub/state/gpu-intent.json"
    assert env["GPUHUB_GPU_AUDIT_FILE"] == "/srv/jupyterhub/state/gpu-audit.jsonl"
    roles = {r["name"]: r for r in c.JupyterHub.load_roles}
    assert set(roles) == {"idle-culler", "gpu-console"}
    role = roles["gpu-console"]
    assert role["services"] == ["gpu-console"]
    # may look up users, groups and servers, stop servers, set course groups' members and
    # properties, create users and course groups through the roster route (hub/hub_process/roster_api.py)
    # and start course members' servers in a reservation's pre-start through the pre-start route
    # (hub/hub_process/prestart_api.py); nothing else: no admin:users (delete, rename, auth state),
    # no admin:groups (delete), no tokens, no `servers` (starting anyone's server), no access to
    # users' servers
    assert set(role["scopes"]) == {"list:users", "read:users:groups", "read:servers", "delete:servers",
                                   "list:groups", "read:groups", "groups", "custom:gpuhub-roster:create",
                                   "custom:gpuhub-prestart:start"}
    assert {"custom:gpuhub-roster:create", "custom:gpuhub-prestart:start"} <= set(c.JupyterHub.custom_scopes)
    [(path, handler), (prestart_path, prestart_handler, prestart_args)] = c.JupyterHub.extra_handlers
    from jupyterhub.apihandlers.base import APIHandler
    assert path == "/api/gpuhub/roster" and issubclass(handler, APIHandler)
    assert prestart_path == "/api/gpuhub/prestart" and issubclass(prestart_handler, APIHandler)
    assert prestart_args == {"intent_file": "/srv/jupyterhub/state/gpu-intent.json",
                             "profiles_file": "/srv/jupyterhub/profiles.yaml"}


def test_the_console_reads_the_gpu_settings_the_hub_wrote(tmp_path, monkeypatch):
    """configure_console writes GPUSettings into the service's environment; build_console reads
    the same object back (here with a static GPU list: no NVML, no CDI specs)."""
    from console_fakes import FakeEngine, FakeHub

    from hub.settings.gpu_settings import GPUSettings
    from hub.service_process.console.app import build_console

    monkeypatch.setattr("hub.gpus.inventory.discover_gpus", lambda: None)
    static = tmp_path / "gpus.yaml"
    static.write_text("gpus: [{uuid: GPU-a, index: 0}, {uuid: GPU-b, index: 1}]\n")
    settings = GPUSettings(name_prefix="lab", intent_file=str(tmp_path / "intent.json"),
                           audit_file=str(tmp_path / "audit.jsonl"), label_prefix="lablabel",
                           cdi_dirs=(str(tmp_path / "no-cdi"),), inventory_file=str(static), usage_interval=5,
                           usage_db=str(tmp_path / "usage.sqlite"))
    engine = FakeEngine()
    console = build_console({**settings.to_env(), "JUPYTERHUB_BASE_URL": "/base/"}, hub=FakeHub(engine), docker=engine)
    assert [g.uuid for g in console.manager.inventory] == ["GPU-a", "GPU-b"] and console.manager.source == "static"
    assert console.instance == "lab" and console.manager.label_prefix == "lablabel"
    assert str(console.manager.intent_file) == settings.intent_file and str(console.audit.path) == settings.audit_file
    assert console.sampler.interval == 5 and console.base_url == "/base/"
    assert console.usage.store.path == settings.usage_db and console.usage.instance == "lab"


def test_console_scopes_are_real_jupyterhub_scopes(tmp_path):
    from jupyterhub.scopes import scope_definitions

    c = Config()
    configure_console(c, {}, reclaim_token_file=str(tmp_path / "token"))
    (role,) = c.JupyterHub.load_roles
    # JupyterHub's own scopes, and the custom ones the configuration defines
    assert all(s in scope_definitions or s in c.JupyterHub.custom_scopes for s in role["scopes"])
    assert [s for s in role["scopes"] if s not in scope_definitions] == ["custom:gpuhub-roster:create",
                                                                          "custom:gpuhub-prestart:start"]


# ---- usage sampling -------------------------------------------------------------------------
def test_sampler_keeps_an_hour_and_says_n_a_without_nvml():
    from console_fakes import GPUS, FakeNVML

    from hub.gpus.activity import ActivitySampler

    now = [1000.0]
    nvml = FakeNVML()
    sampler = ActivitySampler(reader=nvml, interval=10, window=3600, clock=lambda: now[0])
    for _ in range(400):
        sampler.sample()
        now[0] += 10
    assert sampler.source == "nvml" and len(sampler.history(GPUS[0].uuid)) == 361
    assert sampler.now(GPUS[0].uuid).utilization_pct == 0
    now[0] += 100  # stale: older than three intervals
    assert sampler.now(GPUS[0].uuid) is None
    nvml.available = False
    sampler.sample()
    assert sampler.source == "n/a" and "test" in sampler.reason and sampler.now(GPUS[0].uuid) is None


def test_nvml_reader_with_a_fake_pynvml():
    """Utilisation and memory per device; MIG instances without utilisation (NVML gives none)."""
    from hub.gpus.nvml import NVMLReader, read_usage

    class Error(Exception):
        pass

    class Handle:
        def __init__(self, uuid, util, migs=()):
            self.uuid, self.util, self.migs = uuid, util, list(migs)

    gpus = [Handle("GPU-a", 37), Handle("GPU-b", None, migs=[Handle("MIG-b1", None)])]

    class FakePynvml:
        NVMLError = Error
        NVML_DEVICE_MIG_ENABLE = 1
        nvmlInit = nvmlShutdown = staticmethod(lambda: None)
        nvmlDeviceGetCount = staticmethod(lambda: len(gpus))
        nvmlDeviceGetHandleByIndex = staticmethod(lambda i: gpus[i])
        nvmlDeviceGetUUID = staticmethod(lambda h: h.uuid.encode())
        nvmlDeviceGetName = staticmethod(lambda h: b"NVIDIA H100 80GB HBM3")
        nvmlDeviceGetMemoryInfo = staticmethod(lambda h: SimpleNamespace(used=512 * 2**20, total=80 * 2**30))
        nvmlDeviceGetMaxMigDeviceCount = staticmethod(lambda h: 2)

        @staticmethod
        def nvmlDeviceGetUtilizationRates(h):
            if h.util is None:
                raise Error("Not Supported")
            return SimpleNamespace(gpu=h.util, memory=0)

        @staticmethod
        def nvmlDeviceGetMigMode(h):
            if not h.migs:
                raise Error("Not Supported")
            return (1, 1)

        @staticmethod
        def nvmlDeviceGetMigDeviceHandleByIndex(h, slot):
            if slot >= len(h.migs):
                raise Error("Not Found")
            return h.migs[slot]

    usage = read_usage(NVMLReader(FakePynvml()))
    assert usage["source"] == "nvml"
    assert usage["gpus"]["GPU-a"] == {"index": 0, "name": "NVIDIA H100 80GB HBM3", "utilization_pct": 37,
                                      "memory_used_mib": 512, "memory_total_mib": 81920, "parent_uuid": None}
    assert usage["gpus"]["MIG-b1"]["utilization_pct"] is None and usage["gpus"]["MIG-b1"]["parent_uuid"] == "GPU-b"
    assert usage["gpus"]["MIG-b1"]["memory_used_mib"] == 512


def test_nvml_module_runs_standalone_and_says_n_a():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "hub.gpus.nvml", "--json"], capture_output=True, text=True)
    data = json.loads(r.stdout)
    if data["source"] == "n/a":  # no driver here
        assert r.returncode == 1 and data["reason"] and data["gpus"] == {}
    else:
        assert r.returncode == 0 and data["gpus"]


def test_with_gpu_reclaim_in_its_process_the_console_reads_the_gpus_once(tmp_path, monkeypatch):
    """gpu-reclaim beside the console (configure_reclaim handed it its token): one sampler for
    both, sampled by gpu-reclaim's rounds only; each keeps its own token and URL."""
    from console_fakes import FakeEngine, FakeHub

    from hub.settings import RECLAIM_TOKEN_ENV, RECLAIM_URL_ENV
    from hub.settings.gpu_settings import GPUSettings
    from hub.service_process.console.app import components, start

    monkeypatch.setattr("hub.gpus.inventory.discover_gpus", lambda: None)
    static = tmp_path / "gpus.yaml"
    static.write_text("gpus: [{uuid: GPU-a, index: 0}]\n")
    settings = GPUSettings(name_prefix="lab", intent_file=str(tmp_path / "intent.json"),
                           audit_file=str(tmp_path / "audit.jsonl"), cdi_dirs=(str(tmp_path / "no-cdi"),),
                           inventory_file=str(static), usage_db=str(tmp_path / "usage.sqlite"))
    engine = FakeEngine()
    env = {**settings.to_env(), "JUPYTERHUB_BASE_URL": "/", "JUPYTERHUB_API_URL": "http://hub:8081/hub/api",
           "JUPYTERHUB_API_TOKEN": "console-token", "GPUHUB_STATE_DIR": str(tmp_path), "HUB_NAME_PREFIX": "lab"}
    console, reclaimer, starts = components(env, hub=FakeHub(engine), docker=engine, reclaim_hub=FakeHub(engine))
    assert reclaimer is None and console.sampler is not None and starts[0].keywords == {}
    env.update({RECLAIM_TOKEN_ENV: "reclaim-token", RECLAIM_URL_ENV: "http://hub:10102"})
    console, reclaimer, starts = components(env, hub=FakeHub(engine), docker=engine, reclaim_hub=FakeHub(engine))
    assert console.sampler is reclaimer.sampler  # one NVML reading for both
    assert starts[0].func is start and starts[0].keywords == {"samples": False}  # gpu-reclaim's rounds sample
    assert starts[1].args[1]["JUPYTERHUB_API_TOKEN"] == "reclaim-token"
