"""A server's container and Swarm service specs (hub/hub_process/spawner/specs.py): pure."""
from hub.gpus.claim import Assignment, Labels
from hub.gpus.model import GPU
from hub.hub_process.spawner.specs import ServerSpec, container_kwargs, service_kwargs

GPU0 = GPU("GPU-aaaa", 0, "H100", node="n1")


def spec(**kw):
    base = dict(keys=Labels("gpuhub"), user="ada", server="", instance="lab", profile="ml",
                assignment=Assignment(GPU0, "cdi", since=1000, kind="NVIDIA-GPU", node_id="node-1"),
                shm_size=2**30, pids_limit=512, course_mounts=(("lab-course-ml101", "/w/ml101", True),))
    base.update(kw)
    return ServerSpec(**base)


def service_args():
    return {"task_template": {"ContainerSpec": {"Image": "x", "Labels": {"keep": "1"}}}, "labels": {"mine": "1"}}


def test_a_container_and_a_service_carry_the_same_labels():
    s = spec()
    container = container_kwargs({"labels": {"mine": "1"}}, s)
    service = service_kwargs(service_args(), s)
    want = {"gpuhub.user": "ada", "gpuhub.server": "", "gpuhub.instance": "lab", "gpuhub.profile": "ml",
            "gpuhub.gpu.uuid": "GPU-aaaa", "gpuhub.gpu.since": "1000"}
    assert container["labels"] == {"mine": "1", **want}
    assert service["labels"] == {"mine": "1", **want}
    assert service["task_template"]["ContainerSpec"]["Labels"] == {"keep": "1", **want}


def test_the_gpu_travels_into_the_device_request_and_the_swarm_claim():
    s = spec()
    host = container_kwargs({}, s)["host_config"]
    assert host["DeviceRequests"] == [{"Driver": "cdi", "DeviceIDs": ["nvidia.com/gpu=GPU-aaaa"]}]
    task = service_kwargs(service_args(), s, ("node.role==worker",))["task_template"]
    assert task["Resources"]["Reservations"]["GenericResources"]
    assert "node.role==worker" in task["Placement"]["Constraints"]
    assert any("node-1" in c for c in task["Placement"]["Constraints"])


def test_no_gpu_means_no_device_request_no_claim_and_no_gpu_label():
    s = spec(assignment=None, profile=None)
    container = container_kwargs({}, s)
    assert container["host_config"]["DeviceRequests"] == []
    assert not any(k.startswith("gpuhub.gpu") or k == "gpuhub.profile" for k in container["labels"])
    task = service_kwargs(service_args(), s)["task_template"]
    assert "Reservations" not in task["Resources"]


def test_hardening_and_limits_hold_over_what_an_admin_passed():
    loose = {"host_config": {"CapAdd": ["SYS_ADMIN"], "CapDrop": [], "PidsLimit": 0, "Binds": ["home:/home/jovyan/work:rw"]},
             "healthcheck": {"test": ["CMD", "true"]}}
    out = container_kwargs(loose, spec())
    host = out["host_config"]
    assert host["CapDrop"] == ["ALL"] and host["PidsLimit"] == 512 and host["ShmSize"] == 2**30
    assert "no-new-privileges=true" in host["SecurityOpt"] and "/proc/driver/nvidia/gpus" in host["MaskedPaths"]
    assert host["Binds"] == ["home:/home/jovyan/work:rw", "lab-course-ml101:/w/ml101:ro"]
    assert out["healthcheck"] == {"test": ["NONE"]}
    assert loose["host_config"]["CapDrop"] == []  # the caller's arguments are left as they were
    task = service_kwargs(service_args(), spec())["task_template"]
    assert task["ContainerSpec"]["CapabilityDrop"] == ["ALL"]
    assert task["ContainerSpec"]["Privileges"]["NoNewPrivileges"] is True
    assert task["Resources"]["Limits"]["Pids"] == 512
    assert task["RestartPolicy"] == {"Condition": "none", "MaxAttempts": 0}
    assert container_kwargs({}, spec(image_healthcheck=True)).get("healthcheck") is None
