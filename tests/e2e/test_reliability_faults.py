"""Faults, and nothing lost: the hub restarted, the proxy restarted, the Docker daemon restarted
(live-restore), a user's container killed by its memory limit, the state volume unwritable.
Each counts as injected when it happens and as survived only when all its checks pass.

The Docker daemon restart affects every container on the engine; it runs only when
GPUHUB_RELIABILITY_FULL=1 (`make reliability` sets it), not in `make test`."""
import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

import engine
import reliability
from consoleclient import user_token, wait_for
from hubclient import UserServer
from kernelproto import run_code
from storm import gpu_holdings

FULL = os.environ.get("GPUHUB_RELIABILITY_FULL") == "1"


class Kernel:
    """One kernel and one open websocket to it, through the proxy: a user's live session."""

    def __init__(self, server: UserServer):
        r = server.s.post(server.base + "api/kernels", json={"name": "python3"}, timeout=60)
        assert r.status_code == 201, r.text
        self.server, self.id = server, r.json()["id"]
        self.ws = server.connect(self.id)

    def run(self, code: str, timeout: float = 60) -> str:
        return run_code(self.ws, code, timeout, username="t")

    def close(self):
        self.ws.close()


def started(stack, hub, name: str, profile: str = "gpu") -> UserServer:
    token = user_token(hub, name)
    server = hub.start(name, options={"profile": profile})
    return UserServer(stack.url, server["url"], token)


def answers(url: str, token: str) -> int | None:
    try:
        return requests.get(url, headers={"Authorization": f"token {token}"}, timeout=5,
                            allow_redirects=False).status_code
    except requests.RequestException:
        return None


@pytest.mark.needs_gpus(1)
def test_hub_restart_keeps_servers_sessions_and_gpus(stack, hub):
    a = started(stack, hub, "hubfault-a")
    kernel = Kernel(a)
    kernel.run("x = 41")
    a.put_text("before-hub-restart.txt", "still here\n")
    admin = stack.admin_session()  # a browser's login cookie
    assert admin.get(f"{stack.url}/hub/home", timeout=10, allow_redirects=False).status_code == 200
    holdings = gpu_holdings(stack)
    containers = {c: stack.inspect(c)["Id"] for c in stack.user_containers()}
    with reliability.fault("hub container restarted"):
        stack.compose("restart", "hub")
        stack.up()
        assert {c: stack.inspect(c)["Id"] for c in stack.user_containers()} == containers
        assert gpu_holdings(stack) == holdings
        # The session: the same websocket, the same kernel state; the login cookie still valid
        # (the cookie secret is on the state volume, not generated anew).
        assert kernel.run("print(x + 1)").strip() == "42"
        assert admin.get(f"{stack.url}/hub/home", timeout=10, allow_redirects=False).status_code == 200
        assert a.read_text("before-hub-restart.txt") == "still here\n"
        assert hub.user("hubfault-a")["servers"][""]["ready"]
    kernel.close()
    hub.stop("hubfault-a")


def test_proxy_restart_restores_routes(stack, hub):
    a = started(stack, hub, "proxyfault-a", profile="cpu")
    url = a.base + "api/status"
    assert answers(url, a.token) == 200
    with reliability.fault("proxy container restarted"):
        stack.compose("restart", "proxy")
        t0 = time.monotonic()
        wait_for(lambda: answers(url, a.token) == 200, timeout=60, what="route to the user's server back")
        back = time.monotonic() - t0
        reliability.detail(proxy_restart_routes_back_s=round(back, 1))
        assert answers(f"{stack.url}/services/gpu-console/api/gpus", hub.s.headers["Authorization"].split()[1]) == 200
        assert hub.user("proxyfault-a")["servers"][""]["ready"]
    hub.stop("proxyfault-a")


@pytest.mark.needs_gpus(1)
def test_oom_killed_server_says_why_frees_its_gpu_and_keeps_files(stack, hub):
    name = "oomer"
    a = started(stack, hub, name)
    a.put_text("work-before-oom.txt", "precious\n")
    container = stack.container_of(name)
    gpu = gpu_holdings(stack)[container]
    limit = stack.inspect(container)["HostConfig"]["Memory"]
    with reliability.fault("user container OOM-killed"):
        # The server process is the kernel's victim of choice (as a notebook server holding a
        # large output would be); then a process allocates more than the container's limit.
        stack.docker("exec", container, "sh", "-c",
                     "for p in $(pgrep -f jupyterhub-singleuser) 1; do echo 1000 > /proc/$p/oom_score_adj; done")
        stack.docker("exec", container, "python3", "-c",
                     f"b = bytearray(b'x') * {limit + 512 * 2**20}", check=False)
        wait_for(lambda: not hub.user(name)["servers"], timeout=60, what="hub noticing the dead server")
        assert container not in stack.user_containers()
        assert gpu not in gpu_holdings(stack).values()  # its GPU is free again
        # The next page load (JupyterLab reloaded) says why.
        r = requests.get(f"{stack.url}/user/{name}/lab", headers={"Authorization": f"token {a.token}",
                         "Accept": "text/html"}, timeout=10)
        assert r.status_code == 424, (r.status_code, r.text[:300])
        assert "ran out of memory" in r.text and "1.5 GB" in r.text, r.text[:3000]
        reliability.detail(oom_page_message=r.text.split('id="gpuhub-stop-reason" role="alert">')[1].split("<")[0])
        hub.start(name, options={"profile": "gpu"})
        assert a.read_text("work-before-oom.txt") == "precious\n"
        # A stop the user asked for explains nothing: the message is gone.
        hub.stop(name)
        r = requests.get(f"{stack.url}/user/{name}/lab", headers={"Authorization": f"token {a.token}",
                         "Accept": "text/html"}, timeout=10)
        assert r.status_code == 424 and "ran out of memory" not in r.text


def state_writable(stack, writable: bool) -> None:
    """The state directory unwritable for the hub's user (as a read-only or failed filesystem
    is): no new file, so sqlite cannot start a transaction (its journal), nor anything else.
    (A read-only remount is refused while sqlite holds its file open for writing.)"""
    stack.docker("exec", "-u", "0", f"{stack.prefix}-hub-1", "chmod", "0700" if writable else "0500",
                 "/srv/jupyterhub/state")


@pytest.mark.needs_gpus(2)
def test_unwritable_state_volume_refuses_new_work_clearly_and_loses_nothing(stack, hub):
    a = started(stack, hub, "statefault-a")
    kernel = Kernel(a)
    hub.create_user("statefault-b")
    holdings = gpu_holdings(stack)
    with reliability.fault("state volume unwritable"):
        state_writable(stack, False)
        try:
            r = hub.api("POST", "/users/statefault-b/server", json={"profile": "gpu"})
            assert r.status_code == 503, (r.status_code, r.text)
            message = r.json()["message"]
            assert "cannot write its state volume" in message and "Permission denied" in message, message
            reliability.detail(state_unwritable_message=message)
            page = requests.get(f"{stack.url}/hub/login", timeout=10)
            assert page.status_code == 503 and "cannot write its state volume" in page.text
            assert requests.get(f"{stack.url}/hub/health", timeout=10).status_code == 200
            # Nothing running is touched: same GPUs, and the open session keeps computing.
            assert gpu_holdings(stack) == holdings
            assert kernel.run("print(6 * 7)").strip() == "42"
            assert not [c for c in stack.user_containers() if "statefault-b" in c]
        finally:
            state_writable(stack, True)
        # Writable again: the hub takes work again by itself, with every assignment as it was.
        wait_for(lambda: hub.api("GET", "/users/statefault-b").status_code == 200, timeout=30, what="hub back")
        hub.start("statefault-b", options={"profile": "gpu"})
        after = gpu_holdings(stack)
        assert {c: g for c, g in after.items() if c in holdings} == holdings
        assert len(after) == len(holdings) + 1
    kernel.close()
    hub.stop("statefault-a")
    hub.stop("statefault-b")


@pytest.mark.skipif(not FULL, reason="restarts the Docker daemon: GPUHUB_RELIABILITY_FULL=1 (make reliability)")
@pytest.mark.needs_gpus(1)
def test_docker_daemon_restart_with_live_restore(stack, hub):
    engine.enable_live_restore()
    a = started(stack, hub, "daemonfault-a")
    b = started(stack, hub, "daemonfault-b", profile="cpu")
    a.put_text("before-daemon-restart.txt", "kept\n")
    holdings = gpu_holdings(stack)
    ids = {c: stack.inspect(c)["Id"] for c in stack.user_containers()}
    with reliability.fault("Docker daemon restarted (live-restore)"):
        down_s = engine.restart_daemon()
        # live-restore: every user container is the same one, still running, with its GPU.
        assert {c: stack.inspect(c)["Id"] for c in stack.user_containers()} == ids
        assert all(stack.inspect(c)["State"]["Running"] for c in ids)
        assert gpu_holdings(stack) == holdings
        # The hub's socket died with the old daemon: its watchdog stops it, Docker restarts it
        # with the new socket; then its view is correct and new starts work.
        t0 = time.monotonic()
        wait_for(lambda: hub_starts_work(hub, "daemonfault-c"), timeout=120, what="hub starting servers again")
        recovered = time.monotonic() - t0
        for user in (a, b):
            assert answers(user.base + "api/status", user.token) == 200
        assert a.read_text("before-daemon-restart.txt") == "kept\n"
        for name in ("daemonfault-a", "daemonfault-b"):
            assert hub.user(name)["servers"][""]["ready"], name
        reliability.detail(daemon_restart_s=round(down_s, 1), hub_starts_again_after_s=round(recovered, 1),
                           hub_restarts=stack.inspect(f"{stack.prefix}-hub-1")["RestartCount"])
    for name in ("daemonfault-a", "daemonfault-b", "daemonfault-c"):
        if hub.user(name)["servers"]:
            hub.stop(name)


def hub_starts_work(hub, name: str) -> bool:
    try:
        hub.create_user(name)
        if not hub.user(name)["servers"]:
            r = hub.api("POST", f"/users/{name}/server", json={"profile": "cpu"})
            if r.status_code not in (201, 202):
                return False
        hub.wait(name, ready=True, timeout=60)
        return True
    except (requests.RequestException, TimeoutError, AssertionError):
        return False


def hub_answers(hub) -> int | None:
    try:
        return hub.api("GET", "/users").status_code
    except requests.RequestException:
        return None


@pytest.mark.needs_gpus(1)
def test_hub_killed_mid_burst_recovers_in_seconds(stack, hub):
    """Users press Start at once (more than the GPUs: some get a GPU, some wait their turn,
    some are refused); the hub is killed (SIGKILL) while starts are in flight. Once it answers
    again: no server pending after 10 s, no 5xx from its API, a Stop during pending works or is
    a 409, no GPU held twice, no container the hub does not know of."""
    users = 8 if FULL else 6
    names = [f"hubkill{i}" for i in range(users)]
    for name in names:
        hub.create_user(name)

    def press_start(i_name):  # JupyterHub answers a start after up to 10 s: all at once
        i, name = i_name
        try:
            hub.api("POST", f"/users/{name}/server", json={"profile": "gpu" if i % 2 == 0 else "cpu"})
        except requests.RequestException:
            pass  # the hub died under it
    pool = ThreadPoolExecutor(users)
    pool.map(press_start, enumerate(names))
    hub_container = f"{stack.prefix}-hub-1"
    with reliability.fault("hub killed (SIGKILL) during a burst of starts"):
        # Killed as the first containers run: their servers are still starting, others wait their turn.
        wait_for(lambda: stack.user_containers(), timeout=60, what="a user's container")
        stack.docker("kill", "-s", "KILL", hub_container)
        killed = time.monotonic()
        in_flight = len(stack.user_containers())
        pool.shutdown(wait=False)  # the requests in flight fail (or time out) on their own
        time.sleep(2)
        if not stack.inspect(hub_container)["State"]["Running"]:  # `docker kill` skips the policy
            stack.docker("start", hub_container)
        wait_for(lambda: hub_answers(hub) == 200, timeout=120, what="hub answering again")
        answered = time.monotonic()
        statuses, stop_statuses, pending_until = [], {}, answered
        while time.monotonic() - answered < 25:
            r = hub.api("GET", "/users")
            statuses.append(r.status_code)
            if r.status_code != 200:
                time.sleep(0.25)
                continue
            pending = {u["name"]: s["pending"] for u in r.json() if u["name"] in names
                       for s in u["servers"].values() if s["pending"]}
            if pending:
                pending_until = time.monotonic()
                for name, state in pending.items():  # Stop during pending: works, or a clear 409
                    if name not in stop_statuses and state != "stop":
                        stop_statuses[name] = hub.api("DELETE", f"/users/{name}/server").status_code
            elif time.monotonic() - pending_until > 3:
                break
            time.sleep(0.25)
        pending_s = pending_until - answered
        reliability.detail(hub_kill_containers_at_kill=in_flight, hub_kill_back_after_s=round(answered - killed, 1),
                           hub_kill_pending_after_answer_s=round(pending_s, 1),
                           hub_kill_api_5xx=sum(s >= 500 for s in statuses), hub_kill_stops_during_pending=stop_statuses)
        assert not [s for s in statuses if s >= 500], statuses
        assert all(s in (202, 204, 409) for s in stop_statuses.values()), stop_statuses
        assert pending_s <= 10, f"servers still pending {pending_s:.1f} s after the hub answered"
        # Every server settles: ready or gone; then the engine and the hub agree.
        for name in names:
            if not hub.user(name)["servers"].get("", {}).get("ready"):
                hub.wait(name, ready=False, timeout=60)
        holdings = gpu_holdings(stack)
        assert len(set(holdings.values())) == len(holdings), f"a GPU held twice: {holdings}"
        running = {n for n in names if hub.user(n)["servers"].get("", {}).get("ready")}
        containers = {c for c in stack.user_containers() if any(n in c for n in names)}
        assert {n for n in names if any(n in c for c in containers)} == running, (containers, running)
        assert all(stack.inspect(c)["State"]["Running"] for c in containers), containers
    for name in names:
        if hub.user(name)["servers"]:
            hub.stop(name, timeout=120)
