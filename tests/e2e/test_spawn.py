"""Profiles, live progress and idle culling, against the real stack (tests/e2e/profiles.yaml)."""
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from storm import gpu_holdings

from hub.gpus.inventory import discover


def test_cpu_profile_gets_its_limits_and_no_gpu(stack, hub):
    hub.create_user("cpu-user")
    hub.start("cpu-user", options={"profile": "cpu"})
    info = stack.inspect(stack.container_of("cpu-user"))
    assert info["HostConfig"]["Memory"] == 2**30
    assert info["HostConfig"]["CpuQuota"] / info["HostConfig"]["CpuPeriod"] == 1.0
    assert not info["HostConfig"].get("DeviceRequests")
    assert "NVIDIA_VISIBLE_DEVICES=void" in info["Config"]["Env"]
    hub.stop("cpu-user")


def test_group_profile_only_for_its_group(stack, hub):
    hub.create_user("student-a")
    r = hub.api("POST", "/users/student-a/server", json={"profile": "course-a"})
    assert r.status_code == 400 and "not offered to you" in r.json()["message"]
    assert hub.api("POST", "/groups/course-a").status_code in (201, 409)
    assert hub.api("POST", "/groups/course-a/users", json={"users": ["student-a"]}).status_code == 200
    try:
        hub.start("student-a", options={"profile": "course-a"})
        info = stack.inspect(stack.container_of("student-a"))
        assert info["HostConfig"]["CpuQuota"] / info["HostConfig"]["CpuPeriod"] == 0.5
        hub.stop("student-a")
    finally:
        hub.api("DELETE", "/groups/course-a")


@pytest.mark.needs_gpus(1)
def test_progress_events_name_the_gpu_and_the_steps(stack, hub):
    hub.create_user("watcher")
    # Listen while the spawn is pending (the API call may wait until the server is ready).
    with ThreadPoolExecutor(1) as pool:
        started = pool.submit(hub.api, "POST", "/users/watcher/server", json={"profile": "gpu"})
        while not hub.user("watcher")["servers"]:
            time.sleep(0.05)
        messages = [e.get("message", "") for e in hub.progress("watcher")]
        assert started.result().status_code in (201, 202), started.result().text
    text = "\n".join(messages)
    assert "Profile: PyTorch with one GPU" in text, text
    assert "Assigning GPU" in text and "(#" in text, text
    assert "Creating container" in text, text
    assert "waiting for JupyterLab" in text, text
    hub.wait("watcher", ready=True, timeout=120)
    hub.stop("watcher")


@pytest.mark.needs_gpus(1)
def test_idle_server_is_culled_and_gives_its_gpu_back(stack, hub):
    stack.up(CULL_IDLE_TIMEOUT="15", CULL_EVERY="5")
    try:
        hub.create_user("sleeper")
        hub.start("sleeper")
        container = stack.container_of("sleeper")
        held = gpu_holdings(stack).get(container)
        assert held in {g.uuid for g in discover()[0]}, f"the server holds no GPU of the engine's: {held}"
        deadline = time.monotonic() + 90
        while hub.user("sleeper")["servers"] and time.monotonic() < deadline:
            time.sleep(2)
        assert not hub.user("sleeper")["servers"], "idle server was not culled within 90 s"
        assert container not in stack.user_containers()
        assert held not in gpu_holdings(stack).values(), "the culled server's GPU is still held"
    finally:
        stack.up(CULL_IDLE_TIMEOUT="0")
