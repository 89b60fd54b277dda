"""tests/e2e/engine.py's restart_daemon where dockerd runs without systemd, on a stand-in daemon
(a Python process with a pid file that exits on SIGTERM, as dockerd does): `make reliability`
restarts the daemon twice in one pytest process (the accounting test, then the fault test), and
the second restart once waited forever for its own unreaped child to vanish."""
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "e2e_engine", Path(__file__).resolve().parents[1] / "e2e" / "engine.py")
engine = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(engine)

DAEMON = """
import os, signal, sys, time
pid_file = sys.argv[1]
def stop(*_):
    os.unlink(pid_file)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
with open(pid_file + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename(pid_file + ".tmp", pid_file)
while True:
    time.sleep(1)
"""


def running_pid(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return None if engine.stopped(pid) else pid


def test_restart_twice_in_one_process_when_the_first_daemon_is_our_child(tmp_path):
    pid_file, log = tmp_path / "daemon.pid", tmp_path / "daemon.log"
    first = subprocess.Popen([sys.executable, "-c", DAEMON, str(pid_file)])  # our child, as a restarted one was
    pids = [first.pid]
    try:
        deadline = time.monotonic() + 10
        while running_pid(pid_file) != first.pid:
            assert time.monotonic() < deadline, "the stand-in daemon did not start"
            time.sleep(0.05)
        for _ in range(2):
            old = pids[-1]
            engine.restart_daemon(timeout=10, pid_file=pid_file, log=log,
                                  answers=lambda: running_pid(pid_file) not in (None, old))
            pids.append(running_pid(pid_file))
            assert engine.stopped(old)
        assert len(set(pids)) == 3
        parent = Path(f"/proc/{pids[-1]}/stat").read_text().rsplit(")", 1)[1].split()[1]
        assert int(parent) != os.getpid(), "the restarted daemon is the test process's child"
        assert not Path(f"/proc/{first.pid}").exists(), "the first daemon was left a zombie"
    finally:
        if first.poll() is None:
            first.kill()
        pid = running_pid(pid_file)
        if pid:
            os.kill(pid, signal.SIGTERM)


def test_a_zombie_counts_as_stopped_and_a_live_process_does_not():
    # sh execs into a sleep that never waits for its background child: once the child exits it
    # stays a zombie whose parent is not this process, so only its /proc state says it stopped.
    parent = subprocess.Popen(["/bin/sh", "-c", "sleep 0.2 & echo $!; exec sleep 30"], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        assert not engine.stopped(child)
        deadline = time.monotonic() + 10
        while "Z" not in Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]:
            assert time.monotonic() < deadline, "the background sleep did not exit"
            time.sleep(0.05)
        assert Path(f"/proc/{child}").exists() and engine.stopped(child)
        assert not engine.stopped(parent.pid)
    finally:
        parent.kill()
        parent.wait()
    assert engine.stopped(parent.pid)


def test_a_pid_without_a_process_is_stopped():
    assert engine.stopped(2**22 + 1)  # above the kernel's largest pid
