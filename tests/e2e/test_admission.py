"""Admission by memory on the real engine (HOST_MEMORY_*, hub/memory.py): a start that would take
the host below its reserve waits, says why on its progress stream and in the GPU console's host
health, and starts by itself once memory frees; with `refuse` it fails at once with the reason.
The host's figure is a file of the test's own (HOST_MEMINFO_FILE), so that "short of memory"
does not depend on this machine's load."""
import json

import pytest

from consoleclient import Console, wait_for

MEMINFO = "/srv/jupyterhub/state/test-meminfo"
SETTINGS = {"HOST_MEMINFO_FILE": MEMINFO, "HOST_MEMORY_RESERVE": "1G", "SERVER_MEMORY_ESTIMATE": "512M"}


def set_available(stack, gib: float) -> None:
    text = f"MemTotal: {24 * 2**20} kB\\nMemFree: 0 kB\\nMemAvailable: {int(gib * 2**20)} kB\\n"
    stack.compose("exec", "-T", "hub", "sh", "-c", f"printf '{text}' > {MEMINFO}")


def memory_line(stack) -> dict:
    text = stack.compose("exec", "-T", "hub", "cat", "/srv/jupyterhub/state/host-memory.json", check=False).stdout
    try:
        return json.loads(text)
    except ValueError:
        return {}


@pytest.fixture(scope="module")
def tight(stack):
    stack.up(**SETTINGS)
    try:
        yield stack
    finally:
        stack.compose("exec", "-T", "hub", "rm", "-f", MEMINFO, check=False)
        stack.up()



def test_a_start_waits_for_memory_says_why_and_starts_when_it_frees(tight, hub):
    set_available(tight, 1.25)  # 1.25 GiB - 512 MiB < 1 GiB reserve
    name = "mem-wait"
    hub.create_user(name)
    r = hub.api("POST", f"/users/{name}/server", json={"profile": "cpu"})
    assert r.status_code in (201, 202), r.text
    events: list = []
    hub.follow(name, events)
    wait_for(lambda: any("short of memory" in e.get("message", "") for e in events), timeout=60,
             what="the progress stream saying the host is short of memory")
    assert hub.user(name)["servers"][""]["pending"] == "spawn"  # waiting is no failure
    wait_for(lambda: memory_line(tight).get("waiting") == 1, timeout=20, what="the hub's memory line with 1 start")
    # the console's Host health card shows it
    health = Console(tight, hub.s.headers["Authorization"].split()[1]).ok("GET", "health")
    row = next(c for c in health["checks"] if c["name"] == "host.memory")
    assert row["status"] == "warn" and "1 start wait for memory" in row["message"], row
    assert not any(name in c for c in tight.user_containers())  # nothing made while it waits

    set_available(tight, 8)  # memory frees: the start goes on by itself
    hub.wait(name, ready=True, timeout=120)
    assert memory_line(tight).get("waiting") == 0
    messages = "\n".join(e.get("message", "") for e in events)
    assert "starts by itself when memory frees" in messages
    hub.stop(name)


def test_refuse_fails_the_start_at_once_with_the_reason(tight, hub):
    tight.up(HOST_MEMORY_WHEN_FULL="refuse", **SETTINGS)
    try:
        set_available(tight, 1.0)
        name = "mem-refused"
        hub.create_user(name)
        r = hub.api("POST", f"/users/{name}/server", json={"profile": "cpu"})
        if r.status_code in (201, 202):  # answered before the start ended: the stream tells
            events = list(hub.progress(name, timeout=60))
            text = "\n".join(e.get("message", "") for e in events)
            assert events[-1].get("failed") and "short of memory" in text, events
        else:
            assert r.status_code == 503 and "short of memory" in r.json()["message"], r.text
        assert not any(name in c for c in tight.user_containers())
    finally:
        tight.up(**SETTINGS)
