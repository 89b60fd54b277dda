"""Idle-GPU reclaim on the real engine (fake GPUs, readings fed from a file: fake_gpu/): an
idle-held GPU is warned and then reclaimed within T + grace + 2 sampling intervals, the user's
next page load says why and the audit log records it; a busy GPU and an exempt user's are never
reclaimed; the warning's "still working" counts once; a forged answer for another user is a 4xx."""
import json
import time

import pytest
import requests
from playwright.sync_api import expect

from conftest import ARTIFACTS, log_in
from consoleclient import user_token, wait_for
from storm import gpu_holdings

T, GRACE, INTERVAL = 6, 10, 1
SETTINGS = {"COMPOSE_FILE": "docker-compose.yml:tests/e2e/fake_gpu/compose.yml", "GPU_IDLE_TIMEOUT": str(T),
            "GPU_IDLE_GRACE": str(GRACE), "GPU_SAMPLE_INTERVAL": str(INTERVAL), "GPU_IDLE_EXEMPT_USERS": "rc-exempt"}


def me(stack, token: str) -> dict:
    r = requests.get(f"{stack.url}/services/gpu-reclaim/api/me", headers={"Authorization": f"token {token}"},
                     timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def test_reclaim_runs_in_the_consoles_process_with_its_own_identity(configured_stack, hub):
    """Two Python processes in the hub's container: the hub, and the GPU console with gpu-reclaim
    in it. For JupyterHub gpu-reclaim is still a service of its own: its URL, and the token on
    the state volume (0600, the hub's), whose role is gpu-reclaim's alone."""
    stack = configured_stack
    container = f"{stack.prefix}-hub-1"
    top = stack.docker("top", container, "-eo", "pid,args").stdout.splitlines()[1:]
    pythons = [line.split(None, 1)[1] for line in top if "python" in line]
    assert len(pythons) == 2, top
    assert any("jupyterhub" in a for a in pythons) and any("hub.service_process.console.app" in a for a in pythons), top
    service = hub.api("GET", "/services/gpu-reclaim").json()
    # no command: JupyterHub starts no process for it
    assert not service["command"] and not service["pid"] and service["url"] == "http://hub:10102", service
    assert service["prefix"].endswith("/services/gpu-reclaim/") and service["roles"] == ["gpu-reclaim"]
    token_file = "/srv/jupyterhub/state/gpu-reclaim-token"
    assert stack.docker("exec", container, "stat", "-c", "%a %U", token_file).stdout.split() == ["600", "jupyterhub"]
    token = stack.docker("exec", container, "cat", token_file).stdout.strip()
    me = requests.get(f"{stack.url}/hub/api/user", headers={"Authorization": f"token {token}"}, timeout=10)
    assert me.status_code == 200, me.text
    assert (me.json()["kind"], me.json()["name"]) == ("service", "gpu-reclaim")
    assert "admin:users" not in me.json()["scopes"] and "delete:servers" in me.json()["scopes"]


@pytest.mark.needs_gpus(3)
def test_idle_gpu_is_warned_then_reclaimed_busy_and_exempt_are_not(configured_stack, hub):
    stack = configured_stack
    names = ["rc-idle", "rc-busy", "rc-exempt"]
    tokens = {n: user_token(hub, n) for n in names}
    for n in names:
        hub.start(n, options={"profile": "gpu"})
    gpu = {n: gpu_holdings(stack)[stack.container_of(n)] for n in names}
    assert len(set(gpu.values())) == 3
    stack.feed_gpu_readings({gpu["rc-idle"]: {"util": 0, "mem": 3000}, gpu["rc-busy"]: {"util": 85, "mem": 9000},
                 gpu["rc-exempt"]: {"util": 0, "mem": 100}})
    fed = time.monotonic()

    # the warning, with the time left, within T + 2 intervals (+ the poll's own slack)
    warned = wait_for(lambda: me(stack, tokens["rc-idle"])["servers"][0]["warning"], timeout=T + 2 * INTERVAL + 10,
                      what="the reclaim warning")
    warned_after = time.monotonic() - fed
    assert 0 < warned["seconds_left"] <= GRACE
    server = me(stack, tokens["rc-idle"])["servers"][0]
    assert server["gpu"]["uuid"] == gpu["rc-idle"] and server["gpu"]["memory_used_mib"] == 3000
    assert server["idle_seconds"] >= T

    # a forged answer for another user changes nothing; the user's own counts once
    forged = requests.post(f"{stack.url}/services/gpu-reclaim/api/me/still-working",
                           headers={"Authorization": f"token {tokens['rc-busy']}"},
                           json={"user": "rc-idle", "server": ""}, timeout=10)
    assert forged.status_code == 400, forged.text
    not_warned = requests.post(f"{stack.url}/services/gpu-reclaim/api/me/still-working",
                               headers={"Authorization": f"token {tokens['rc-busy']}"}, json={"server": ""}, timeout=10)
    assert not_warned.status_code == 404, not_warned.text
    answer = requests.post(f"{stack.url}/services/gpu-reclaim/api/me/still-working",
                           headers={"Authorization": f"token {tokens['rc-idle']}"}, json={"server": ""}, timeout=10)
    assert answer.status_code == 200, answer.text
    assert me(stack, tokens["rc-idle"])["servers"][0]["warning"]["still_working"] is True

    # the stop: within T + 2 * grace (one answer) + 2 intervals, with slack for the hub's stop
    wait_for(lambda: not hub.user("rc-idle")["servers"], timeout=T + 2 * GRACE + 2 * INTERVAL + 20,
             what="the idle server stopped")
    reclaimed_after = time.monotonic() - fed
    assert reclaimed_after >= T + 2 * GRACE - 1  # not before the answered grace ran out
    assert gpu["rc-idle"] not in gpu_holdings(stack).values()
    for n in ("rc-busy", "rc-exempt"):
        assert hub.user(n)["servers"][""]["ready"], f"{n}'s server must keep running"
    assert me(stack, tokens["rc-exempt"])["exempt"] is True

    # the next page load says why; the audit log says so too
    r = requests.get(f"{stack.url}/user/rc-idle/lab", timeout=10,
                     headers={"Authorization": f"token {tokens['rc-idle']}", "Accept": "text/html"})
    assert r.status_code == 424 and "give its GPU" in r.text, (r.status_code, r.text[:2000])
    audit = requests.get(f"{stack.url}/services/gpu-console/api/audit?limit=20", headers=hub.s.headers, timeout=10)
    actions = [(e["action"], e.get("user")) for e in audit.json()["entries"]]
    assert ("reclaim", "rc-idle") in actions and ("reclaim-warn", "rc-idle") in actions
    print(json.dumps({"warned_after_s": round(warned_after, 1), "reclaimed_after_s": round(reclaimed_after, 1),
                      "bound_s": T + 2 * GRACE + 2 * INTERVAL}))
    # a new start clears the reason
    hub.start("rc-idle", options={"profile": "gpu"})
    hub.stop("rc-idle")
    r = requests.get(f"{stack.url}/user/rc-idle/lab", timeout=10,
                     headers={"Authorization": f"token {tokens['rc-idle']}", "Accept": "text/html"})
    assert "give its GPU" not in r.text
    for n in ("rc-busy", "rc-exempt"):
        hub.stop(n)


@pytest.mark.browser
@pytest.mark.needs_gpus(1)
def test_jupyterlab_shows_my_gpu_the_warning_and_the_reason_after_reclaim(configured_stack, hub, page):
    stack = configured_stack
    admin = stack.env["HUB_ADMIN_USER"]
    log_in(page, stack, timeout=15_000)
    hub.start(admin, options={"profile": "gpu"})
    uuid = gpu_holdings(stack)[stack.container_of(admin)]
    stack.feed_gpu_readings({uuid: {"util": 40, "mem": 2048}})
    page.goto(f"{stack.url}/user/{admin}/lab")
    expect(page.locator("#jp-main-dock-panel")).to_be_visible(timeout=120_000)
    item = page.locator(".gpuhub-gpu-item")
    expect(item).to_contain_text("GPU: 40%", timeout=30_000)
    expect(item).to_contain_text("2.0 / 80.0 GiB")
    expect(item).to_contain_text("GPU-h")  # the user's own GPU-hours (the usage store)
    page.screenshot(path=ARTIFACTS / "reclaim-1-my-gpu.png")

    stack.feed_gpu_readings({uuid: {"util": 0, "mem": 2048}})  # idle from now on
    toast = page.locator(".Toastify__toast", has_text="Your GPU has been idle")
    expect(toast).to_be_visible(timeout=(T + 5 * INTERVAL + 15) * 1000)
    expect(toast).to_contain_text("stops in")
    page.screenshot(path=ARTIFACTS / "reclaim-2-warning.png")
    toast.get_by_role("button", name="Still working").click()
    expect(page.locator(".Toastify__toast", has_text="stays yours")).to_be_visible(timeout=10_000)

    wait_for(lambda: not hub.user(admin)["servers"], timeout=T + 2 * GRACE + 2 * INTERVAL + 30,
             what="the idle server stopped")
    page.goto(f"{stack.url}/user/{admin}/lab")
    expect(page.locator("#gpuhub-stop-reason")).to_contain_text("give its GPU", timeout=15_000)
    page.screenshot(path=ARTIFACTS / "reclaim-3-reason.png")


def test_a_crash_of_the_consoles_process_stops_console_and_reclaim_until_the_hub_starts_it_again(configured_stack, hub):
    """gpu-reclaim shares the GPU console's process: when that process dies, both are down (the
    hub and users' servers are not) until JupyterHub, which polls its managed services, starts
    the console again, with gpu-reclaim in it."""
    stack = configured_stack
    token = user_token(hub, "rc-crash")
    kill = ("import os, signal\n"
            "for p in filter(str.isdigit, os.listdir('/proc')):\n"
            "    if int(p) != os.getpid() and b'hub.service_process.console.app' in open(f'/proc/{p}/cmdline', 'rb').read():\n"
            "        os.kill(int(p), signal.SIGKILL)\n")
    killed = time.monotonic()
    stack.docker("exec", f"{stack.prefix}-hub-1", "python3", "-c", kill)

    def answers(path, headers):
        try:
            return requests.get(f"{stack.url}{path}", headers=headers, timeout=5).status_code == 200
        except requests.RequestException:
            return False
    reclaim_me = ("/services/gpu-reclaim/api/me", {"Authorization": f"token {token}"})
    console_gpus = ("/services/gpu-console/api/gpus", hub.s.headers)
    assert not answers(*reclaim_me) and not answers(*console_gpus)
    assert hub.api("GET", "/").status_code == 200  # the hub itself goes on
    wait_for(lambda: answers(*reclaim_me) and answers(*console_gpus), timeout=90, what="console and reclaim back")
    print(json.dumps({"console_and_reclaim_back_after_s": round(time.monotonic() - killed, 1)}))
