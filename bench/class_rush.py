"""`make bench` (part): the 9 a.m. class. N students arrive over a window and each does what a
person with a browser does, against the real compose stack of the tests (tests/e2e/stack.env):

  login       GET the login page, POST the login form (NativeAuthenticator, embedded default)
  spawn       GET the spawn form, POST it (profile `cpu`), GET the pending page it sends you to
  progress    follow /hub/api/users/<name>/server/progress (server-sent events) until ready
  lab         GET /user/<name>/lab, through the hub's OAuth redirects, as a browser navigates
  assets      replay the GETs a real Chromium made loading JupyterLab (bench/lab-requests.json,
              recorded by bench/record_lab_assets.py), 6 at a time like a browser's HTTP/1.1
  kernel      POST api/kernels, open its websocket, run one cell (print) until the kernel is idle
  idle        keep the websocket open until everyone is in, then --idle seconds more
  drop        a share (--drop-share) loses the network without closing anything: their TCP
              packets (both ways, by iptables on this host) are dropped, then the client closes,
              so the proxy never sees a FIN or RST (a laptop lid closed); the rest close properly.

"start_to_usable" is from the spawn form's POST until the last asset arrived. Before the class,
one student ("solo") does the same alone: the single-user figure of the same run.

Students talk to the proxy's container address directly (as traffic from other machines does
through the published port's NAT), so that the proxy, not Docker's userland port forwarder, is
the one holding their connections.

Measured alongside: per-phase p50/p95/max; failures by kind; the hub's event-loop lag (JupyterHub's
Prometheus histogram jupyterhub_event_loop_interval_seconds at /hub/metrics, before vs. after
the class); hub and proxy CPU and memory every second (Docker's stats API); the proxy's open
sockets (its node process's socket fds, /proc) and resident memory before the class, before the
drops, right after, and --after-drops seconds later; host memory (MemAvailable).

Writes bench/results/class-rush-latest.json and prints a summary line. Defaults are the short
version (`make bench`: 20 students over 10 s); the full one: --students 100 --window 60.
Run under the Docker lock (HELPERS.md); brings the stack up and removes it.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp
import docker
import requests
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests/e2e")]
from hubclient import Hub, Stack  # noqa: E402

RESULTS = ROOT / "bench" / "results"
REPLAY = ROOT / "bench" / "lab-requests.json"
PROFILE = "cpu"
RULE_COMMENT = "gpuhub-class-rush"
LOOP_METRIC = "jupyterhub_event_loop_interval_seconds"


# ---- small helpers ---------------------------------------------------------------------------

def stats(values: list[float], unit: str = "s", digits: int = 3) -> dict:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return {f"p50_{unit}": round(statistics.median(ordered), digits), f"p95_{unit}": round(p95, digits),
            f"max_{unit}": round(ordered[-1], digits), "n": len(ordered)}


class Failed(Exception):
    """A student's step went wrong; str() is the kind counted in the results."""


def host_mem_available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def host_cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def child_pids(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def node_pid(container_pid: int) -> int:
    """The proxy's node process: the container's first process is tini, node its child (found by
    its executable: Node.js 24 names its main thread "MainThread", so /proc/<pid>/comm won't do)."""
    for pid in [container_pid, *child_pids(container_pid)]:
        try:
            if os.path.basename(os.readlink(f"/proc/{pid}/exe")) in ("node", "nodejs"):
                return pid
        except OSError:
            pass
    raise RuntimeError(f"no node process under {container_pid}")


def process_sockets_and_rss(pid: int) -> tuple[int, float]:
    sockets = 0
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                    sockets += 1
            except OSError:
                pass
        rss = next(int(line.split()[1]) / 1024 for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                   if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return -1, float("nan")
    return sockets, round(rss, 1)


def tcp_states_on(container_pid: int, port: int) -> dict:
    """TCP connections of `port` in the container's network namespace (ss), by state, without
    the listening socket: a proxy that let go of a dead client's websocket half-way keeps it
    in FIN-WAIT-1 (closing, unacknowledged data queued), not ESTABLISHED."""
    out = subprocess.run(["nsenter", "-t", str(container_pid), "-n", "ss", "-Htan", f"( sport = :{port} )"],
                         capture_output=True, text=True, timeout=30)
    states: dict = {}
    for line in out.stdout.splitlines():
        state = line.split()[0] if line.strip() else ""
        if state and state != "LISTEN":
            states[state] = states.get(state, 0) + 1
    return states


def loop_histogram(hub_url: str, token: str) -> dict[float, float]:
    """The hub's event-loop interval histogram: upper bound -> cumulative count (+ sum, count)."""
    text = requests.get(f"{hub_url}/hub/metrics", headers={"Authorization": f"token {token}"}, timeout=30).text
    buckets: dict = {}
    for family in text_string_to_metric_families(text):
        if family.name != LOOP_METRIC:
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                buckets[float(sample.labels["le"])] = sample.value
            elif sample.name.endswith("_sum"):
                buckets["sum"] = sample.value
            elif sample.name.endswith("_count"):
                buckets["count"] = sample.value
    return buckets


def loop_lag(before: dict, after: dict) -> dict:
    """Quantiles of the event-loop lag between two scrapes, as the upper bound of the bucket
    the quantile falls in (the histogram's resolution). JupyterHub sleeps 50 ms between ticks
    and records the tick's overrun, or 50 ms when it was under 100 ms: 0.05 means 'no lag seen'."""
    bounds = sorted(k for k in after if isinstance(k, float))
    count = after.get("count", 0) - before.get("count", 0)
    if not bounds or count <= 0:
        return {"samples": 0, "metric": LOOP_METRIC}
    delta = {b: after[b] - before.get(b, 0) for b in bounds}

    def quantile(q: float) -> float:
        for b in bounds:
            if delta[b] >= q * count:
                return b
        return bounds[-1]
    highest = next((b for b in bounds if delta[b] >= count), bounds[-1])
    return {"metric": LOOP_METRIC, "samples": int(count),
            "mean_s": round((after["sum"] - before.get("sum", 0)) / count, 4),
            "p50_le_s": quantile(0.5), "p95_le_s": quantile(0.95), "p99_le_s": quantile(0.99),
            "max_le_s": highest, "over_100ms": int(count - delta.get(0.1, count))}


def drop_rules(action: str, proxy_ip: str, proxy_port: int, ports: list[int]) -> None:
    """Add (-A) or delete (-D) rules that drop every packet of these client ports, both ways."""
    lines = ["*filter"]
    for p in ports:
        lines.append(f"{action} OUTPUT -p tcp -d {proxy_ip} --dport {proxy_port} --sport {p} "
                     f"-m comment --comment {RULE_COMMENT} -j DROP")
        lines.append(f"{action} INPUT -p tcp -s {proxy_ip} --sport {proxy_port} --dport {p} "
                     f"-m comment --comment {RULE_COMMENT} -j DROP")
    lines.append("COMMIT\n")
    subprocess.run(["iptables-restore", "--noflush"], input="\n".join(lines), text=True, check=action == "-A",
                   capture_output=True, timeout=60)


# ---- what runs alongside ---------------------------------------------------------------------

class Monitor:
    """Hub and proxy CPU/memory (Docker stats API, one stream per container, about 1/s), the
    proxy's sockets and RSS, host memory."""

    def __init__(self, containers: dict[str, str], proxy_pid: int):
        self.client = docker.from_env(timeout=30)
        self.containers, self.proxy_pid = containers, proxy_pid
        self.t0 = time.monotonic()
        self.samples: dict[str, list] = {name: [] for name in containers}
        self.sockets: list = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._stats, args=(n, c), daemon=True) for n, c in containers.items()]
        self._threads.append(threading.Thread(target=self._proc, daemon=True))

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 1)

    def _stats(self, name: str, container: str) -> None:
        try:
            for s in self.client.api.stats(container, stream=True, decode=True):
                if self._stop.is_set():
                    return
                cpu, pre = s.get("cpu_stats", {}), s.get("precpu_stats", {})
                cpu_delta = cpu.get("cpu_usage", {}).get("total_usage", 0) - pre.get("cpu_usage", {}).get("total_usage", 0)
                sys_delta = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
                pct = 100.0 * cpu_delta / sys_delta * cpu.get("online_cpus", 1) if sys_delta > 0 else 0.0
                mem = s.get("memory_stats", {})
                used = mem.get("usage", 0) - mem.get("stats", {}).get("inactive_file", 0)
                self.samples[name].append((self.now(), round(pct, 1), round(used / 2**20, 1)))
        except Exception as e:  # the container went away at the end
            self.samples[name].append((self.now(), None, f"stats ended: {type(e).__name__}"))

    def _proc(self) -> None:
        last = host_cpu_ticks()
        while not self._stop.wait(1.0):
            now = host_cpu_ticks()
            busy = 100.0 * (now[0] - last[0]) / max(1, now[1] - last[1])
            last = now
            self.sockets.append((self.now(), *self.proxy_point(), round(busy, 1)))

    def proxy_point(self) -> tuple[int, float, float]:
        sockets, rss = process_sockets_and_rss(node_pid(self.proxy_pid))
        return sockets, rss, round(host_mem_available_mb(), 0)

    def start(self):
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def summary(self, start: float, end: float) -> dict:
        out = {}
        for name, rows in self.samples.items():
            rows = [r for r in rows if r[1] is not None and start <= r[0] <= end]
            out[name] = {"cpu_percent": stats([r[1] for r in rows], unit="pct", digits=1),
                         "mem_mb": {"first": rows[0][2] if rows else None, "max": max((r[2] for r in rows), default=None),
                                    "last": rows[-1][2] if rows else None}}
        rows = [r for r in self.sockets if start <= r[0] <= end]
        out["host_cpu_busy_percent"] = stats([r[4] for r in rows], unit="pct", digits=1)
        out["host_mem_available_mb"] = {"first": rows[0][3] if rows else None,
                                        "min": min((r[3] for r in rows), default=None),
                                        "last": rows[-1][3] if rows else None}
        return out

    def timeline(self, step: float = 5.0) -> list[dict]:
        """One row per `step` seconds: hub/proxy CPU (mean of the samples), memory, proxy sockets."""
        rows, end = [], max([r[0] for rows in self.samples.values() for r in rows] + [0])
        t = 0.0
        while t <= end:
            row = {"t_s": t}
            for name, samples in self.samples.items():
                window = [r for r in samples if r[1] is not None and t <= r[0] < t + step]
                if window:
                    row[f"{name}_cpu_pct"] = round(sum(r[1] for r in window) / len(window), 1)
                    row[f"{name}_mem_mb"] = window[-1][2]
            window = [r for r in self.sockets if t <= r[0] < t + step]
            if window:
                row["proxy_sockets"], row["proxy_rss_mb"], row["host_mem_available_mb"] = window[-1][1:4]
                row["host_cpu_busy_pct"] = round(sum(r[4] for r in window) / len(window), 1)
            rows.append(row)
            t += step
        return rows


# ---- a student -------------------------------------------------------------------------------

class Context:
    def __init__(self, url: str, replay: list[dict], drop_share: float):
        self.url, self.replay, self.drop_share = url, replay, drop_share
        self.ws_url = url.replace("http://", "ws://")
        self.release = asyncio.Event()   # everyone in (+ idle): keepers close, droppers wait
        self.dropped = asyncio.Event()   # the drop rules are in place: droppers close into them
        self.drop_ports: list[int] = []
        self.idle = 0  # students idle with their kernel's websocket open


def xsrf(jar: aiohttp.CookieJar, url: str) -> str:
    cookie = jar.filter_cookies(URL(url)).get("_xsrf")
    return cookie.value if cookie else ""


async def read_ok(response: aiohttp.ClientResponse, step: str, expect=(200,)) -> bytes:
    body = await response.read()
    if response.status not in expect:
        raise Failed(f"{step}: HTTP {response.status}")
    return body


async def student(ctx: Context, name: str, password: str, drops: bool, solo: bool = False) -> dict:
    rec: dict = {"name": name, "drops": drops, "phases": {}}
    url, user_base = ctx.url, f"{ctx.url}/user/{name}/"
    jar = aiohttp.CookieJar(unsafe=True)  # the hub is addressed by IP
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=180)
    nav = {"Sec-Fetch-Mode": "navigate", "Sec-Fetch-Site": "same-origin"}
    step, ws, ws_session = "login", None, None
    try:
        async with aiohttp.ClientSession(cookie_jar=jar, timeout=timeout,
                                         connector=aiohttp.TCPConnector(limit_per_host=6)) as s:
            t = time.monotonic()
            async with s.get(f"{url}/hub/login", headers=nav) as r:
                await read_ok(r, step)
            async with s.post(f"{url}/hub/login?next=", headers=nav, allow_redirects=False,
                              data={"username": name, "password": password, "_xsrf": xsrf(jar, url + "/hub/")}) as r:
                await read_ok(r, step, expect=(302,))
            rec["phases"]["login"] = time.monotonic() - t

            step = "spawn"
            t = time.monotonic()
            async with s.get(f"{url}/hub/spawn/{name}", headers=nav) as r:
                if b"spawn_form" not in await read_ok(r, step):
                    raise Failed(f"{step}: no spawn form")
            t_start = time.monotonic()
            # the form's action carries _xsrf in its query, as JupyterHub renders it
            async with s.post(f"{url}/hub/spawn/{name}", headers=nav, allow_redirects=False,
                              params={"_xsrf": xsrf(jar, url + "/hub/")}, data={"profile": PROFILE}) as r:
                await read_ok(r, step, expect=(302,))
                location = r.headers.get("Location", "")
            if "spawn-pending" in location:
                async with s.get(URL(url).join(URL(location)), headers=nav, allow_redirects=False) as r:
                    await read_ok(r, step, expect=(200, 302))
            rec["phases"]["spawn"] = time.monotonic() - t

            step = "progress"
            t = time.monotonic()
            events = 0
            async with s.get(f"{url}/hub/api/users/{name}/server/progress",
                             params={"_xsrf": xsrf(jar, url + "/hub/")},
                             headers={"Accept": "text/event-stream", "Sec-Fetch-Mode": "cors"}) as r:
                if r.status != 200:
                    raise Failed(f"{step}: HTTP {r.status}")
                ready = False
                async for line in r.content:
                    if line.startswith(b"data:"):
                        event = json.loads(line[5:])
                        events += 1
                        if "short of memory" in str(event.get("message", "")):
                            rec["waited_for_memory"] = True
                        if event.get("failed"):
                            raise Failed(f"{step}: spawn failed: {str(event.get('message', ''))[:80]}")
                        if event.get("ready"):
                            ready = True
                            break
                if not ready:
                    raise Failed(f"{step}: stream ended before ready")
            rec["phases"]["progress"], rec["progress_events"] = time.monotonic() - t, events

            step = "lab"
            t = time.monotonic()
            async with s.get(f"{user_base}lab", headers=nav) as r:
                page = await read_ok(r, step)
                if b"jupyter-config-data" not in page:
                    raise Failed(f"{step}: not JupyterLab's page (ended at {r.url.path})")
            rec["phases"]["lab"] = time.monotonic() - t

            step = "assets"
            t = time.monotonic()
            fetched = [0, 0]

            async def get(item: dict) -> None:
                target = (user_base if item["base"] == "user" else f"{url}/hub/") + item["path"]
                headers = {"Sec-Fetch-Site": "same-origin"}
                if item["type"] == "fetch":  # JupyterLab's own API calls carry the xsrf header
                    headers.update({"Sec-Fetch-Mode": "cors", "X-XSRFToken": xsrf(jar, user_base)})
                else:
                    headers["Sec-Fetch-Mode"] = "no-cors"
                async with s.get(target, headers=headers) as r:
                    body = await r.read()
                    expected = 200 if item["status"] in (200, 304) else item["status"]
                    if r.status != expected:
                        raise Failed(f"{step}: HTTP {r.status} (recorded {item['status']})")
                    fetched[0] += 1
                    fetched[1] += len(body)
            await asyncio.gather(*(get(item) for item in ctx.replay))
            rec["phases"]["assets"] = time.monotonic() - t
            rec["assets"] = {"requests": fetched[0], "bytes": fetched[1]}
            rec["start_to_usable"] = time.monotonic() - t_start

            step = "kernel"
            t = time.monotonic()
            async with s.post(f"{user_base}api/kernels", json={"name": "python3"},
                              headers={"X-XSRFToken": xsrf(jar, user_base), "Sec-Fetch-Mode": "cors",
                                       "Sec-Fetch-Site": "same-origin"}) as r:
                kernel = json.loads(await read_ok(r, step, expect=(201,)))
            # its own session (and connection), so that its local port can be dropped alone
            ws_session = aiohttp.ClientSession(cookie_jar=jar, timeout=timeout)
            ws = await ws_session.ws_connect(
                f"{ctx.ws_url}/user/{name}/api/kernels/{kernel['id']}/channels?session_id={uuid.uuid4().hex}",
                headers={"Sec-Fetch-Mode": "websocket", "Sec-Fetch-Site": "same-origin", "Origin": url},
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0), autoping=True)
            local_port = ws.get_extra_info("sockname")[1]
            msg_id = uuid.uuid4().hex
            await ws.send_str(json.dumps({
                "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": name,
                           "session": uuid.uuid4().hex, "version": "5.3"},
                "parent_header": {}, "metadata": {}, "channel": "shell",
                "content": {"code": "print(6 * 7)", "silent": False, "store_history": True,
                            "user_expressions": {}, "allow_stdin": False}}))
            output = ""
            while True:
                msg = await asyncio.wait_for(ws.receive(), timeout=120)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    raise Failed(f"{step}: websocket {msg.type.name}")
                data = json.loads(msg.data)
                if data.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                if data["msg_type"] == "stream":
                    output += data["content"]["text"]
                elif data["msg_type"] == "status" and data["content"]["execution_state"] == "idle":
                    break
            if output.strip() != "42":
                raise Failed(f"{step}: cell printed {output[:40]!r}")
            rec["phases"]["kernel"] = time.monotonic() - t
            rec["ready_at"] = time.monotonic()
            if solo:
                await ws.close()
                return rec

            step = "idle"
            ctx.idle += 1
            # reading, as a browser does: the server's pings (every 30 s) get their pongs
            while not ctx.release.is_set():
                try:
                    msg = await ws.receive(timeout=1.0)
                except asyncio.TimeoutError:
                    continue
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                                aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    break
            if ws.closed:
                raise Failed(f"{step}: websocket closed by the other side (code {ws.close_code})")
            if drops:
                ctx.drop_ports.append(local_port)
                await ctx.dropped.wait()
                # the rules drop everything of this port: the close frame and FIN never arrive
                await asyncio.wait_for(ws.close(), 10)
            else:
                await asyncio.wait_for(ws.close(), 10)
    except Failed as e:
        rec["failed"] = str(e)
    except asyncio.TimeoutError:
        rec["failed"] = f"{step}: timeout"
    except Exception as e:  # noqa: BLE001 (every kind is counted, none stops the class)
        rec["failed"] = f"{step}: {type(e).__name__}"
    finally:
        if ws_session is not None:
            await ws_session.close()
    return rec


# ---- the run ---------------------------------------------------------------------------------

def set_passwords(stack: Stack, names: list[str]) -> dict[str, str]:
    """Each user gets a password through their set-password link (/hub/invite), as in logins.py."""
    admin = stack.admin_session()
    page = admin.post(f"{stack.url}/hub/invite", timeout=120, data={"all": "1", "_xsrf": admin.cookies.get("_xsrf")})
    page.raise_for_status()
    links = {}
    for row in page.text.split("<tr><td>")[1:]:
        name, rest = row.split("</td>", 1)
        links[name] = rest.split("<code>", 1)[1].split("</code>", 1)[0].replace("&amp;", "&")
    passwords = {n: f"Pw-{n}-2026" for n in names}

    def set_one(name: str) -> None:
        s = requests.Session()
        s.get(links[name], timeout=60).raise_for_status()
        s.post(links[name], timeout=120, data={"password": passwords[name], "password_confirmation": passwords[name],
                                               "_xsrf": s.cookies.get("_xsrf")}).raise_for_status()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(set_one, names))
    return passwords


def container_id(stack: Stack, service: str) -> str:
    out = stack.compose("ps", "-q", service).stdout.split()
    assert out, f"no {service} container"
    return out[0]


def proxy_address(stack: Stack, proxy: str) -> str:
    """The proxy's address on the stack's network, if this host reaches it; else the published one."""
    networks = stack.inspect(proxy)["NetworkSettings"]["Networks"]
    for net in networks.values():
        ip = net.get("IPAddress")
        if ip:
            try:
                if requests.get(f"http://{ip}:8000/hub/health", timeout=5).status_code == 200:
                    return f"http://{ip}:8000"
            except requests.RequestException:
                pass
    return stack.url


async def run_class(ctx: Context, passwords: dict[str, str], window: float, idle: float,
                    monitor: Monitor) -> tuple[list, dict]:
    """Students arrive evenly over the window; returns once all are idle (or failed) + `idle` s."""
    names = sorted(passwords)
    n = len(names)
    marks: dict = {"class_start_s": monitor.now()}

    async def arrive(i: int, name: str) -> dict:
        await asyncio.sleep(window * i / n if n > 1 else 0)
        return await student(ctx, name, passwords[name], drops=int((i + 1) * ctx.drop_share) > int(i * ctx.drop_share))
    tasks = [asyncio.create_task(arrive(i, name)) for i, name in enumerate(names)]

    # everyone in (idle with a kernel, or failed), then the idle time with all websockets open
    while sum(1 for t in tasks if t.done()) + ctx.idle < n:
        await asyncio.sleep(0.5)
    marks["all_in_s"] = monitor.now()
    await asyncio.sleep(idle)
    marks["idle_end_s"] = monitor.now()
    return tasks, marks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=20)
    parser.add_argument("--window", type=float, default=10.0, help="arrivals spread evenly over this many seconds")
    parser.add_argument("--drop-share", type=float, default=0.3, help="share that drops the TCP connection")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds everyone stays idle once all are in")
    parser.add_argument("--after-drops", type=float, default=20.0, help="seconds the proxy is watched after the drops")
    parser.add_argument("--output", default=str(RESULTS / "class-rush-latest.json"))
    args = parser.parse_args()
    replay = [r for r in json.loads(REPLAY.read_text())["replay"] if r["type"] != "document"]

    stack = Stack()
    stack.down()
    stack.up()
    result: dict = {"students": args.students, "window_s": args.window, "drop_share": args.drop_share,
                    "idle_s": args.idle, "profile": PROFILE, "replayed_requests": len(replay),
                    "image": stack.env["SINGLEUSER_IMAGE"], "proxy_image": stack.env["PROXY_IMAGE"]}
    monitor, proxy_ip, ports = None, None, []
    try:
        hub_id, proxy_id = container_id(stack, "hub"), container_id(stack, "proxy")
        proxy_pid = stack.inspect(proxy_id)["State"]["Pid"]
        url = proxy_address(stack, proxy_id)
        proxy_ip = URL(url).host
        result["via"] = "proxy container address" if url != stack.url else "published port"
        token = stack.admin_token()
        hub = Hub(stack.url, token)
        names = [f"rush-{i:03d}" for i in range(args.students)]
        r = hub.api("POST", "/users", json={"usernames": ["rush-solo", *names]})
        assert r.status_code in (201, 409), r.text
        t = time.monotonic()
        passwords = set_passwords(stack, ["rush-solo", *names])
        result["passwords_set_s"] = round(time.monotonic() - t, 1)
        solo_password = passwords.pop("rush-solo")

        monitor = Monitor({"hub": hub_id, "proxy": proxy_id}, proxy_pid).start()
        time.sleep(2)
        sockets0, rss0, _ = monitor.proxy_point()
        result["proxy_before"] = {"sockets": sockets0, "rss_mb": rss0,
                                  "tcp_8000": tcp_states_on(proxy_pid, 8000)}

        async def everything():
            ctx = Context(url, replay, args.drop_share)
            solo = await student(ctx, "rush-solo", solo_password, drops=False, solo=True)
            await asyncio.sleep(2)
            loop0 = await asyncio.to_thread(loop_histogram, stack.url, token)
            t0 = monitor.now()
            cpu0 = time.process_time()
            tasks, marks = await run_class(ctx, passwords, args.window, args.idle, monitor)
            loop1 = await asyncio.to_thread(loop_histogram, stack.url, token)
            marks["loop_scraped_s"] = monitor.now()
            # everyone idle with a websocket open: the proxy before anyone leaves
            before = monitor.proxy_point()
            before_tcp = await asyncio.to_thread(tcp_states_on, proxy_pid, 8000)
            ctx.release.set()
            await asyncio.sleep(1.0)  # keepers close, droppers note their ports
            ports[:] = list(ctx.drop_ports)
            if ports:
                await asyncio.to_thread(drop_rules, "-A", proxy_ip, 8000, ports)
            ctx.dropped.set()
            records = await asyncio.gather(*tasks)
            marks["closed_s"] = monitor.now()
            right_after = monitor.proxy_point()
            right_after_tcp = await asyncio.to_thread(tcp_states_on, proxy_pid, 8000)
            await asyncio.sleep(args.after_drops)
            later = monitor.proxy_point()
            later_tcp = await asyncio.to_thread(tcp_states_on, proxy_pid, 8000)
            marks["end_s"] = monitor.now()
            drops = {"dropped": len(ports),
                     "before": {"sockets": before[0], "rss_mb": before[1], "tcp_8000": before_tcp},
                     "right_after": {"sockets": right_after[0], "rss_mb": right_after[1],
                                     "tcp_8000": right_after_tcp},
                     f"after_{int(args.after_drops)}s": {"sockets": later[0], "rss_mb": later[1],
                                                        "tcp_8000": later_tcp}}
            marks["generator_cpu_s"] = round(time.process_time() - cpu0, 1)
            return solo, records, marks, loop_lag(loop0, loop1), drops, t0
        solo, records, marks, lag, drops, t0 = asyncio.run(everything())
        monitor.stop()

        ok = [r for r in records if "failed" not in r]
        failures: dict = {}
        for r in records:
            if "failed" in r:
                failures[r["failed"]] = failures.get(r["failed"], 0) + 1
        phases = {p: stats([r["phases"][p] for r in records if p in r["phases"]])
                  for p in ("login", "spawn", "progress", "lab", "assets", "kernel")}
        usable = stats([r["start_to_usable"] for r in ok])
        solo_usable = solo.get("start_to_usable")
        result.update({
            "solo": {"failed": solo.get("failed"), "start_to_usable_s": round(solo_usable, 3) if solo_usable else None,
                     "phases_s": {k: round(v, 3) for k, v in solo["phases"].items()}, "assets": solo.get("assets")},
            "class": {"ok": len(ok), "failed": len(records) - len(ok), "failures": failures,
                      "phases": phases, "start_to_usable": usable,
                      "first_to_last_ready_s": round(max((r["ready_at"] for r in records if "ready_at" in r), default=0)
                                                 - min((r["ready_at"] for r in records if "ready_at" in r), default=0), 1),
                      "assets_per_student": ok[0]["assets"] if ok else None,
                      "waited_for_memory": sum(1 for r in records if r.get("waited_for_memory"))},
            "hub_event_loop": lag,
            "resources": monitor.summary(t0, marks["end_s"]),
            "proxy_drops": drops, "marks": marks, "timeline": monitor.timeline(),
        })
        if solo_usable and usable.get("n"):
            result["class"]["usable_p95_over_solo"] = round(usable["p95_s"] / solo_usable, 2)
        result["measures"] = {
            "zero_failed": result["class"]["failed"] == 0 and not solo.get("failed"),
            "usable_p95_le_2x_solo": bool(result["class"].get("usable_p95_over_solo", 99) <= 2.0),
            "login_p95_le_1s": bool(phases["login"].get("p95_s", 99) <= 1.0),
            "loop_lag_p99_le_100ms": bool(lag.get("p99_le_s", 99) <= 0.1),
        }
    finally:
        if monitor:
            monitor.stop()
        if ports and proxy_ip:
            drop_rules("-D", proxy_ip, 8000, ports)
        stack.down()
    result["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out = Path(args.output)
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    summary = {k: result[k] for k in ("students", "window_s", "solo", "class", "hub_event_loop", "proxy_drops", "measures")}
    print(json.dumps(summary))
    return 0 if result["class"]["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
