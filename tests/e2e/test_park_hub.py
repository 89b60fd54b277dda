"""Parking through the real hub (fake GPUs; readings fed from a file; gpu-park with its driver
stand-in, GPUHUB_PARK_FAKE: tests/e2e/fake_gpu): gpu-reclaim with GPU_IDLE_ACTION=park parks an
idle server instead of stopping it, and then, with the real hub, proxy and spawner:

- the server stays "ready" for the hub, its container paused, its GPU free for the allocator
  and its parked time not counted as GPU time;
- its requests are answered, not hung: API calls get a 503 with the parked notice at once, pages
  go to /hub/parked/ ("Your session is parked since HH:MM"), the home page shows the notice;
- a hub restart keeps it parked (the start-up check does not stop a server that cannot answer);
- Resume (the page's form, with the person's own token) unpauses and restores it: the same
  process with the same state, the same kernel, the route back;
- parked again and stopped by the person: unpaused, stopped, the record gone;
- Resume while its GPU is held: it joins the GPU line for that GPU (its page shows the place and
  the holder, and reloading it changes nothing), the console lists it parked, and when the
  holder stops it resumes by itself, before a start pinned to that GPU that came after it.
The state machine's other paths (resume while held, expiry, reserve too small, failures) are
tests/e2e/test_park.py's, on the real engine without the hub."""
import json
import time

import pytest
import requests

from consoleclient import user_token, wait_for
from parkclient import (SETTINGS, parked_records, start_cuda_process, status,  # noqa: F401
                        ticks, wait_parked)  # SETTINGS: configured_stack's
from storm import gpu_holdings

USER = "pk-alice"


@pytest.mark.needs_gpus(1)
def test_parked_through_the_hub_resumed_and_stopped(configured_stack, hub):
    stack = configured_stack
    token = user_token(hub, USER)
    auth = {"Authorization": f"token {token}"}
    hub.start(USER, options={"profile": "gpu"})
    container = stack.container_of(USER)
    gpu = gpu_holdings(stack)[container]
    kernel = requests.post(f"{stack.url}/user/{USER}/api/kernels", json={"name": "python3"}, headers=auth, timeout=60)
    assert kernel.status_code == 201, kernel.text
    before = start_cuda_process(stack, container)
    stack.feed_gpu_readings({gpu: {"util": 0, "mem": 600}})  # idle, and at rest (<= 1024 MiB) once parked

    parked_after = wait_parked(stack, container)
    record = parked_records(stack)[f"{USER}\n"]
    assert record["uuid"] == gpu and int(before[0]) in [int(p) for p in record["pids"]], record
    assert hub.user(USER)["servers"][""]["ready"], "the hub must not mark a parked server dead"
    frozen = ticks(stack, container)
    time.sleep(1)
    assert ticks(stack, container) == frozen, "a parked container must not run"

    # answered, not hung: API calls a 503 with the notice, pages the parked page
    last = []

    def api_answer():
        try:
            r = requests.get(f"{stack.url}/user/{USER}/api/status", headers=auth, timeout=5)
        except requests.RequestException as exc:
            last.append(repr(exc))
            return None
        last.append((r.status_code, r.url, r.text[:300]))
        return [r] if r.status_code == 503 else None  # (a Response of a 503 is falsy)
    try:
        r, = wait_for(api_answer, timeout=20, what="a 503 from the parked server's API")
    except TimeoutError:
        logs = stack.docker("logs", "--tail", "300", f"{stack.prefix}-hub-1", check=False)
        lines = [x for x in (logs.stdout + logs.stderr).splitlines()
                 if any(w in x.lower() for w in ("park", "route", "proxy", "traceback", "error", "redirect"))]
        raise AssertionError(f"last answers: {last[-3:]}\nhub log:\n" + "\n".join(lines[-60:])) from None
    assert r.json()["message"].startswith("Your session is parked since") and r.json()["parked_since"]
    gpu_item = requests.get(f"{stack.url}/user/{USER}/gpuhub/gpu", headers=auth, timeout=5)  # JupyterLab's GPU item
    assert gpu_item.status_code == 503 and gpu_item.json()["resume_url"] == "/hub/parked", gpu_item.text
    t0 = time.monotonic()
    page = requests.get(f"{stack.url}/user/{USER}/lab", headers={**auth, "Accept": "text/html"}, timeout=10)
    assert time.monotonic() - t0 < 5 and page.status_code == 200, (page.status_code, page.text[:500])
    assert "/hub/parked?next=%2Fuser%2Fpk-alice%2Flab" in page.url and "Your session is parked since" in page.text

    # the audit log says parked
    audit = requests.get(f"{stack.url}/services/gpu-console/api/audit?limit=20", headers=hub.s.headers, timeout=10)
    assert ("park", USER) in [(e["action"], e.get("user")) for e in audit.json()["entries"]]

    # a hub restart keeps it parked
    stack.docker("restart", f"{stack.prefix}-hub-1")
    wait_for(lambda: requests.get(f"{stack.url}/hub/health", timeout=5).ok, timeout=120, what="the hub back")
    time.sleep(3)
    assert status(stack, container) == "paused" and parked_records(stack)
    assert hub.user(USER)["servers"][""]["ready"]

    # Resume: the person's own form (token auth: no XSRF form needed)
    resumed = requests.post(f"{stack.url}/hub/parked/", data={"action": "resume"}, headers=auth, timeout=60,
                            allow_redirects=False)
    assert resumed.status_code in (302, 303), (resumed.status_code, resumed.text[:500])
    assert resumed.headers["Location"].endswith(f"/user/{USER}/")
    assert status(stack, container) == "running" and not parked_records(stack)
    wait_for(lambda: ticks(stack, container)[2] > frozen[2], timeout=10, what="ticking again")
    assert ticks(stack, container)[:2] == before[:2], "the same process with the same state"
    back = wait_for(lambda: (lambda r: r if r.status_code == 200 else None)(
        requests.get(f"{stack.url}/user/{USER}/api/kernels", headers=auth, timeout=10)), timeout=20,
        what="the server's API through the proxy again")
    assert kernel.json()["id"] in [k["id"] for k in back.json()], "the same kernel"

    # parked again, then stopped by the person: unpaused, stopped, the record gone
    stack.feed_gpu_readings({gpu: {"util": 0, "mem": 600}})
    wait_parked(stack, container)
    hub.stop(USER)
    wait_for(lambda: container not in stack.user_containers(), timeout=30, what="the container removed")
    assert not parked_records(stack)
    print(json.dumps({"parked_after_s": round(parked_after, 1)}))


@pytest.mark.needs_gpus(2)
def test_resume_while_its_gpu_is_held_waits_in_the_gpu_line_and_goes_first(configured_stack, hub, console):
    stack = configured_stack
    a, b, c = "pk-line-a", "pk-line-b", "pk-line-c"
    auth = {"Authorization": f"token {user_token(hub, a)}"}
    for name in (b, c):
        hub.create_user(name)
    hub.start(a, options={"profile": "gpu"})
    container = stack.container_of(a)
    gpu = gpu_holdings(stack)[container]
    before = start_cuda_process(stack, container)
    stack.feed_gpu_readings({gpu: {"util": 0, "mem": 600}})
    wait_parked(stack, container)

    # the console lists it: since when, its GPU state in host memory, the GPU it resumes on
    listed = wait_for(lambda: console.ok("GET", "parked")["parked"], timeout=10, what="the console's parked list")
    assert [(p["user"], p["gpu"], p["gpu_memory_mib"], p["host_memory_bytes"], p["gpu_held_by"], p["in_line"])
            for p in listed] == [(a, gpu, 600, 600 * 2**20, [], 0)], listed
    assert abs(listed[0]["since"] - parked_records(stack)[f"{a}\n"]["since"]) < 1
    assert console.state()["parked"] == listed

    # b takes that GPU (pinned to it; busy, so not parked itself); c is pinned to it too
    stack.feed_gpu_readings({gpu: {"util": 90, "mem": 5000}})
    for name in (b, c):
        console.ok("POST", "pins", {"user": name, "gpu": gpu})
    hub.start(b, options={"profile": "gpu"})
    assert gpu_holdings(stack)[stack.container_of(b)] == gpu

    # Resume: into the line for that GPU, the page shows the place and the holder
    r = requests.post(f"{stack.url}/hub/parked/", data={"action": "resume"}, headers=auth, timeout=60,
                      allow_redirects=False)
    assert r.status_code == 303 and r.headers["Location"].rstrip("/").endswith("/hub/parked"), (r.status_code, r.text[:300])
    for _ in range(2):  # the page's own reloads are GETs: they change nothing
        page = requests.get(f"{stack.url}/hub/parked/", headers=auth, timeout=10)
        assert page.status_code == 200 and "You are next in line for it" in page.text and b in page.text, page.text
        assert 'http-equiv="refresh"' in page.text and "Start fresh on another GPU (loses the kernel state)" in page.text
    assert status(stack, container) == "paused" and parked_records(stack)
    api = requests.get(f"{stack.url}/user/{a}/api/status", headers=auth, timeout=10)
    assert api.status_code == 503 and api.json()["in_line"] == 1, api.text
    assert [(p["user"], p["gpu_held_by"], p["in_line"]) for p in console.ok("GET", "parked")["parked"]] == [(a, [b], 1)]

    # c's start (pinned to the same GPU) waits in line behind a
    r = hub.api("POST", f"/users/{c}/server", json={"profile": "gpu"})
    assert r.status_code in (201, 202), r.text
    line = wait_for(lambda: (lambda q: q if len(q) == 2 else None)(console.ok("GET", "queue")["waiting"]),
                    timeout=30, what="c in line behind a")
    assert [(e["user"], e.get("resume_gpu")) for e in line] == [(a, gpu), (c, None)], line

    # b stops: a resumes by itself on that GPU, with its state; c still waits
    hub.stop(b)
    t0 = time.monotonic()
    wait_for(lambda: status(stack, container) == "running" and not parked_records(stack), timeout=30,
             what="a resumed by itself")
    resumed_after = time.monotonic() - t0
    wait_for(lambda: ticks(stack, container)[2] > before[2], timeout=10, what="ticking again")
    assert ticks(stack, container)[:2] == before[:2], "the same process with the same state"
    assert gpu_holdings(stack)[container] == gpu
    time.sleep(3)
    server_c = hub.user(c)["servers"].get("") or {}
    assert server_c.get("pending") == "spawn" and not server_c.get("ready"), server_c
    assert [e["user"] for e in console.ok("GET", "queue")["waiting"]] == [c]
    assert not console.ok("GET", "parked")["parked"]
    page = requests.get(f"{stack.url}/hub/parked/", headers=auth, timeout=10, allow_redirects=False)
    assert page.status_code == 302 and page.headers["Location"].endswith(f"/user/{a}/"), page.status_code
    audit = [(e["action"], e.get("user")) for e in console.ok("GET", "audit?limit=30")["entries"]]
    assert ("park-resume", a) in audit

    hub.stop(c)
    hub.stop(a)
    wait_for(lambda: container not in stack.user_containers(), timeout=30, what="a's container removed")
    print(json.dumps({"resumed_after_holder_stopped_s": round(resumed_after, 1)}))
