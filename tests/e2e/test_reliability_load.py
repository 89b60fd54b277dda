"""Load: N users press Start at the same moment (a class at the start of a lab session), on
this machine's CPUs and the engine's GPUs; every server must come up and answer through the
proxy. `make test` runs 10 users; `make reliability` runs 30 (GPUHUB_LOAD_USERS)."""
import os
import time
from concurrent.futures import ThreadPoolExecutor

import requests

import reliability
from hub.gpus.inventory import discover

USERS = int(os.environ.get("GPUHUB_LOAD_USERS", "10"))
GPUS = len(discover()[0])


def start_and_time(hub, token: str, name: str, profile: str, timeout: float = 170) -> float | None:
    """Seconds from the start request until the server answers through the proxy; None: failed."""
    t0 = time.monotonic()
    r = hub.api("POST", f"/users/{name}/server", json={"profile": profile})
    if r.status_code not in (201, 202):
        reliability.detail(load_failure=name, status=r.status_code, message=r.text[:200])
        return None
    with requests.Session() as s:
        s.headers["Authorization"] = f"token {token}"
        while time.monotonic() - t0 < timeout:
            try:
                if s.get(f"{hub.url}/user/{name}/api/status", timeout=10, allow_redirects=False).status_code == 200:
                    return time.monotonic() - t0
            except requests.RequestException:
                pass
            server = hub.user(name)["servers"].get("")
            if server is None or (not server["pending"] and not server["ready"]):
                reliability.detail(load_failure=name, server=server)
                return None
            time.sleep(0.25)
    reliability.detail(load_failure=name, timeout_s=timeout)
    return None


def test_users_start_at_once_and_answer_through_the_proxy(stack, hub):
    names = [f"load{i:02d}" for i in range(USERS)]
    for name in names:
        hub.create_user(name)
    token = hub.s.headers["Authorization"].split()[1]  # the admin's: may access every server
    # The first users take the GPUs (GPU profile), everyone else the CPU profile.
    profiles = ["gpu" if i < GPUS else "cpu" for i in range(USERS)]
    t0 = time.monotonic()
    with ThreadPoolExecutor(USERS) as pool:
        times = list(pool.map(lambda a: start_and_time(hub, token, *a), zip(names, profiles)))
    wall = time.monotonic() - t0
    ok = [t for t in times if t is not None]
    failed = [n for n, t in zip(names, times) if t is None]
    reliability.add(users_started=len(ok), users_failed=len(failed), slowest_start_s=max(ok, default=0))
    reliability.detail(load_users=USERS, gpu_users=min(GPUS, USERS), started=len(ok), failed=failed,
                       slowest_start_s=round(max(ok, default=0), 2), median_start_s=round(sorted(ok)[len(ok) // 2], 2) if ok else None,
                       burst_wall_s=round(wall, 2))
    try:
        assert not failed, f"{len(failed)} of {USERS} servers did not come up: {failed}"
        assert len(stack.user_containers()) >= USERS
    finally:
        with ThreadPoolExecutor(USERS) as pool:
            list(pool.map(lambda n: hub.stop(n, timeout=120) if hub.user(n)["servers"] else None, names))
