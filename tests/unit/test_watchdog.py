"""hub/hub_process/watchdog.py: the state volume guard and the Docker engine watchdog, without a hub."""
import asyncio
import errno
import os
import socket
import threading

import pytest
from traitlets.config import Config

from hub.hub_process import watchdog
from hub.hub_process.config.configure import configure_recovery
from hub.hub_process.watchdog import HubGuards, StateGuard, engine_reachable


def test_probe_passes_on_a_writable_dir_and_leaves_nothing(tmp_path):
    guard = StateGuard(str(tmp_path))
    assert guard.current(now=0) is None
    assert list(tmp_path.iterdir()) == []


def test_full_disk_is_refused_with_the_reason_and_the_fix(tmp_path, monkeypatch):
    guard = StateGuard(str(tmp_path))

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(watchdog.os, "write", full)
    problem = guard.current(now=0)
    assert f"({tmp_path}: No space left on device)" in problem
    assert "free space on the volume" in problem and "keep their GPUs" in problem
    monkeypatch.undo()
    assert guard.current(now=1) is None  # writable again: the next request goes through


def test_database_write_errors_refuse_for_a_while_then_the_probe_decides(tmp_path):
    guard = StateGuard(str(tmp_path), db_hold=5)
    guard.db_failed("(sqlite3.OperationalError) no such table: users", now=0)
    assert guard.current(now=0) is None  # not a write problem
    guard.db_failed("(sqlite3.OperationalError) attempt to write a readonly database\n[SQL: UPDATE ...]", now=10)
    problem = guard.current(now=11)
    assert "attempt to write a readonly database" in problem and "[SQL" not in problem
    assert guard.current(now=16) is None


def serve_once(path, reply: bytes):
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)

    def run():
        conn, _ = server.accept()
        conn.recv(1024)
        conn.sendall(reply)
        conn.close()
        server.close()
    threading.Thread(target=run, daemon=True).start()


def test_engine_ping(tmp_path):
    sock = str(tmp_path / "docker.sock")
    assert not engine_reachable(sock)  # no socket
    serve_once(sock, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")
    assert engine_reachable(sock)
    os.unlink(sock)
    serve_once(sock, b"HTTP/1.1 500 Internal Server Error\r\n\r\n")
    assert not engine_reachable(sock)


def test_watchdog_stops_the_hub_after_the_failures_in_a_row(tmp_path):
    dead = tmp_path / "docker.sock"
    dead.write_text("")  # exists, but nobody answers: a restarted daemon's old socket
    guards = HubGuards(config=Config({"HubGuards": {"docker_socket": str(dead), "engine_check_interval": 0.01,
                                                    "engine_failures": 3}}))
    stopped = []
    asyncio.run(asyncio.wait_for(guards.watch_engine(stop=lambda: stopped.append(True)), 10))
    assert stopped == [True]


def test_recovery_settings():
    c = Config()
    configure_recovery(c, {})
    assert c.JupyterHub.last_activity_interval == 300 and c.Spawner.poll_interval == 30
    assert any(os.path.isfile(os.path.join(p, "not_running.html")) for p in c.JupyterHub.template_paths)
    assert callable(c.JupyterHub.template_vars["gpuhub_stop_reason"])
    assert c.HubGuards.state_dir == "/srv/jupyterhub/state"


@pytest.mark.parametrize("active,expected", [(False, "ran out of memory"), (True, "")])
def test_stop_reason_shown_only_while_not_running(active, expected):
    from hub.hub_process.spawner import GPUDockerSpawner
    from hub.hub_process.spawner.spawner import PROCESS

    class FakeSpawner:
        pass
    spawner = FakeSpawner()
    spawner.active = active

    class FakeUser:
        name = "oomer"
        spawners = {"": spawner}
    reasons = PROCESS.stop_reasons
    reasons.noticed(("oomer", ""), "Your server ... ran out of memory ...")
    reasons.stopping(("oomer", ""))  # the stop the poll triggered keeps the reason
    try:
        assert (expected in GPUDockerSpawner.stop_reason_for(FakeUser())) if expected else \
            GPUDockerSpawner.stop_reason_for(FakeUser()) == ""
        assert GPUDockerSpawner.stop_reason_for(None) == ""
    finally:
        reasons.running(("oomer", ""))


def test_route_guard_asks_jupyterhubs_check_once_the_hub_has_started():
    calls = []

    class FakeProxy:
        async def check_routes(self, users, services):
            calls.append((users, services))
            if len(calls) == 2:
                raise ConnectionRefusedError("the proxy is restarting")  # logged, next time
            if len(calls) == 3:
                raise asyncio.CancelledError

    class FakeApp:
        proxy, users, _service_map = FakeProxy(), {"u": "user"}, {"s": "service"}
        _periodic_callbacks = {}

    app = FakeApp()
    guards = HubGuards(config=Config({"HubGuards": {"route_check_interval": 0.01}}))

    async def main():
        task = asyncio.ensure_future(guards.watch_routes(app))
        await asyncio.sleep(0.05)
        assert calls == []  # not before JupyterHub.start() finished its own check
        app._periodic_callbacks = {"last_activity": object()}
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
    asyncio.run(main())
    assert calls == [({"u": "user"}, {"s": "service"})] * 3
