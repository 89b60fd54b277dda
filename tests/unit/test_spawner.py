from types import SimpleNamespace

import pytest
from traitlets import TraitError
from traitlets.config import Config

from hub.spawner import GPUDockerSpawner


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
    assert host["CapDrop"] == ["ALL"] and host["SecurityOpt"] == ["no-new-privileges:true"]
    assert host["DeviceRequests"] == []
    assert kwargs["labels"] == {"team": "x", "gpuhub.user": "bob", "gpuhub.server": "", "gpuhub.instance": "lab"}


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
    GPUDockerSpawner._executor = None
    try:
        assert s.executor._max_workers == 4
        assert s.client_kwargs["max_pool_size"] == 4
    finally:
        GPUDockerSpawner._executor = None


def test_gpu_container_carries_its_uuid_in_label_and_request(monkeypatch):
    from hub.gpus.manager import GPUManager

    s = make_spawner("carol")
    monkeypatch.setattr(GPUDockerSpawner, "_gpu_manager", GPUManager([], "cdi", "cdi", "/nonexistent", "gpuhub"))
    s.gpu_uuid = "GPU-7"
    kwargs = s.harden_create_kwargs({"host_config": {}})
    assert kwargs["host_config"]["DeviceRequests"] == [{"Driver": "cdi", "DeviceIDs": ["nvidia.com/gpu=GPU-7"]}]
    assert kwargs["labels"]["gpuhub.gpu.uuid"] == "GPU-7" and float(kwargs["labels"]["gpuhub.gpu.since"]) > 0
    monkeypatch.setattr("dockerspawner.DockerSpawner.get_env", lambda self: {})
    assert "NVIDIA_VISIBLE_DEVICES" not in s.get_env()  # the engine/CDI sets it, not us
    assert s.get_state()["gpu_uuid"] == "GPU-7"


def test_refusal_is_a_503_with_the_whole_message():
    from hub.gpus.allocator import NoGPUAvailable

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
    from hub.profiles import Profile, render_form
    p = Profile(slug="gpu", name="GPU", description="", images=("img",), mem_limit=2**30, cpu_limit=1.0,
                gpu=True, groups=frozenset(), default=True)
    html = render_form([p, p], 4, 0, {"GPU-1": (3, 4)})
    assert "0 of 4</strong> GPUs free" in html and "<strong>3</strong> seats on 1 shared GPU (up to 4 users each)" in html
    assert "not isolated" in html and "none free now" not in html
    assert "none free now" in render_form([p, p], 4, 0, {})
