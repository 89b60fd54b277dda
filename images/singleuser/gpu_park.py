#!/usr/bin/env python3
"""gpu-park: move this user's CUDA processes' GPU state into host memory and back (parking).

The hub runs it inside the user's container, as the container's own user (``docker exec``),
when it parks a server instead of stopping it (docs/gpus.md, "Parking"). It drives the CUDA
driver's checkpoint API (driver >= 570, ``libcuda.so.1``: cuCheckpointProcessLock, -Checkpoint,
-Restore, -Unlock, -GetState) through ctypes: no CUDA toolkit, no torch needed.

    gpu-park list                 the CUDA processes of this user (a /dev/nvidiaN open)
    gpu-park state  [--pid N ...] their checkpoint state (running, locked, checkpointed, failed)
    gpu-park park   [--pid N ...] [--timeout-ms MS]   lock, then checkpoint each (all or none)
    gpu-park resume [--pid N ...] [--gpu-pair OLD:NEW ...]   restore, then unlock each

Prints one JSON object; exit 0 when every process reached the state asked for. Without --pid
it works on every CUDA process of this user (this one excepted). ``park`` is all or none: when
one process fails, those already parked are resumed and the answer says which failed.

A process that is stopped (SIGSTOP, Ctrl-Z, a debugger) or frozen (its container paused) is
refused before the driver is asked: the driver's checkpoint calls are answered by a thread of
the target process itself, so a call on a process that cannot run waits for ever (this is what
hung tests/gpu_host/park_proof.py: it read the state after SIGSTOP). Each driver call is also
bounded (``--deadline-s``, default 300): past it the answer says so instead of hanging.

``--fake`` (or GPU_PARK_FAKE=1): no driver is touched; each process's state is kept in a file
(GPU_PARK_FAKE_STATE, default /tmp/.gpu-park-fake.json) with the driver's own transitions, so
the hub's state machine can be tested where GPUs are fake. GPU_PARK_FAKE_FAIL=<operation>
makes that operation fail (the tests' way to check the rollback).
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import sys
import threading
import time

RUNNING, LOCKED, CHECKPOINTED, FAILED = 0, 1, 2, 3
STATE_NAMES = {RUNNING: "running", LOCKED: "locked", CHECKPOINTED: "checkpointed", FAILED: "failed",
               4: "checkpointing", 5: "restoring"}
GPU_NODE = re.compile(r"^/dev/nvidia\d+$")  # a GPU itself, not nvidiactl or nvidia-uvm
CUDA_ERROR_INVALID_VALUE, CUDA_ERROR_ILLEGAL_STATE = 1, 401
FAKE_STATE = "/tmp/.gpu-park-fake.json"
DEADLINE_S = 300.0  # one driver call at most (a whole 80 GB GPU's checkpoint takes about 35 s)


class ParkError(Exception):
    """One driver call failed: ``code`` is its CUresult (0 for errors found before the call)."""

    def __init__(self, message: str, code: int = 0):
        super().__init__(message)
        self.code = code


# -- the driver's argument structures (cuda.h of CUDA 12.8/13.0: each is 64 bytes, zeroed) -----

class LockArgs(ctypes.Structure):
    _fields_ = [("timeoutMs", ctypes.c_uint), ("reserved0", ctypes.c_uint), ("reserved1", ctypes.c_uint64 * 7)]


class CheckpointArgs(ctypes.Structure):
    _fields_ = [("reserved", ctypes.c_uint64 * 8)]


class GpuPair(ctypes.Structure):
    _fields_ = [("oldUuid", ctypes.c_ubyte * 16), ("newUuid", ctypes.c_ubyte * 16)]


class RestoreArgs(ctypes.Structure):
    # gpuPairs; gpuPairsCount; char reserved[52 - sizeof(void *)]; cuuint64_t reserved1
    _fields_ = [("gpuPairs", ctypes.POINTER(GpuPair)), ("gpuPairsCount", ctypes.c_uint),
                ("reserved", ctypes.c_char * (52 - ctypes.sizeof(ctypes.c_void_p))),
                ("reserved1", ctypes.c_uint64)]


class UnlockArgs(ctypes.Structure):
    _fields_ = [("reserved", ctypes.c_uint64 * 8)]


def uuid_bytes(uuid: str) -> bytes:
    """The 16 bytes of "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" (the driver's CUuuid)."""
    hexdigits = uuid.removeprefix("GPU-").replace("-", "")
    if not re.fullmatch(r"[0-9a-fA-F]{32}", hexdigits):
        raise ValueError(f"not a GPU UUID: {uuid!r}")
    return bytes.fromhex(hexdigits)


# -- which processes ----------------------------------------------------------------------------

def cuda_processes(proc: str = "/proc", uid: int | None = None, exclude: int | None = None) -> list[dict]:
    """This user's processes that have a GPU's device node open: [{"pid", "cmd", "devices"}].
    Others' processes cannot be read (and are none of this user's business)."""
    uid = os.getuid() if uid is None else uid
    exclude = os.getpid() if exclude is None else exclude
    found = []
    for name in os.listdir(proc):
        if not name.isdigit() or int(name) == exclude:
            continue
        base = os.path.join(proc, name)
        try:
            if os.stat(base).st_uid != uid:
                continue
            devices = set()
            for fd in os.listdir(os.path.join(base, "fd")):
                try:
                    target = os.readlink(os.path.join(base, "fd", fd))
                except OSError:
                    continue
                if GPU_NODE.match(target):
                    devices.add(target)
            if not devices:
                continue
            with open(os.path.join(base, "cmdline"), "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        found.append({"pid": int(name), "cmd": cmd[:200], "devices": sorted(devices)})
    return sorted(found, key=lambda p: p["pid"])


def stopped(pid: int, proc: str = "/proc") -> str | None:
    """Why ``pid`` cannot run now (None: it can): stopped by a signal or a tracer (its state T
    or t), or frozen by its cgroup's freezer (``docker pause``). The driver's checkpoint calls
    are served by a thread of the target, so on such a process they would never return."""
    try:
        with open(os.path.join(proc, str(pid), "stat")) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None  # gone, or not readable: the driver's own answer says what
    if state in ("T", "t"):
        return "stopped (SIGSTOP, Ctrl-Z or a debugger)"
    try:
        with open(os.path.join(proc, str(pid), "cgroup")) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:  # cgroup v2: "0::/path"; its cgroup.events says "frozen 1" when paused
        parts = line.split(":", 2)
        if len(parts) == 3 and parts[0] == "0":
            try:
                with open(f"/sys/fs/cgroup{parts[2].rstrip('/')}/cgroup.events") as f:
                    if "frozen 1" in f.read().splitlines():
                        return "frozen (its container is paused)"
            except OSError:
                pass
    return None


def bounded(call, seconds: float | None, what: str):
    """``call()``, or ParkError after ``seconds`` (None: no bound). The call goes on in a
    daemon thread that the process leaves behind (a driver call cannot be cancelled)."""
    if not seconds:
        return call()
    box: dict = {}

    def target() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True, name=f"gpu-park {what}")
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise ParkError(f"{what}: no answer from the driver in {seconds:g} s (is the process able to run?)")
    if "error" in box:
        raise box["error"]
    return box.get("value")


# -- the driver, and a stand-in for it ------------------------------------------------------------

class Driver:
    """libcuda.so.1's checkpoint functions."""
    mode = "cuda"

    def __init__(self, lib: str = "libcuda.so.1", cuda=None, deadline: float | None = DEADLINE_S):
        self.deadline = deadline
        try:
            self.cuda = cuda if cuda is not None else ctypes.CDLL(lib)  # cuda: a stand-in (tests)
        except OSError as exc:
            raise ParkError(f"no CUDA driver library here ({exc}): is this container given a GPU?") from None
        for name in ("cuCheckpointProcessLock", "cuCheckpointProcessCheckpoint", "cuCheckpointProcessRestore",
                     "cuCheckpointProcessUnlock", "cuCheckpointProcessGetState"):
            if not hasattr(self.cuda, name):
                raise ParkError(f"the driver has no {name}: checkpointing needs driver 570 or newer")
        version = ctypes.c_int(0)
        self.cuda.cuDriverGetVersion(ctypes.byref(version))
        self.version = version.value
        self._check(self.cuda.cuInit(0), "cuInit")

    def _call(self, name: str, what: str, *args) -> None:
        """One checkpoint call, bounded by ``deadline``, its CUresult checked."""
        self._check(bounded(lambda: getattr(self.cuda, name)(*args), self.deadline, what), what)

    def _check(self, result: int, what: str) -> None:
        if result == 0:
            return
        name = ctypes.c_char_p()
        self.cuda.cuGetErrorName(result, ctypes.byref(name))
        label = name.value.decode() if name.value else f"error {result}"
        raise ParkError(f"{what}: {label}", result)

    def state(self, pid: int) -> int:
        state = ctypes.c_int(-1)
        self._call("cuCheckpointProcessGetState", "get state", pid, ctypes.byref(state))
        return state.value

    def lock(self, pid: int, timeout_ms: int) -> None:
        args = LockArgs(timeoutMs=timeout_ms)
        self._call("cuCheckpointProcessLock", "lock", pid, ctypes.byref(args))

    def checkpoint(self, pid: int) -> None:
        args = CheckpointArgs()
        self._call("cuCheckpointProcessCheckpoint", "checkpoint", pid, ctypes.byref(args))

    def restore(self, pid: int, pairs: list[tuple[str, str]] = ()) -> None:
        args = RestoreArgs()
        if pairs:
            array = (GpuPair * len(pairs))()
            for slot, (old, new) in zip(array, pairs):
                slot.oldUuid[:] = uuid_bytes(old)
                slot.newUuid[:] = uuid_bytes(new)
            args.gpuPairs, args.gpuPairsCount = ctypes.cast(array, ctypes.POINTER(GpuPair)), len(pairs)
        self._call("cuCheckpointProcessRestore", "restore", pid, ctypes.byref(args))

    def unlock(self, pid: int) -> None:
        args = UnlockArgs()
        self._call("cuCheckpointProcessUnlock", "unlock", pid, ctypes.byref(args))


class FakeDriver:
    """The driver's state machine without a driver: states in a JSON file (pid -> state), the
    same transitions and refusals (CUDA_ERROR_ILLEGAL_STATE) as cuda.h documents."""
    mode = "fake"
    version = None

    def __init__(self, path: str | None = None, fail: str | None = None, proc: str = "/proc"):
        self.path = path or os.environ.get("GPU_PARK_FAKE_STATE") or FAKE_STATE
        self.fail = fail if fail is not None else os.environ.get("GPU_PARK_FAKE_FAIL", "")
        self.proc = proc

    def _load(self) -> dict[str, int]:
        try:
            with open(self.path) as f:
                data = json.load(f)
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save(self, data: dict[str, int]) -> None:
        tmp = f"{self.path}.tmp"
        with open(tmp, "w") as f:
            json.dump(data, f)
        os.replace(tmp, self.path)

    def _move(self, pid: int, what: str, before: int, after: int) -> None:
        if not os.path.isdir(os.path.join(self.proc, str(pid))):
            raise ParkError(f"{what}: CUDA_ERROR_INVALID_VALUE (no process {pid})", CUDA_ERROR_INVALID_VALUE)
        data = self._load()
        now = data.get(str(pid), RUNNING)
        if what == self.fail:
            raise ParkError(f"{what}: CUDA_ERROR_UNKNOWN (GPU_PARK_FAKE_FAIL)", 999)
        if now != before:
            raise ParkError(f"{what}: CUDA_ERROR_ILLEGAL_STATE (process {pid} is {STATE_NAMES.get(now, now)})",
                            CUDA_ERROR_ILLEGAL_STATE)
        data[str(pid)] = after
        self._save(data)

    def state(self, pid: int) -> int:
        if not os.path.isdir(os.path.join(self.proc, str(pid))):
            raise ParkError(f"get state: CUDA_ERROR_INVALID_VALUE (no process {pid})", CUDA_ERROR_INVALID_VALUE)
        return self._load().get(str(pid), RUNNING)

    def lock(self, pid: int, timeout_ms: int) -> None:
        self._move(pid, "lock", RUNNING, LOCKED)

    def checkpoint(self, pid: int) -> None:
        self._move(pid, "checkpoint", LOCKED, CHECKPOINTED)

    def restore(self, pid: int, pairs: list[tuple[str, str]] = ()) -> None:
        for old, new in pairs:
            uuid_bytes(old), uuid_bytes(new)  # the same refusal of a malformed UUID
        self._move(pid, "restore", CHECKPOINTED, LOCKED)

    def unlock(self, pid: int) -> None:
        self._move(pid, "unlock", LOCKED, RUNNING)


# -- the operations -------------------------------------------------------------------------------

def _name(state: int | None) -> str | None:
    return None if state is None else STATE_NAMES.get(state, str(state))


def park_one(driver, pid: int, timeout_ms: int) -> dict:
    """Lock, then checkpoint one process (whatever of that is still to do)."""
    row = {"pid": pid, "before": None, "state": None, "lock_s": None, "checkpoint_s": None, "error": None}
    why = stopped(pid, getattr(driver, "proc", "/proc"))
    if why:
        return {**row, "error": f"process {pid} is {why}: the driver would wait for it for ever; continue it first"}
    try:
        state = row["before"] = driver.state(pid)
        if state == RUNNING:
            t = time.monotonic()
            driver.lock(pid, timeout_ms)
            row["lock_s"] = round(time.monotonic() - t, 4)
            state = LOCKED
        if state == LOCKED:
            t = time.monotonic()
            driver.checkpoint(pid)
            row["checkpoint_s"] = round(time.monotonic() - t, 4)
        elif state != CHECKPOINTED:
            raise ParkError(f"process {pid} is {_name(state)}: it cannot be parked")
        row["state"] = driver.state(pid)
    except ParkError as exc:
        row["error"] = str(exc)
        row["state"] = _safe_state(driver, pid)
    row["before"], row["state"] = _name(row["before"]), _name(row["state"])
    return row


def resume_one(driver, pid: int, pairs: list[tuple[str, str]] = ()) -> dict:
    """Restore, then unlock one process (whatever of that is still to do)."""
    row = {"pid": pid, "before": None, "state": None, "restore_s": None, "unlock_s": None, "error": None}
    why = stopped(pid, getattr(driver, "proc", "/proc"))
    if why:
        return {**row, "error": f"process {pid} is {why}: the driver would wait for it for ever; continue it first"}
    try:
        state = row["before"] = driver.state(pid)
        if state == CHECKPOINTED:
            t = time.monotonic()
            driver.restore(pid, pairs)
            row["restore_s"] = round(time.monotonic() - t, 4)
            state = LOCKED
        if state == LOCKED:
            t = time.monotonic()
            driver.unlock(pid)
            row["unlock_s"] = round(time.monotonic() - t, 4)
        elif state != RUNNING:
            raise ParkError(f"process {pid} is {_name(state)}: it cannot be resumed")
        try:
            row["state"] = driver.state(pid)
        except ParkError as exc:  # restored and unlocked: a failed look afterwards undoes nothing
            row["state"], row["note"] = None, f"restored and unlocked; its state after that not read ({exc})"
    except ParkError as exc:
        row["error"] = str(exc)
        row["state"] = _safe_state(driver, pid)
    row["before"], row["state"] = _name(row["before"]), _name(row["state"])
    return row


def _safe_state(driver, pid: int) -> int | None:
    try:
        return driver.state(pid)
    except ParkError:
        return None


def park(driver, pids: list[int], timeout_ms: int = 10000) -> dict:
    """Park every process, or none: after a failure the ones parked are resumed."""
    t0 = time.monotonic()
    rows = []
    for pid in pids:
        rows.append(park_one(driver, pid, timeout_ms))
        if rows[-1]["error"]:
            break
    failed = [r for r in rows if r["error"]]
    rolled_back = [resume_one(driver, r["pid"]) for r in rows] if failed else []
    return {"ok": not failed, "operation": "park", "processes": rows, "rolled_back": rolled_back,
            "seconds": round(time.monotonic() - t0, 4),
            "error": failed[0]["error"] if failed else None}


def resume(driver, pids: list[int], pairs: list[tuple[str, str]] = ()) -> dict:
    """Resume every process (each one tried, whatever the others did)."""
    t0 = time.monotonic()
    rows = [resume_one(driver, pid, pairs) for pid in pids]
    failed = [r for r in rows if r["error"]]
    return {"ok": not failed, "operation": "resume", "processes": rows,
            "seconds": round(time.monotonic() - t0, 4), "error": failed[0]["error"] if failed else None}


def states(driver, pids: list[int]) -> dict:
    rows = []
    for pid in pids:
        why = stopped(pid, getattr(driver, "proc", "/proc"))
        if why:
            rows.append({"pid": pid, "state": None, "error": f"process {pid} is {why}: not asked"})
            continue
        try:
            rows.append({"pid": pid, "state": _name(driver.state(pid)), "error": None})
        except ParkError as exc:
            rows.append({"pid": pid, "state": None, "error": str(exc)})
    return {"ok": not any(r["error"] for r in rows), "operation": "state", "processes": rows, "error": None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu-park", description=__doc__.split("\n\n")[0])
    parser.add_argument("operation", choices=("list", "state", "park", "resume"))
    parser.add_argument("--pid", type=int, action="append", default=[], help="a process (repeat; default: all)")
    parser.add_argument("--timeout-ms", type=int, default=10000, help="how long lock waits for running work")
    parser.add_argument("--gpu-pair", action="append", default=[], metavar="OLD:NEW",
                        help="resume: restore onto another GPU (the driver's gpuPairs)")
    parser.add_argument("--deadline-s", type=float, default=DEADLINE_S,
                        help="one driver call at most this long, then an error (0: no bound)")
    parser.add_argument("--fake", action="store_true", default=os.environ.get("GPU_PARK_FAKE") == "1",
                        help="no driver: a stand-in with the driver's states (tests)")
    args = parser.parse_args(argv)
    found = cuda_processes()
    pids = args.pid or [p["pid"] for p in found]
    out: dict = {"ok": True, "operation": args.operation, "processes": found, "error": None}
    try:
        if args.operation != "list" and pids:  # nothing to park: no driver needed either
            driver = FakeDriver() if args.fake else Driver(deadline=args.deadline_s or None)
            pairs = [tuple(p.split(":", 1)) for p in args.gpu_pair]
            if any(len(p) != 2 for p in pairs):
                raise ParkError("--gpu-pair takes OLD:NEW, two GPU UUIDs")
            out = {"park": lambda: park(driver, pids, args.timeout_ms),
                   "resume": lambda: resume(driver, pids, pairs),
                   "state": lambda: states(driver, pids)}[args.operation]()
            out["driver_version"] = driver.version
        out["mode"] = "fake" if args.fake else "cuda"
    except (ParkError, ValueError) as exc:
        out = {"ok": False, "operation": args.operation, "processes": [], "error": str(exc),
               "mode": "fake" if args.fake else "cuda"}
    out["pids"] = pids
    print(json.dumps(out), flush=True)
    code = 0 if out["ok"] else 1
    if any(t.name.startswith("gpu-park ") and t.is_alive() for t in threading.enumerate()):
        os._exit(code)  # a driver call past its deadline: leave it behind rather than wait at exit
    return code


if __name__ == "__main__":
    sys.exit(main())
