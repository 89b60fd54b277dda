"""The Docker daemon itself, for the fault tests: enable live-restore and restart dockerd; the
engine's container events (the truth GPU accounting is measured against).

Restarting the daemon is what an admin's `systemctl restart docker` (or an engine upgrade)
does. Where dockerd runs under systemd this uses systemctl; elsewhere (this project's test
machines start it with ../shared/engine/install-docker.sh) it stops the running dockerd by
its pid file, waits until it has exited (a zombie counts: see stopped()), and starts it again
with the same command line and environment, detached (not the test process's child).
"""
import json
import os
import signal
import subprocess
import time
from pathlib import Path

DAEMON_JSON = Path("/etc/docker/daemon.json")
PID_FILE = Path("/var/run/docker.pid")
LOG_FILE = Path("/var/log/dockerd.log")


def container_events(prefix: str, since: float, until: float | None = None) -> list[dict]:
    """The engine's start and die events of a stack's containers (label gpuhub.instance), oldest
    first. The engine keeps them in memory only: a daemon restart empties them, so read them
    before one."""
    out = subprocess.run(["docker", "events", "--since", f"{since:.3f}", "--until", f"{until or time.time():.3f}",
                          "--filter", f"label=gpuhub.instance={prefix}", "--filter", "type=container",
                          "--filter", "event=start", "--filter", "event=die", "--format", "{{json .}}"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return [json.loads(line) for line in out.splitlines()]


def gpu_lifetimes(events: list[dict]) -> dict[str, float]:
    """user -> seconds their GPU containers ran (label gpuhub.gpu.uuid), from start to die."""
    starts, total = {}, {}
    for e in events:
        attrs, t = e["Actor"]["Attributes"], e["timeNano"] / 1e9
        if not attrs.get("gpuhub.gpu.uuid"):
            continue
        if e["Action"] == "start":
            starts[e["Actor"]["ID"]] = (attrs["gpuhub.user"], t)
        elif e["Action"] == "die" and e["Actor"]["ID"] in starts:
            user, began = starts.pop(e["Actor"]["ID"])
            total[user] = total.get(user, 0.0) + t - began
    assert not starts, f"containers still running: {starts}"
    return total


def docker_ok(timeout: float = 30) -> bool:
    """Whether the engine answers `docker info` within timeout seconds."""
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=timeout).returncode == 0
    except (subprocess.TimeoutExpired, OSError):  # a daemon that hangs is as good as down; no docker CLI
        return False


def live_restore_enabled() -> bool:
    out = subprocess.run(["docker", "info", "--format", "{{.LiveRestoreEnabled}}"],
                         capture_output=True, text=True, timeout=30).stdout.strip()
    return out == "true"


def enable_live_restore() -> None:
    """"live-restore": true in daemon.json (keeping everything else), applied with SIGHUP:
    live-restore is one of the settings dockerd reloads without a restart."""
    config = json.loads(DAEMON_JSON.read_text()) if DAEMON_JSON.exists() else {}
    if config.get("live-restore") is not True:
        config["live-restore"] = True
        DAEMON_JSON.write_text(json.dumps(config, indent=1) + "\n")
    os.kill(int(PID_FILE.read_text()), signal.SIGHUP)
    deadline = time.monotonic() + 20
    while not live_restore_enabled():
        if time.monotonic() > deadline:
            raise RuntimeError("dockerd did not enable live-restore after SIGHUP")
        time.sleep(0.5)


def _systemd_docker() -> bool:
    return subprocess.run(["systemctl", "is-active", "--quiet", "docker"], capture_output=True).returncode == 0


def stopped(pid: int) -> bool:
    """Whether process pid has exited. A process that exited but was not reaped yet (a zombie:
    its /proc entry stays until its parent waits for it) counts as stopped; if it is our own
    child, it is reaped here."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return True
    except ChildProcessError:  # not our child: its parent (init, or a subreaper) reaps it
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")  # the state follows "(comm)"


def start_detached(argv: list[bytes], env: dict[bytes, bytes], log: Path) -> None:
    """Start argv in a new session, not as our child: a shell starts it in the background and
    exits, so it is reparented to init the way install-docker.sh's dockerd is, and no test
    process is left holding an unreaped daemon when it stops."""
    with open(log, "ab") as out:
        subprocess.run(["/bin/sh", "-c", '"$@" &', "sh", *argv], env=env, cwd="/", stdin=subprocess.DEVNULL,
                       stdout=out, stderr=out, start_new_session=True, check=True, timeout=30)


def restart_daemon(timeout: float = 90, pid_file: Path = PID_FILE, log: Path = LOG_FILE,
                   answers=None) -> float:
    """Restart dockerd; return the seconds until `docker info` answered again (answers(): the
    check, for a stand-in daemon in the unit tests; pid_file and log: its files)."""
    answers = answers or docker_ok
    t0 = time.monotonic()
    if pid_file == PID_FILE and _systemd_docker():
        subprocess.run(["systemctl", "restart", "docker"], check=True, timeout=timeout)
    else:
        pid = int(pid_file.read_text())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        environ = dict(line.split(b"=", 1) for line in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in line)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while not stopped(pid):
            if time.monotonic() > deadline:
                raise RuntimeError(f"dockerd (pid {pid}) did not stop within {timeout}s")
            time.sleep(0.2)
        start_detached(argv, environ, log)
    deadline = time.monotonic() + timeout
    while not answers():
        if time.monotonic() > deadline:
            raise RuntimeError(f"dockerd did not answer within {timeout}s of its restart")
        time.sleep(0.2)
    return time.monotonic() - t0
