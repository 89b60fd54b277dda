"""Stand-ins for the GPU console's unit tests: the engine, the hub's API, NVML, the login."""
from __future__ import annotations

from hub.service_process.console.app import make_app
from hub.common.audit import AuditLog
from hub.common.hubapi import HubAPI
from hub.service_process.console.state import Console
from hub.gpus.activity import ActivitySampler
from hub.gpus.claim import device_request
from hub.gpus.manager import GPUManager
from hub.gpus.model import GPU
from hub.gpus.nvml import Reading, Unavailable

GPUS = [GPU(f"GPU-{i:04d}", i, "Fake GPU", 81920) for i in range(4)]
ADMIN_TOKEN, USER_TOKEN = "admin-token", "user-token"


def container(cid: str, uuid: str, user: str, server: str = "", instance: str = "gpuhubtest",
              since: float = 1_700_000_000.0) -> dict:
    labels = {"gpuhub.user": user, "gpuhub.server": server, "gpuhub.instance": instance,
              "gpuhub.gpu.uuid": uuid, "gpuhub.gpu.since": str(since)}
    return {"Id": cid, "Name": f"/{cid}", "State": {"Status": "running"}, "Config": {"Labels": labels},
            "HostConfig": {"DeviceRequests": [device_request(uuid, "cdi")]}}


class FakeEngine:
    def __init__(self):
        self.containers: list[dict] = []
        self.calls = 0
        self.removed: list[str] = []

    async def __call__(self, method, *args, **kwargs):
        self.calls += 1
        if method == "containers":
            # a listing's State is the status word ("running", "paused"), as the engine's
            return [{"Id": c["Id"], "State": (c.get("State") or {}).get("Status", "running")} for c in self.containers]
        if method == "inspect_container":
            return next(c for c in self.containers if c["Id"] == args[0])
        if method == "remove_container":
            self.removed.append(args[0])
            self.containers = [c for c in self.containers if c["Id"] != args[0]]
            return None
        raise AssertionError(f"the console must not call {method}")


class FakeHub(HubAPI):
    def __init__(self, engine: FakeEngine):
        self.engine = engine
        self.users = {name: {"name": name, "groups": []} for name in ("admin", "alice", "bob", "carol")}
        self.groups = {"ml": ["carol"]}
        self.users["carol"]["groups"] = ["ml"]
        self.stopped: list[tuple[str, str]] = []
        self.stop_status = 204
        self.properties: dict[str, dict] = {}
        self.changes: list[tuple] = []  # every write, in order
        self.started: dict[tuple[str, str], str] = {}  # servers without a GPU container

    async def user(self, name):
        return self.users.get(name)

    async def group_exists(self, name):
        return name in self.groups

    async def user_names(self):
        return sorted(self.users)

    async def group_names(self):
        return sorted(self.groups)

    async def active_servers(self):
        servers = {(c["Config"]["Labels"]["gpuhub.user"], c["Config"]["Labels"]["gpuhub.server"]):
                   {"ready": True, "last_activity": "2025-01-01T00:00:00Z", "started": "2025-01-01T00:00:00Z"}
                   for c in self.engine.containers}
        servers.update({key: {"ready": True, "started": started} for key, started in self.started.items()})
        return servers

    async def group_models(self):
        return [{"name": g, "users": list(users), "properties": self.properties.get(g, {})}
                for g, users in sorted(self.groups.items())]

    async def create_users(self, names):
        self.changes.append(("create_users", tuple(names)))
        for name in names:
            assert name not in self.users, f"{name} exists"
            self.users[name] = {"name": name, "groups": []}

    async def create_group(self, name):
        self.changes.append(("create_group", name))
        self.groups.setdefault(name, [])

    async def add_group_members(self, group, users):
        self.changes.append(("add", group, tuple(users)))
        for u in users:
            assert u in self.users, f"no user {u}"
            self.groups[group].append(u)
            self.users[u]["groups"].append(group)

    async def remove_group_members(self, group, users):
        self.changes.append(("remove", group, tuple(users)))
        self.groups[group] = [u for u in self.groups[group] if u not in users]
        for u in users:
            self.users[u]["groups"].remove(group)

    async def group_properties(self, group):
        return dict(self.properties.get(group, {}))

    async def set_group_properties(self, group, properties):
        self.changes.append(("properties", group))
        self.properties[group] = properties

    async def stop_server(self, user, server):
        if user not in self.users:
            return 404, f"No such user {user}"
        self.stopped.append((user, server))
        if self.stop_status == 204:
            self.started.pop((user, server), None)  # the hub's spawner removes the container
            self.engine.containers = [c for c in self.engine.containers
                                      if (c["Config"]["Labels"]["gpuhub.user"],
                                          c["Config"]["Labels"]["gpuhub.server"]) != (user, server)]
        return self.stop_status, ""


class FakeNVML:
    """Readings as NVML would give them, or Unavailable."""

    def __init__(self, available: bool = True):
        self.available, self.util = available, {g.uuid: 0 for g in GPUS}

    def read(self):
        if not self.available:
            raise Unavailable("NVML is not available: test")
        return [Reading(g.uuid, g.index, "NVIDIA H100 80GB HBM3", self.util[g.uuid], 1024 * g.index, 81559)
                for g in GPUS]

    def close(self):
        pass


class StubAuth:
    """Token 'admin-token' is the admin, 'user-token' a user without the access scope."""

    async def identify(self, handler):
        header = handler.request.headers.get("Authorization", "")
        if header == f"token {ADMIN_TOKEN}":
            handler._token_authenticated = True
            return {"name": "admin", "kind": "user"}, True
        if header == f"token {USER_TOKEN}":
            return {"name": "bob", "kind": "user"}, False
        return None, False

    def has_session_cookie(self, handler):
        return False


def make_console(tmp_path, nvml: FakeNVML | None = None):
    engine = FakeEngine()
    hub = FakeHub(engine)
    manager = GPUManager(GPUS, "cdi", "cdi", str(tmp_path / "gpu-intent.json"), "gpuhub")
    sampler = ActivitySampler(reader=nvml or FakeNVML(available=False), interval=10)
    console = Console(manager, engine, hub, sampler, AuditLog(tmp_path / "gpu-audit.jsonl"),
                      instance="gpuhubtest", base_url="/", cache_seconds=0)
    return console, engine, hub


def app_for(console):
    return make_app(console, "/services/gpu-console/", "/", authenticator=StubAuth(),
                    cookie_secret=b"x" * 32)


class ServedApp:
    """The console's tornado app on a loopback port, on an event loop of its own thread, so
    that tests (and the CLI) can call it with plain blocking HTTP."""

    def __init__(self, app):
        import asyncio
        import threading

        self.app, self._asyncio = app, asyncio
        self._ready, self._thread = threading.Event(), threading.Thread(target=self._run, daemon=True)
        self.url = ""

    def _run(self):
        self._asyncio.run(self._main())

    async def _main(self):
        from tornado.httpserver import HTTPServer
        from tornado.netutil import bind_sockets

        sockets = bind_sockets(0, "127.0.0.1")
        server = HTTPServer(self.app, **self.app.settings.get("server_limits", {}))  # as app.start listens
        server.add_sockets(sockets)
        self.url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
        self._loop, self._stop = self._asyncio.get_running_loop(), self._asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        server.stop()

    def __enter__(self):
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc):
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
