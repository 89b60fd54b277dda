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
- parked again and stopped by the person: unpaused, stopped, the record gone.
The state machine's other paths (resume while held, expiry, reserve too small, failures) are
tests/e2e/test_park.py's, on the real engine without the hub."""
import json
import time

import pytest
import requests

from consoleclient import user_token, wait_for
from storm import gpu_holdings

T, GRACE, INTERVAL = 4, 4, 1
PARKED = "/srv/jupyterhub/state/gpu-parked.json"
SETTINGS = {"COMPOSE_FILE": "docker-compose.yml:tests/e2e/fake_gpu/compose.yml", "GPU_IDLE_TIMEOUT": str(T),
            "GPU_IDLE_GRACE": str(GRACE), "GPU_SAMPLE_INTERVAL": str(INTERVAL), "GPU_IDLE_ACTION": "park"}
USER = "pk-alice"
# A "CUDA process" in the user's container: a GPU's device node open (gpu-park finds it so), a
# random state, a counter in a file.
KERNEL = ("import glob, os, secrets, time\n"
          "gpu = open(sorted(glob.glob('/dev/nvidia[0-9]*'))[0], 'rb')\n"
          "state, n = secrets.token_hex(8), 0\n"
          "while True:\n"
          "    n += 1\n"
          "    open('/tmp/pk.tmp', 'w').write(f'{os.getpid()} {state} {n}')\n"
          "    os.replace('/tmp/pk.tmp', '/tmp/pk')\n"
          "    time.sleep(0.05)\n")


def parked_records(stack) -> dict:
    out = stack.docker("exec", f"{stack.prefix}-hub-1", "cat", PARKED, check=False)
    return {k: v for k, v in json.loads(out.stdout or "{}").items() if not k.startswith("_")}


def status(stack, container: str) -> str:
    return stack.inspect(container)["State"]["Status"]


def ticks(stack, container: str) -> tuple[str, str, int]:
    """The process's pid, state and count, read through /proc/<its init>/root from this host
    (docker exec refuses a paused container)."""
    pid = stack.inspect(container)["State"]["Pid"]
    out = open(f"/proc/{pid}/root/tmp/pk").read().split()
    return out[0], out[1], int(out[2])


def wait_parked(stack, hub, container: str) -> float:
    t0 = time.monotonic()
    wait_for(lambda: status(stack, container) == "paused" and parked_records(stack), timeout=T + GRACE + 40,
             what="the idle server parked")
    return time.monotonic() - t0


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
    stack.docker("exec", "-d", "-u", "1000:100", container, "python3", "-c", KERNEL)
    def ticking():
        try:
            return ticks(stack, container)
        except (OSError, IndexError):
            return None
    wait_for(ticking, timeout=30, what="the CUDA process ticking")
    before = ticks(stack, container)
    stack.feed_gpu_readings({gpu: {"util": 0, "mem": 600}})  # idle, and at rest (<= 1024 MiB) once parked

    parked_after = wait_parked(stack, hub, container)
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
    wait_parked(stack, hub, container)
    hub.stop(USER)
    wait_for(lambda: container not in stack.user_containers(), timeout=30, what="the container removed")
    assert not parked_records(stack)
    print(json.dumps({"parked_after_s": round(parked_after, 1)}))
