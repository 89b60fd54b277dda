"""The line for GPUs on the real engine (GPU_WHEN_FULL=queue, the engine's fake GPUs): with every
GPU taken, starts wait in line with their place shown in the progress stream; when a holder
stops, the first in line starts by itself; Cancel leaves the line; a user cannot stop someone
else's place; no GPU is ever held twice."""
import json
import threading
import time

import pytest
import requests
from consoleclient import user_token, wait_for
from storm import gpu_holdings

from hub.gpus.inventory import discover

GPUS = (discover() or [[]])[0] or []


@pytest.fixture(scope="module")
def queueing(stack):
    if not GPUS:
        pytest.skip("the engine has no GPUs")
    stack.up(GPU_WHEN_FULL="queue")
    try:
        yield stack
    finally:
        stack.up()


def follow(hub, name: str, events: list) -> threading.Thread:
    """Collect the start's progress events in the background until it is ready or failed."""
    def run():
        try:
            for event in hub.progress(name, timeout=300):
                events.append(event)
        except Exception as exc:  # noqa: BLE001 - the stream ends with the start
            events.append({"error": str(exc)})
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def post_start(hub, name: str) -> None:
    r = hub.api("POST", f"/users/{name}/server", json={"profile": "gpu"})
    assert r.status_code in (201, 202), r.text


def messages(events: list) -> str:
    return "\n".join(e.get("message", "") for e in events)


def test_full_host_queues_in_order_and_hands_over_by_itself(queueing, hub):
    stack = queueing
    holders = [f"q-hold{i}" for i in range(len(GPUS))]
    for name in holders:
        hub.create_user(name)
        hub.start(name, options={"profile": "gpu"})
    first, second = "q-wait1", "q-wait2"
    tokens = {n: user_token(hub, n) for n in (first, second)}
    events = {first: [], second: []}
    post_start(hub, first)
    follow(hub, first, events[first])
    wait_for(lambda: "next in line" in messages(events[first]), timeout=30, what="first waiter's place shown")
    post_start(hub, second)
    follow(hub, second, events[second])
    wait_for(lambda: "number 2 in line" in messages(events[second]), timeout=30, what="second waiter's place")
    assert hub.user(first)["servers"][""]["pending"] == "spawn"  # waiting is no failure

    # someone else's place cannot be taken away by a user
    forged = requests.delete(f"{stack.url}/hub/api/users/{first}/server",
                             headers={"Authorization": f"token {tokens[second]}"}, timeout=10)
    assert forged.status_code in (403, 404), forged.text
    assert hub.user(first)["servers"][""]["pending"] == "spawn"

    # a holder stops: the first in line starts by itself
    t0 = time.monotonic()
    r = hub.api("DELETE", f"/users/{holders[0]}/server")
    assert r.status_code in (202, 204), r.text
    server = hub.wait(first, ready=True, timeout=120)
    url = f"{stack.url}{server['url']}api/status"
    wait_for(lambda: requests.get(url, headers={"Authorization": f"token {tokens[first]}"}, timeout=5).status_code == 200,
             timeout=60, what="first waiter's server answering")
    handover = time.monotonic() - t0
    assert hub.user(second)["servers"][""]["pending"] == "spawn"
    wait_for(lambda: "next in line" in messages(events[second]), timeout=30, what="second waiter moving up")

    # Cancel (the spawn page's button is this call) leaves the line
    r = requests.delete(f"{stack.url}/hub/api/users/{second}/server",
                        headers={"Authorization": f"token {tokens[second]}"}, timeout=30)
    assert r.status_code in (202, 204), r.text
    wait_for(lambda: not hub.user(second)["servers"], timeout=30, what="the cancelled start gone")
    held = list(gpu_holdings(stack).values())
    assert len(held) == len(set(held)) == len(GPUS)
    line = stack.compose("exec", "-T", "hub", "cat", "/srv/jupyterhub/state/gpu-queue.json").stdout
    assert json.loads(line)["waiting"] == []
    print(json.dumps({"queue_handover_s": round(handover, 2)}))
    for name in [*holders[1:], first]:
        hub.stop(name)
