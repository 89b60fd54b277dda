"""The scale curve of `make bench`: how a hub does with many idle servers running.

At each step (0, 50, 100 … idle servers, started through the hub's REST API and left alone):

- idle CPU over ``quiet`` seconds (>= 60) of nobody doing anything, from the kernel's own
  accounting: each container's cgroup (cpuacct.usage on cgroup v1, cpu.stat on v2), the engine
  (dockerd, containerd and the containerd shims, from /proc/<pid>/stat) and the whole host
  (/proc/stat); per server = (users' containers + hub + proxy + engine) / servers;
- memory of the hub and proxy (docker stats, and their anonymous memory from the memory cgroup),
  and the median idle server (docker stats);
- latency p50 of the hub's /hub/api/users, the GPU console's /api/gpus (ours) and a request
  through the proxy to an idle server;
- single spawn p50 (start → the server answers through the proxy), one at a time.
"""
from __future__ import annotations

import glob
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from hub.hub_process.config.configure import RECLAIM_TOKEN_ENV

TICK = os.sysconf("SC_CLK_TCK")
ENGINE = ("dockerd", "containerd")


def container_cpu_s(container_id: str) -> float | None:
    """CPU seconds the container's cgroup has used so far, or None where it is not found."""
    v1 = Path(f"/sys/fs/cgroup/cpuacct/docker/{container_id}/cpuacct.usage")
    if v1.exists():
        return int(v1.read_text()) / 1e9
    for stat in (f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/cpu.stat",
                 f"/sys/fs/cgroup/docker/{container_id}/cpu.stat"):
        if os.path.exists(stat):
            fields = dict(line.split() for line in Path(stat).read_text().splitlines())
            return int(fields["usage_usec"]) / 1e6
    return None


def engine_cpu_s(containers: set[str] | None = None) -> dict[str, float]:
    """CPU seconds of the engine's processes so far: dockerd, containerd, the containerd shims
    (one per container; only those of `containers`, full ids, where given: other sessions'
    containers on a shared engine have shims too). dockerd and containerd serve every client.
    Only processes in this PID namespace count: a docker-in-docker container's own engine
    (another session's test host) is a `dockerd` too."""
    parts = {"dockerd": 0, "containerd": 0, "shims": 0}
    here = os.readlink("/proc/self/ns/pid")
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            text = Path(stat).read_text()
            comm = text[text.index("(") + 1:text.rindex(")")]
            if (comm in ENGINE or comm.startswith("containerd-shim")) and \
                    os.readlink(Path(stat).with_name("ns") / "pid") != here:
                continue
            if comm.startswith("containerd-shim") and containers is not None:
                args = Path(stat).with_name("cmdline").read_bytes().split(b"\0")
                cid = args[args.index(b"-id") + 1].decode() if b"-id" in args else ""
                if cid not in containers:
                    continue
        except (OSError, ValueError):
            continue
        if comm in ENGINE or comm.startswith("containerd-shim"):
            fields = text[text.rindex(")") + 2:].split()
            parts[comm if comm in ENGINE else "shims"] += int(fields[11]) + int(fields[12])  # utime, stime
    return {k: v / TICK for k, v in parts.items()}


def process_cpu_s(pid: int) -> float | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def process_name(pid: int | str, args: str) -> str:
    """A process of the hub's containers by its command line (paths under /srv/ and `-f` left
    out); the GPU console's process with gpu-reclaim in it (its environment has gpu-reclaim's
    token: hub/hub_process/config/configure.py, configure_reclaim) is named so."""
    name = " ".join(a for a in args.split() if not a.startswith("/srv/") and a != "-f")[:60]
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return name
    if any(v.startswith(f"{RECLAIM_TOKEN_ENV}=".encode()) for v in environ.split(b"\0")):
        name += " + gpu-reclaim"
    return name


def own_processes(containers: list[str], sh) -> dict[int, str]:
    """pid -> short command line of each process in the hub's own containers (the hub, the GPU
    console with gpu-reclaim, the culler, the proxy)."""
    out = {}
    for container in containers:
        for line in sh("docker", "top", container, "-eo", "pid,args").splitlines()[1:]:
            pid, args = line.split(None, 1)
            if not args.startswith(("tini", "/sbin/docker-init")):
                out[int(pid)] = process_name(pid, args)
    return out


def host_cpu() -> tuple[int, int]:
    values = [int(v) for v in open("/proc/stat").readline().split()[1:]]
    return sum(values), values[3] + values[4]


def idle_cpu(ids: dict[str, str], own: list[str], quiet: float, processes: dict[int, str] | None = None) -> dict:
    """Cores used over `quiet` seconds: each user container, the hub's own containers (`own`)
    and their `processes` (pid -> name), the engine, the host. `ids`: container name -> id."""
    processes = processes or {}
    before = {n: container_cpu_s(i) for n, i in ids.items()}
    procs0 = {pid: process_cpu_s(pid) for pid in processes}
    mine = set(ids.values())
    engine0, host0, t0 = engine_cpu_s(mine), host_cpu(), time.monotonic()
    time.sleep(quiet)
    after = {n: container_cpu_s(i) for n, i in ids.items()}
    procs1 = {pid: process_cpu_s(pid) for pid in processes}
    engine1, host1, wall = engine_cpu_s(mine), host_cpu(), time.monotonic() - t0
    cores = {n: (after[n] - before[n]) / wall for n in ids if before[n] is not None and after[n] is not None}
    users = [v for n, v in cores.items() if n not in own]
    hub = {n: round(cores.get(n, 0) * 100, 3) for n in own}
    by_process: dict[str, float] = {}
    for pid, name in processes.items():
        if procs0[pid] is not None and procs1[pid] is not None:
            by_process[name] = round(by_process.get(name, 0) + (procs1[pid] - procs0[pid]) / wall * 100, 3)
    engine_parts = {k: round((engine1[k] - engine0[k]) / wall * 100, 3) for k in engine0}
    engine = sum(engine1.values()) / wall - sum(engine0.values()) / wall
    host = (1 - (host1[1] - host0[1]) / max(1, host1[0] - host0[0])) * os.cpu_count()
    n = len(users)
    total = sum(users) + sum(cores.get(x, 0) for x in own) + engine
    return {"quiet_s": round(wall, 1), "servers": n,
            "server_pct_of_core_median": round(statistics.median(users) * 100, 3) if users else None,
            "server_pct_of_core_max": round(max(users) * 100, 3) if users else None,
            "hub_pct_of_core": hub, "hub_processes_pct_of_core": by_process,
            "engine_pct_of_core": round(engine * 100, 3), "engine_parts_pct_of_core": engine_parts,
            "host_busy_cores": round(host, 3),
            "per_server_pct_of_core": round(total / n * 100, 4) if n else None,
            "all_pct_of_core": round(total * 100, 3)}


def processes_rss_mb(container: str, sh) -> dict[str, float]:
    """Resident memory (VmRSS) of each process in a container, by its command line: which of the
    hub's processes (the hub, the GPU console with gpu-reclaim, the culler) uses what."""
    out = {}
    for line in sh("docker", "top", container, "-eo", "pid,args").splitlines()[1:]:
        pid, args = line.split(None, 1)
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        kb = next((int(x.split()[1]) for x in status.splitlines() if x.startswith("VmRSS:")), 0)
        if kb > 2048:  # tini and the like
            name = process_name(pid, args)
            out[name] = round(out.get(name, 0) + kb / 1024, 1)
    return out


def container_anon_mb(container_id: str) -> float | None:
    """A container's anonymous memory (its processes' own), from its memory cgroup: what
    `docker stats` counts less the page cache, which a container is charged for or not
    depending on who read a shared file (an image's layer) first."""
    for path, key in ((f"/sys/fs/cgroup/memory/docker/{container_id}/memory.stat", "total_rss"),
                      (f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/memory.stat", "anon"),
                      (f"/sys/fs/cgroup/docker/{container_id}/memory.stat", "anon")):
        try:
            fields = dict(line.split() for line in Path(path).read_text().splitlines())
        except OSError:
            continue
        return round(int(fields[key]) / 2**20, 1)
    return None


def latency_p50(url: str, headers: dict, n: int = 20) -> float | None:
    times = []
    with requests.Session() as s:
        for _ in range(n):
            t0 = time.monotonic()
            try:
                ok = s.get(url, headers=headers, timeout=30).status_code == 200
            except requests.RequestException:
                ok = False
            if ok:
                times.append(time.monotonic() - t0)
    return round(statistics.median(times) * 1000, 1) if times else None


def fill(hut, names: list[str], wave: int = 10, timeout: float = 300) -> dict:
    """Start these users' servers through the REST API, `wave` at a time, until all are ready."""
    t0, failed = time.monotonic(), []
    for i in range(0, len(names), wave):
        batch = names[i:i + wave]
        with ThreadPoolExecutor(len(batch)) as pool:
            list(pool.map(hut.hub.create_user, batch))
        for name in batch:
            r = hut.hub.api("POST", f"/users/{name}/server")
            if r.status_code not in (201, 202):
                failed.append(name)
        deadline = time.monotonic() + timeout
        waiting = set(batch) - set(failed)
        while waiting and time.monotonic() < deadline:
            # each user of the wave on its own: /users is paged (200 a page), and fills go past 200
            users = {name: hut.hub.api("GET", f"/users/{name}").json() for name in waiting}
            for name in list(waiting):
                server = users.get(name, {}).get("servers", {}).get("")
                if server and server.get("ready"):
                    waiting.discard(name)
                elif not server:  # failed and gone
                    waiting.discard(name)
                    failed.append(name)
            time.sleep(0.5)
        failed += sorted(waiting)
    return {"started": len(names) - len(failed), "failed": len(failed), "wall_s": round(time.monotonic() - t0, 1)}


SERVER_MB_GUESS = 100  # an idle server before the first step measured one (about 50 MB here)


def mem_available_mb() -> float | None:
    """The host's MemAvailable (Linux), so a step the machine cannot hold is skipped, not swapped."""
    try:
        for row in Path("/proc/meminfo").read_text().splitlines():
            if row.startswith("MemAvailable:"):
                return int(row.split()[1]) / 1024
    except OSError:
        pass
    return None


def curve(hut, steps: list[int], runs: int, quiet: float, console: bool, settle, memory_mb, sh,
          deadline: float | None = None) -> list[dict]:
    """The scale curve of one hub (a bench.run.HubUnderTest); `settle`, `memory_mb` and `sh`
    are bench/run.py's helpers. Past `deadline` (time.monotonic()) no further step starts."""
    headers = {"Authorization": f"token {hut.token}"}
    points, idle_names = [], []
    took: list[tuple[int, float, float]] = []  # (servers added, fill s, step s) of each step so far
    for n in steps:
        added = n - len(idle_names)
        # the last step's fixed part (quiet minute, spawns), and its fill time per server added
        grew = [(k, f, t) for k, f, t in took if k > 0]
        guess = took[-1][2] - took[-1][1] if took else 0
        guess += grew[-1][1] * added / grew[-1][0] if grew and added > 0 else 0
        if deadline is not None and time.monotonic() + guess > deadline:
            points.append({"idle_servers": n, "skipped": "out of time (--budget)"})
            hut_log(hut, points[-1])
            continue
        per_server = points[-1].get("idle_server_mb_median") if points and "skipped" not in points[-1] else None
        need, available = added * (per_server or SERVER_MB_GUESS) * 1.5, mem_available_mb()
        if added > 0 and available is not None and need > available:
            points.append({"idle_servers": n, "skipped": f"not enough memory: {added} more servers need about "
                                                          f"{need:.0f} MB, {available:.0f} MB available"})
            hut_log(hut, points[-1])
            continue
        step_start = time.monotonic()
        point = {"idle_servers": n}
        new = [f"idle{i:03d}" for i in range(len(idle_names), n)]
        if new:
            point["fill"] = fill(hut, new)
            idle_names += new
        running = [c for c in hut.user_containers() if c not in hut.containers]
        point["running_user_containers"] = len(running)
        time.sleep(10)  # the last starts' after-work (first requests, JupyterLab's build check)
        settle()
        ids = dict(zip(running + hut.containers, sh("docker", "inspect", "-f", "{{.Id}}", *running, *hut.containers).split()))
        point["idle_cpu"] = idle_cpu(ids, hut.containers, quiet, own_processes(hut.containers, sh))
        point["hub_processes_mb"] = {c: processes_rss_mb(c, sh) for c in hut.containers}
        mem = memory_mb(running + hut.containers)
        users = [v for k, v in mem.items() if k not in hut.containers]
        point["hub_and_proxy_mb"] = round(sum(mem.get(c, 0) for c in hut.containers), 1)
        anon = [container_anon_mb(ids[c]) for c in hut.containers]
        point["hub_and_proxy_anon_mb"] = round(sum(anon), 1) if None not in anon else None
        point["idle_server_mb_median"] = round(statistics.median(users), 1) if users else None
        point["latency_ms_p50"] = {
            "hub_api_users": latency_p50(f"{hut.url}/hub/api/users", headers),
            "console_api_gpus": latency_p50(f"{hut.url}/services/gpu-console/api/gpus", headers) if console else None,
            "proxy_to_idle_server": latency_p50(f"{hut.url}/user/{idle_names[0]}/api", headers) if idle_names else None,
        }
        times = hut.timed_spawns(f"scale{n}-", runs)
        point["spawn_p50_s"] = round(statistics.median(times), 3)
        point["spawn_max_s"] = round(max(times), 3)
        points.append(point)
        took.append((added, point.get("fill", {}).get("wall_s", 0), time.monotonic() - step_start))
        hut_log(hut, point)
    return points


def hut_log(hut, point: dict) -> None:
    import sys
    print(f"[bench {time.strftime('%H:%M:%S')}] {hut.label}: scale {point}", file=sys.stderr, flush=True)


def ratios(points: list[dict]) -> dict:
    """Spawn p50 at each step over the same with 0 idle servers; idle CPU per server, two ways:

    - ``idle_pct_of_core_per_server``: everything counted (the servers' containers, hub, proxy,
      engine) over the quiet minute, divided by the servers running: total / N, which charges
      the hub's and engine's fixed cost (what they use with no server at all) to the servers;
    - ``idle_pct_of_core_per_server_marginal``: (all(N) - all(0)) / N, what each server adds."""
    points = [p for p in points if "skipped" not in p]
    base = next((p for p in points if p["idle_servers"] == 0), None)
    out = {}
    for p in points:
        n = p["idle_servers"]
        out[str(n)] = {
            "spawn_p50_over_empty": round(p["spawn_p50_s"] / base["spawn_p50_s"], 3) if base else None,
            "idle_pct_of_core_per_server": p["idle_cpu"]["per_server_pct_of_core"],
            "idle_pct_of_core_per_server_marginal": round(
                (p["idle_cpu"]["all_pct_of_core"] - base["idle_cpu"]["all_pct_of_core"]) / n, 4) if base and n else None}
    return out
