"""What the hub does when the ground under it fails: its state volume or the Docker engine.

- **State volume unwritable** (full disk, or a filesystem remounted read-only after an error):
  JupyterHub would otherwise answer API calls with a misleading 403 ("Missing or invalid
  credentials": recording a token's last use fails, so the token is ignored) and spawns with a
  500. Instead every hub request except ``/hub/health`` is refused with 503 and a message that
  names the volume, the system's error and the fix. Nothing is written, so nothing is half
  written; running servers keep running (their traffic goes through the proxy, not the hub)
  and their GPUs stay theirs (the engine holds the assignments, not the database). A probe
  write (4 KiB) at each request, and any database error of that kind, set the state; the hub
  works again by itself once the probe succeeds.
- **Docker engine restarted** (with live-restore, so every container survives): the hub's
  bind-mounted ``/var/run/docker.sock`` still points at the old daemon's socket, which nobody
  answers any more; every spawn would fail. The watchdog pings the engine every
  ``engine_check_interval`` seconds and, after ``engine_failures`` failures in a row, stops
  the hub (SIGTERM: JupyterHub shuts down cleanly and leaves servers running) so that Docker's
  restart policy starts it again with the new socket mounted.
- **Proxy restarted**: a new proxy has no routes, so every user's server is unreachable until
  the hub adds them again. JupyterHub does that after its activity update, every
  ``last_activity_interval`` (300 s), which costs a database query per route; the route guard
  asks the proxy for its routes every ``route_check_interval`` seconds and lets JupyterHub's
  own ``Proxy.check_routes`` (in memory: the hub's running servers and services) add what is
  missing.

``jupyterhub_config.py`` calls ``install(c)``: a traitlets ``Configurable``, so each knob can
be set like any other (``c.HubGuards.engine_check_interval = 10``). The state guard refuses
requests through hub/hub_process/patches/request_checks.py (JupyterHub has no hook of its own there).
"""
import asyncio
import errno
import logging
import os
import signal
import socket
import time

from traitlets import Float, Int, Unicode
from traitlets.config import Configurable

from hub.hub_process.patches import request_checks

log = logging.getLogger("JupyterHub")

# sqlite's messages when it cannot write its file (read-only, full disk, I/O error)
_DB_WRITE_ERRORS = ("readonly database", "disk is full", "unable to open database file", "disk I/O error")


class StateGuard:
    """Whether the state directory can be written now.

    Probed at every request (creating, writing and removing a 4 KiB file: tens of
    microseconds, no fsync), so the first request after the volume fails is refused too. A
    database write that failed for want of space or permission (the database file itself may
    be what is unwritable) refuses for ``db_hold`` seconds, then the probe decides again."""

    def __init__(self, state_dir: str, db_hold: float = 5):
        self.state_dir, self.db_hold = state_dir, db_hold
        self.problem: str | None = None
        self.db_failed_at = float("-inf")

    def probe(self) -> str | None:
        """None when the write succeeds; else the message users and admins see."""
        path = os.path.join(self.state_dir, ".write-probe")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, b"\0" * 4096)
            finally:
                os.close(fd)
            os.unlink(path)
        except OSError as exc:
            reason = exc.strerror or errno.errorcode.get(exc.errno, str(exc))
            return self.message(reason)
        return None

    def message(self, reason: str) -> str:
        return (f"The hub cannot write its state volume ({self.state_dir}: {reason}), so it takes no "
                "new logins, starts or stops until an administrator fixes it (free space on the "
                "volume, or make it writable again; `docker compose logs hub` has the details). "
                "Running servers keep running and keep their GPUs.")

    def current(self, now: float | None = None) -> str | None:
        now = time.monotonic() if now is None else now
        if now - self.db_failed_at < self.db_hold:
            return self.problem
        was, self.problem = self.problem, self.probe()
        if self.problem and self.problem != was:
            log.error("%s", self.problem)
        elif was and not self.problem:
            log.warning("The state volume %s is writable again; the hub takes new work.", self.state_dir)
        return self.problem

    def db_failed(self, text: str, now: float | None = None) -> None:
        """A database write failed with one of sqlite's can't-write errors: refuse from now on,
        until a probe after ``db_hold`` seconds shows the volume writable again."""
        if any(marker in text for marker in _DB_WRITE_ERRORS):
            self.problem = self.message(text.split("\n")[0][-200:])
            self.db_failed_at = time.monotonic() if now is None else now
            log.error("%s", self.problem)


def engine_reachable(socket_path: str, timeout: float = 5) -> bool:
    """A real answer to ``GET /_ping`` on the engine's unix socket."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(socket_path)
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return _ok(s)
    except OSError:
        return False


def _ok(s: socket.socket) -> bool:
    data = b""
    while len(data) < 16:
        chunk = s.recv(64)
        if not chunk:
            break
        data += chunk
    return data.startswith(b"HTTP/1.") and data[9:12] == b"200"


class HubGuards(Configurable):
    state_dir = Unicode(
        "/srv/jupyterhub/state",
        config=True,
        help="The hub's state volume (database, cookie secret); its writability is probed.",
    )
    state_db_hold = Float(
        5,
        config=True,
        help="""Seconds requests stay refused after the database could not be written, before a
        probe write to the state volume decides again.""",
    )
    docker_socket = Unicode(
        "/var/run/docker.sock",
        config=True,
        help="The engine's socket as mounted in the hub's container.",
    )
    engine_check_interval = Float(
        5,
        config=True,
        help="Seconds between pings of the Docker engine through the mounted socket (0: no watchdog).",
    )
    engine_failures = Int(
        3,
        config=True,
        help="""Failed pings in a row after which the hub stops itself so that Docker restarts it
        with the engine's new socket (after a daemon restart the mounted one is dead).""",
    )

    route_check_interval = Float(
        10,
        config=True,
        help="""Seconds between two comparisons of the proxy's routes with the hub's running
        servers; a restarted proxy gets its routes back within one (0: only JupyterHub's own
        check, every last_activity_interval).""",
    )

    def install(self) -> None:
        self.state = StateGuard(self.state_dir, self.state_db_hold)
        install_state_guard(self.state)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not in the hub (e.g. a unit test loading the config)
            return
        if self.engine_check_interval > 0:
            loop.create_task(self.watch_engine())
        if self.route_check_interval > 0:
            loop.create_task(self.watch_routes())

    async def watch_routes(self, app=None) -> None:
        """Every ``route_check_interval`` s, once the hub has started: JupyterHub's own check of
        the proxy's routes (one request to the proxy; missing routes added, stale ones removed)."""
        if app is None:
            # the running hub, known once it has started
            from jupyterhub.app import JupyterHub
            app = JupyterHub.instance()
        while True:
            await asyncio.sleep(self.route_check_interval)
            # JupyterHub.start() registers its periodic callbacks after its own first check
            if not getattr(app, "_periodic_callbacks", None):
                continue
            try:
                await app.proxy.check_routes(app.users, app._service_map)
            except Exception as exc:  # noqa: BLE001 - the proxy may be restarting: next time
                log.warning("Checking the proxy's routes failed: %s", exc)

    async def watch_engine(self, stop=lambda: os.kill(os.getpid(), signal.SIGTERM)) -> None:
        if not os.path.exists(self.docker_socket):
            return  # no socket mounted: nothing to watch (the spawner says so at the first spawn)
        loop, failures = asyncio.get_running_loop(), 0
        while True:
            await asyncio.sleep(self.engine_check_interval)
            ok = await loop.run_in_executor(None, engine_reachable, self.docker_socket)
            failures = 0 if ok else failures + 1
            if failures:
                log.warning("The Docker engine does not answer on %s (%d of %d)", self.docker_socket,
                            failures, self.engine_failures)
            if failures >= self.engine_failures:
                log.error("The Docker engine has not answered on %s %d times in a row (a restarted "
                          "daemon leaves the mounted socket dead): stopping the hub so that Docker "
                          "restarts it with the new socket. User servers keep running.",
                          self.docker_socket, failures)
                stop()
                return


_installed: StateGuard | None = None


def install_state_guard(guard: StateGuard) -> None:
    """Refuse hub requests (503, with the guard's message) while the state cannot be written,
    and learn of database writes that failed for want of space or permission."""
    global _installed
    # the hub's database layer: loaded in the hub when the guard is installed
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    first = _installed is None
    _installed = guard
    if not first:
        return
    request_checks.add(_state_check)

    @event.listens_for(Engine, "handle_error")
    def _db_error(context):
        if _installed is not None:
            _installed.db_failed(str(context.original_exception))


def _state_check(handler) -> tuple[int, str] | None:
    if handler.request.path.rstrip("/").endswith("/health") or _installed is None:
        return None
    problem = _installed.current()
    return (503, problem) if problem else None


def install(c) -> HubGuards:
    """Called by jupyterhub_config.py with its config."""
    guards = HubGuards(config=c)
    guards.install()
    return guards
