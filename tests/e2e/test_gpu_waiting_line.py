"""The line for GPUs on the real engine (GPU_WHEN_FULL=queue, the engine's fake GPUs): with every
GPU taken, starts wait in line with their place shown in the progress stream; when a holder
stops, the first in line starts by itself; Cancel leaves the line; a user cannot stop someone
else's place; no GPU is ever held twice."""
import json
import time

import pytest
import requests
from consoleclient import user_token, wait_for
from storm import gpu_holdings

from hub.gpus.inventory import discover

GPUS = discover()[0]
pytestmark = pytest.mark.needs_gpus(1)


@pytest.fixture(scope="module")
def queueing(stack):
    stack.up(GPU_WHEN_FULL="queue")
    try:
        yield stack
    finally:
        stack.up()



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
    hub.follow(first, events[first])
    wait_for(lambda: "next in line" in messages(events[first]), timeout=30, what="first waiter's place shown")
    post_start(hub, second)
    hub.follow(second, events[second])
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


def line_users(stack) -> list[str]:
    text = stack.compose("exec", "-T", "hub", "cat", "/srv/jupyterhub/state/gpu-queue.json", check=False).stdout
    try:
        return [e["user"] for e in json.loads(text)["waiting"]]
    except ValueError:
        return []


@pytest.mark.browser
def test_admin_moves_waiters_from_the_console_and_they_start_in_the_new_order(queueing, hub, page):
    """The console's API and page move waiters (audited), each waiter's progress shows its new
    place, a non-admin's move is refused and changes nothing, and the line hands over in the
    moved order."""
    from playwright.sync_api import expect

    from conftest import ARTIFACTS, log_in
    from consoleclient import admin_console

    stack = queueing
    console = admin_console(stack, hub)
    holders = [f"qm-hold{i}" for i in range(len(GPUS))]
    for name in holders:
        hub.create_user(name)
        hub.start(name, options={"profile": "gpu"})
    waiters = ["qm-w1", "qm-w2", "qm-w3"]
    tokens = {n: user_token(hub, n) for n in waiters}
    events = {n: [] for n in waiters}
    for name in waiters:
        post_start(hub, name)
        hub.follow(name, events[name])
        wait_for(lambda: line_users(stack)[-1:] == [name], timeout=30, what=f"{name} in line")
    assert line_users(stack) == waiters

    # a non-admin cannot move anyone (not even themselves); bad bodies are refused
    r = console.call("POST", "queue/qm-w3/move", {"position": 1}, token=tokens["qm-w3"])
    assert r.status_code == 403 and r.json()["message"], r.text
    for body, status in (({"position": 0}, 400), ({"position": 9}, 400), ({"position": 3}, 409),
                         ({"position": 1, "user": "qm-w1"}, 400)):
        r = console.call("POST", "queue/qm-w3/move", body)
        assert r.status_code == status, (body, r.text)
    assert line_users(stack) == waiters

    # the API: qm-w3 to the front; its progress says so, and qm-w1 is second now
    r = console.call("POST", "queue/qm-w3/move", {"position": 1, "note": "e2e"})
    assert r.status_code == 200, r.text
    assert [e["user"] for e in r.json()["waiting"]] == ["qm-w3", "qm-w1", "qm-w2"]
    wait_for(lambda: "next in line" in messages(events["qm-w3"]), timeout=30, what="qm-w3 told it is next")
    wait_for(lambda: "number 2 in line" in messages(events["qm-w1"]), timeout=30, what="qm-w1 told it is 2nd")
    entry = [e for e in console.audit() if e["action"] == "queue-move"][-1]
    assert (entry["user"], entry["from"], entry["to"], entry["note"]) == ("qm-w3", 3, 1, "e2e")

    # the page: qm-w2 (third) to place 1 with the place field, then qm-w1 one down with its button
    log_in(page, stack)
    page.goto(f"{stack.url}/services/gpu-console/")
    rows = page.locator("#queue tbody tr")
    expect(rows).to_have_count(3, timeout=30_000)
    expect(rows.nth(0)).to_contain_text("qm-w3")
    page.screenshot(path=ARTIFACTS / "queue-move-1-line.png", full_page=True)
    w2 = page.locator('#queue tbody tr[data-user="qm-w2"]')
    w2.locator("input.queue-position").fill("1")
    w2.locator("button.btn-queue-move").click()
    expect(page.locator("#alerts")).to_contain_text("from place 3 to 1", timeout=30_000)
    expect(rows.nth(0)).to_contain_text("qm-w2", timeout=15_000)
    expect(page.locator('#queue tbody tr[data-user="qm-w2"] button.btn-queue-up')).to_be_disabled()
    page.locator('#queue tbody tr[data-user="qm-w3"] button.btn-queue-down').click()
    expect(page.locator("#alerts")).to_contain_text("from place 2 to 3", timeout=30_000)
    expect(rows.nth(2)).to_contain_text("qm-w3", timeout=15_000)
    page.screenshot(path=ARTIFACTS / "queue-move-2-moved.png", full_page=True)
    assert line_users(stack) == ["qm-w2", "qm-w1", "qm-w3"]
    wait_for(lambda: "next in line" in messages(events["qm-w2"]), timeout=30, what="qm-w2 told it is next")

    # holders stop one by one: the waiters start in the moved order
    started = []
    for holder, expected in zip(holders, ["qm-w2", "qm-w1", "qm-w3"]):
        hub.api("DELETE", f"/users/{holder}/server")
        hub.wait(expected, ready=True, timeout=120)
        started.append(expected)
        assert all(hub.user(n)["servers"].get("", {}).get("pending") == "spawn"
                   for n in waiters if n not in started), "a later waiter started first"
    held = list(gpu_holdings(stack).values())
    assert len(held) == len(set(held))
    for name in [*holders[len(waiters):], *waiters]:
        hub.stop(name)


@pytest.mark.browser
def test_spawn_page_shows_the_place_in_line_then_jupyterlab_loads_by_itself(queueing, hub, page):
    """What a waiting person sees: pressing Start with every GPU taken, the spawn page stays on
    JupyterHub's progress with the place in line; when a holder stops, JupyterLab loads in the
    same page without a click."""
    from playwright.sync_api import expect

    from conftest import ARTIFACTS, log_in

    stack = queueing
    holders = [f"qb-hold{i}" for i in range(len(GPUS))]
    for name in holders:
        hub.create_user(name)
        hub.start(name, options={"profile": "gpu"})
    admin = stack.env["HUB_ADMIN_USER"]
    hub.stop(admin)
    log_in(page, stack)
    page.goto(f"{stack.url}/hub/spawn")
    expect(page.locator("#spawn_form")).to_be_visible(timeout=15_000)
    page.check("#profile-gpu")
    page.click("#spawn_form [type=submit]")

    # JupyterHub's pending page, its progress message telling the place (and that it starts by itself)
    message = page.locator("#progress-message")
    expect(message).to_contain_text("next in line for a GPU", timeout=60_000)
    expect(message).to_contain_text("starts by itself")
    page.screenshot(path=ARTIFACTS / "queue-browser-1-waiting.png", full_page=True)
    assert "/lab" not in page.url
    assert (hub.user(admin)["servers"].get("") or {}).get("pending") == "spawn"

    r = hub.api("DELETE", f"/users/{holders[0]}/server")
    assert r.status_code in (202, 204), r.text
    page.wait_for_url(f"**/user/{admin}/lab**", timeout=120_000)
    expect(page.locator("#jp-main-dock-panel")).to_be_visible(timeout=120_000)
    expect(page.locator(".jp-LauncherCard").first).to_be_visible(timeout=60_000)
    page.screenshot(path=ARTIFACTS / "queue-browser-2-jupyterlab.png", full_page=True)
    held = list(gpu_holdings(stack).values())
    assert len(held) == len(set(held)) == len(GPUS)
    for name in [*holders[1:], admin]:
        hub.stop(name)
