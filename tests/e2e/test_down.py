"""`make restart-hub` keeps users' servers; `make down` stops them too, removes the network and
keeps their files."""
import subprocess

import pytest

from hubclient import ROOT

USER = "downtest"


def make(stack, target: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", target, f"COMPOSE=docker compose --env-file {stack.env_file}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.needs_gpus(1)
def test_restart_hub_keeps_servers_and_down_stops_them(stack, hub):
    hub.create_user(USER)
    hub.start(USER)
    container = stack.container_of(USER)
    before = stack.inspect(container)["Id"]

    r = make(stack, "restart-hub")
    assert r.returncode == 0, r.stdout + r.stderr
    assert stack.inspect(container)["Id"] == before  # the same container, still running
    assert stack.inspect(container)["State"]["Running"]

    try:
        r = make(stack, "down")
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"user server(s): " in r.stdout and container in r.stdout, r.stdout
        assert f"network {stack.prefix}-net removed" in r.stdout, r.stdout
        assert stack.user_containers() == []
        project = stack.docker("ps", "-a", "--filter", f"label=com.docker.compose.project={stack.prefix}", "-q")
        assert project.stdout.split() == []
        assert stack.docker("network", "inspect", f"{stack.prefix}-net", check=False).returncode != 0
        assert f"{stack.prefix}-user-{USER}" in stack.user_volumes()  # files stay
    finally:
        stack.up()  # for the tests after this one
    assert hub.user(USER)["servers"] == {}  # the hub found the server gone
