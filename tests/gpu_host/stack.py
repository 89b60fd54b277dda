#!/usr/bin/env python3
"""The whole stack on a GPU host: the real hub (JupyterHub with hub.hub_process.spawner.GPUDockerSpawner),
the real configurable-http-proxy, single-user servers with the host's PyTorch, the GPU console.

What it proves, for any number of GPUs (N = the GPUs no other container holds):
  - N users started through the hub's REST API each get a GPU of their own; a kernel in each
    (Jupyter kernel protocol over a websocket, through the proxy) reports
    torch.cuda.get_device_properties(0).uuid and sees exactly that one GPU;
  - its bf16 matmul runs at >= 0.97x the host's speed on the same GPU (tests/gpu_host/matmul.py,
    the same code on the host and in the kernel, rounds alternating);
  - user N+1 is refused: 503 with the spawner's message;
  - the GPU console (its REST API, NVML sampled on the host) shows every holder with the GPU's
    real utilisation while the kernels load their GPUs;
  - a hub restart keeps every server, container, GPU and kernel; user N+1 is still refused;
  - stopping one user's server frees its GPU: user N+1 then starts, on that GPU.
Prints one JSON summary (and writes it to $OUT/gpu_host_stack.json when OUT is set).

On the GPU test machine (no registry, no package index, no Node.js, no Docker of its own):
prepare the kit on a machine with pip, npm and apt first, `bash tests/gpu_host/prepare_stack_kit.sh`
(it fills .gpukit/, 55 MB, and .gpunode/, 22 MB, both git-ignored). Where at most 64 MiB can be
sent to the GPU machine at a time, send them in two commands, the second while the machine still
has what the first left (the engine, the image, /tmp/gpuhost):

    1. with .gpukit:  bash .gpukit/start-docker.sh && python3 tests/gpu_host/stack.py prepare
    2. with .gpunode: python3 tests/gpu_host/stack.py run

`prepare` unpacks the Python packages, builds the single-user image gpuhost/singleuser:1 FROM
gpukit/hostroot:1 (the host's Python and PyTorch through read-only binds, plus the packages
and the project's gpuhub-singleuser launcher) and picks the network: a bridge network as in
production if the engine can make one that the host and containers reach each other on, else
the host's. `run` does the rest and removes what it made. `all` does both in one call.

Dry run on a machine with fake GPUs (../shared/engine/fake-gpus.sh; no CUDA there, so no
benchmark and no NVML usage), with this machine's Python and the kit's Node.js:

    bash tests/gpu_host/prepare_stack_kit.sh --local     # the packages for this Python
    GPUHOST_LOCAL=1 GPUHOST_SITE=/tmp/gpuhost-local/site GPUHOST_WORK=/tmp/gpuhost-local/work \
      python3 tests/gpu_host/stack.py all
    GPUHOST_LOCAL=1 python3 tests/gpu_host/stack.py clean     # also removes the images

(GPUHOST_NODE=/usr/bin/node GPUHOST_CHP=<a node_modules with configurable-http-proxy> use a
Node.js of the machine's own instead; GPUHOST_NETWORK=host or =bridge forces the network.)

Everything it makes is named gpuhost-* (containers, volumes, network) or gpuhost/* (images).
"""
from __future__ import annotations

import concurrent.futures
import io
import json
import statistics
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
import uuid as uuidlib
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
WORK = Path(os.environ.get("GPUHOST_WORK", "/tmp/gpuhost"))
LOCAL = os.environ.get("GPUHOST_LOCAL") == "1"  # a dry run on fake GPUs
PREFIX = "gpuhost"
IMAGE = "gpuhost/singleuser:1"
NETWORK = f"{PREFIX}-net"
LABEL = "gpuhub"  # the spawner's label prefix (GPUDockerSpawner.label_prefix)
KIT_SITE = Path("/tmp/site")  # where .gpukit/start-docker.sh installs the docker package
SITE = Path(os.environ.get("GPUHOST_SITE") or WORK / "site")
ROUNDS = 5  # benchmark rounds, host and kernels alternating; compared by their medians
LOAD_S = 14  # seconds of matmuls in every kernel while the console is read
T0 = time.monotonic()

for p in (ROOT, KIT_SITE, SITE):  # SITE first, then the kit's docker package, then hub/
    if p.is_dir() and str(p) not in sys.path:
        sys.path.insert(0, str(p))
sys.path.append(str(ROOT / "tests" / "e2e"))
from kernelproto import channels_url, run_code  # noqa: E402  (standard library only)


def log(*args) -> None:
    print(f"[gpuhost {time.monotonic() - T0:7.1f}s]", *args, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def python_path() -> str:
    return ":".join(str(p) for p in (SITE, KIT_SITE, ROOT) if p.is_dir())


# ---- prepare: packages, the single-user image, the network ---------------------------------

def unpack(archive: Path, dest: Path) -> None:
    if not archive.is_file():
        sys.exit(f"{archive} is missing: run tests/gpu_host/prepare_stack_kit.sh here, and carry it along")
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    subprocess.run(["tar", "-xJf", str(archive), "-C", str(dest)], check=True)


def skeleton_image(client) -> str:
    """Dry run only: what .gpukit/start-docker.sh makes on the GPU machine (gpukit/hostroot:1),
    an empty root to run the host's own programs in through read-only binds."""
    tag = f"{PREFIX}/hostroot:local"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ["proc", "sys", "dev", "etc", "tmp", "usr", "opt", "root", "home", "run", "var/tmp"]:
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d in ("tmp", "var/tmp") else 0o755
            tar.addfile(info)
        for d in ["bin", "lib", "lib64", "sbin"]:
            info = tarfile.TarInfo(d)
            if os.path.islink(f"/{d}"):
                info.type, info.linkname = tarfile.SYMTYPE, os.readlink(f"/{d}")
            elif os.path.isdir(f"/{d}"):
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            else:
                continue
            tar.addfile(info)
    client.api.import_image_from_data(buf.getvalue(), repository=f"{PREFIX}/hostroot", tag="local")
    return tag


def host_binds() -> dict:
    """The host's directories, read-only at the same paths, with this Python's installation."""
    if not LOCAL and Path("/etc/gpukit-binds.json").is_file():
        binds = json.loads(Path("/etc/gpukit-binds.json").read_text())
    else:
        binds = {p: {"bind": p, "mode": "ro"} for p in ["/usr", "/lib", "/lib64", "/bin", "/sbin", "/etc", "/opt"]
                 if os.path.isdir(p) and not os.path.islink(p)}
    for p in {sys.prefix, sys.base_prefix}:  # e.g. a Python under /root (pyenv)
        if not any(p == b or p.startswith(b.rstrip("/") + "/") for b in binds):
            binds[p] = {"bind": p, "mode": "ro"}
    return binds


DOCKERFILE = """\
FROM {base}
COPY site /srv/gpuhost/site
COPY bin /srv/gpuhost/bin
COPY etc /srv/gpuhost/etc
COPY --chown=1000:100 home /home
ENV PYTHONPATH=/srv/gpuhost/site PYTHONUNBUFFERED=1 HOME=/home/jovyan USER=jovyan SHELL=/bin/bash \\
    JUPYTER_CONFIG_PATH=/srv/gpuhost/etc/jupyter \\
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \\
    PATH=/srv/gpuhost/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
LABEL gpuhub.singleuser-command=/srv/gpuhost/bin/gpuhub-singleuser
USER 1000:100
WORKDIR /home/jovyan/work
EXPOSE 8888
CMD ["{python}", "-m", "jupyterhub.singleuser"]
"""


def build_image(client, base: str) -> dict:
    """gpuhost/singleuser:1: the host's Python (and PyTorch) through the binds, the packages in
    /srv/gpuhost/site, and the single-user image's own launcher (images/singleuser/
    gpuhub_singleuser.py, named by the same label) with the host's Python in its #! line."""
    t0 = time.monotonic()
    launcher = (ROOT / "images/singleuser/gpuhub_singleuser.py").read_text().split("\n", 1)[1]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        def add_bytes(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))

        def add_dir(name: str) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)

        add_bytes("Dockerfile", DOCKERFILE.format(base=base, python=sys.executable).encode())
        add_bytes("bin/gpuhub-singleuser", f"#!{sys.executable}\n{launcher}".encode(), 0o755)
        # gpu-park, as the single-user image has it on its PATH (parking: tests/gpu_host/park_stack.py)
        park = (ROOT / "images/singleuser/gpu_park.py").read_text().split("\n", 1)[1]
        add_bytes("bin/gpu-park", f"#!{sys.executable}\n{park}".encode(), 0o755)
        for d in ("home", "home/jovyan", "home/jovyan/work", "etc", "etc/jupyter"):
            add_dir(d)
        tar.add(SITE, arcname="site")
        # the warm kernel, as the single-user image has it (tests/gpu_host/instant_stack.py): its
        # package on the path, its kernel manager and server extension in the server's config
        warm = ROOT / "images/singleuser/gpuhub_warm"
        add_dir("site/gpuhub_warm")
        for f in sorted(warm.glob("*.py")):
            add_bytes(f"site/gpuhub_warm/{f.name}", f.read_bytes())
        config = json.loads((ROOT / "images/singleuser/jupyter_server_config.json").read_text())["ServerApp"]
        add_bytes("etc/jupyter/jupyter_server_config.json", json.dumps({"ServerApp": {
            "jpserver_extensions": {"gpuhub_warm": True},
            "kernel_manager_class": config["kernel_manager_class"]}}, indent=1).encode())
    buf.seek(0)
    log(f"building {IMAGE} FROM {base} (context {buf.getbuffer().nbytes / 2**20:.0f} MiB)")
    for event in client.api.build(fileobj=buf, custom_context=True, tag=IMAGE, rm=True, forcerm=True, decode=True):
        if "error" in event:
            raise RuntimeError(f"building {IMAGE}: {event['error']}")
    image = client.images.get(IMAGE)
    return {"tag": IMAGE, "base": base, "id": image.id, "size_mib": round(image.attrs["Size"] / 2**20),
            "build_s": round(time.monotonic() - t0, 1)}


PROBE = """
import socket, sys
srv = socket.socket(); srv.bind(("0.0.0.0", 8899)); srv.listen(1); srv.settimeout(20)
out = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10); out.sendall(b"from-container"); out.close()
conn, _ = srv.accept(); conn.sendall(b"to-host"); conn.close()
"""


def choose_network(client, binds: dict, base: str) -> dict:
    """Production's topology (a bridge network, servers reached at their own address, the hub at
    the network's gateway) if the engine makes one the host and a container reach each other
    on; else the host's network. GPUHOST_NETWORK=bridge|host forces one."""
    import docker

    wanted = os.environ.get("GPUHOST_NETWORK", "auto")
    for c in client.containers.list(all=True, filters={"label": "gpuhost=1"}):
        c.remove(force=True)
    remove_network(client)
    if wanted == "host":
        return {"mode": "host", "reason": "GPUHOST_NETWORK=host"}
    t0 = time.monotonic()
    container = None
    try:
        gateway = create_network(client)
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((gateway, 0))
        listener.listen(1)
        listener.settimeout(20)
        container = client.containers.create(
            base, [sys.executable, "-c", PROBE, gateway, str(listener.getsockname()[1])],
            name=f"{PREFIX}-netprobe", network=NETWORK, volumes=binds, labels={"gpuhost": "1"})
        container.start()
        conn, _ = listener.accept()
        got_in = conn.recv(100)
        conn.close()
        ip = client.api.inspect_container(container.id)["NetworkSettings"]["Networks"][NETWORK]["IPAddress"]
        with socket.create_connection((ip, 8899), timeout=10) as s:
            got_out = s.recv(100)
        if (got_in, got_out) != (b"from-container", b"to-host"):
            raise RuntimeError(f"probe got {got_in!r}, {got_out!r}")
        return {"mode": "bridge", "name": NETWORK, "gateway": gateway, "probe_s": round(time.monotonic() - t0, 1)}
    except (docker.errors.APIError, OSError, RuntimeError, KeyError, IndexError) as exc:
        if wanted == "bridge":
            raise
        remove_network(client)
        logs = container.logs().decode(errors="replace")[-300:] if container else ""
        return {"mode": "host", "reason": f"no bridge network: {type(exc).__name__}: {exc} {logs}".strip()}
    finally:
        if container is not None:
            container.remove(force=True)


def create_network(client) -> str:
    """The run's bridge network; its gateway (the host's address on it)."""
    client.networks.create(NETWORK, driver="bridge", labels={"gpuhost": "1"})
    return client.api.inspect_network(NETWORK)["IPAM"]["Config"][0]["Gateway"]


def remove_network(client) -> None:
    import docker

    try:
        client.networks.get(NETWORK).remove()
    except docker.errors.NotFound:
        pass


def prepare() -> dict:
    import docker

    t0 = time.monotonic()
    WORK.mkdir(parents=True, exist_ok=True)
    if not os.environ.get("GPUHOST_SITE"):
        unpack(ROOT / ".gpukit/gpuhost-site.tar.xz", WORK)  # -> WORK/site
    sys.path.insert(0, str(SITE))
    client = docker.from_env()
    base = skeleton_image(client) if LOCAL else "gpukit/hostroot:1"
    binds = host_binds()
    (WORK / "binds.json").write_text(json.dumps(binds, indent=1))
    image = build_image(client, base)
    network = choose_network(client, binds, base)
    log("network:", network)
    stage = {"image": image, "network": network, "binds": sorted(binds), "python": sys.executable,
             "prepare_s": round(time.monotonic() - t0, 1), "time": time.time()}
    (WORK / "stage1.json").write_text(json.dumps(stage, indent=1))
    return stage


# ---- the hub's REST API, the proxy, kernels ------------------------------------------------

class HubAPI:
    def __init__(self, url: str, token: str):
        import requests

        self.url, self.s = url, requests.Session()
        self.s.headers["Authorization"] = f"token {token}"

    def api(self, method: str, path: str, **kwargs):
        return self.s.request(method, f"{self.url}/hub/api{path}", timeout=60, **kwargs)

    def user(self, name: str) -> dict:
        r = self.api("GET", f"/users/{quote(name, safe='')}")
        r.raise_for_status()
        return r.json()

    def server(self, name: str) -> dict | None:
        return self.user(name)["servers"].get("")

    def start(self, name: str) -> tuple[int, str]:
        r = self.api("POST", f"/users/{quote(name, safe='')}/server")
        if r.status_code < 400 or not r.content:
            return r.status_code, ""
        try:
            return r.status_code, r.json().get("message", "")
        except ValueError:  # not the hub's JSON (e.g. the proxy's page while the hub is down)
            return r.status_code, r.text[:300]

    def wait(self, name: str, ready: bool, timeout: float = 180) -> float:
        t0 = time.monotonic()
        while True:
            server = self.server(name)
            if ready and server and server["ready"]:
                return time.monotonic() - t0
            if not ready and not server:
                return time.monotonic() - t0
            if ready and not server:
                raise RuntimeError(f"the server of {name} is gone (its start failed): see the hub's log")
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"the server of {name} is not {'ready' if ready else 'stopped'} after {timeout}s: {server}")
            time.sleep(0.2)

    def stop(self, name: str) -> float:
        t0 = time.monotonic()
        r = self.api("DELETE", f"/users/{quote(name, safe='')}/server")
        if r.status_code not in (202, 204):
            raise RuntimeError(f"stop {name}: {r.status_code} {r.text}")
        self.wait(name, ready=False, timeout=120)
        return time.monotonic() - t0

    def token_for(self, name: str) -> str:
        r = self.api("POST", f"/users/{quote(name, safe='')}/tokens", json={"note": "gpuhost", "expires_in": 7200})
        r.raise_for_status()
        return r.json()["token"]


class Kernel:
    """A kernel in a user's server, through the proxy: REST to start it, the websocket to run code."""

    def __init__(self, proxy_url: str, user: str, token: str):
        import requests

        self.user, self.token = user, token
        self.base = f"{proxy_url}/user/{quote(user, safe='')}/"
        self.s = requests.Session()
        self.s.headers["Authorization"] = f"token {token}"
        self.id, self.ws, self.session = None, None, uuidlib.uuid4().hex

    def start(self) -> None:
        r = self.s.post(self.base + "api/kernels", json={"name": "python3"}, timeout=60)
        if r.status_code != 201:
            raise RuntimeError(f"kernel for {self.user}: {r.status_code} {r.text[:300]}")
        self.id = r.json()["id"]
        self.connect()

    def connect(self) -> None:
        import websocket

        self.close()
        url = channels_url(self.base, self.id)
        self.ws = websocket.create_connection(url, header=[f"Authorization: token {self.token}"], timeout=300)

    def execute(self, code: str, timeout: float = 300) -> str:
        return run_code(self.ws, code, timeout, username=self.user, session=self.session, error=RuntimeError,
                        who=f"{self.user}'s kernel")

    def call(self, expression: str, timeout: float = 300):
        """The JSON value of an expression, printed by the kernel."""
        out = self.execute(f"import json as _j; print(_j.dumps({expression}))", timeout)
        return json.loads(out.strip().splitlines()[-1])

    def close(self) -> None:
        if self.ws is not None:
            try:
                self.ws.close()
            except Exception:  # noqa: BLE001 - closing after the hub or server went away
                pass
            self.ws = None


def kernel_setup_code() -> str:
    """Defines bench(), load() and sees() of tests/gpu_host/matmul.py in the kernel."""
    source = (HERE / "matmul.py").read_text()
    return ("_ns = {'__name__': 'gpuhost_matmul'}\n"
            f"exec(compile({source!r}, 'matmul.py', 'exec'), _ns)\n"
            "bench, load, sees = _ns['bench'], _ns['load'], _ns['sees']\n")


# ---- the run ---------------------------------------------------------------------------------

class Stack:
    def __init__(self, stage: dict):
        import docker

        self.stage = stage
        self.client = docker.from_env()
        self.network = dict(stage["network"])
        if self.network["mode"] == "bridge":  # the last run's cleanup removed it: one run after another
            try:
                self.client.networks.get(NETWORK)
            except docker.errors.NotFound:
                self.network["gateway"] = create_network(self.client)
        self.state = WORK / "state"
        shutil.rmtree(self.state, ignore_errors=True)
        self.state.mkdir(parents=True)
        self.ports = {k: free_port() for k in ("proxy", "proxy_api", "hub", "console")}
        self.proxy_token, self.admin_token = secrets.token_hex(32), secrets.token_hex(32)
        self.proxy_url = f"http://127.0.0.1:{self.ports['proxy']}"
        self.hub_proc = self.proxy_proc = None
        self.hub_log = open(WORK / "hub.log", "wb")
        self.hub = HubAPI(self.proxy_url, self.admin_token)

    # -- the proxy --
    def node(self) -> tuple[list[str], dict, str]:
        """(command prefix, environment, version) of Node.js running configurable-http-proxy."""
        if os.environ.get("GPUHOST_NODE"):
            node, chp = os.environ["GPUHOST_NODE"], Path(os.environ["GPUHOST_CHP"])
            env = dict(os.environ)
        else:
            pack = WORK / "nodepack"
            unpack(ROOT / ".gpunode/node-chp.tar.xz", pack)
            node, chp = str(pack / "node/bin/node"), pack / "node_modules"
            env = {**os.environ, "LD_LIBRARY_PATH": str(pack / "node/lib")}
            # Debian's Node.js reads some built-in modules from /usr/share/nodejs
            # (a link made for this run, removed at its end; where that folder exists, node runs
            # in a mount namespace of its own with this kit's folder mounted over it)
            share, ours = Path("/usr/share/nodejs"), pack / "node/share/nodejs"
            if not share.exists() and not share.is_symlink():
                share.symlink_to(ours)
                self.linked_share = share
            elif share.resolve() != ours.resolve():
                node = ["unshare", "-m", "sh", "-c", f'mount --bind "{ours}" "{share}" && exec "$0" "$@"', node]
        node = [node] if isinstance(node, str) else node
        version = subprocess.run([*node, "--version"], env=env, capture_output=True, text=True)
        if version.returncode != 0:
            raise RuntimeError(f"node does not run: {version.stderr[-1000:]}")
        return [*node, str(chp / "configurable-http-proxy/bin/configurable-http-proxy")], env, version.stdout.strip()

    linked_share = None

    def start_proxy(self) -> dict:
        cmd, env, version = self.node()
        self.chp_script = cmd[-1]
        hub = f"http://127.0.0.1:{self.ports['hub']}"
        cmd += ["--ip", "127.0.0.1", "--port", str(self.ports["proxy"]), "--api-ip", "127.0.0.1",
                "--api-port", str(self.ports["proxy_api"]), "--default-target", hub,
                "--error-target", f"{hub}/hub/error"]
        self.proxy_proc = subprocess.Popen(cmd, env={**env, "CONFIGPROXY_AUTH_TOKEN": self.proxy_token},
                                           stdout=open(WORK / "proxy.log", "wb"), stderr=subprocess.STDOUT)
        import requests

        for _ in range(100):
            try:
                r = requests.get(f"http://127.0.0.1:{self.ports['proxy_api']}/api/routes", timeout=2,
                                 headers={"Authorization": f"token {self.proxy_token}"})
                if r.status_code == 200:
                    chp = json.loads((Path(self.chp_script).parents[1] / "package.json").read_text())["version"]
                    return {"node": version, "configurable_http_proxy": chp}
            except requests.RequestException:
                pass
            if self.proxy_proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError("configurable-http-proxy did not start: " + (WORK / "proxy.log").read_text()[-2000:])

    # -- the hub --
    def hub_env(self) -> dict:
        bridge = self.network["mode"] == "bridge"
        env = {**os.environ, "PYTHONPATH": python_path(), "GPUHOST_STATE": str(self.state),
               "GPUHOST_PREFIX": PREFIX, "GPUHOST_IMAGE": IMAGE, "GPUHOST_PYTHON": sys.executable,
               "GPUHOST_HUB_PORT": str(self.ports["hub"]), "GPUHOST_PROXY_PORT": str(self.ports["proxy"]),
               "GPUHOST_PROXY_API_PORT": str(self.ports["proxy_api"]), "GPUHOST_PROXY_TOKEN": self.proxy_token,
               "GPUHOST_ADMIN_TOKEN": self.admin_token, "GPUHOST_CONSOLE_PORT": str(self.ports["console"]),
               "GPUHOST_NETWORK": self.network["name"] if bridge else "host",
               "GPUHOST_HUB_BIND_IP": "0.0.0.0" if bridge else "127.0.0.1",
               "GPUHOST_HUB_CONNECT_IP": self.network["gateway"] if bridge else "127.0.0.1",
               "GPUHOST_BINDS_FILE": str(WORK / "binds.json")}
        return env

    def reap_services(self) -> list[int]:
        """Kill the hub-managed services (the GPU console with gpu-reclaim) that a hub left behind on
        this state directory, its own hub gone: a hub killed before it stopped them leaves them
        running, and a leftover gpu-reclaim acts on the next run's servers too (a dry run here
        warned each server twice). Returns their pids."""
        mark = f"GPUHUB_STATE_DIR={self.state}".encode()
        reaped = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if mark in (entry / "environ").read_bytes().split(b"\0"):
                    os.kill(int(entry.name), signal.SIGKILL)
                    reaped.append(int(entry.name))
            except (OSError, ProcessLookupError):
                pass
        if reaped:
            log(f"killed services a hub left behind: {reaped}")
        return reaped

    def start_hub(self) -> float:
        t0 = time.monotonic()
        self.reap_services()  # none of this state directory may run without its hub
        self.hub_log.write(f"\n===== hub start {datetime.now(timezone.utc).isoformat()} =====\n".encode())
        self.hub_log.flush()
        self.hub_proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(HERE / "jupyterhub_config.py")],
            cwd=self.state, env=self.hub_env(), stdout=self.hub_log, stderr=subprocess.STDOUT)
        import requests

        while time.monotonic() - t0 < 120:
            if self.hub_proc.poll() is not None:
                raise RuntimeError("the hub exited: " + self.hub_log_tail())
            try:
                if self.hub.api("GET", "/users").status_code == 200:
                    return round(time.monotonic() - t0, 2)
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise TimeoutError("the hub did not answer in 120 s: " + self.hub_log_tail())

    def stop_hub(self) -> float:
        t0 = time.monotonic()
        self.hub_proc.send_signal(signal.SIGTERM)
        try:
            self.hub_proc.wait(60)
        except subprocess.TimeoutExpired:
            self.hub_proc.kill()
            self.hub_proc.wait()
        return round(time.monotonic() - t0, 2)

    def hub_log_tail(self, n: int = 6000) -> str:
        self.hub_log.flush()
        return (WORK / "hub.log").read_bytes()[-n:].decode(errors="replace")

    # -- the engine's view --
    def containers(self) -> dict[str, dict]:
        """user -> {id, name, gpu (label), device_ids (request)} of this hub's running containers."""
        found = {}
        for c in self.client.api.containers(filters={"label": f"{LABEL}.instance={PREFIX}"}):
            info = self.client.api.inspect_container(c["Id"])
            labels = info["Config"]["Labels"]
            requests_ = info["HostConfig"].get("DeviceRequests") or []
            found[labels.get(f"{LABEL}.user")] = {
                "id": info["Id"][:12], "name": info["Name"].lstrip("/"), "gpu": labels.get(f"{LABEL}.gpu.uuid"),
                "device_requests": [{"driver": r.get("Driver"), "ids": r.get("DeviceIDs")} for r in requests_],
                "running": info["State"]["Running"], "command": info["Config"]["Cmd"][:1],
                "user": info["Config"]["User"], "network": info["HostConfig"]["NetworkMode"]}
        return found

    def held_elsewhere(self, gpus) -> set[str]:
        """GPUs that containers not of this run hold (label or device request by UUID/index)."""
        held = set()
        for c in self.client.api.containers():
            info = self.client.api.inspect_container(c["Id"])
            labels = info["Config"]["Labels"] or {}
            if labels.get(f"{LABEL}.instance") == PREFIX:
                continue
            names = [labels.get(f"{LABEL}.gpu.uuid") or ""]
            for r in info["HostConfig"].get("DeviceRequests") or []:
                names += [n.removeprefix("nvidia.com/gpu=") for i in r.get("DeviceIDs") or [] for n in i.split(",")]
                if (r.get("Count") or 0) < 0:
                    names += [g.uuid for g in gpus]
            held |= {g.uuid for g in gpus if g.uuid in names or str(g.index) in names}
        return held

    def console(self) -> dict | None:
        r = self.hub.s.get(f"{self.proxy_url}/services/gpu-console/api/gpus", timeout=30)
        return r.json() if r.status_code == 200 else None

    def wait_console(self, timeout: float = 60) -> dict:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            try:
                state = self.console()
                if state and (state["usage"]["source"] == "nvml" or LOCAL or time.monotonic() - t0 > 10):
                    return state
            except Exception:  # noqa: BLE001 - the service is still starting
                pass
            time.sleep(0.5)
        raise TimeoutError("the GPU console did not answer: " + self.hub_log_tail())

    def cleanup(self) -> None:
        import docker

        for c in self.client.api.containers(all=True, filters={"label": f"{LABEL}.instance={PREFIX}"}):
            try:
                self.client.api.remove_container(c["Id"], force=True)
            except docker.errors.APIError:
                pass
        for proc in (self.hub_proc, self.proxy_proc):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
        self.reap_services()
        for v in self.client.volumes.list(filters={"name": f"{PREFIX}-user-"}):
            try:
                v.remove(force=True)
            except docker.errors.APIError:
                pass
        remove_network(self.client)
        if self.linked_share is not None:
            self.linked_share.unlink()


def host_bench() -> dict[str, dict]:
    out = subprocess.run([sys.executable, str(HERE / "matmul.py")], capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"host benchmark failed: {out.stderr[-2000:]}")
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    return {r["uuid"]: r for r in rows}


def nvidia_smi() -> dict[str, dict]:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=uuid,utilization.gpu,memory.used",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=20)
    except FileNotFoundError:
        return {}
    rows = {}
    for line in out.stdout.strip().splitlines():
        uuid, util, mem = [x.strip() for x in line.split(",")]
        rows[uuid] = {"utilization_pct": int(util), "memory_used_mib": int(mem)}
    return rows


def norm(uuid: str | None) -> str:
    return (uuid or "").lower().removeprefix("gpu-")


def run(stage: dict) -> dict:
    from hub.gpus.inventory import discover

    summary: dict = {"what": "tests/gpu_host/stack.py: the real hub, spawner, proxy and console on a GPU host",
                     "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "mode": "fake GPUs (dry run)" if LOCAL else "real GPUs", "prepare": stage,
                     "timings_s": {}, "checks": {}}
    t, checks = summary["timings_s"], summary["checks"]
    stack = Stack(stage)
    kernels: dict[str, Kernel] = {}
    try:
        import docker
        import dockerspawner
        import ipykernel
        import jupyter_server
        import jupyterhub

        gpus, source = discover()
        summary["host"] = {"gpus": [{"index": g.index, "uuid": g.uuid, "name": g.name} for g in gpus],
                           "inventory_source": source, "python": sys.version.split()[0],
                           "engine": stack.client.version()["Version"]}
        summary["versions"] = {"jupyterhub": jupyterhub.__version__, "dockerspawner": dockerspawner.__version__,
                               "jupyter_server": jupyter_server.__version__, "ipykernel": ipykernel.__version__,
                               "docker_py": docker.__version__}
        if not LOCAL:
            import torch
            summary["host"]["torch"] = torch.__version__
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True)
            summary["host"]["driver"] = smi.stdout.strip().splitlines()[0] if smi.stdout.strip() else None
        busy = stack.held_elsewhere(gpus)
        free = [g for g in gpus if g.uuid not in busy]
        if not free:
            raise RuntimeError(f"no free GPU: all {len(gpus)} are held by other containers")
        users = [f"user{i}" for i in range(len(free))]
        extra = "waiting"
        summary["users"] = {"with_gpus": users, "one_too_many": extra,
                            "gpus_held_by_others_at_start": sorted(busy)}
        log(f"{len(gpus)} GPUs ({source}), {len(free)} free: users {users} + {extra}")

        summary["versions"].update(stack.start_proxy())
        t["hub_start"] = stack.start_hub()
        log(f"hub up in {t['hub_start']} s behind the proxy at {stack.proxy_url}")
        r = stack.hub.api("POST", "/users", json={"usernames": [*users, extra]})
        assert r.status_code == 201, r.text

        # N users at once, through the REST API
        def start(name):
            t0 = time.monotonic()
            code, message = stack.hub.start(name)
            if code not in (201, 202):
                raise RuntimeError(f"start {name}: {code} {message}")
            stack.hub.wait(name, ready=True)
            return round(time.monotonic() - t0, 2)

        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(len(users)) as pool:
            t["server_start"] = dict(zip(users, pool.map(start, users)))
        t["all_servers_ready"] = round(time.monotonic() - t0, 2)
        held = stack.containers()
        summary["containers"] = held
        log("servers ready:", t["server_start"])

        # a kernel in each, through the proxy
        setup = kernel_setup_code()

        def open_kernel(name):
            t0 = time.monotonic()
            k = Kernel(stack.proxy_url, name, stack.hub.token_for(name))
            k.start()
            k.execute(setup)
            sees = k.call("sees()")
            return k, sees, round(time.monotonic() - t0, 2)

        with concurrent.futures.ThreadPoolExecutor(len(users)) as pool:
            opened = dict(zip(users, pool.map(open_kernel, users)))
        t["kernel_first_answer"] = {u: o[2] for u, o in opened.items()}
        kernels = {u: o[0] for u, o in opened.items()}
        sees = {u: o[1] for u, o in opened.items()}
        summary["kernels_see"] = sees
        own = {}
        for u in users:
            label = held[u]["gpu"]
            index = next((g.index for g in gpus if g.uuid == label), None)
            s = sees[u]
            if LOCAL:
                own[u] = s["fake_gpu_uuid"] == label and s["device_nodes"] == [f"nvidia{index}"]
            else:
                own[u] = s["device_count"] == 1 and norm(s["uuids"][0]) == norm(label)
        checks["each_kernel_sees_exactly_its_own_gpu"] = all(own.values())
        checks["every_user_a_different_gpu"] = len({held[u]["gpu"] for u in users}) == len(users)
        checks["device_request_is_the_label_uuid"] = all(
            [i.removeprefix("nvidia.com/gpu=") for r in held[u]["device_requests"] for i in r["ids"]] == [held[u]["gpu"]]
            for u in users)
        log("kernels see:", {u: (s["uuids"] or [s["fake_gpu_uuid"]]) for u, s in sees.items()})

        # matmul: host and kernels, alternating
        if not LOCAL:
            rounds = []
            for i in range(ROUNDS):
                host = host_bench()
                inside = {u: kernels[u].call("bench(0)") for u in users}
                rounds.append({"host": {u: host[held[u]["gpu"]]["tflops"] for u in users},
                               "container": {u: inside[u]["tflops"] for u in users}})
                log(f"round {i}:", rounds[-1])
            per_gpu = {}
            for u in users:
                # Medians: one round's clock boost or hiccup on either side moves a best-of ratio
                # by several percent (seen: a host round of 789 among 721-753 TFLOP/s).
                h = statistics.median(r["host"][u] for r in rounds)
                c = statistics.median(r["container"][u] for r in rounds)
                best_h, best_c = max(r["host"][u] for r in rounds), max(r["container"][u] for r in rounds)
                per_gpu[held[u]["gpu"]] = {"user": u, "host_tflops_median": h, "container_tflops_median": c,
                                           "ratio": round(c / h, 4), "host_tflops_best": best_h,
                                           "container_tflops_best": best_c, "ratio_best": round(best_c / best_h, 4)}
            summary["matmul_bf16"] = {"n": 8192, "rounds": rounds, "per_gpu": per_gpu}
            checks["container_matmul_at_least_0.97_of_host"] = all(v["ratio"] >= 0.97 for v in per_gpu.values())

        # one too many: refused with the spawner's message
        def refusal():
            t0 = time.monotonic()
            code, message = stack.hub.start(extra)
            return {"status": code, "message": message, "seconds": round(time.monotonic() - t0, 2)}

        summary["refused"] = refusal()
        log("refused:", summary["refused"])
        checks["one_too_many_refused_503_with_message"] = (
            summary["refused"]["status"] == 503 and "No GPU" in summary["refused"]["message"])

        # the console under load
        before = stack.wait_console()
        load_threads = [] if LOCAL else [  # no CUDA on the fake GPUs
            threading.Thread(target=kernels[u].call, args=(f"load({LOAD_S})",), daemon=True) for u in users]
        for th in load_threads:
            th.start()
        time.sleep(3)  # the kernels allocate and start
        samples, smi = [], []
        for _ in range(LOAD_S - 5):
            samples.append(stack.console())
            smi.append(nvidia_smi())
            time.sleep(1)
        for th in load_threads:
            th.join(LOAD_S + 60)
        after_load = stack.console()
        console = {"usage_source": before["usage"]["source"], "usage_reason": before["usage"]["reason"],
                   "inventory_source": before["inventory_source"], "gpus": {}}
        for g in before["gpus"]:
            series = [next(x for x in s["gpus"] if x["uuid"] == g["uuid"]) for s in samples if s]
            utils = [x["utilization_pct"] for x in series]
            holders = sorted({(x["holder"] or {}).get("user") for x in series} - {None})
            console["gpus"][g["uuid"]] = {
                "index": g["index"], "holders_under_load": holders, "state": series[-1]["state"] if series else None,
                "utilization_pct_samples": utils,
                "memory_used_mib_last": series[-1]["memory_used_mib"] if series else None,
                "utilization_pct_before_load": g["utilization_pct"],
                "utilization_pct_after_load": next(x for x in after_load["gpus"] if x["uuid"] == g["uuid"])["utilization_pct"],
                "nvidia_smi_utilization_pct_samples": [s.get(g["uuid"], {}).get("utilization_pct") for s in smi]}
        summary["console"] = console
        shown = {}
        for u in users:
            c = console["gpus"].get(held[u]["gpu"], {})
            utils = [x for x in c.get("utilization_pct_samples", []) if x is not None]
            busy_enough = LOCAL or (len(utils) >= 3 and sorted(utils)[len(utils) // 2] >= 90)
            shown[u] = c.get("holders_under_load") == [u] and busy_enough
        checks["console_shows_each_holder_with_real_utilisation"] = all(shown.values())
        log("console:", {u: console["gpus"][held[u]["gpu"]]["utilization_pct_samples"] for u in users})

        # a hub restart keeps servers, containers, GPUs and kernels
        for k in kernels.values():
            k.close()
        t["hub_stop"] = stack.stop_hub()
        during = stack.containers()
        t["hub_restart"] = stack.start_hub()
        after = stack.containers()
        ready = {u: bool((stack.hub.server(u) or {}).get("ready")) for u in users}
        again = {}
        for u in users:
            kernels[u].connect()
            again[u] = kernels[u].call("sees()")
        refused_again = refusal()
        console_after = stack.wait_console()
        summary["restart"] = {
            "containers_while_hub_down": {u: c["id"] for u, c in during.items()},
            "servers_ready_after": ready, "kernels_after": {u: s["uuids"] or [s["fake_gpu_uuid"]] for u, s in again.items()},
            "refused_after": refused_again,
            "console_holders_after": {g["uuid"]: (g["holder"] or {}).get("user") for g in console_after["gpus"]}}
        checks["hub_restart_keeps_servers_containers_gpus"] = (
            all(ready.values()) and {u: (c["id"], c["gpu"]) for u, c in after.items()}
            == {u: (c["id"], c["gpu"]) for u, c in held.items()} and set(during) == set(held))
        checks["hub_restart_keeps_kernels_on_their_gpus"] = all(
            (s["fake_gpu_uuid"] == held[u]["gpu"]) if LOCAL else (norm(s["uuids"][0]) == norm(held[u]["gpu"]))
            for u, s in again.items())
        checks["after_restart_one_too_many_still_refused"] = refused_again["status"] == 503
        checks["console_after_restart_shows_holders"] = all(
            summary["restart"]["console_holders_after"].get(held[u]["gpu"]) == u for u in users)
        log("restart:", {k: summary["restart"][k] for k in ("servers_ready_after", "kernels_after")})

        # stopping one frees its GPU for the one who waited
        victim = users[0]
        kernels[victim].close()
        t["stop_one"] = round(stack.hub.stop(victim), 2)
        freed = held[victim]["gpu"]
        t0 = time.monotonic()
        code, message = stack.hub.start(extra)
        if code not in (201, 202):
            raise RuntimeError(f"{extra} after {victim} stopped: {code} {message}")
        stack.hub.wait(extra, ready=True)
        t["one_too_many_start_after_stop"] = round(time.monotonic() - t0, 2)
        k = Kernel(stack.proxy_url, extra, stack.hub.token_for(extra))
        k.start()
        kernels[extra] = k
        k.execute(setup)
        s = k.call("sees()")
        now = stack.containers()
        summary["reuse"] = {"stopped": victim, "freed_gpu": freed, "waiting_got": now.get(extra, {}).get("gpu"),
                            "waiting_kernel_sees": s}
        if not LOCAL:
            summary["reuse"]["waiting_matmul"] = k.call("bench(0)")
        checks["stop_frees_the_gpu_for_the_one_too_many"] = (
            now.get(extra, {}).get("gpu") == freed and victim not in now
            and (s["fake_gpu_uuid"] == freed if LOCAL else (s["device_count"] == 1 and norm(s["uuids"][0]) == norm(freed))))
        log("reuse:", {k_: v for k_, v in summary["reuse"].items() if k_ != "waiting_kernel_sees"})

        for k in kernels.values():
            k.close()
        t0 = time.monotonic()
        for u in [*users[1:], extra]:
            stack.hub.stop(u)
        t["stop_the_rest"] = round(time.monotonic() - t0, 2)
        checks["no_container_left_after_stops"] = not stack.containers()
    except Exception as exc:  # noqa: BLE001 - the summary says what broke
        import traceback

        summary["error"] = f"{type(exc).__name__}: {exc}"
        summary["traceback"] = traceback.format_exc()[-4000:]
        summary["hub_log_tail"] = stack.hub_log_tail(4000)
    finally:
        for k in kernels.values():
            k.close()
        stack.cleanup()
    summary["ok"] = "error" not in summary and bool(checks) and all(checks.values())
    summary["timings_s"]["whole_run"] = round(time.monotonic() - T0, 1)
    return summary


def clean() -> None:
    import docker

    client = docker.from_env()
    for c in client.api.containers(all=True, filters={"label": f"{LABEL}.instance={PREFIX}"}):
        client.api.remove_container(c["Id"], force=True)
    for c in client.api.containers(all=True, filters={"label": "gpuhost=1"}):
        client.api.remove_container(c["Id"], force=True)
    for v in client.volumes.list(filters={"name": f"{PREFIX}-user-"}):
        v.remove(force=True)
    remove_network(client)
    if LOCAL:
        for tag in (IMAGE, f"{PREFIX}/hostroot:local"):
            try:
                client.images.remove(tag, force=True)
            except docker.errors.ImageNotFound:
                pass


def emit(summary: dict) -> None:
    text = json.dumps(summary, indent=1)
    print(text, flush=True)
    out = os.environ.get("OUT")
    if out and Path(out).is_dir():
        (Path(out) / "gpu_host_stack.json").write_text(text + "\n")
        for name in ("hub.log", "proxy.log"):
            if (WORK / name).is_file():
                (Path(out) / name).write_bytes((WORK / name).read_bytes()[-4_000_000:])


def prepared_stage() -> dict:
    """What `prepare` left on this machine (stage1.json and the image), for `run` and the
    sibling scripts (park_stack.py, instant_stack.py); RuntimeError, saying so, if nothing."""
    try:
        stage = json.loads((WORK / "stage1.json").read_text())
        import docker
        docker.from_env().images.get(IMAGE)
    except Exception as exc:  # noqa: BLE001
        raise RuntimeError(f"no prepared machine ({type(exc).__name__}: {exc}): run `stack.py prepare` first, "
                           "in the call just before this one") from None
    return stage


def main() -> int:
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    if what == "prepare":
        emit({"prepare": prepare()})
        return 0
    if what in ("run", "all"):
        if what == "all":
            stage = prepare()
        else:
            try:
                stage = prepared_stage()
            except RuntimeError as exc:
                emit({"ok": False, "error": str(exc)})
                return 2
        summary = run(stage)
        emit(summary)
        return 0 if summary["ok"] else 1
    if what == "clean":
        clean()
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
