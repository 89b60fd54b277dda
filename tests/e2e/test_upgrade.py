"""An upgrade of a running deployment from an older release to this working tree, and the
rollback, on the real engine (`make upgrade` / `make rollback`: scripts/upgrade.sh).

The previous release is the last main of 2026-11-22 (JupyterHub 5.5, before GPU time, GPU-hours,
HTTPS and Swarm): a `git worktree` of that commit, its images built from its own Dockerfiles
under their own tags (kept between runs: the build is then skipped), started with its own compose
file under its own names and port (gpuhubup, 18100; not the shared e2e stack). It gets what a
deployment of it has: an admin who logs in, users with API tokens, a GPU server with a file in
its volume and an open kernel with a variable set, a pin, a drained GPU, a course from a roster
with a reservation, and the audit log of those. First an upgrade that fails half-way (the new
hub refuses a setting and never becomes healthy): the script rolls back by itself and everything
is as before. Then the upgrade to the working tree's hub and proxy, and every check; a change
made after the upgrade; the rollback, and every check again.

Runs in `make test` (about 40 s here with the old release's images kept from an earlier run; their
first build took 72 s more on this machine with the base layers cached).
"""
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import requests
import websocket
from consoleclient import Console, wait_for
from hubclient import ROOT, Hub, Stack, UserServer, read_env_file

from hub import __version__

OLD_COMMIT = "2af90426c7c29f45b714d2bae57480d08270ea35"  # main of 2026-11-22, JupyterHub 5.5.4
OLD_TAG = f"upgradetest-{OLD_COMMIT[:7]}"
NEW_TAG = "upgradetest-new"
PREFIX, PUBLISH = "gpuhubup", "127.0.0.1:18100"
TEST_SINGLEUSER = read_env_file(ROOT / "tests" / "e2e" / "stack.env")["SINGLEUSER_IMAGE"]
LOCAL_BASES = {"PYTHON_BASE_IMAGE": "local/python:3.11-bookworm", "DEBIAN_BASE_IMAGE": "local/debian:bookworm"}
STATE = "/srv/jupyterhub/state"
ROSTER = "username,course,role\ncarol,ml101,student\ndave,ml101,teacher\n"


class ReleaseStack(Stack):
    """A Stack whose compose commands run in another checkout (the old release's worktree); its
    down() also removes the volumes a newer release's compose file added (metrics-token)."""

    def down(self) -> None:
        super().down()
        out = self.docker("volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={self.prefix}")
        if out.stdout.split():
            self.docker("volume", "rm", "-f", *out.stdout.split(), check=False)

    def __init__(self, env_file: Path, root: Path, **overrides: str):
        super().__init__(env_file)
        self.root, self.overrides = root, overrides

    def compose(self, *args, check=True, timeout=300, **overrides):
        return subprocess.run(["docker", "compose", "--env-file", str(self.env_file), *args], cwd=self.root,
                              env={**os.environ, **self.overrides, **overrides}, capture_output=True, text=True,
                              check=check, timeout=timeout)


def docker(*args, check=True, timeout=120):
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=timeout)


def image_exists(name: str) -> bool:
    return docker("image", "inspect", name, check=False).returncode == 0


def in_kernel(server: UserServer, kernel_id: str, code: str, timeout: float = 60) -> str:
    """Run code in an open kernel (UserServer.execute starts and deletes its own) and return what
    it printed; the kernel stays open."""
    ws_url = server.base.replace("http://", "ws://") + f"api/kernels/{kernel_id}/channels"
    ws = websocket.create_connection(ws_url, header=[f"Authorization: token {server.token}"], timeout=timeout)
    try:
        msg_id = uuid.uuid4().hex
        ws.send(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test",
                       "session": uuid.uuid4().hex, "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                        "allow_stdin": False}}))
        output, deadline = [], time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = json.loads(ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "stream":
                output.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                raise AssertionError("kernel error: " + "\n".join(msg["content"]["traceback"]))
            elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                return "".join(output)
        raise TimeoutError(f"kernel {kernel_id} did not answer within {timeout}s")
    finally:
        ws.close()


@pytest.fixture(scope="module")
def work():
    tmp = Path(tempfile.mkdtemp(prefix="gpuhub-upgrade-"))
    yield tmp
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def old_release(work):
    """The old release's checkout, its images, and its stack running with no state yet."""
    checkout = work / "old"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(checkout), OLD_COMMIT],
                   check=True, capture_output=True, text=True, timeout=120)
    env_file = work / "deployment.env"
    bases = {k: v for k, v in LOCAL_BASES.items() if image_exists(v)}
    env_file.write_text("\n".join(f"{k}={v}" for k, v in {
        "HUB_NAME_PREFIX": PREFIX, "HUB_PUBLISH": PUBLISH, "HUB_ADMIN_USER": "admin",
        "HUB_ADMIN_PASSWORD": "upgrade-admin-password", "HUB_OPEN_SIGNUP": "false",
        "HUB_IMAGE": f"gpuhub/hub:{OLD_TAG}", "PROXY_IMAGE": f"gpuhub/proxy:{OLD_TAG}",
        "SINGLEUSER_IMAGE": f"gpuhub/pytorch-notebook:{OLD_TAG}", "TORCH_PACKAGES": "torch==2.13.0+cpu",
        "USER_MEM_LIMIT": "1536M", "USER_CPU_LIMIT": "1.5", "USER_SHM_SIZE": "256M", "SPAWN_TIMEOUT": "120",
        "HUB_LOG_LEVEL": "DEBUG", "HUB_PROFILES": str(checkout / "tests" / "e2e" / "profiles.yaml"),
        "CULL_IDLE_TIMEOUT": "0", **bases}.items()) + "\n")
    stack = ReleaseStack(env_file, checkout)
    try:
        missing = [i for i in ("hub", "proxy", "pytorch-notebook") if not image_exists(f"gpuhub/{i}:{OLD_TAG}")]
        if missing:  # its own Dockerfiles; the CPU wheel of the test images, as its test-images did
            wheelhouse = checkout / "images" / "singleuser" / "wheelhouse"
            for wheel in (ROOT / "images" / "singleuser" / "wheelhouse").glob("torch-2.13.0+cpu-*.whl"):
                shutil.copy(wheel, wheelhouse / wheel.name)
            stack.compose("--profile", "images", "build", timeout=1800)
        stack.down()
        stack.up()
        yield stack
    finally:
        try:
            (ROOT / "tests" / "artifacts").mkdir(exist_ok=True)
            (ROOT / "tests" / "artifacts" / "test_upgrade.log").write_text(stack.logs())
        except Exception:
            pass
        stack.down()
        for meta_file in work.glob("*/*/meta"):  # the images each upgrade kept for its rollback
            meta = dict(line.split("=", 1) for line in meta_file.read_text().splitlines())
            docker("image", "rm", meta["hub_rollback_image"], meta["proxy_rollback_image"], check=False)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(checkout)],
                       capture_output=True, timeout=120)


def snapshot(stack: Stack, server: UserServer, kernel_id: str, console: Console) -> dict:
    """What must be the same after the upgrade and after the rollback."""
    # the proxy may be new: the hub re-adds the server's route at its start (or its route guard)
    wait_for(lambda: server.get("api/status").status_code == 200, timeout=60, what="alice's server through the proxy")
    info = stack.inspect(stack.container_of("alice"))
    files = console.files()
    return {
        "container": info["Id"], "started": info["State"]["StartedAt"], "running": info["State"]["Running"],
        "gpu": info["Config"]["Labels"].get("gpuhub.gpu.uuid"),
        "mounts": sorted((m.get("Name") or m["Source"], m["Destination"]) for m in info["Mounts"]),
        "volumes": sorted(stack.user_volumes()),
        "file": server.read_text("upgrade-note.txt"),
        "kernel": in_kernel(server, kernel_id, "print(x, flush=True)").strip(),
        "intent": files[0], "audit": files[1],
    }


def admin_logs_in(stack: Stack) -> None:
    stack.admin_session()  # asserts the 302 of a good password


def run_script(*args, env_file: Path, backups: Path, **env) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "upgrade.sh"), *args], cwd=ROOT, capture_output=True, text=True,
        timeout=900, env={**os.environ, "COMPOSE": f"docker compose --env-file {env_file}", "ENV_FILE": str(env_file),
                          "BACKUP_ROOT": str(backups), **env})
    print(result.stdout, result.stderr)
    return result


def test_upgrade_from_an_older_release_keeps_everything_and_rolls_back(old_release, work):
    stack = old_release
    old_hub_image = stack.inspect(f"{PREFIX}-hub-1")["Image"]
    token = stack.admin_token()
    hub = Hub(stack.url, token)
    console = Console(stack, token)

    # --- what a deployment of the old release has
    for name in ("alice", "bob"):
        hub.create_user(name)
    r = hub.api("POST", "/users/alice/tokens", json={"note": "upgrade test", "expires_in": 7200})
    assert r.status_code == 201, r.text
    alice_token = r.json()["token"]
    server = UserServer(stack.url, hub.start("alice")["url"], alice_token)  # the default profile: a GPU
    server.put_text("upgrade-note.txt", "written before the upgrade\n")
    r = server.s.post(server.base + "api/kernels", json={"name": "python3"}, timeout=60)
    assert r.status_code == 201, r.text
    kernel_id = r.json()["id"]
    assert in_kernel(server, kernel_id, "x = 6 * 7\nprint(x)").strip() == "42"

    gpus = console.ok("GET", "gpus")["gpus"]
    alice_gpu = stack.inspect(stack.container_of("alice"))["Config"]["Labels"]["gpuhub.gpu.uuid"]
    others = [g["uuid"] for g in gpus if g["uuid"] != alice_gpu]
    assert len(others) >= 2, gpus
    console.ok("POST", "pins", {"user": "bob", "gpu": others[0], "note": "thesis"})
    console.ok("POST", "drained", {"gpu": others[1], "note": "fan noise"})
    console.ok("POST", "courses/roster", {"roster": ROSTER})
    start = time.time() + 86400
    console.call("POST", "reservations", {"course": "ml101", "gpus": 1, "start": start, "end": start + 7200})
    reservations = console.ok("GET", "reservations")["reservations"]
    assert len(reservations) == 1, reservations
    before = snapshot(stack, server, kernel_id, console)
    assert before["running"] and before["gpu"] == alice_gpu and before["kernel"] == "42"
    assert len(before["audit"].splitlines()) >= 4  # pin, drain, roster, reservation

    new_images = {"HUB_IMAGE": f"gpuhub/hub:{NEW_TAG}", "PROXY_IMAGE": f"gpuhub/proxy:{NEW_TAG}",
                  "SINGLEUSER_IMAGE": TEST_SINGLEUSER,
                  **{k: v for k, v in LOCAL_BASES.items() if image_exists(v)},
                  "GPUHUB_UPGRADE_BUILD": f"docker compose --env-file {stack.env_file} build hub proxy"}

    # --- an upgrade that fails half-way: the new hub refuses a setting the old one never read,
    # so it never becomes healthy; the script rolls back by itself
    result = run_script("upgrade", env_file=stack.env_file, backups=work / "failed", PREVIOUS=OLD_COMMIT,
                        GPU_WHEN_FULL="sometimes", WAIT_TIMEOUT="40", **new_images)
    assert result.returncode == 1 and "the new hub did not come up: rolling back" in result.stderr, result.stderr[-3000:]
    assert "Rolled back: project gpuhubup" in result.stdout
    assert stack.inspect(f"{PREFIX}-hub-1")["Image"] == old_hub_image
    console = Console(stack, token)
    assert snapshot(stack, server, kernel_id, console) == before
    admin_logs_in(stack)

    # --- the upgrade to the working tree
    backups = work / "backups"
    started = time.monotonic()
    result = run_script("upgrade", env_file=stack.env_file, backups=backups, PREVIOUS=OLD_COMMIT, **new_images)
    upgrade_seconds = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Done: project gpuhubup runs " + __version__ in result.stdout
    assert "Backing up /srv/jupyterhub/state/jupyterhub.sqlite" in result.stdout  # JupyterHub 5.5 -> 6.1 migration
    assert "users' servers: 1 ran before, 1 run now" in result.stdout
    (backup,) = backups.iterdir()
    assert oct(backup.stat().st_mode & 0o777) == "0o700"
    assert oct((backup / "state.tar.gz").stat().st_mode & 0o777) == "0o600"
    listed = (backup / "state.list").read_text().splitlines()
    for path in ("hub-state/jupyterhub.sqlite", "hub-state/jupyterhub_cookie_secret", "hub-state/admin-password",
                 "hub-state/gpu-intent.json", "hub-state/gpu-audit.jsonl", "proxy-token/token"):
        assert path in listed, (path, listed)

    new_hub = stack.inspect(f"{PREFIX}-hub-1")
    labels = docker("image", "inspect", new_hub["Image"], "--format", "{{json .Config.Labels}}").stdout
    assert json.loads(labels)["org.opencontainers.image.version"] == __version__
    assert f'id="gpuhub-version">gpuhub {__version__}<' in requests.get(f"{stack.url}/hub/login", timeout=10).text
    console = Console(stack, token)
    upgraded = snapshot(stack, server, kernel_id, console)
    assert upgraded["intent"] and json.loads(upgraded["intent"]) == json.loads(before["intent"])
    assert upgraded["audit"].startswith(before["audit"])
    for key in ("container", "started", "running", "gpu", "mounts", "volumes", "file", "kernel"):
        assert upgraded[key] == before[key], (key, before[key], upgraded[key])
    admin_logs_in(stack)
    assert hub.user("alice")["servers"][""]["ready"]  # the old API token, the migrated database
    state = console.ok("GET", "gpus")
    assert state["pins"] == {"bob": others[0]}
    assert [g["uuid"] for g in state["gpus"] if g["drained"]] == [others[1]]
    assert any(h["user"] == "alice" for g in state["gpus"] if g["uuid"] == alice_gpu for h in g["holders"])
    assert console.ok("GET", "reservations")["reservations"] == reservations
    courses = {c["name"]: c for c in console.ok("GET", "courses")["courses"]}
    assert set(courses["ml101"]["students"]) == {"carol"}, courses
    usage = console.ok("GET", "usage/users/alice")  # GPU-hours of the new release, on the old state
    assert usage, usage

    # a change after the upgrade: gone after the rollback, which restores the backup
    console.ok("POST", "pins", {"user": "carol", "gpu": others[0], "note": "after the upgrade"})

    # --- the rollback
    started = time.monotonic()
    result = run_script("rollback", str(backup), env_file=stack.env_file, backups=backups)
    rollback_seconds = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"git checkout {OLD_COMMIT}" in result.stdout
    assert stack.inspect(f"{PREFIX}-hub-1")["Image"] == old_hub_image
    assert 'id="gpuhub-version"' not in requests.get(f"{stack.url}/hub/login", timeout=10).text
    wait_for(lambda: hub.api("GET", "/users/alice").status_code == 200, timeout=60, what="the old hub's API")
    console = Console(stack, token)
    rolled_back = snapshot(stack, server, kernel_id, console)
    for key, value in before.items():
        assert rolled_back[key] == value, (key, value, rolled_back[key])
    admin_logs_in(stack)
    assert hub.user("alice")["servers"][""]["ready"]
    assert console.ok("GET", "pins")["pins"] == {"bob": others[0]}
    print(json.dumps({"upgrade_seconds": round(upgrade_seconds, 1), "rollback_seconds": round(rollback_seconds, 1)}))

