"""A real image pull, reported live on the spawn page, that does not hold up other users.

No registry is reachable here, so the test runs one (Debian's docker-registry) on loopback
and pushes an image with a 2 GB layer of random bytes that the engine does not have."""
import subprocess
import threading
import time
from datetime import datetime

import pytest

from hubclient import ROOT

REGISTRY = "127.0.0.1:15000"
IMAGE = f"{REGISTRY}/gpuhub/pytorch-notebook:pulltest"


def sh(*args, **kwargs):
    return subprocess.run(args, capture_output=True, text=True, check=True, timeout=600, **kwargs).stdout


@pytest.fixture(scope="module")
def registry_image(stack):
    base = "local/debian:bookworm" if subprocess.run(["docker", "image", "inspect", "local/debian:bookworm"],
                                                     capture_output=True).returncode == 0 else "debian:bookworm-slim"
    sh("docker", "build", "-q", "-t", "gpuhub-test/registry:test", "--build-arg", f"BASE_IMAGE={base}",
       str(ROOT / "tests/e2e/registry"))
    sh("docker", "rm", "-f", "gpuhubtest-registry", "gpuhubtest-blob")
    sh("docker", "run", "-d", "--name", "gpuhubtest-registry", "-p", f"{REGISTRY}:5000", "gpuhub-test/registry:test")
    try:
        # A layer the engine has nowhere else (docker commit: no build cache keeps it).
        sh("docker", "run", "--name", "gpuhubtest-blob", "--user", "root", "--entrypoint", "sh",
           stack.env["SINGLEUSER_IMAGE"], "-c", "head -c 2000M /dev/urandom > /opt/pull-test.bin")
        sh("docker", "commit", "-c", "USER 1000:100", "-c", 'ENTRYPOINT ["tini", "--"]',
           "-c", 'CMD ["jupyterhub-singleuser"]', "gpuhubtest-blob", IMAGE)
        sh("docker", "rm", "gpuhubtest-blob")
        sh("docker", "push", "-q", IMAGE)
        sh("docker", "rmi", IMAGE)
        yield IMAGE
    finally:
        subprocess.run(["docker", "rm", "-f", "gpuhubtest-registry", "gpuhubtest-blob"], capture_output=True)
        subprocess.run(["docker", "rmi", IMAGE], capture_output=True)


def test_pull_progress_and_other_users_keep_going(stack, hub, registry_image):
    for name in ("puller", "bystander"):
        hub.create_user(name)
    assert hub.api("POST", "/groups/pull-test").status_code in (201, 409)
    hub.api("POST", "/groups/pull-test/users", json={"users": ["puller"]}).raise_for_status()
    events, pulled_at = [], {}

    def watch():
        for event in hub.progress("puller", timeout=300):
            events.append(event.get("message", ""))
            if event.get("message", "").startswith("Pulled image"):
                pulled_at["t"] = time.time()

    try:
        r = hub.api("POST", "/users/puller/server", json={"profile": "pull-test"})
        assert r.status_code == 202, r.text  # the pull makes it a slow spawn
        watcher = threading.Thread(target=watch)
        watcher.start()
        deadline = time.monotonic() + 60
        while not any("layers" in e for e in events) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert any("layers" in e for e in events), events

        # Another user starts while the pull runs: the engine creates their container before
        # the pull ends (with DockerSpawner's one thread, it would wait for the pull).
        hub.start("bystander", options={"profile": "cpu"})
        created = stack.inspect(stack.container_of("bystander"))["Created"]
        watcher.join(300)
        assert "t" in pulled_at, events
        assert datetime.fromisoformat(created[:26] + "+00:00").timestamp() < pulled_at["t"], (created, pulled_at)

        pulls = [e for e in events if e.startswith("Pulling image") and "MB of" in e]
        megabytes = [int(e.split(", ")[-1].split(" MB")[0]) for e in pulls]
        assert len(pulls) >= 2 and megabytes == sorted(megabytes) and megabytes[-1] > megabytes[0], pulls
        layers = [e.split(": ")[-1].split(" layers")[0].split(" of ") for e in pulls]
        assert all(int(done) <= int(total) for done, total in layers), pulls
        assert max(int(e.split(" of ")[-1].split(" MB")[0]) for e in pulls) >= 2000, pulls
        hub.wait("puller", ready=True, timeout=120)
        assert stack.inspect(stack.container_of("puller"))["Config"]["Image"] == registry_image
    finally:
        for name in ("puller", "bystander"):
            if hub.user(name)["servers"]:
                hub.stop(name)
        hub.api("DELETE", "/groups/pull-test")
