"""One exclusive GPU per user, on the real engine with its GPUs (fake ones on a GPU-less host:
../shared/engine/install-docker.sh --fake-gpus 4), in both device request styles, under a
burst, a hub restart and a container killed behind the hub's back."""
import time

import pytest

from hub.gpus.inventory import discover
from storm import gpu_holdings, run_storm, start_outcome

GPUS = discover()[0]


def requests_of(info: dict) -> list[tuple]:
    """(driver, count, device ids, capabilities) of each device request the engine recorded."""
    return [(r["Driver"], r["Count"], r["DeviceIDs"], r["Capabilities"])
            for r in info["HostConfig"].get("DeviceRequests") or []]


pytestmark = pytest.mark.needs_gpus(2)


def test_container_sees_exactly_its_gpu_cdi(stack, hub):
    stack.up(GPU_REQUEST_STYLE="cdi")
    hub.create_user("cdi-user")
    hub.start("cdi-user")
    container = stack.container_of("cdi-user")
    uuid = gpu_holdings(stack)[container]
    index = next(g.index for g in GPUS if g.uuid == uuid)
    info = stack.inspect(container)
    assert requests_of(info) == [("cdi", 0, [f"nvidia.com/gpu={uuid}"], None)]
    # The CDI spec of the fake GPUs adds the device node and sets FAKE_GPU_UUID in the
    # container's process environment (a real spec mounts the GPU's node and the driver).
    inside = stack.docker("exec", container, "sh", "-c",
                          "ls /dev | grep '^nvidia[0-9]'; tr '\\0' '\\n' < /proc/1/environ | grep ^FAKE_GPU_UUID=").stdout.split()
    assert f"nvidia{index}" in inside and f"FAKE_GPU_UUID={uuid}" in inside
    assert sum(1 for x in inside if x.startswith("nvidia") and x[6:].isdigit()) == 1, inside
    hub.stop("cdi-user")


def test_container_gets_its_gpu_by_uuid_nvidia_driver(stack, hub):
    stack.up(GPU_REQUEST_STYLE="nvidia")
    try:
        hub.create_user("nv-user")
        hub.start("nv-user")
        container = stack.container_of("nv-user")
        uuid = gpu_holdings(stack)[container]
        assert requests_of(stack.inspect(container)) == [("nvidia", 0, [uuid], [["gpu", "compute", "utility"]])]
        # The engine itself sets NVIDIA_VISIBLE_DEVICES for driver "nvidia" (for the toolkit's
        # hook), in the container's process environment, and nothing else sets a second one.
        env = stack.docker("exec", container, "sh", "-c",
                           "tr '\\0' '\\n' < /proc/1/environ | grep ^NVIDIA_VISIBLE_DEVICES=").stdout.split()
        assert env == [f"NVIDIA_VISIBLE_DEVICES={uuid}"]
        hub.stop("nv-user")
    finally:
        stack.up(GPU_REQUEST_STYLE="cdi")


def test_forged_start_options_start_nothing(stack, hub):
    hub.create_user("forger")
    forged = [{"image": "local/debian:bookworm"}, {"profile": "gpu", "image": "local/debian:bookworm"},
              {"environment": {"NVIDIA_VISIBLE_DEVICES": "all"}}, {"env": {"LD_PRELOAD": "/x"}},
              {"device_requests": [{"Driver": "nvidia", "Count": -1}]}, {"mem_limit": "64G"},
              {"profile": "gpu", "cpu_limit": 64}, {"profile": "course-a"}]
    for options in forged:
        r = hub.api("POST", "/users/forger/server", json=options)
        assert r.status_code == 400, (options, r.status_code, r.text)
        assert r.json()["message"], options
        assert not hub.user("forger")["servers"], options
    assert not [c for c in stack.user_containers() if "forger" in c]


def test_storm_12_users_on_the_gpus(stack, hub):
    result = run_storm(stack, hub, users=3 * len(GPUS), gpus=len(GPUS))
    assert result["duplicate_gpus"] == 0, result
    assert result["gpu_containers"] == len(GPUS), result
    assert result["refused_with_message"] == 2 * len(GPUS), result
    assert result["free_after_stop"] == len(GPUS), result
    assert "all 4 GPUs are in use" in result["refusal_example"] or len(GPUS) != 4, result


def test_hub_restart_keeps_assignments_and_a_killed_container_frees_its_gpu(stack, hub):
    names = [f"keep{i}" for i in range(len(GPUS))]
    for name in names:
        assert start_outcome(hub, name) == ("ready", ""), name
    before = gpu_holdings(stack)
    assert len(set(before.values())) == len(GPUS)

    stack.compose("restart", "hub")
    stack.up()  # waits until the hub is healthy again
    assert gpu_holdings(stack) == before
    for name in names:
        assert hub.user(name)["servers"][""]["ready"], name
    kind, message = start_outcome(hub, "one-too-many")
    assert kind == "refused" and "No GPU" in message, message

    # Killed behind the hub's back: the engine removes it, and its GPU is free for the next user.
    victim, victim_uuid = next(iter(before.items()))
    stack.docker("kill", victim)
    deadline = time.monotonic() + 30
    while victim in stack.user_containers() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert start_outcome(hub, "one-too-many") == ("ready", "")
    assert gpu_holdings(stack)[stack.container_of("one-too-many")] == victim_uuid
    for name in [*names, "one-too-many"]:
        if hub.user(name)["servers"].get(""):
            hub.stop(name)


def test_cpu_fallback_gives_a_server_without_any_gpu(stack, hub):
    stack.up(GPU_CPU_FALLBACK="true")
    try:
        names = [f"fill{i}" for i in range(len(GPUS))]
        for name in names:
            assert start_outcome(hub, name) == ("ready", "")
        assert start_outcome(hub, "cpu-only") == ("ready", "")
        container = stack.container_of("cpu-only")
        info = stack.inspect(container)
        assert not info["HostConfig"].get("DeviceRequests")
        assert "gpuhub.gpu.uuid" not in info["Config"]["Labels"]
        assert "NVIDIA_VISIBLE_DEVICES=void" in info["Config"]["Env"]
        nodes = stack.docker("exec", container, "sh", "-c", "ls /dev | grep '^nvidia' || true").stdout.split()
        assert nodes == []
        for name in [*names, "cpu-only"]:
            hub.stop(name)
    finally:
        stack.up(GPU_CPU_FALLBACK="false")
