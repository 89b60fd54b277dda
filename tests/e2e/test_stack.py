"""The deployment for real: compose stack, a user's server started through the hub's API,
asserted on the real container, a real kernel and the contents API."""
import json

import pytest
import requests

from hubclient import UserServer

# A username that needs the safe naming (dots, '@'), the way an OAuth login would give it.
USER = "alice.smith@example.org"

# Runs gpuhub-singleuser in-process on port 8890 with the given arguments; once the server
# answers, prints which modules it should not have loaded did load, and which of the
# launcher's lazy modules and deferred packages were loaded in full.
LEAN_START_PROBE = """
import importlib.util, json, os, runpy, sys, threading, time, urllib.request
launcher = runpy.run_path("/usr/local/bin/gpuhub-singleuser")
def probe():
    url = f"http://127.0.0.1:8890{os.environ['JUPYTERHUB_SERVICE_PREFIX']}api"
    for _ in range(600):
        try:
            urllib.request.urlopen(url, timeout=1).read()
            break
        except OSError:
            time.sleep(0.05)
    else:
        print(json.dumps({"answered": False})); os._exit(1)
    never = ("jupyterhub.handlers.base", "alembic", "sqlalchemy.orm", "sqlalchemy.engine", "IPython", "jupyter_lsp")
    lazy = [m for m in launcher["LAZY_MODULES"] if m in sys.modules and type(sys.modules[m]) is not importlib.util._LazyModule]
    deferred = [m for m in launcher["DEFERRED_PACKAGES"] if "__getattr__" not in vars(sys.modules[m])]
    print(json.dumps({"answered": True, "loaded": [m for m in never if m in sys.modules], "not_lazy": lazy + deferred}), flush=True)
    os._exit(0)
threading.Thread(target=probe, daemon=True).start()
sys.argv = ["gpuhub-singleuser", *sys.argv[1:], "--port=8890"]
launcher["main"]()
"""


def test_only_the_proxy_is_published_and_answers(stack):
    r = requests.get(f"{stack.url}/hub/login", timeout=10)
    assert r.status_code == 200
    assert 'name="username"' in r.text
    published = stack.docker("ps", "--filter", f"label=com.docker.compose.project={stack.prefix}",
                             "--format", "{{.Names}} {{.Ports}}").stdout.splitlines()
    with_host_port = [line for line in published if "->" in line]
    assert len(with_host_port) == 1 and "proxy" in with_host_port[0], published


def test_secrets_are_generated_private_and_not_in_images(stack):
    state = stack.compose("exec", "-T", "hub", "stat", "-c", "%a %U %n",
                          "/srv/jupyterhub/state/jupyterhub_cookie_secret",
                          "/srv/jupyterhub/state/admin-password").stdout.split("\n")
    assert all(line.startswith("600 jupyterhub ") for line in state if line), state
    # The hub process itself runs as the unprivileged 'jupyterhub' user (uid 990)
    hub_container = stack.compose("ps", "-q", "hub").stdout.strip()
    processes = stack.docker("top", hub_container, "-o", "pid,uid,args").stdout.splitlines()
    assert any(line.split()[1] == "990" and "jupyterhub -f" in line for line in processes), processes
    for image in (stack.env["HUB_IMAGE"], stack.env["PROXY_IMAGE"]):
        listing = stack.docker("run", "--rm", "--entrypoint", "sh", image, "-c",
                               "ls /srv/jupyterhub/state /run/proxy-token 2>/dev/null; true").stdout
        assert "cookie" not in listing and "token" not in listing, f"secret baked into {image}: {listing}"


@pytest.mark.needs_gpus(1)
def test_user_server_limits_kernel_and_persistent_files(stack, hub):
    hub.create_user(USER)
    server = hub.start(USER)
    container = stack.container_of(USER)
    info = stack.inspect(container)
    host = info["HostConfig"]

    # Limits as configured in stack.env
    assert host["Memory"] == 1536 * 2**20
    assert host["CpuQuota"] / host["CpuPeriod"] == 1.5
    assert host["ShmSize"] == 256 * 2**20
    assert host["PidsLimit"] == 512
    assert host["AutoRemove"] is True
    assert host["CapDrop"] == ["ALL"] and "no-new-privileges=true" in host["SecurityOpt"]
    assert "/proc/driver/nvidia/gpus" in host["MaskedPaths"] and "/proc/kcore" in host["MaskedPaths"]
    # One GPU of its own where the engine has GPUs (tests/e2e/test_gpus.py covers the rest)
    assert len(host.get("DeviceRequests") or []) == 1
    assert info["Config"]["Labels"]["gpuhub.user"] == USER
    # Safe, collision-free names derived from the username
    assert container.startswith(f"{stack.prefix}-alice-smith-example-org---")
    # Runs as jovyan (1000:100), with its work volume mounted at the notebook dir
    assert stack.docker("exec", container, "id", "-u").stdout.strip() == "1000"
    assert stack.docker("exec", container, "id", "-g").stdout.strip() == "100"
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    work = mounts["/home/jovyan/work"]
    assert work["Type"] == "volume" and work["Name"] == container.replace(stack.prefix, f"{stack.prefix}-user", 1)
    assert stack.docker("exec", container, "stat", "-c", "%u", "/home/jovyan/work").stdout.strip() == "1000"

    # Started by the image's lean command, without jupyter_lsp and notebook_shim
    # (GPUDockerSpawner.server_extensions_off)
    command = info["Config"]["Cmd"]
    assert command[0] == "gpuhub-singleuser", command
    assert "--ServerApp.jpserver_extensions={'jupyter_lsp': False, 'notebook_shim': False}" in command, command
    log = stack.docker("logs", container).stderr
    assert "jupyterlab | extension was successfully loaded" in log, log[-3000:]
    assert "jupyter_lsp | extension was successfully loaded" not in log, log[-3000:]
    # ... and a second server started the same way in the container (the user's env, the real
    # hub, another port) has, once it answers, left its lazy modules unloaded and never
    # imported the hub's database layer, SQLAlchemy's engine or IPython
    lean = stack.docker("exec", container, "python", "-c", LEAN_START_PROBE, *command[1:], check=False)
    assert lean.returncode == 0, lean.stderr[-3000:]
    assert json.loads(lean.stdout.strip().splitlines()[-1]) == {"answered": True, "loaded": [], "not_lazy": []}, lean

    user = UserServer(stack.url, server["url"], hub.s.headers["Authorization"].split()[1])
    # A real kernel imports torch and reports its version
    out = user.execute("import torch, os; print(torch.__version__, os.getuid(), torch.cuda.is_available())")
    assert out.split() == [stack.env["TORCH_PACKAGES"].split("==")[1], "1000", "False"]
    # A terminal opens (a shell through jupyter_server_terminals and terminado)
    r = user.s.post(user.base + "api/terminals", timeout=30)
    assert r.status_code == 200 and r.json()["name"], r.text
    assert user.s.delete(user.base + f"api/terminals/{r.json()['name']}", timeout=30).status_code == 204
    # gpu-check gives its verdict for the CPU build of torch
    check = stack.docker("exec", container, "gpu-check", check=False)
    assert check.returncode == 1 and "CPU-only build" in check.stdout, check.stdout

    # A file written through the contents API survives stop (container removed) and start
    user.put_text("notes.txt", "kept across restarts\n")
    hub.stop(USER)
    assert container not in stack.docker("ps", "-a", "--format", "{{.Names}}").stdout.split()
    assert work["Name"] in stack.user_volumes()
    server = hub.start(USER)
    assert user.read_text("notes.txt") == "kept across restarts\n"
    hub.stop(USER)
