#!/usr/bin/env python3
"""Parking through the whole stack on a GPU host: the real hub, spawner, proxy and gpu-reclaim
(in the console's process, GPU_IDLE_ACTION=park), the user's kernel in a real container.

For each size (GB), with one GPU left free for the two users (on a host with more GPUs, exempt
"filler" users hold the others, so that B can only get A's):
  1. user A's server starts through the hub's REST API; a kernel (Jupyter protocol over the
     proxy) allocates that many GB of tensors, computes an exact checksum (int64 sums of their
     bits), keeps a random note and ticks a tiny CUDA op every 20 ms;
  2. A goes idle: gpu-reclaim warns, then parks it (gpu-park by docker exec inside A's
     container as 1000:100, docker pause, NVML back at rest, the GPU given back); timed from
     the allocation's end, with the Parker's own step timings from the audit log;
  3. NVML's reading of the GPU while A is parked; A's URL answers 503 at once (no route);
  4. user B starts through the hub: the allocator gives B the GPU A had; A's Resume (the hub's
     /hub/parked/ page, A's own token) puts A in the GPU line for that GPU, and the page names
     B as its holder; B's kernel allocates as much as A had and runs the bf16 matmul
     (tests/gpu_host/matmul.py), against the host's figure of the same GPU before A; B stops;
  5. A resumes by itself, first in line: restored onto its GPU, the route back; A's kernel (same
     kernel, a new websocket) recomputes the checksum: the same tensors, the same note, and no
     tick while parked (A could not run while B held the GPU); nor is it reclaimed again at once.
Run after the stack's `prepare` (tests/gpu_host/stack.py; the image carries gpu-park):

    python3 tests/gpu_host/park_stack.py --sizes 1,10,40       (OUT set: $OUT/park_stack.json)
    python3 tests/gpu_host/park_stack.py --sizes '' --cases two-kernels,uvm   (see one_case)

Dry run on fake GPUs (GPUHOST_LOCAL=1, as stack.py's): gpu-park's driver stand-in
(GPUHUB_PARK_FAKE), readings from a file (tests/e2e/fake_gpu), host memory instead of tensors.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import stack as st  # noqa: E402

T, GRACE, INTERVAL = 20, 6, 1  # gpu-reclaim's policy for the run: warn after 20 s idle, park 6 s later
A, B = "parka", "parkb"
FAKE_READINGS = st.WORK / "fake-gpu-readings.json"

KERNEL_A = """
import glob, os, secrets, threading, time
_note, _fake, _t0 = secrets.token_hex(8), {fake}, time.monotonic()
if _fake:  # a "CUDA process": a GPU's device node open (gpu-park finds it so), host memory as tensors
    import hashlib
    _nodes = [open(n, 'rb') for n in sorted(glob.glob('/dev/nvidia[0-9]*'))[:1]]
    _blocks = [bytearray(os.urandom(int({gb} * 2**20)))]
    def _checksum(): return hashlib.sha256(b''.join(_blocks)).hexdigest()
    def _op(): sum(_blocks[0][:64])
else:
    import torch
    _g = torch.Generator(device='cuda').manual_seed(1234)
    _blocks, _left = [], int({gb} * 2**30)
    while _left > 0:
        _n = min(2**28, _left) // 4
        _blocks.append(torch.randn(_n, device='cuda', generator=_g)); _left -= _n * 4
    torch.cuda.synchronize()
    _tiny = torch.ones(16, device='cuda')
    def _checksum():
        total = 0
        for b in _blocks:
            bits = b.view(torch.int32)
            for i in range(0, bits.numel(), 2**26):
                total += int(bits[i:i + 2**26].to(torch.int64).sum().item())
        return str(total)
    def _op(): _tiny.add_(1); torch.cuda.synchronize()
_first = _checksum()
if not _fake: torch.cuda.empty_cache()
_alloc_s, _ticks = round(time.monotonic() - _t0, 3), []
def _tick():
    while True:
        _op(); _ticks.append(time.time()); del _ticks[:-100000]; time.sleep(0.02)
threading.Thread(target=_tick, daemon=True).start()
"""
VERIFY_A = ("(lambda t0=__import__('time').monotonic(): {{'checksum': _checksum(), 'note': _note, "
            "'ticks_while_parked': len([x for x in _ticks if {frm} < x < {to}]), 'ticks': len(_ticks), "
            "'verify_s': round(__import__('time').monotonic() - t0, 3)}})()")
# A second kind of GPU memory in A's kernel: 256 MiB of managed (UVM) memory through the driver's
# own call (torch's context is current in the kernel's main thread), written from the host. NVIDIA
# lists UVM among what cuda-checkpoint cannot checkpoint: the park should fail and the server be
# stopped as `stop` would have (or, if the driver parks it after all, come back with it).
UVM_A = """
import ctypes
_cu = ctypes.CDLL('libcuda.so.1')
_uvm = ctypes.c_uint64(0)
_uvm_rc = _cu.cuMemAllocManaged(ctypes.byref(_uvm), ctypes.c_size_t(256 << 20), 1)  # CU_MEM_ATTACH_GLOBAL
if _uvm_rc == 0:
    ctypes.memset(_uvm.value, 7, 256 << 20)
"""
CASES = {"two-kernels": ("parktwo", (0.5, 1.5)), "uvm": ("parkuvm", (1.0,))}  # user, each kernel's GB
B_ALLOC = ("(lambda: (globals().__setitem__('_hold', [__import__('torch').empty(min(2**28, {left} - i) // 4, "
           "device='cuda') for i in range(0, {left}, 2**28)]), __import__('torch').cuda.synchronize(), "
           "len(_hold))[-1])()")


def audit_tail(stack: st.Stack, since: float) -> list[dict]:
    path = stack.state / "gpu-audit.jsonl"
    out = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("epoch", 0) >= since:
            out.append(entry)
    return out


def parked_records(stack: st.Stack) -> dict:
    path = stack.state / "gpu-parked.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if not k.startswith("_")}


def gpu_used(uuid: str) -> int | None:
    """NVML's used MiB of that GPU (the Parker's own reader), or None on fake GPUs."""
    if st.LOCAL:
        return None
    from hub.gpus.nvml import NVMLReader
    return next((r.memory_used_mib for r in NVMLReader().read() if st.norm(r.uuid) == st.norm(uuid)), None)


def container_status(stack: st.Stack, user: str) -> str | None:
    for c in stack.client.api.containers(all=True, filters={"label": [f"{st.LABEL}.instance={st.PREFIX}",
                                                                      f"{st.LABEL}.user={user}"]}):
        return c["State"]
    return None


def wait_for(predicate, timeout: float, what: str, step: float = 0.25):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise TimeoutError(f"{what}: not within {timeout:g} s")


def resume(stack: st.Stack, token: str) -> tuple[int, str, float]:
    """A's Resume through the hub, as the page's button posts it (A's own token)."""
    import requests
    t0 = time.monotonic()
    r = requests.post(f"{stack.proxy_url}/hub/parked/", data={"action": "resume"}, allow_redirects=False,
                      headers={"Authorization": f"token {token}"}, timeout=900)
    return r.status_code, r.headers.get("Location") or r.text, round(time.monotonic() - t0, 2)


def a_memory(stack: st.Stack) -> dict:
    """A's container: its memory limit, and its cgroup's use and OOM kills (inside: cgroup v2)."""
    name = stack.containers()[A]["name"]
    info = stack.client.api.inspect_container(name)
    out = {"limit_mib": info["HostConfig"]["Memory"] // 2**20, "oom_killed": info["State"].get("OOMKilled")}
    try:
        r = stack.client.containers.get(name).exec_run(["sh", "-c", "cat /sys/fs/cgroup/memory.current; "
                                                        "grep -E '^(oom|oom_kill) ' /sys/fs/cgroup/memory.events"])
        lines = r.output.decode().split()
        out["current_mib"] = int(lines[0]) // 2**20
        out.update({lines[i]: int(lines[i + 1]) for i in range(1, len(lines) - 1, 2)})
    except Exception as exc:  # noqa: BLE001 - a diagnosis: what could not be read says so
        try:  # paused: no exec; the engine's stats still read its cgroup
            stats = stack.client.api.stats(name, stream=False)["memory_stats"]
            out["current_mib"] = int(stats["usage"]) // 2**20
        except Exception:  # noqa: BLE001
            out["cgroup"] = f"{type(exc).__name__}: {exc}"
    return out


def a_logs(stack: st.Stack, n: int = 40) -> str:
    try:
        return stack.client.containers.get(stack.containers()[A]["name"]).logs(tail=n).decode(errors="replace")
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"


def start_on(stack: st.Stack, user: str, uuid: str) -> tuple[str | None, str | None]:
    """Start ``user``'s server through the hub: (the GPU it got, None), or (None, why not)."""
    code, message = stack.hub.start(user)
    if code not in (201, 202):
        return None, f"start {user}: {code} {message}"
    stack.hub.wait(user, ready=True)
    gpu = stack.containers()[user]["gpu"]
    if st.norm(gpu) != st.norm(uuid):
        return gpu, f"{user} got {gpu}, not the GPU left free ({uuid})"
    return gpu, None


def has_route(stack: st.Stack, user: str) -> bool:
    """Whether the proxy routes ``user``'s server (CHP keeps "/user/parka", no slash)."""
    import requests
    routes = requests.get(f"http://127.0.0.1:{stack.ports['proxy_api']}/api/routes", timeout=10,
                          headers={"Authorization": f"token {stack.proxy_token}"}).json()
    return any(path.rstrip("/") == f"/user/{user}" for path in routes)


def resume_entries(stack: st.Stack, user: str, since: float) -> list[dict]:
    """``user``'s resume entries in the audit log since ``since``, waited for (up to 60 s): the
    entry comes at the resume's end, after the memory limit from before parking is put back (or
    said to stay raised), seconds after JupyterHub's own route check may have put the route back."""
    def entries() -> list[dict]:
        return [e for e in audit_tail(stack, since) if e.get("user") == user
                and str(e.get("action")).startswith("park-resume")]
    try:
        wait_for(entries, 60, "the resume's audit entry")
    except TimeoutError:
        pass
    return entries()


def b_computes(stack: st.Stack, row: dict, alloc_gb: float = 0, baseline: dict | None = None) -> None:
    """B's kernel on the GPU: ``alloc_gb`` allocated first, then the bf16 matmul (GPUs only)."""
    kb = st.Kernel(stack.proxy_url, B, stack.hub.token_for(B))
    kb.start()
    if not st.LOCAL:
        kb.execute(st.kernel_setup_code())
        if alloc_gb:
            left = int(alloc_gb * 2**30)
            row["b_allocated_chunks"] = kb.call(B_ALLOC.format(left=left), timeout=300)
        row["b_matmul"] = kb.call("bench(0)", timeout=300)
        if baseline:
            row["b_matmul"]["vs_host_before"] = round(row["b_matmul"]["tflops"] / baseline["tflops"], 4)
    kb.close()


def one_size(stack: st.Stack, gb: float, uuid: str, baseline: dict | None, row: dict) -> dict:
    t0 = time.time()
    st.log(f"{gb:g} GB: A starts")
    row["a_gpu"], error = start_on(stack, A, uuid)
    if error:
        return {**row, "error": error}
    token_a = stack.hub.token_for(A)
    ka = st.Kernel(stack.proxy_url, A, token_a)
    ka.start()
    ka.execute(KERNEL_A.format(fake=st.LOCAL, gb=gb), timeout=600)
    ready = ka.call("{'checksum': _first, 'note': _note, 'alloc_s': _alloc_s, 'pid': os.getpid()}")
    ka.close()  # a tab would keep it; the resumed kernel is reached on a new websocket
    row["alloc_s"] = ready["alloc_s"]
    idle_from = time.monotonic()
    row["gpu_used_loaded_mib"] = gpu_used(uuid)
    st.log(f"{gb:g} GB: allocated in {ready['alloc_s']} s; waiting for gpu-reclaim to park A")
    wait_for(lambda: container_status(stack, A) == "paused" and A in json.dumps(parked_records(stack)),
             T + GRACE + 3 * gb + 120, "gpu-reclaim parks A")
    parked_at = time.time()
    row["idle_to_parked_s"] = round(time.monotonic() - idle_from, 1)
    import requests

    # looked at first (the reads below take about a second, which the H100's 1.0 s of the second
    # run was); the hub drops a parked server's route when it sees its record (WATCH_S in
    # hub/hub_process/parking.py): a request sent before that waits until the server resumes
    row["route_gone_after_parked_s"] = round(wait_for(lambda: not has_route(stack, A), 30, "the parked server's route removed") and
                                             time.time() - parked_at, 2)
    record = next(iter(v for v in parked_records(stack).values() if v.get("user") == A), {})
    row["parked_record"] = {k: record.get(k) for k in ("uuid", "gpu_mib", "mem_limit", "mem_limit_parked")}
    row["a_memory_parked"] = a_memory(stack)
    entries = audit_tail(stack, t0)
    row["audit"] = [(e.get("action"), e.get("detail", "")[:200]) for e in entries]
    row["park_timings"] = next((e.get("timings") for e in entries if e.get("action") == "park"), None)
    time.sleep(1)
    row["gpu_used_parked_mib"] = gpu_used(uuid)
    q0 = time.monotonic()
    r = requests.get(f"{stack.proxy_url}/user/{A}/api/status", headers={"Authorization": f"token {token_a}"},
                     timeout=60)
    row["a_request_while_parked"] = {"status": r.status_code, "answered_in_s": round(time.monotonic() - q0, 3)}
    console = stack.console() or {}
    row["console_holders_while_parked"] = sorted(
        (g.get("holder") or {}).get("user", "") for g in console.get("gpus", []) if g.get("holder"))

    st.log(f"{gb:g} GB: parked; B starts on the freed GPU")
    gpu, error = start_on(stack, B, uuid)
    if gpu is None:
        return {**row, "error": error}
    row["b_gpu_same"] = error is None
    code, where, took = resume(stack, token_a)  # B holds the GPU: A joins the GPU line for it
    page = requests.get(f"{stack.proxy_url}/hub/parked/", headers={"Authorization": f"token {token_a}"}, timeout=60)
    row["resume_while_b_holds"] = {"status": code, "to": where[:120], "answered_in_s": took,
                                   "page_names_b": B in page.text, "page_says_in_line": "line" in page.text.lower(),
                                   "paused_still": container_status(stack, A) == "paused"}
    b_computes(stack, row, gb, baseline)
    row["a_paused_while_b_ran"] = container_status(stack, A) == "paused"
    b_stop = time.time()
    stack.hub.stop(B)

    st.log(f"{gb:g} GB: B stopped; A resumes by itself (first in line for its GPU)")
    resume_from = time.time()
    try:
        wait_for(lambda: container_status(stack, A) == "running" and not parked_records(stack), 120 + gb * 2,
                 "A resumed by itself")
    except TimeoutError:
        pass
    row["resume"] = {"by_itself_after_b_stop_asked_s": round(time.time() - b_stop, 2),
                     "container": container_status(stack, A)}
    if container_status(stack, A) != "running":
        return {**row, "error": "resume did not bring A back", "audit": [(e.get("action"), e.get("detail", "")[:300])
                                                                         for e in audit_tail(stack, t0)]}
    # the container runs again once the record is gone and it is unpaused; the GPU state is restored
    # after that (seconds for tens of GB) and the route comes back last: until then A's requests
    # reach the hub, which sends them back to /hub/user/... (the first GPU run connected too early)
    try:
        wait_for(lambda: has_route(stack, A), 120 + gb * 2, "A's route back after the resume")
    except TimeoutError:
        return {**row, "error": "A's route did not come back after the resume", "hub_log": stack.hub_log_tail(3000)}
    row["resume"]["route_back_after_b_stop_asked_s"] = round(time.time() - b_stop, 2)
    ka.connect()
    verified = ka.call(VERIFY_A.format(frm=parked_at + 0.5, to=resume_from - 0.5), timeout=120)
    pid = ka.call("os.getpid()")
    ka.close()
    resumed = resume_entries(stack, A, b_stop)
    row["resume_timings"] = next((e.get("timings") for e in resumed if e.get("action") == "park-resume"), None)
    row["resume_audit"] = [(e.get("who"), e.get("action"), e.get("detail", "")[:300]) for e in resumed]
    row["gpu_used_resumed_mib"] = gpu_used(uuid)
    row["a_memory_resumed"] = a_memory(stack)
    # resumed after longer than the timeout: its idle clock starts at the resume (T more seconds)
    time.sleep(4)
    again = [e.get("action") for e in audit_tail(stack, resume_from) if e.get("user") == A
             and e.get("action") in ("reclaim-warn", "reclaim", "park")]
    row["reclaimed_again_right_after_resume"] = again
    row.update(checksum_same=verified["checksum"] == ready["checksum"], note_same=verified["note"] == ready["note"],
               ticks_while_parked=verified["ticks_while_parked"], ticks=verified["ticks"],
               verify_s=verified["verify_s"], parked_for_s=round(resume_from - parked_at, 1),
               kernel_pid_same=pid == ready["pid"])
    stack.hub.stop(A)
    row["ok"] = bool(row["checksum_same"] and row["resume_timings"] and not row["reclaimed_again_right_after_resume"] and row["note_same"] and row["ticks_while_parked"] == 0
                     and row["kernel_pid_same"] and row["b_gpu_same"] and row["a_paused_while_b_ran"]
                     and row["resume_while_b_holds"]["paused_still"] and row["resume_while_b_holds"]["page_names_b"]
                     and row["a_request_while_parked"]["status"] == 503
                     and (st.LOCAL or (row["gpu_used_parked_mib"] or 1e9) <= 1024))
    return row


def one_case(stack: st.Stack, case: str, uuid: str, row: dict) -> dict:
    """``two-kernels``: two CUDA processes in one server, parked and resumed together (A's Resume,
    its GPU free). ``uvm``: a kernel that also holds managed memory; parked and resumed like the
    others if the driver can, else the park fails, its rollback leaves the kernel running, and
    gpu-reclaim stops the server instead: the GPU back at rest, and the next user computes on it."""
    user, sizes = CASES[case]
    t0 = time.time()
    st.log(f"{case}: {user} starts")
    _, error = start_on(stack, user, uuid)
    if error:
        return {**row, "error": error}
    token = stack.hub.token_for(user)
    kernels, ready = [], []
    for gb in sizes:
        k = st.Kernel(stack.proxy_url, user, token)
        k.start()
        k.execute(KERNEL_A.format(fake=st.LOCAL, gb=gb), timeout=600)
        if case == "uvm" and not st.LOCAL:
            k.execute(UVM_A)
            row["uvm_alloc_result"] = k.call("_uvm_rc")
        ready.append(k.call("{'checksum': _first, 'note': _note, 'pid': os.getpid()}"))
        k.close()
        kernels.append(k)
    row["gpu_used_loaded_mib"] = gpu_used(uuid)
    mine = lambda: [e for e in audit_tail(stack, t0) if e.get("user") == user]  # noqa: E731
    parked = lambda: container_status(stack, user) == "paused" and user in json.dumps(parked_records(stack))  # noqa: E731
    stopped = lambda: any(e.get("action") == "reclaim" for e in mine()) and container_status(stack, user) is None  # noqa: E731
    wait_for(lambda: parked() or stopped(), T + GRACE + 10 * sum(sizes) + 120, f"{user} parked or stopped")
    parked_at = time.time()
    row["audit"] = [(e.get("action"), e.get("detail", "")[:400]) for e in mine()]
    if stopped():
        row["outcome"] = "stopped instead"
        row["park_failed"] = any(e.get("action") in ("park-failed", "park-refused") for e in mine())
        row["gpu_used_after_stop_mib"] = gpu_used(uuid)
        gpu, error = start_on(stack, B, uuid)  # the next user computes on that GPU
        if gpu is None:
            return {**row, "error": error}
        row["b_gpu_same"] = error is None
        b_computes(stack, row)
        stack.hub.stop(B)
        row["ok"] = bool(row["park_failed"] and row["b_gpu_same"]
                         and (st.LOCAL or ((row["gpu_used_after_stop_mib"] or 1e9) <= 1024 and row.get("b_matmul"))))
        return row
    row["outcome"] = "parked"
    row["park_timings"] = next((e.get("timings") for e in mine() if e.get("action") == "park"), None)
    row["gpu_used_parked_mib"] = gpu_used(uuid)
    time.sleep(2)
    resume_from = time.time()
    code, where, took = resume(stack, token)  # its GPU is free: it resumes at once
    row["resume_post"] = {"status": code, "to": where[:120], "answered_in_s": took}
    wait_for(lambda: container_status(stack, user) == "running" and not parked_records(stack) and has_route(stack, user),
             120 + 3 * sum(sizes), f"{user} resumed")
    verified = []
    for k in kernels:
        k.connect()
        verified.append({**k.call(VERIFY_A.format(frm=parked_at + 0.5, to=resume_from - 0.5), timeout=120),
                         "pid": k.call("os.getpid()")})
        k.close()
    row["resume_audit"] = [(e.get("action"), e.get("detail", "")[:300], e.get("timings"))
                           for e in resume_entries(stack, user, t0)]
    row["kernels"] = [{"checksum_same": v["checksum"] == r["checksum"], "note_same": v["note"] == r["note"],
                       "pid_same": v["pid"] == r["pid"], "ticks_while_parked": v["ticks_while_parked"]}
                      for v, r in zip(verified, ready)]
    if case == "uvm" and not st.LOCAL:
        kernels[0].connect()
        row["uvm_after"] = kernels[0].call("ctypes.string_at(_uvm.value, 4).hex()")
        kernels[0].close()
    stack.hub.stop(user)
    row["ok"] = bool(row["kernels"] and all(k["checksum_same"] and k["note_same"] and k["pid_same"]
                                            and k["ticks_while_parked"] == 0 for k in row["kernels"])
                     and any(a == "park-resume" for a, *_ in row["resume_audit"]))
    return row


def run(stage: dict, sizes: list[float], cases: list[str] = ()) -> dict:
    from hub.gpus.inventory import discover

    exempt = [B] + [f"parkfill{i}" for i in range(16)]
    reclaim_env = {"GPU_IDLE_TIMEOUT": str(T), "GPU_IDLE_GRACE": str(GRACE), "GPU_SAMPLE_INTERVAL": str(INTERVAL),
                   "GPU_IDLE_ACTION": "park", "GPU_PARK_MAX": "3600", "GPU_PARK_HOST_RESERVE": "8",
                   "GPU_IDLE_EXEMPT_USERS": ",".join(exempt)}
    extra = {"GPUHUB_PARK_SETTLE_S": "30"}
    if st.LOCAL:
        reclaim_env.update(GPU_USAGE_READER="fake_readings:FileReader", GPUHUB_PARK_FAKE="1",
                           GPU_PARK_HOST_RESERVE="0")
        extra.update(FAKE_GPU_READINGS=str(FAKE_READINGS),
                     PYTHONPATH=f"{st.python_path()}:{st.ROOT / 'tests/e2e/fake_gpu'}")
        os.environ["GPUHUB_PARK_FAKE"] = "1"  # the hub's resume: the same stand-in
    os.environ.update(GPUHOST_RECLAIM_PORT=str(st.free_port()), GPUHOST_RECLAIM_ENV=json.dumps(reclaim_env),
                      GPUHOST_SERVICE_EXTRA_ENV=json.dumps(extra))
    summary: dict = {"what": "tests/gpu_host/park_stack.py: parking through the real hub, spawner, proxy and "
                             "gpu-reclaim (policy park); B uses the freed GPU; A resumes through the hub",
                     "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     "mode": "fake GPUs (dry run)" if st.LOCAL else "real GPUs",
                     "policy": {"timeout_s": T, "grace_s": GRACE, "interval_s": INTERVAL, "action": "park"},
                     "sizes": []}
    import docker
    # the network again: stack.py's own run removes it at its end
    base = f"{st.PREFIX}/hostroot:local" if st.LOCAL else "gpukit/hostroot:1"
    binds = json.loads((st.WORK / "binds.json").read_text())
    stage = {**stage, "network": st.choose_network(docker.from_env(), binds, base)}
    summary["network"] = stage["network"]
    stack = st.Stack(stage)
    try:
        gpus, source = discover()
        if st.LOCAL:
            FAKE_READINGS.write_text(json.dumps({g.uuid: {"util": 0, "mem": 100} for g in gpus}))
        busy = stack.held_elsewhere(gpus)
        free = [g for g in gpus if g.uuid not in busy]
        if not free:
            raise RuntimeError("no free GPU")
        summary["host"] = {"gpus": [{"index": g.index, "uuid": g.uuid, "name": g.name} for g in gpus],
                           "held_by_others": sorted(busy)}
        if not st.LOCAL:
            import subprocess
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True)
            summary["host"]["driver"] = smi.stdout.strip().splitlines()[0]
        summary["versions"] = stack.start_proxy()
        stack.start_hub()
        fillers = exempt[1:len(free)]  # every free GPU but one held by an exempt filler
        r = stack.hub.api("POST", "/users", json={"usernames": [A, B, *fillers, *(CASES[c][0] for c in cases)]})
        assert r.status_code == 201, r.text
        for name in fillers:
            code, message = stack.hub.start(name)
            assert code in (201, 202), f"start {name}: {code} {message}"
            stack.hub.wait(name, ready=True)
        held = stack.containers()
        left = [g for g in free if g.uuid not in {held[f]["gpu"] for f in fillers}]
        assert len(left) == 1, f"one GPU should be left free: {left}"
        uuid = left[0].uuid
        summary["gpu"] = {"uuid": uuid, "fillers": fillers}
        baseline = None
        if not st.LOCAL:
            baseline = st.host_bench().get(uuid) or next(
                (v for k, v in st.host_bench().items() if st.norm(k) == st.norm(uuid)), None)
            summary["host_matmul_before"] = baseline
            summary["gpu_used_rest_mib"] = gpu_used(uuid)
        def guarded(rows: list, row: dict, users: tuple[str, ...], step) -> None:
            """One size or case: its row, or what broke (the next one runs); its users stopped."""
            try:
                rows.append(step(row))
            except Exception as exc:  # noqa: BLE001 - the report says what broke
                import traceback
                row.update(error=f"{type(exc).__name__}: {exc}"[:3000], traceback=traceback.format_exc()[-1500:],
                           hub_log=stack.hub_log_tail(3000))
                if A in users:
                    row["a_logs"] = a_logs(stack)
                    try:
                        row["a_memory_at_error"] = a_memory(stack)
                    except Exception:  # noqa: BLE001
                        pass
                rows.append(row)
                for user in users:
                    try:
                        stack.hub.stop(user)
                    except Exception:  # noqa: BLE001
                        pass
            st.log(json.dumps(rows[-1])[:1500])
            emit(summary)

        for gb in sizes:
            guarded(summary["sizes"], {"gb": gb}, (A, B), lambda row: one_size(stack, gb, uuid, baseline, row))
        summary["cases"] = []
        for case in cases:
            guarded(summary["cases"], {"case": case}, (CASES[case][0], B),
                    lambda row: one_case(stack, case, uuid, row))
    finally:
        stack.cleanup()
    rows = summary["sizes"] + summary.get("cases", [])
    summary["ok"] = bool(rows) and all(r.get("ok") for r in rows)
    return summary


def emit(summary: dict) -> None:
    out = os.environ.get("OUT")
    if out and Path(out).is_dir():
        (Path(out) / "park_stack.json").write_text(json.dumps(summary, indent=1) + "\n")
        for name in ("hub.log", "proxy.log"):
            if (st.WORK / name).is_file():
                (Path(out) / f"park-{name}").write_bytes((st.WORK / name).read_bytes()[-4_000_000:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,10", help="GB of A's tensors, one round each ('' for none)")
    parser.add_argument("--cases", default="", help=f"after the sizes, comma-separated: {', '.join(CASES)}")
    args = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        stage = st.prepared_stage()
    except RuntimeError as exc:
        print(json.dumps({"ok": False, "error": str(exc)}))
        return 2
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    if set(cases) - set(CASES):
        parser.error(f"--cases: {', '.join(sorted(set(cases) - set(CASES)))} unknown (known: {', '.join(CASES)})")
    summary = run(stage, [float(s) for s in args.sizes.split(",") if s.strip()], cases)
    emit(summary)
    print(json.dumps(summary, indent=1), flush=True)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
