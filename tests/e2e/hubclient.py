"""A small client for the tests: the compose stack, JupyterHub's REST API, a user's server."""
import json
import os
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import quote

import requests
import websocket
from kernelproto import channels_url, run_code

ROOT = Path(__file__).resolve().parents[2]
STACK_ENV = Path(__file__).with_name("stack.env")


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key] = value
    return values


class Stack:
    """The compose deployment under test, with the settings of tests/e2e/stack.env."""

    def __init__(self, env_file: Path = STACK_ENV):
        self.env_file = env_file
        self.env = read_env_file(env_file)
        self.prefix = self.env["HUB_NAME_PREFIX"]
        self.url = f"http://{self.env['HUB_PUBLISH']}"

    def compose(self, *args: str, check: bool = True, timeout: float = 300, **overrides: str) -> subprocess.CompletedProcess:
        """docker compose with the test settings; keyword arguments override single settings."""
        return subprocess.run(["docker", "compose", "--env-file", str(self.env_file), *args], cwd=ROOT,
                              env={**os.environ, **overrides}, capture_output=True, text=True,
                              check=check, timeout=timeout)

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=120)

    def up(self, **overrides: str) -> None:
        """Start the stack, or recreate what changed (e.g. the hub, given other settings)."""
        self.compose("up", "-d", "--wait", "--wait-timeout", "120", **overrides)

    FAKE_GPU_READINGS = "/srv/jupyterhub/state/fake-gpu-readings.json"

    def feed_gpu_readings(self, readings: dict) -> None:
        """Write the GPU readings the hub's sampler reads next, on a stack with the fake GPU
        reader (tests/e2e/fake_gpu/: {"<uuid>": {"util": %, "mem": MiB}})."""
        path = self.FAKE_GPU_READINGS
        subprocess.run(["docker", "exec", "-i", f"{self.prefix}-hub-1", "sh", "-c", f"cat > {path}.tmp && "
                        f"mv {path}.tmp {path}"], input=json.dumps(readings), text=True, check=True, timeout=30)

    def create(self) -> str:
        """Create the stack's network, volumes and containers without starting anything, so that
        another container can join the network first; returns the network's name."""
        self.compose("up", "--no-start")
        return f"{self.prefix}-net"

    def user_containers(self) -> list[str]:
        out = self.docker("ps", "-a", "--filter", f"label=gpuhub.instance={self.prefix}", "--format", "{{.Names}}")
        return out.stdout.split()

    def user_volumes(self) -> list[str]:
        """The users' work volumes and the courses' materials volumes."""
        names = []
        for kind in ("user", "course"):
            out = self.docker("volume", "ls", "--filter", f"name=^{self.prefix}-{kind}-", "--format", "{{.Name}}")
            names += out.stdout.split()
        return names

    def down(self) -> None:
        """Remove everything the stack and its users created: containers, volumes, network."""
        containers = self.user_containers()
        if containers:
            self.docker("rm", "-f", *containers, check=False)
        # every profile: a service of an inactive profile (tls's caddy, monitoring's prometheus) is not an orphan
        self.compose("--profile", "*", "down", "--volumes", "--remove-orphans", check=False)
        volumes = self.user_volumes()
        if volumes:
            self.docker("volume", "rm", "-f", *volumes, check=False)

    def logs(self) -> str:
        parts = [self.compose("logs", "--no-color", "--tail", "3000", check=False).stdout]
        for name in self.user_containers():
            parts.append(f"--- {name} ---\n" + self.docker("logs", "--tail", "100", name, check=False).stdout)
        return "\n".join(parts)

    def inspect(self, container: str) -> dict:
        return json.loads(self.docker("inspect", container).stdout)[0]

    def container_of(self, username: str) -> str:
        out = self.docker("ps", "--filter", f"label=gpuhub.user={username}",
                          "--filter", f"label=gpuhub.instance={self.prefix}", "--format", "{{.Names}}")
        names = out.stdout.split()
        assert len(names) == 1, f"expected one container for {username!r}, found {names}"
        return names[0]

    def log_in(self, name: str, password: str, session: requests.Session | None = None) -> requests.Response:
        """The login form, as a browser sends it (a 302 is a login; the session keeps its cookie)."""
        s = session if session is not None else requests.Session()
        s.get(f"{self.url}/hub/login", timeout=10)  # the _xsrf cookie; a refusal shows in the POST's answer
        return s.post(f"{self.url}/hub/login?next=", timeout=30, allow_redirects=False,
                      data={"username": name, "password": password, "_xsrf": s.cookies.get("_xsrf")})

    def admin_session(self) -> requests.Session:
        """A browser-like session logged in as the admin through the login form."""
        s = requests.Session()
        r = self.log_in(self.env["HUB_ADMIN_USER"], self.env["HUB_ADMIN_PASSWORD"], s)
        assert r.status_code == 302, f"admin login failed: {r.status_code} {r.text[:300]}"
        return s

    def sign_up(self, name: str, password: str) -> requests.Response:
        """The sign-up form (NativeAuthenticator), as a browser sends it."""
        s = requests.Session()
        s.get(f"{self.url}/hub/signup", timeout=10).raise_for_status()
        return s.post(f"{self.url}/hub/signup", timeout=30, data={
            "username": name, "signup_password": password, "signup_password_confirmation": password,
            "_xsrf": s.cookies.get("_xsrf")})

    def signed_up(self, name: str, password: str) -> None:
        """A user with a password: signed up on the form, approved by the admin."""
        r = self.sign_up(name, password)
        assert r.status_code == 200, r.text[:300]
        self.admin_session().get(f"{self.url}/hub/authorize/{quote(name, safe='')}", timeout=10).raise_for_status()

    def admin_token(self) -> str:
        """An API token for the admin, requested the way a person does on the token page."""
        s = self.admin_session()
        admin = self.env["HUB_ADMIN_USER"]
        r = s.post(f"{self.url}/hub/api/users/{admin}/tokens", timeout=10,
                   headers={"X-XSRFToken": s.cookies.get("_xsrf")},
                   json={"note": "e2e tests", "expires_in": 3600})
        r.raise_for_status()
        return r.json()["token"]


class Hub:
    """JupyterHub's REST API with a token."""

    def __init__(self, url: str, token: str):
        self.url = url
        self.s = requests.Session()
        self.s.headers["Authorization"] = f"token {token}"

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        return self.s.request(method, f"{self.url}/hub/api{path}", timeout=30, **kwargs)

    def create_user(self, name: str) -> None:
        r = self.api("POST", f"/users/{quote(name, safe='')}")
        assert r.status_code in (201, 409), r.text

    def user(self, name: str) -> dict:
        r = self.api("GET", f"/users/{quote(name, safe='')}")
        r.raise_for_status()
        return r.json()

    def start(self, name: str, timeout: float = 180, options: dict | None = None, interval: float = 0.5) -> dict:
        """Start the user's server (with user options, if given) and wait until it is ready
        (asking the hub every ``interval`` seconds)."""
        r = self.api("POST", f"/users/{quote(name, safe='')}/server", json=options)
        assert r.status_code in (201, 202), f"start {name}: {r.status_code} {r.text}"
        return self.wait(name, ready=True, timeout=timeout, interval=interval)

    def stop(self, name: str, timeout: float = 60) -> dict:
        r = self.api("DELETE", f"/users/{quote(name, safe='')}/server")
        assert r.status_code in (202, 204), f"stop {name}: {r.status_code} {r.text}"
        return self.wait(name, ready=False, timeout=timeout)

    def progress(self, name: str, timeout: float = 180):
        """The spawn's progress events (JupyterHub's server-sent events), until ready or failed."""
        with self.s.get(f"{self.url}/hub/api/users/{quote(name, safe='')}/server/progress",
                        stream=True, timeout=timeout) as r:
            r.raise_for_status()
            for line in r.iter_lines(decode_unicode=True):
                if line and line.startswith("data:"):
                    event = json.loads(line[5:])
                    yield event
                    if event.get("ready") or event.get("failed"):
                        return

    def follow(self, name: str, events: list) -> threading.Thread:
        """Collect the start's progress events in the background until it is ready or failed."""
        def run():
            try:
                for event in self.progress(name, timeout=300):
                    events.append(event)
            except Exception as exc:  # noqa: BLE001 - the stream ends with the start
                events.append({"error": str(exc)})
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    def wait(self, name: str, ready: bool, timeout: float, interval: float = 0.5) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            server = self.user(name)["servers"].get("")
            if ready and server and server["ready"]:
                return server
            if not ready and not server:
                return {}
            if not ready and server and not server["pending"] and not server["ready"]:
                return server
            if time.monotonic() > deadline:
                raise TimeoutError(f"server of {name!r} not {'ready' if ready else 'stopped'} after {timeout}s: {server}")
            time.sleep(interval)


class UserServer:
    """A user's Jupyter server, reached through the proxy with a token that may access it."""

    def __init__(self, hub_url: str, server_url: str, token: str):
        self.base = hub_url + server_url  # server_url is /user/<name>/
        self.s = requests.Session()
        self.s.headers["Authorization"] = f"token {token}"
        self.token = token

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.s.get(self.base + path, timeout=30, **kwargs)

    def put_text(self, path: str, content: str) -> None:
        r = self.s.put(self.base + f"api/contents/{path}", timeout=30,
                       json={"type": "file", "format": "text", "content": content})
        assert r.status_code in (200, 201), r.text

    def read_text(self, path: str) -> str:
        r = self.get(f"api/contents/{path}?content=1&type=file&format=text")
        r.raise_for_status()
        return r.json()["content"]

    def connect(self, kernel_id: str, timeout: float = 60) -> websocket.WebSocket:
        """An open websocket to one of this server's kernels."""
        return websocket.create_connection(channels_url(self.base, kernel_id),
                                           header=[f"Authorization: token {self.token}"], timeout=timeout)

    def run(self, kernel_id: str, code: str, timeout: float = 60) -> str:
        """Run code in an open kernel (``execute`` starts and deletes its own); the kernel stays."""
        ws = self.connect(kernel_id, timeout)
        try:
            return run_code(ws, code, timeout)
        finally:
            ws.close()

    def execute(self, code: str, timeout: float = 120) -> str:
        """Run code in a new kernel over the Jupyter kernel websocket; return what it printed."""
        r = self.s.post(self.base + "api/kernels", json={"name": "python3"}, timeout=60)
        assert r.status_code == 201, r.text
        kernel_id = r.json()["id"]
        ws = self.connect(kernel_id, timeout)
        try:
            return run_code(ws, code, timeout)
        finally:
            ws.close()
            self.s.delete(self.base + f"api/kernels/{kernel_id}", timeout=30)
