"""One hub over three GPU servers on Docker Swarm (docs/swarm.md), on one machine.

The servers are docker-in-docker test hosts with two fake GPUs each (tests/swarm/cluster.py:
node 1 manager, 2 and 3 workers, a fake NVIDIA runtime that honours DOCKER_RESOURCE_<KIND>
as the real one does with swarm-resource). The hub and proxy are deployed on the manager with
swarm/stack.yml and tests/swarm/stack.env; users' files live in a directory all nodes share
(SWARM_VOLUME_ROOT: this kernel has no NFS). Everything is checked against the engine: Swarm's
tasks say which node and GPU unit each server holds, the fake runtime says what each container
was given.

Needs the images of `make test-images` (the manager node builds the rest itself). The nodes are reused when already up and removed at
the end (GPUHUB_SWARM_KEEP=1 keeps them for the next run). `make swarm-storm` is the long
version (tests/swarm/swarmstorm.py).
"""
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from playwright.sync_api import expect

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "swarm"))
from cluster import Cluster, SwarmStack, duplicates  # noqa: E402
from conftest import ARTIFACTS  # noqa: E402
from consoleclient import Console, user_token  # noqa: E402
from hubclient import Hub, UserServer  # noqa: E402

GPU_USERS = ["sw-ada", "sw-bob", "sw-cyd", "sw-dan"]
CPU_USER = "sw-cpu"


@pytest.fixture(scope="module")
def cluster():
    c = Cluster()
    c.up()
    yield c
    if not os.environ.get("GPUHUB_SWARM_KEEP"):
        c.down()


@pytest.fixture(scope="module")
def stack(cluster):
    """Named `stack` so that the e2e conftest writes its logs (nodes, services, hub, proxy) to
    tests/artifacts/ when a test fails."""
    s = SwarmStack(cluster)
    s.images()
    s.down()  # leftovers of an interrupted run
    s.up()
    yield s
    s.down()


@pytest.fixture(scope="module")
def hub(stack) -> Hub:
    return Hub(stack.url, stack.admin_token())


def start_all(hub: Hub, names: list[str], options: dict | None = None) -> None:
    for name in names:
        hub.create_user(name)
    with ThreadPoolExecutor(len(names)) as pool:
        list(pool.map(lambda n: hub.start(n, options=options, timeout=240), names))


def by_user(stack: SwarmStack) -> dict:
    return {h.user: h for h in stack.holdings()}


def test_gpu_servers_get_distinct_gpus_and_see_only_theirs(stack, hub):
    start_all(hub, GPU_USERS, {"profile": "gpu"})
    hub.create_user(CPU_USER)
    hub.start(CPU_USER, options={"profile": "cpu"}, timeout=240)
    held = by_user(stack)
    assert set(GPU_USERS + [CPU_USER]) <= set(held), held
    gpu_held = [held[u] for u in GPU_USERS]
    assert all(len(h.gpus) == 1 for h in gpu_held), gpu_held
    assert len({(h.node, h.gpus[0]) for h in gpu_held}) == len(GPU_USERS), gpu_held
    assert duplicates(stack.holdings()) == 0
    nodes = {n.name: set(n.gpus) for n in stack.cluster.nodes}
    for h in gpu_held:
        # Swarm's unit is the GPU the hub chose (the service's label), on the node that has it
        assert h.gpus == (h.label_gpu,), h
        assert h.gpus[0] in nodes[h.node], h
        visible, env = stack.sees(h)
        assert visible == [h.gpus[0]] and env == h.gpus[0], (h, visible, env)
    # six GPUs, two per node: four GPU servers cannot all fit on one node
    assert len({h.node for h in gpu_held}) >= 2
    cpu = held[CPU_USER]
    assert cpu.gpus == () and not cpu.label_gpu, cpu
    assert stack.sees(cpu) == ([], "void")


def test_a_dead_nodes_servers_stop_and_start_elsewhere_with_their_files(stack, hub, cluster):
    held = by_user(stack)
    workers = {n.name for n in cluster.nodes if not n.manager}
    victim_node = next(h.node for u, h in sorted(held.items()) if u in GPU_USERS and h.node in workers)
    victims = sorted(u for u, h in held.items() if h.node == victim_node)
    dead_gpus = set(cluster.node(victim_node).gpus)
    notes = {}
    for name in victims:
        server = UserServer(stack.url, hub.user(name)["servers"][""]["url"], user_token(hub, name))
        notes[name] = f"written by {name} on {victim_node} at {time.time()}"
        server.put_text("note.txt", notes[name])

    cluster.kill(cluster.node(victim_node))
    try:
        t0 = time.monotonic()
        for name in victims:  # once the manager marks the node down, its node event has the hub stop them
            hub.wait(name, ready=False, timeout=120, interval=0.2)
        noticed = time.monotonic() - t0
        still = [h for h in stack.holdings() if h.node == victim_node or set(h.gpus) & dead_gpus]
        assert not still, still
        # the GPU console's audit log says what happened, and whose servers stopped
        entries = Console(stack, stack.admin_token()).ok("GET", "audit?limit=20")["entries"]
        lost = [e for e in entries if e.get("action") == "node down" and e.get("node") == victim_node]
        assert lost and sorted(lost[0]["users"]) == victims, entries[:5]

        for name in victims:
            server = UserServer(stack.url, hub.start(name, timeout=240)["url"], user_token(hub, name))
            assert server.read_text("note.txt") == notes[name]
            # the folder the hub made on the shared root got the image's WELCOME.md, as a new named volume would
            assert "work" in server.read_text("WELCOME.md")
        held = by_user(stack)
        for name in victims:
            assert held[name].node != victim_node, held[name]
        assert duplicates(stack.holdings()) == 0
        print(f"node {victim_node} killed: {len(victims)} servers stopped in the hub's view after {noticed:.1f}s")
    finally:
        cluster.revive(cluster.node(victim_node))


def test_hub_restart_keeps_every_assignment(stack, hub):
    before = {u: (h.node, h.gpus, h.service) for u, h in by_user(stack).items()}
    assert before
    stack.restart_hub()
    hub2 = Hub(stack.url, stack.admin_token())
    time.sleep(12)  # one poll interval of every server: none may be stopped by the new hub
    for user in before:
        server = hub2.user(user)["servers"].get("")
        assert server and server["ready"], (user, server)
    after = {u: (h.node, h.gpus, h.service) for u, h in by_user(stack).items()}
    assert after == before
    assert duplicates(stack.holdings()) == 0
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(hub2.stop, list(before)))
    assert not stack.holdings()


@pytest.mark.browser
def test_browser_login_and_start_lands_on_a_worker(stack, hub, page):
    """A person's path on the swarm: log in, press Start, pick the GPU profile, get JupyterLab,
    from a server on a worker node (the manager's two GPUs are taken first, by API users)."""
    manager = stack.cluster.manager
    fillers = []
    while not set(manager.gpus) <= {g for h in stack.holdings() for g in h.gpus}:
        assert len(fillers) < 6, stack.holdings()
        fillers.append(f"sw-fill{len(fillers)}")
        hub.create_user(fillers[-1])
        hub.start(fillers[-1], options={"profile": "gpu"}, timeout=240)
    admin = stack.env["HUB_ADMIN_USER"]
    page.goto(f"{stack.url}/hub/login")
    page.fill("input[name=username]", admin)
    page.fill("input[name=password]", stack.env["HUB_ADMIN_PASSWORD"])
    page.click("input[type=submit], button[type=submit]")
    page.goto(f"{stack.url}/hub/home")
    start = page.locator("#start")
    expect(start).to_be_visible(timeout=15_000)
    start.click()
    expect(page.locator("#spawn_form")).to_be_visible(timeout=15_000)
    expect(page.locator(".gpuhub-gpus")).to_contain_text("free right now")
    page.check("#profile-gpu")
    page.click("#spawn_form [type=submit]")
    page.wait_for_url(f"**/user/{admin}/lab**", timeout=180_000)
    expect(page.locator("#jp-main-dock-panel")).to_be_visible(timeout=120_000)
    expect(page.locator(".jp-LauncherCard").first).to_be_visible(timeout=60_000)
    page.screenshot(path=ARTIFACTS / "swarm-browser-jupyterlab.png")
    mine = by_user(stack)[admin]
    assert mine.node != manager.name and len(mine.gpus) == 1, mine
    assert stack.sees(mine) == (list(mine.gpus), mine.gpus[0])
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(hub.stop, [admin, *fillers]))
