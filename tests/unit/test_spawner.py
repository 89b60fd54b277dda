import asyncio
from types import SimpleNamespace

import pytest
from traitlets import TraitError
from traitlets.config import Config

from hub.hub_process.spawner import GPUDockerSpawner
from hub.hub_process.spawner.spawner import PROCESS


def make_spawner(name="alice", **config):
    c = Config()
    for key, value in config.items():
        setattr(c.GPUDockerSpawner, key, value)
    user = SimpleNamespace(name=name, id=1, url=f"/user/{name}/", server=None)
    return GPUDockerSpawner(config=c, user=user)


def test_names_are_safe_for_any_username():
    s = make_spawner("Alice.Smith@example.org", prefix="lab")
    assert s.container_name.startswith("lab-alice-smith-example-org---")
    assert make_spawner("a.b").container_name != make_spawner("a-b").container_name


def test_create_kwargs_are_hardened_and_labelled():
    s = make_spawner("bob", shm_size="256M", pids_limit=300, prefix="lab")
    kwargs = s.harden_create_kwargs({"host_config": {"Memory": 5, "CapDrop": [], "PidsLimit": 99999},
                                     "labels": {"team": "x"}})
    host = kwargs["host_config"]
    assert host["Memory"] == 5  # DockerSpawner's own settings stay
    assert host["ShmSize"] == 256 * 2**20 and host["PidsLimit"] == 300  # extra_* cannot loosen
    assert host["CapDrop"] == ["ALL"] and host["SecurityOpt"] == ["no-new-privileges=true"]
    assert host["DeviceRequests"] == []
    assert kwargs["labels"] == {"team": "x", "gpuhub.user": "bob", "gpuhub.server": "", "gpuhub.instance": "lab"}
    # MaskedPaths replaces the engine's list: Docker 26's own (as `docker inspect` shows it for a
    # container created without the field, recorded on this test machine) and the GPUs' /proc
    engine_defaults = ["/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                       "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
                       "/sys/devices/virtual/powercap"]
    assert host["MaskedPaths"] == [*engine_defaults, "/proc/driver/nvidia/gpus"]


def test_the_images_healthcheck_is_off_unless_kept():
    # An image's HEALTHCHECK is a process the engine starts in every container every few seconds
    assert make_spawner().harden_create_kwargs({})["healthcheck"] == {"test": ["NONE"]}
    assert "healthcheck" not in make_spawner(image_healthcheck=True).harden_create_kwargs({})


def test_no_gpu_means_void(monkeypatch):
    s = make_spawner()
    monkeypatch.setattr("dockerspawner.DockerSpawner.get_env", lambda self: {"JUPYTERHUB_API_TOKEN": "t"})
    assert s.get_env()["NVIDIA_VISIBLE_DEVICES"] == "void"


def test_limits_are_validated():
    with pytest.raises(TraitError, match="at least 64"):
        make_spawner(pids_limit=10)
    with pytest.raises(TraitError, match="at least 1"):
        make_spawner(docker_threads=0)


def test_docker_calls_share_a_pool_of_threads():
    s = make_spawner(docker_threads=4)
    PROCESS.executor = None
    try:
        assert s.executor._max_workers == 4 and make_spawner().executor is s.executor
        assert s.client_kwargs["max_pool_size"] == 4
    finally:
        PROCESS.executor = None


def test_gpu_container_carries_its_uuid_in_label_and_request(monkeypatch):
    from hub.gpus.claim import Assignment
    from hub.gpus.model import GPU

    s = make_spawner("carol")
    s.assignment, s.gpu_uuid = Assignment(GPU("GPU-7", 7), "cdi"), "GPU-7"
    kwargs = s.harden_create_kwargs({"host_config": {}})
    assert kwargs["host_config"]["DeviceRequests"] == [{"Driver": "cdi", "DeviceIDs": ["nvidia.com/gpu=GPU-7"]}]
    assert kwargs["labels"]["gpuhub.gpu.uuid"] == "GPU-7" and float(kwargs["labels"]["gpuhub.gpu.since"]) > 0
    assert "gpuhub.profile" not in kwargs["labels"]  # no profiles file: no profile
    s.profile_slug = "gpu-long"  # gpu-reclaim judges the server by its profile's policy
    assert s.harden_create_kwargs({"host_config": {}})["labels"]["gpuhub.profile"] == "gpu-long"
    monkeypatch.setattr("dockerspawner.DockerSpawner.get_env", lambda self: {})
    assert "NVIDIA_VISIBLE_DEVICES" not in s.get_env()  # the engine/CDI sets it, not us
    assert s.get_state()["gpu_uuid"] == "GPU-7"


def test_refusal_is_a_503_with_the_whole_message():
    from hub.gpus.model import NoGPUAvailable

    error = make_spawner().gpu_refusal(NoGPUAvailable("all 4 GPUs are in use", total=4, drained=1))
    assert error.status_code == 503
    assert error.jupyterhub_message.startswith("No GPU could be assigned to your server: all 4 GPUs are in use.")
    assert "This host has 4 GPUs, 1 of them drained by an admin" in error.jupyterhub_message


def test_profiles_inherit_the_configuration_not_the_last_profile(tmp_path):
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text("profiles: [{slug: gpu, name: GPU, default: true},"
                        " {slug: cpu, name: CPU, gpu: false, mem_limit: 1G, cpu_limit: 1, images: [small/img:1]}]")
    s = make_spawner("dana", profiles_file=str(profiles), image="big/img:2", mem_limit=8 * 2**30, cpu_limit=4.0)
    s.apply_profile({"profile": "cpu"})
    assert (s.image, s.mem_limit, s.cpu_limit, s.gpu_enabled) == ("small/img:1", 2**30, 1.0, False)
    s.apply_profile({"profile": "gpu"})
    assert (s.image, s.mem_limit, s.cpu_limit, s.gpu_enabled) == ("big/img:2", 8 * 2**30, 4.0, True)
    profiles.unlink()
    s.profiles_file = ""
    s.apply_profile({})
    assert (s.image, s.mem_limit, s.cpu_limit, s.gpu_enabled) == ("big/img:2", 8 * 2**30, 4.0, True)


def course_group(name, teachers=(), tas=(), students=(), materials=True):
    from hub.courses import PROPERTY
    users = [SimpleNamespace(name=u) for u in (*teachers, *tas, *students)]
    return SimpleNamespace(name=name, users=users, properties={
        PROPERTY: {"teachers": list(teachers), "tas": list(tas), "materials": materials}})


def test_course_materials_are_read_only_for_students_and_writable_for_staff(monkeypatch):
    groups = [course_group("ml101", teachers=["tom"], tas=["tia"], students=["sam"]),
              course_group("nlp", students=["sam"], materials=False),
              SimpleNamespace(name="plain", users=[], properties={})]
    modes = {}
    for name in ("sam", "tom", "tia"):
        s = make_spawner(name, prefix="lab")
        s.user.groups = groups
        modes[name] = s.harden_create_kwargs({"host_config": {"Binds": ["lab-user-x:/home/jovyan/work:rw"]}})["host_config"]["Binds"]
    assert modes["sam"] == ["lab-user-x:/home/jovyan/work:rw", "lab-course-ml101:/home/jovyan/work/courses/ml101:ro"]
    assert modes["tom"][1:] == ["lab-course-ml101:/home/jovyan/work/courses/ml101:rw"]
    assert modes["tia"][1:] == ["lab-course-ml101:/home/jovyan/work/courses/ml101:rw"]
    s = make_spawner("sam")
    s.user.groups = groups
    monkeypatch.setattr("dockerspawner.DockerSpawner.get_env", lambda self: {})
    assert s.get_env()["GPUHUB_COURSES"] == "ml101,nlp"


def test_spawn_form_tells_of_shared_gpus_and_that_memory_is_not_isolated():
    from hub.common.profiles import Profile, render_form
    p = Profile(slug="gpu", name="GPU", description="", images=("img",), mem_limit=2**30, cpu_limit=1.0,
                gpu=True, groups=frozenset(), default=True)
    html = render_form([p, p], 4, 0, {"GPU-1": (3, 4)})
    assert "0 of 4</strong> GPUs free" in html and "<strong>3</strong> seats on 1 shared GPU (up to 4 users each)" in html
    assert "not isolated" in html and "none free now" not in html
    assert "none free now" in render_form([p, p], 4, 0, {})


def test_starts_take_turns_and_the_waiting_are_told(monkeypatch):
    import asyncio

    from hub.hub_process.spawner.turns import StartTurns

    monkeypatch.setattr(PROCESS, "turns", StartTurns())
    spawners = [make_spawner(f"u{i}", concurrent_starts=2) for i in range(5)]
    running, most = [0], [0]

    def start_turn(s):
        return PROCESS.turns.turn(s.concurrent_starts, s._told_to_wait)

    async def start(s):
        async with start_turn(s):
            running[0] += 1
            most[0] = max(most[0], running[0])
            await asyncio.sleep(0.02)
            running[0] -= 1

    async def all_at_once():
        await asyncio.gather(*(start(s) for s in spawners))
    asyncio.run(all_at_once())
    assert most[0] == 2
    told = [[e["message"] for e in s.progress_log.events] for s in spawners]
    assert told[:2] == [[], []]  # the first two start at once
    assert told[2] == ["Waiting to start: 2 servers are starting now"]
    assert told[4] == ["Waiting to start: 2 servers are starting now and 2 more are waiting before yours"]
    assert PROCESS.turns.waiting == 0
    # a turn is given back when the start fails or is cancelled
    async def failing():
        with pytest.raises(RuntimeError):
            async with start_turn(spawners[0]):
                raise RuntimeError("create failed")
        await asyncio.wait_for(start(spawners[1]), timeout=1)
        await asyncio.wait_for(start(spawners[2]), timeout=1)
    asyncio.run(failing())


def test_a_start_pulls_its_image_once_before_its_turn(monkeypatch):
    import asyncio

    from dockerspawner import DockerSpawner

    calls = []

    async def fake_docker(self, method, *args, **kwargs):
        calls.append((method, *args))
        return {}

    async def docker_spawner_start(self):
        await self.pull_image(self.image)  # as DockerSpawner.start does
        calls.append(("start",))
        return "10.0.0.2", 8888
    monkeypatch.setattr(GPUDockerSpawner, "docker", fake_docker)
    monkeypatch.setattr(DockerSpawner, "start", docker_spawner_start)
    monkeypatch.setattr(GPUDockerSpawner, "wait_for_port", lambda self, ip, port: asyncio.sleep(0))
    s = make_spawner(image="gpuhub/pytorch-notebook:test", pull_policy="always")
    assert asyncio.run(s.start()) == ("10.0.0.2", 8888)
    assert calls == [("pull", "gpuhub/pytorch-notebook", "test"), ("start",)]
    assert s._image_ready is None  # a later start pulls again
    asyncio.run(s.start())
    assert [c[0] for c in calls].count("pull") == 2


def test_concurrent_starts_default_to_the_cpus_and_are_validated(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5})
    assert make_spawner().concurrent_starts == 6
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0})
    assert make_spawner().concurrent_starts == 2
    with pytest.raises(TraitError, match="at least 1"):
        make_spawner(concurrent_starts=-1)


def test_command_is_the_images_lean_start_when_its_label_names_one(monkeypatch):
    import asyncio

    images = {"ours": {"Config": {"Cmd": ["jupyterhub-singleuser"], "Labels": {"gpuhub.singleuser-command": "gpuhub-singleuser"}}},
              "other": {"Config": {"Cmd": ["start-singleuser.sh"], "Labels": None}}}

    async def fake_docker(self, method, *args, **kwargs):
        assert method == "inspect_image"
        return images[args[0]]
    monkeypatch.setattr(GPUDockerSpawner, "docker", fake_docker)
    monkeypatch.setattr("jupyterhub.spawner.Spawner.get_args", lambda self: ["--debug"])
    off = "--ServerApp.jpserver_extensions={'jupyter_lsp': False, 'notebook_shim': False}"
    assert asyncio.run(make_spawner(image="ours").get_command()) == ["gpuhub-singleuser", "--debug", off]
    assert asyncio.run(make_spawner(image="other").get_command()) == ["start-singleuser.sh", "--debug", off]
    # An admin's cmd wins; an empty list loads every installed extension
    s = make_spawner(image="ours", cmd=["my-start"], server_extensions_off=[])
    assert asyncio.run(s.get_command()) == ["my-start", "--debug"]


def test_waiting_for_the_server_ends_when_its_container_stops(monkeypatch):
    import asyncio
    import time

    s = make_spawner()
    s.object_id = "abc"
    s.http_timeout = 30
    states = iter([{"State": {"Running": True}}, {"State": {"Running": False}}])

    async def get_object(self):
        return next(states)
    monkeypatch.setattr(GPUDockerSpawner, "get_object", get_object)
    t0 = time.monotonic()
    asyncio.run(s.wait_for_port("127.0.0.1", 9))  # nothing listens on port 9
    assert 1.5 < time.monotonic() - t0 < 5


def test_a_configured_options_from_form_is_used_as_on_any_spawner(tmp_path):
    def mine(formdata):
        return {"custom": formdata["x"][0]}
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text("profiles: [{slug: gpu, name: GPU, default: true}, {slug: cpu, name: CPU, gpu: false}]")
    s = make_spawner(profiles_file=str(profiles))
    assert s.run_options_from_form({"profile": ["cpu"]}) == {"profile": "cpu"}  # the profiles' own
    c = Config()
    c.GPUDockerSpawner.profiles_file = str(profiles)
    c.Spawner.options_from_form = mine
    user = SimpleNamespace(name="eve", id=2, url="/user/eve/", server=None)
    assert GPUDockerSpawner(config=c, user=user).run_options_from_form({"x": ["1"]}) == {"custom": "1"}


def test_without_profiles_dockerspawners_allowed_images_are_offered_and_checked():
    import asyncio

    from tornado import web

    s = make_spawner(allowed_images=["lab/a:1", "lab/b:2"], image="lab/a:1")
    assert 'name="image"' in s.options_form and "lab/b:2" in s.options_form  # stock's image picker
    assert s.run_options_from_form({"image": ["lab/b:2"]}) == {"image": "lab/b:2"}
    s.apply_profile({"image": "lab/b:2"})  # start() resolves it through check_allowed
    assert asyncio.run(s.check_allowed("lab/b:2")) == "lab/b:2"
    with pytest.raises(web.HTTPError, match="not in allowed list"):
        asyncio.run(s.check_allowed("evil/c:3"))
    with pytest.raises(web.HTTPError) as err:
        s.apply_profile({"profile": "gpu"})
    assert err.value.status_code == 400 and "no server options but 'image'" in err.value.log_message
    assert make_spawner().options_form == ""  # no images to choose from: Start starts at once


def test_profiles_and_allowed_images_together_are_refused_with_the_fix(tmp_path):
    from tornado import web

    profiles = tmp_path / "profiles.yaml"
    profiles.write_text("profiles: [{slug: gpu, name: GPU, default: true}]")
    s = make_spawner(profiles_file=str(profiles), allowed_images=["lab/a:1"])
    with pytest.raises(web.HTTPError) as err:
        s.apply_profile({})
    assert err.value.status_code == 500 and "remove c.DockerSpawner.allowed_images" in err.value.log_message


def test_a_hub_moved_from_stock_dockerspawner_keeps_its_names_or_is_told_of_them(monkeypatch):
    import asyncio

    import docker.errors

    volumes = {"lab-user-{username}": "/home/jovyan/work", "/srv/shared": "/shared"}
    stock = make_spawner("Ann.Lee", prefix="lab", name_scheme="dockerspawner", volumes=volumes)
    assert stock.container_name == "lab--41nn-2e-4cee"  # as a stock DockerSpawner names it
    assert make_spawner("ann", prefix="lab").container_name == make_spawner(
        "ann", prefix="lab", name_scheme="dockerspawner").container_name  # plain names: the same

    s = make_spawner("Ann.Lee", prefix="lab", volumes=volumes)
    ours = s._render_templates("lab-user-{username}")
    assert ours != "lab-user--41nn-2e-4cee" and ours.startswith("lab-user-ann-lee---")
    existing = {"lab-user--41nn-2e-4cee"}

    async def engine(self, method, name):
        assert method == "inspect_volume"
        if name not in existing:
            raise docker.errors.NotFound("no such volume")
        return {"Name": name}
    monkeypatch.setattr(GPUDockerSpawner, "engine", engine)
    asyncio.run(s.warn_of_stock_volumes())
    told = [e["message"] for e in s.progress_log.events]
    assert len(told) == 1 and "lab-user--41nn-2e-4cee" in told[0] and ours in told[0] and "HUB_NAME_SCHEME" in told[0]
    existing.add(ours)  # moved (or used) already: nothing to say
    s2 = make_spawner("Ann.Lee", prefix="lab", volumes=volumes)
    asyncio.run(s2.warn_of_stock_volumes())
    assert s2.progress_log.events == []


def test_the_url_at_a_restart_check_comes_from_the_container(monkeypatch):
    # A start the hub was killed in the middle of left no address in the database
    from jupyterhub.objects import Server
    s = make_spawner("dora", remove=True)
    s.server = Server(base_url="/user/dora/")

    async def address():
        return "172.18.0.9", 8888
    monkeypatch.setattr(s, "get_ip_and_port", address)
    assert asyncio.run(s.get_url()) == "http://172.18.0.9:8888/user/dora/"

    async def gone():
        raise RuntimeError("no such container")
    monkeypatch.setattr(s, "get_ip_and_port", gone)
    assert asyncio.run(s.get_url()) == s.server.url


def test_a_poll_of_a_running_server_is_answered_from_one_shared_list(monkeypatch):
    from hub.hub_process.spawner.running import RunningContainers
    monkeypatch.setattr(PROCESS, "running", RunningContainers())
    s = make_spawner("erin", prefix="lab")
    s.object_id = "abc"
    inspected, listed = [], []

    async def engine_containers():
        listed.append(1)
        return [{"Names": ["/" + s.container_name]}]

    async def inspect_poll(self):
        inspected.append(1)
        return 0
    monkeypatch.setattr(s, "_list_running", engine_containers)
    monkeypatch.setattr("dockerspawner.DockerSpawner.poll", inspect_poll)
    assert asyncio.run(s.poll()) is None and not inspected and listed == [1]
    other = make_spawner("frank", prefix="lab")
    other.object_id = "def"
    monkeypatch.setattr(other, "_list_running", engine_containers)
    monkeypatch.setattr(other, "stop_reason", lambda cid: asyncio.sleep(0, "stopped"))
    assert asyncio.run(other.poll()) == 0 and inspected == [1]  # not listed: inspected as before


def test_the_line_is_woken_once_the_container_has_exited_before_its_removal(monkeypatch):
    import asyncio

    order = []

    async def stop_object(self):
        order.append("stopped")

    async def remove_object(self):
        order.append("removed")
    monkeypatch.setattr("dockerspawner.DockerSpawner.stop_object", stop_object)
    monkeypatch.setattr("dockerspawner.DockerSpawner.remove_object", remove_object)
    monkeypatch.setattr(PROCESS.gpu_queue, "wake", lambda: order.append("woken"))
    s = make_spawner("dora", remove=True)
    s.object_id = "c1"
    monkeypatch.setattr(type(s), "clear_state", lambda self: None)
    asyncio.run(s.stop())
    assert order[:2] == ["stopped", "woken"] and order.index("removed") > 1


def test_waiters_woken_by_one_stop_read_the_engine_once_and_the_first_passes(tmp_path, monkeypatch):
    from hub.gpus.manager import GPUManager
    from hub.gpus.model import GPU
    from hub.gpus.queue import GPUQueue

    monkeypatch.setattr(PROCESS, "gpu_queue", GPUQueue())
    manager = GPUManager([GPU("GPU-0", 0)], "static", "cdi", str(tmp_path / "intent.json"), "gpuhub")
    holder = {"Id": "c-holder", "State": {"Status": "running"},
              "Config": {"Labels": {"gpuhub.user": "holder", "gpuhub.gpu.uuid": "GPU-0"}}, "HostConfig": {}}
    containers, reads = [holder], []

    async def engine(method, *args, **kwargs):
        if method == "containers":
            reads.append(method)
            await asyncio.sleep(0.01)  # an engine call takes a while; the other waiters queue on the lock
            return [{"Id": c["Id"]} for c in containers]
        return next(c for c in containers if c["Id"] == args[0])

    waiters = [make_spawner(f"w{i}") for i in range(6)]
    for s in waiters:
        s.user.groups = []
        s.engine = engine

    async def run():
        tasks = [asyncio.create_task(s._wait_in_line(manager)) for s in waiters]
        await asyncio.sleep(0.3)
        assert [PROCESS.gpu_queue.position(s._waiter) for s in waiters] == [1, 2, 3, 4, 5, 6]
        assert not any(t.done() for t in tasks)
        reads.clear()
        containers.clear()  # the holder's container exited
        PROCESS.gpu_queue.wake()
        await asyncio.wait_for(tasks[0], 2)  # the first in line may take the GPU
        await asyncio.sleep(0.3)
        done = [t.done() for t in tasks]
        for t in tasks:
            t.cancel()
        return done

    done = asyncio.run(run())
    assert done == [True, False, False, False, False, False]  # one GPU: the others wait on
    assert reads == ["containers"]  # one engine read for the six woken waiters


def test_the_warm_kernel_settings_reach_the_server(monkeypatch):
    monkeypatch.setattr("dockerspawner.DockerSpawner.get_env", lambda self: {})
    s = make_spawner()
    assert s.get_env()["GPUHUB_WARM_KERNEL"] == "on" and "GPUHUB_WARM_IMPORTS" not in s.get_env()  # image's list
    # spares leave the host the admission reserve (1 GiB) and four new servers (4 x 512 MiB)
    assert s.get_env()["GPUHUB_WARM_HOST_RESERVE_MB"] == "3072"
    s = make_spawner(warm_kernel=False, warm_imports="torch numpy", host_memory_when_full="off")
    assert s.warm_env() == {"GPUHUB_WARM_KERNEL": "off", "GPUHUB_WARM_IMPORTS": "torch numpy"}
    s.profile_warm = (True, ("pandas",))  # a profile's warm_kernel: [pandas]
    assert s.warm_env() == {"GPUHUB_WARM_KERNEL": "on", "GPUHUB_WARM_IMPORTS": "pandas"}
    s = make_spawner(host_memory_when_full="off")
    s.profile_warm = (True, ())  # warm_kernel: [] imports nothing, not the image's list
    assert s.warm_env() == {"GPUHUB_WARM_KERNEL": "on", "GPUHUB_WARM_IMPORTS": ""}
    s.profile_warm = (False, None)
    assert s.warm_env() == {"GPUHUB_WARM_KERNEL": "off"}
    # a reservation's pre-start: the spare starts with the server, for that one start
    s = make_spawner(host_memory_when_full="off")
    s.started_ahead = True
    assert s.warm_env() == {"GPUHUB_WARM_KERNEL": "on", "GPUHUB_WARM_START": "server"}
    assert "GPUHUB_WARM_START" not in make_spawner().warm_env()


def test_the_spawn_form_does_not_wait_for_a_start_nor_reread_the_engine_when_fresh(monkeypatch, tmp_path):
    """In a class the form was the slowest page: each view waited for the starts' GPU lock and
    then inspected every container. It shows the last figures while a start holds the lock or
    they are under form_gpu_fresh seconds old, and looks again otherwise."""
    import time

    from hub.hub_process.spawner import profile_form

    calls = []

    class Manager:
        def __init__(self):
            self.lock = asyncio.Lock()
            self.reconciled_at = 0.0
            self.inventory = ["GPU-a", "GPU-b"]
            self.allocator = SimpleNamespace(free=lambda user, groups, now: ["GPU-a"], seats=lambda groups, now: {},
                                             capacity=lambda uuid: 1)

        async def reconcile(self, engine):
            calls.append("reconcile")
            self.reconciled_at = time.monotonic()

    manager = Manager()
    profiles_file = tmp_path / "profiles.yaml"
    profiles_file.write_text("profiles:\n  - slug: gpu\n    name: GPU\n    gpu: true\n"
                             "  - slug: cpu\n    name: CPU\n    gpu: false\n")
    s = make_spawner("ann", profiles_file=str(profiles_file), form_gpu_fresh=5.0)
    s.user.groups, s.user.admin = [], False

    async def gpu_manager():
        return manager
    monkeypatch.setattr(s, "gpu_manager", gpu_manager)
    monkeypatch.setattr(profile_form.profiles, "render_form", lambda visible, total, free, seats: f"{free}/{total}")

    async def views():
        first = await s.render_options_form()           # stale (never looked): looks
        second = await s.render_options_form()          # fresh: the same figures, no look
        manager.reconciled_at -= 10                     # old now, but a start holds the lock
        async with manager.lock:
            held = await asyncio.wait_for(s.render_options_form(), 1)  # does not wait for it
        third = await s.render_options_form()           # old and free: looks
        return first, second, held, third
    assert asyncio.run(views()) == ("1/2", "1/2", "1/2", "1/2")
    assert calls == ["reconcile", "reconcile"]
