"""`make bench`: spawn latency, bursts, memory and proxy overhead of three setups, side by side
in one run on this machine, with the same single-user image:

  floor  `docker run` of the single-user image until JupyterLab answers (no hub): one at a
         time, then as many at once as the largest burst
  stock  jupyterhub-deploy-docker's hub (bench/stock/), same JupyterHub version; its servers
         run the image's CMD (jupyterhub-singleuser)
  ours   this repository's compose deployment (bench/ours.env: CPU-only servers, like stock);
         its spawner runs the image's lean command and takes turns (hub/hub_process/spawner/spawner.py)

Each spawn and each burst starts on a quiet machine (under 15% CPU busy; the engine removes the
last setup's containers in the background). A hub's spawn is timed as a browser waits for it:
from the start request, on JupyterHub's progress stream until "ready", then until the server
answers through the proxy.

First, in one container of the image, each setup's server command alone (bench/server_start.py):
time and CPU from process start until it answers.

Then the scale curve of each hub (bench/scale.py): with 0, 50, 100 and 200 (--scale) idle
servers running (a step the host's available memory cannot hold is skipped, said in the JSON), idle CPU (per server, total / N and marginal; hub and each of its processes, proxy,
engine, host) over a quiet minute, memory, hub/service_process/console/proxy latency and single spawn p50.

Writes bench/results/<UTC time>.json, bench/results/latest.json and bench/results/latest.png.
Options: --runs N (single spawns per setup, default 9: stock's times fall into two groups, see the
README), --bursts 10,30, --scale 0,50,100,200 (idle servers at each step of the curve; "" for none),
--quiet 60 (seconds of idle CPU measured at each step), --only scale (the scale curve alone, for
ours and stock), --setups ours,stock (which hubs the curve runs for), --settle-timeout 60 (seconds
to wait at most for a quiet machine), --budget S (seconds for the curve alone: ours first, then
stock; a step that would not fit is skipped and said so in the JSON).
"""
import argparse
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests/e2e"))
from hubclient import Hub, Stack  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
import scale  # noqa: E402

RESULTS = ROOT / "bench/results"
IMAGE = "gpuhub/pytorch-notebook:test"
READY_TIMEOUT = 180


def sh(*args, check=True, **kwargs) -> str:
    return subprocess.run(args, capture_output=True, text=True, check=check, timeout=900, **kwargs).stdout


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(values: list[float]) -> dict:
    return {"p50_s": round(statistics.median(values), 3), "p95_s": round(percentile(values, 0.95), 3),
            "min_s": round(min(values), 3), "max_s": round(max(values), 3), "runs": len(values)}


def busy_fraction(seconds: float = 1.0) -> float:
    """Share of this machine's CPU time that was busy over the next `seconds` (/proc/stat)."""
    def sample():
        values = [int(v) for v in open("/proc/stat").readline().split()[1:]]
        return sum(values), values[3] + values[4]  # all, idle + iowait
    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


SETTLE_TIMEOUT = 60.0  # --settle-timeout


def settle(limit: float = 0.15, timeout: float | None = None) -> None:
    """Wait until the machine is quiet (the engine finishes removing the last setup's
    containers in the background, for one), so that no measurement starts on a busy machine;
    at most `timeout` seconds (--settle-timeout: on a machine that others keep busy, waiting
    longer only makes the run longer)."""
    deadline = time.monotonic() + (SETTLE_TIMEOUT if timeout is None else timeout)
    while time.monotonic() < deadline and busy_fraction() > limit:  # each check takes a second
        continue


def wait_http(url: str, headers: dict | None = None, timeout: float = READY_TIMEOUT) -> float | None:
    """Seconds until url answers 200, or None on timeout."""
    t0 = time.monotonic()
    with requests.Session() as s:
        while time.monotonic() - t0 < timeout:
            try:
                if s.get(url, headers=headers, timeout=5).status_code == 200:
                    return time.monotonic() - t0
            except requests.RequestException:
                pass
            time.sleep(0.1)
    return None


def memory_mb(names: list[str]) -> dict[str, float]:
    out = sh("docker", "stats", "--no-stream", "--format", "{{.Name}} {{.MemUsage}}", *names) if names else ""
    result = {}
    for line in out.splitlines():
        name, usage = line.split(" ", 1)
        value, unit = re.match(r"([\d.]+)\s*([KMG]i?B)", usage).groups()
        result[name] = float(value) * {"KiB": 1 / 1024, "MiB": 1, "GiB": 1024, "kB": 1e-3, "MB": 1, "GB": 1e3}[unit]
    return result


def load_rps(url: str, headers: dict, seconds: int = 5) -> float:
    """Requests per second to url: wrk when it is installed, else a Python client."""
    if shutil.which("wrk"):
        args = ["wrk", "-t2", "-c16", f"-d{seconds}s", url]
        for k, v in headers.items():
            args += ["-H", f"{k}: {v}"]
        return float(re.search(r"Requests/sec:\s+([\d.]+)", sh(*args)).group(1))
    count, deadline = [0], time.monotonic() + seconds

    def worker():
        with requests.Session() as s:
            while time.monotonic() < deadline:
                s.get(url, headers=headers, timeout=5)
                count[0] += 1
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: worker(), range(8)))
    return count[0] / seconds


# ---- floor: docker run, no hub -----------------------------------------------------------------

def floor_start(i: int) -> float | None:
    """docker run of the image's JupyterLab until it answers, no hub; None if it never did."""
    name, port = f"gpuhubbench-floor-{i}", 18100 + i
    t0 = time.monotonic()
    sh("docker", "run", "-d", "--rm", "--name", name, "-p", f"127.0.0.1:{port}:8888", IMAGE,
       "jupyter", "lab", "--ip=0.0.0.0", "--port=8888", "--no-browser", "--IdentityProvider.token=bench")
    answered = wait_http(f"http://127.0.0.1:{port}/api/status", {"Authorization": "token bench"})
    return None if answered is None else time.monotonic() - t0


def floor_cleanup() -> None:
    names = sh("docker", "ps", "-aq", "--filter", "name=^gpuhubbench-floor-").split()
    if names:
        sh("docker", "rm", "-f", *names, check=False)


def bench_floor(runs: int, burst: int) -> dict:
    times = []
    for i in range(runs):
        settle()
        t = floor_start(i)
        times.append(t if t is not None else float("inf"))
        if i == 0:
            time.sleep(5)
            idle = memory_mb([f"gpuhubbench-floor-{i}"])[f"gpuhubbench-floor-{i}"]
        floor_cleanup()
    # The same starts, all at once: what the machine itself allows, with no hub in the way.
    settle()
    t0 = time.monotonic()
    with ThreadPoolExecutor(burst) as pool:
        outcomes = list(pool.map(floor_start, range(burst)))
    ready = [t for t in outcomes if t is not None]
    burst_entry = {"users": burst, "ready": len(ready), "failed": burst - len(ready),
                   "last_ready_s": round(max(ready), 3) if ready else None, "wall_s": round(time.monotonic() - t0, 3)}
    floor_cleanup()
    log(f"floor: burst {burst}: {burst_entry}")
    return {"single_spawn": summary(times), f"burst_{burst}": burst_entry, "idle_server_mb": round(idle, 1)}


# ---- the server process alone, in the image ---------------------------------------------------

def bench_server_start(runs: int) -> dict:
    """Wall and CPU time of each setup's server command from process start until it answers,
    inside one container (bench/server_start.py): no engine, no hub."""
    from hub.hub_process.spawner import GPUDockerSpawner

    ours_args = GPUDockerSpawner(_mock=True).get_args()
    result = json.loads(sh("docker", "run", "--rm", "-v", f"{ROOT / 'bench/server_start.py'}:/bench/server_start.py:ro",
                           IMAGE, "python", "/bench/server_start.py", str(runs), json.dumps(ours_args)).strip().splitlines()[-1])
    log(f"server start: {result}")
    return result


# ---- a hub (ours or stock) through its REST API ------------------------------------------------

class HubUnderTest:
    def __init__(self, label: str, url: str, token: str, containers: list[str], user_prefix: str):
        self.label, self.url, self.token = label, url, token
        self.hub = Hub(url, token)
        self.containers = containers  # the hub's own containers (hub, proxy)
        self.user_prefix = user_prefix

    def start_and_time(self, name: str) -> float | None:
        """Request -> the user's server answering through the proxy; None if it failed.

        Waits as a browser on the spawn page does: on JupyterHub's progress stream (one open
        request) until "ready", then asks the server itself through the proxy."""
        self.hub.create_user(name)
        t0 = time.monotonic()
        r = self.hub.api("POST", f"/users/{name}/server")
        if r.status_code not in (201, 202) or not self.ready_event(name):
            return None
        answered = wait_http(f"{self.url}/user/{name}/api", {"Authorization": f"token {self.token}"}, timeout=30)
        return None if answered is None else time.monotonic() - t0

    def timed_spawns(self, prefix: str, runs: int) -> list[float]:
        """`runs` starts one after another on a settled machine, each stopped before the next:
        their times (start_and_time; a failed start counts as infinity). The single-spawn figure
        and each scale step's (bench/scale.py) are measured this one way."""
        times = []
        for i in range(runs):
            settle()
            t = self.start_and_time(f"{prefix}{i}")
            times.append(t if t is not None else float("inf"))
            self.stop_all([f"{prefix}{i}"])
        return times

    def ready_event(self, name: str) -> bool:
        """True once the spawn's progress stream says ready; False when it says failed.
        A client of its own: the burst's threads each hold a stream open at the same time."""
        try:
            events = list(Hub(self.url, self.token).progress(name, timeout=READY_TIMEOUT))
        except requests.RequestException as exc:
            log(f"{self.label}: progress of {name}: {exc}")
            return False
        return bool(events and events[-1].get("ready"))

    def stop_all(self, names: list[str]) -> None:
        def stop(name):
            try:
                if self.hub.user(name)["servers"]:
                    self.hub.stop(name, timeout=120)
            except Exception as exc:  # a failed server may already be gone
                log(f"{self.label}: stop {name}: {exc}")
        with ThreadPoolExecutor(max(1, len(names))) as pool:
            list(pool.map(stop, names))

    def user_containers(self) -> list[str]:
        return [n for n in sh("docker", "ps", "--format", "{{.Names}}").split() if n.startswith(self.user_prefix)]

    def run(self, runs: int, bursts: list[int]) -> dict:
        result = {}
        result["single_spawn"] = summary(self.timed_spawns("single", runs))
        log(f"{self.label}: single spawn p50 {result['single_spawn']['p50_s']} s")
        for n in bursts:
            names = [f"burst{n}-{i:02d}" for i in range(n)]
            settle()
            t0 = time.monotonic()
            with ThreadPoolExecutor(n) as pool:
                outcomes = list(pool.map(self.start_and_time, names))
            ready = [t for t in outcomes if t is not None]
            entry = {"users": n, "ready": len(ready), "failed": n - len(ready),
                     "last_ready_s": round(max(ready), 3) if ready else None,
                     "wall_s": round(time.monotonic() - t0, 3)}
            if n == max(bursts):
                time.sleep(10)  # idle
                users = memory_mb(self.user_containers())
                entry["idle_server_mb_median"] = round(statistics.median(users.values()), 1) if users else None
                hub_mem = memory_mb(self.containers)
                entry["hub_and_proxy_mb"] = round(sum(hub_mem.values()), 1)
            result[f"burst_{n}"] = entry
            log(f"{self.label}: burst {n}: {entry}")
            self.stop_all(names)
        # Proxy overhead: one server, through the proxy vs. straight to the container.
        self.start_and_time("loadtest")
        headers = {"Authorization": f"token {self.token}"}
        container = next(c for c in self.user_containers() if "loadtest" in c)
        ip = next(iter(json.loads(sh("docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", container)).values()))["IPAddress"]
        through = load_rps(f"{self.url}/user/loadtest/api", headers)
        direct = load_rps(f"http://{ip}:8888/user/loadtest/api", headers)
        result["proxy"] = {"through_proxy_rps": round(through, 1), "direct_rps": round(direct, 1),
                           "ratio": round(through / direct, 3), "tool": "wrk" if shutil.which("wrk") else "python"}
        self.stop_all(["loadtest"])
        return result


def run_setup(hut: HubUnderTest, runs: int, bursts: list[int], curve: dict | None, console: bool) -> dict:
    """The spawns and bursts (unless only the curve is asked for), then the scale curve."""
    result = hut.run(runs, bursts) if bursts else {}
    if curve:
        result["scale"] = scale.curve(hut, curve["steps"], curve["runs"], curve["quiet"], console,
                                      settle, memory_mb, sh, deadline=curve.get("deadline", {}).get(hut.label))
        result["scale_ratios"] = scale.ratios(result["scale"])
    return result


def bench_ours(runs: int, bursts: list[int], curve: dict | None = None) -> dict:
    stack = Stack(ROOT / "bench/ours.env")
    stack.down()
    stack.up()
    try:
        containers = [f"{stack.prefix}-hub-1", f"{stack.prefix}-proxy-1"]
        hut = HubUnderTest("ours", stack.url, stack.admin_token(), containers, f"{stack.prefix}-")
        return run_setup(hut, runs, bursts, curve, console=True)
    finally:
        stack.down()


def bench_stock(runs: int, bursts: list[int], curve: dict | None = None) -> dict:
    token = secrets.token_hex(16)
    env = {**os.environ, "BENCH_TOKEN": token, "SINGLEUSER_IMAGE": IMAGE}
    compose = ["docker", "compose", "-f", str(ROOT / "bench/stock/docker-compose.yml")]

    def down():
        for c in sh("docker", "ps", "-aq", "--filter", "name=^gpuhubstock-", check=False).split():
            sh("docker", "rm", "-f", c, check=False)
        subprocess.run([*compose, "down", "--volumes"], env=env, capture_output=True)
        for v in sh("docker", "volume", "ls", "-q", "--filter", "name=^gpuhubstock-user-").split():
            sh("docker", "volume", "rm", "-f", v, check=False)
    down()
    subprocess.run([*compose, "build", "-q"], env=env, check=True, capture_output=True)
    subprocess.run([*compose, "up", "-d"], env=env, check=True, capture_output=True)
    try:
        assert wait_http("http://127.0.0.1:18030/hub/health", timeout=60) is not None, "stock hub did not start"
        hut = HubUnderTest("stock", "http://127.0.0.1:18030", token, ["gpuhubstock-jupyterhub"], "gpuhubstock-")
        return run_setup(hut, runs, bursts, curve, console=False)
    finally:
        down()


def ratios(r: dict) -> dict:
    ours, stock, floor = r["ours"], r["stock"], r["floor"]
    big = max(int(k.split("_")[1]) for k in ours if k.startswith("burst_"))

    def ratio(a, b):
        return round(a / b, 3) if a and b and b != float("inf") else None
    return {
        "single_spawn_p50_ours_over_floor": ratio(ours["single_spawn"]["p50_s"], floor["single_spawn"]["p50_s"]),
        "single_spawn_p50_ours_over_stock": ratio(ours["single_spawn"]["p50_s"], stock["single_spawn"]["p50_s"]),
        f"burst_{big}_last_ready_ours_over_stock": ratio(ours[f"burst_{big}"]["last_ready_s"], stock[f"burst_{big}"]["last_ready_s"]),
        f"burst_{big}_last_ready_ours_over_floor": ratio(ours[f"burst_{big}"]["last_ready_s"], floor[f"burst_{big}"]["last_ready_s"]),
        f"burst_{big}_last_ready_stock_over_floor": ratio(stock[f"burst_{big}"]["last_ready_s"], floor[f"burst_{big}"]["last_ready_s"]),
        "server_start_cpu_ours_over_stock": ratio(r["server_start"]["ours"]["cpu_p50_s"], r["server_start"]["stock"]["cpu_p50_s"]),
        "server_start_cpu_ours_over_floor": ratio(r["server_start"]["ours"]["cpu_p50_s"], r["server_start"]["floor"]["cpu_p50_s"]),
    }


def plot(r: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    setups = ["floor", "stock", "ours"]
    curves = {s: [p for p in r[s]["scale"] if "skipped" not in p] for s in ("stock", "ours") if s in r and r[s].get("scale")}
    if "floor" not in r:  # the scale curve alone
        fig, axes = plt.subplots(1, 4, figsize=(18, 4))
        plot_scale(curves, axes)
        fig.suptitle(f"gpuhub bench, scale curve, {r['when']} ({r['machine']})")
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        return
    fig, grid = plt.subplots(2 if curves else 1, 4, figsize=(17, 8 if curves else 4), squeeze=False)
    axes = grid[0]
    if curves:
        plot_scale(curves, grid[1])
    p50 = [r[s]["single_spawn"]["p50_s"] for s in setups]
    p95 = [r[s]["single_spawn"]["p95_s"] for s in setups]
    axes[0].bar([x - 0.2 for x in range(3)], p50, 0.4, label="p50")
    axes[0].bar([x + 0.2 for x in range(3)], p95, 0.4, label="p95")
    axes[0].set_xticks(range(3), setups)
    axes[0].set_ylabel("seconds")
    axes[0].set_title("Single spawn: Start → server answers")
    axes[0].legend()
    bursts = sorted(int(k.split("_")[1]) for k in r["ours"] if k.startswith("burst_"))
    for i, s in enumerate(setups):
        last = [(r[s].get(f"burst_{n}") or {}).get("last_ready_s") or 0 for n in bursts]
        failed = [(r[s].get(f"burst_{n}") or {}).get("failed") for n in bursts]
        xs = [x + (i - 1) * 0.27 for x in range(len(bursts))]
        bars = axes[1].bar(xs, last, 0.27, label=s)
        for bar, f in zip(bars, failed):
            if f is not None:
                axes[1].annotate(f"{f} failed", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=7)
    axes[1].set_xticks(range(len(bursts)), [f"{n} users" for n in bursts])
    axes[1].set_ylabel("seconds until the last is ready")
    axes[1].set_title("Burst: everyone presses Start")
    axes[1].legend()
    mem = [r["floor"]["idle_server_mb"], r["stock"][f"burst_{bursts[-1]}"]["idle_server_mb_median"],
           r["ours"][f"burst_{bursts[-1]}"]["idle_server_mb_median"]]
    axes[2].bar(setups, [m or 0 for m in mem])
    axes[2].set_ylabel("MB")
    axes[2].set_title("Idle memory per user server")
    start = r["server_start"]
    axes[3].bar([x - 0.2 for x in range(3)], [start[s]["wall_p50_s"] for s in setups], 0.4, label="time")
    axes[3].bar([x + 0.2 for x in range(3)], [start[s]["cpu_p50_s"] for s in setups], 0.4, label="CPU")
    axes[3].set_xticks(range(3), setups)
    axes[3].set_ylabel("seconds (p50)")
    axes[3].set_title("Server process alone: start → answers")
    axes[3].legend()
    fig.suptitle(f"gpuhub bench, {r['when']} ({r['machine']})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def plot_scale(curves: dict, axes) -> None:
    """Spawn p50, idle CPU per server and hub latency against the idle servers running."""
    for label, points in curves.items():
        color = {"stock": "tab:blue", "ours": "tab:orange"}.get(label)
        xs = [p["idle_servers"] for p in points]
        axes[0].plot(xs, [p["spawn_p50_s"] for p in points], marker="o", color=color, label=label)
        per = [(p["idle_servers"], p["idle_cpu"]["per_server_pct_of_core"]) for p in points if p["idle_servers"]]
        axes[1].plot([x for x, _ in per], [y for _, y in per], marker="o", color=color, label=f"{label}: total / N")
        base = next((p["idle_cpu"]["all_pct_of_core"] for p in points if p["idle_servers"] == 0), None)
        if base is not None:
            axes[1].plot([x for x, _ in per], [(p["idle_cpu"]["all_pct_of_core"] - base) / p["idle_servers"]
                                               for p in points if p["idle_servers"]],
                         marker="x", color=color, linestyle="--", label=f"{label}: (all(N) - all(0)) / N")
        axes[3].plot(xs, [p["hub_and_proxy_mb"] for p in points], marker="o", color=color, label=label)
        axes[2].plot(xs, [p["latency_ms_p50"]["hub_api_users"] or 0 for p in points], marker="o", color=color, label=f"{label}: /hub/api/users")
        if any(p["latency_ms_p50"]["console_api_gpus"] for p in points):
            axes[2].plot(xs, [p["latency_ms_p50"]["console_api_gpus"] or 0 for p in points], marker="s", color=color,
                         label=f"{label}: console /api/gpus")
    axes[0].set_title("Single spawn p50 with N idle servers")
    axes[0].set_ylabel("seconds")
    axes[1].set_title("Idle CPU per server (its container + share\nof hub, proxy, engine)")
    axes[1].set_ylabel("% of one core")
    axes[1].axhline(0.1, color="grey", linestyle=":", label="goal 0.1 %")
    axes[2].set_title("Hub latency p50")
    axes[2].set_ylabel("ms")
    axes[3].set_title("Hub side memory (hub container with its\nservices, + proxy; stock: hub with its proxy)")
    axes[3].set_ylabel("MB")
    for ax in axes[:4]:
        ax.set_xlabel("idle servers running")
        ax.legend(fontsize=7)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--bursts", default="10,30")
    parser.add_argument("--scale", default="0,50,100,200")
    parser.add_argument("--quiet", type=float, default=60)
    parser.add_argument("--scale-runs", type=int, default=5)
    parser.add_argument("--only", choices=["scale"])
    parser.add_argument("--setups", default="ours,stock")
    parser.add_argument("--settle-timeout", type=float, default=60,
                        help="seconds to wait at most for a quiet machine before each measurement")
    parser.add_argument("--budget", type=float, default=0,
                        help="seconds for the scale curve of all setups (0: no limit); each setup gets "
                             "its share, and a step that would start after it is skipped (said in the JSON)")
    args = parser.parse_args()
    global SETTLE_TIMEOUT
    SETTLE_TIMEOUT = args.settle_timeout
    bursts = [int(x) for x in args.bursts.split(",")] if args.only != "scale" else []
    steps = [int(x) for x in args.scale.split(",") if x.strip()]
    curve = {"steps": steps, "runs": args.scale_runs, "quiet": args.quiet} if steps else None
    setups = args.setups.split(",")
    t0 = time.monotonic()
    if curve and args.budget:
        # the curve alone runs ours first (its targets), then stock in the time left
        curve["deadline"] = {"ours": t0 + args.budget * 0.6, "stock": t0 + args.budget}
    result = {"when": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "machine": f"{os.cpu_count()} CPUs, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB",
              "image": IMAGE, "runs": args.runs}
    if args.only != "scale":
        log("server start, in the image")
        result["server_start"] = bench_server_start(args.runs)
        log("floor")
        result["floor"] = bench_floor(args.runs, max(bursts))
    kind = "scale-" if args.only == "scale" else ""  # the curve alone keeps its own latest
    RESULTS.mkdir(exist_ok=True)

    def save() -> str:  # after each setup too: a run cut short keeps what it measured
        result["bench_wall_s"] = round(time.monotonic() - t0, 1)
        text = json.dumps(result, indent=1)
        (RESULTS / f"{kind}{result['when'].replace(':', '')}.json").write_text(text)
        return text
    order = ["ours", "stock"] if args.only == "scale" else ["stock", "ours"]
    for setup in order:
        if setup in setups or args.only != "scale":
            log(setup)
            bench = bench_stock if setup == "stock" else bench_ours
            result[setup] = bench(args.runs, bursts, curve if setup in setups else None)
            save()
    if args.only != "scale":
        result["ratios"] = ratios(result)
    text = save()
    (RESULTS / f"{kind}latest.json").write_text(text)
    plot(result, RESULTS / f"{kind}latest.png")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
