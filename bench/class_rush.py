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

Alongside the simulated students, --probes real Chromium browsers (headless /usr/bin/chromium
through Playwright, fresh profiles; default 3) arrive spread over the window and record what a
person sees: login, Start -> JupyterLab usable (splash gone, launcher shown), and the launcher's
Notebook card -> the first cell's output (print(6 * 7)); one more probe does it alone before the
class (the probes' single-user figure).

--login oidc: everyone logs in through the OpenID Connect provider of the e2e tests
(tests/e2e/oidc/, on tests/e2e/oauth-stack.env's stack) instead of the form: a hub has one
authenticator, so a class is all one or all the other. --target stock: jupyterhub-deploy-docker's
setup (bench/stock/; students sign up through its open sign-up form; no spawn form, so Start is
the GET of /hub/spawn that its login redirects to).

Students talk to the proxy's container address directly (as traffic from other machines does
through the published port's NAT), so that the proxy, not Docker's userland port forwarder, is
the one holding their connections.

Measured alongside: per-phase p50/p95/max; failures by kind; the hub's event-loop lag (JupyterHub's
Prometheus histogram jupyterhub_event_loop_interval_seconds at /hub/metrics, before vs. after
the class); hub and proxy CPU and memory every second (Docker's stats API); the proxy's open
sockets (its node process's socket fds, /proc) and resident memory before the class, before the
drops, right after, and --after-drops seconds later; host memory (MemAvailable); the host's
`uptime` before the run (others share the CPUs); containers the kernel OOM-killed (docker
inspect) and new OOM lines in the kernel log. Where the hub's time goes: its request durations by
handler during the class (Prometheus, jupyterhub_request_duration_seconds), and with --py-spy
PATH a py-spy profile of the hub's event-loop thread (bench/results/class-rush-py-spy.txt).
The hub runs at HUB_LOG_LEVEL=INFO (a deployment's default; --hub-log-level).

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
SERVER_SETTINGS = ("HUB_PROFILES", "USER_MEM_LIMIT", "USER_CPU_LIMIT", "USER_SHM_SIZE", "USER_PIDS_LIMIT",
                   "SPAWN_TIMEOUT", "CULL_IDLE_TIMEOUT")
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


class Queued(Exception):
    """Admission by memory held the start back and said so; the student gave up waiting after
    --memory-wait s (not a failure: the outcome the issue asks for when memory is short)."""


MEMORY_MESSAGE = "short of memory"  # hub/memory.py's message to a start held back


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
    def __init__(self, url: str, replay: list[dict], drop_share: float, spawn_form: bool = True,
                 oidc: bool = False, memory_wait: float = 120.0):
        self.url, self.replay, self.drop_share, self.spawn_form = url, replay, drop_share, spawn_form
        self.oidc = oidc  # log in through the OpenID Connect provider instead of the form
        self.memory_wait = memory_wait  # seconds a student waits once told the host is short of memory
        self.lenient_api = not spawn_form  # stock: its servers' extensions differ from ours
        self.ws_url = url.replace("http://", "ws://")
        self.release = asyncio.Event()   # everyone in (+ idle): keepers close, droppers wait
        self.dropped = asyncio.Event()   # the drop rules are in place: droppers close into them
        self.drop_ports: list[int] = []
        self.idle = 0  # students idle with their kernel's websocket open
        self.idle_names: set[str] = set()


def xsrf(jar: aiohttp.CookieJar, url: str) -> str:
    cookie = jar.filter_cookies(URL(url)).get("_xsrf")
    return cookie.value if cookie else ""


async def read_ok(response: aiohttp.ClientResponse, step: str, expect=(200,)) -> bytes:
    body = await response.read()
    if response.status not in expect:
        raise Failed(f"{step}: HTTP {response.status}")
    return body


async def oidc_login(s: aiohttp.ClientSession, url: str, name: str, nav: dict) -> None:
    """The "Sign in with ..." button, the provider's page (type who you are, Authorize), and
    back to the hub's callback, which exchanges the code with the provider. The provider sends
    the browser to OAUTH_CALLBACK_URL (the published port); the same request goes to the
    address the student uses for the proxy, so the login cookie is where the rest goes."""
    step = "login"
    async with s.get(f"{url}/hub/oauth_login?next=", headers=nav, allow_redirects=False) as r:
        await read_ok(r, step, expect=(302,))
        authorize = r.headers["Location"]
    async with s.get(authorize, headers={**nav, "Sec-Fetch-Site": "cross-site"}) as r:
        await read_ok(r, step)
    async with s.post(authorize, data={"sub": name}, allow_redirects=False,
                      headers={**nav, "Sec-Fetch-Site": "same-origin"}) as r:
        await read_ok(r, step, expect=(302,))
        callback = URL(r.headers["Location"])
    if "code" not in callback.query:
        raise Failed(f"{step}: provider gave no code ({callback.query.get('error', '?')})")
    async with s.get(URL(url).with_path(callback.path).with_query(callback.query),
                     headers={**nav, "Sec-Fetch-Site": "cross-site"}, allow_redirects=False) as r:
        await read_ok(r, step, expect=(302,))


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
            if ctx.oidc:
                await oidc_login(s, url, name, nav)
            else:
                async with s.post(f"{url}/hub/login?next=", headers=nav, allow_redirects=False,
                                  data={"username": name, "password": password,
                                        "_xsrf": xsrf(jar, url + "/hub/")}) as r:
                    await read_ok(r, step, expect=(302,))
            rec["phases"]["login"] = time.monotonic() - t

            step = "spawn"
            t = time.monotonic()
            if ctx.spawn_form:
                async with s.get(f"{url}/hub/spawn/{name}", headers=nav) as r:
                    if b"spawn_form" not in await read_ok(r, step):
                        raise Failed(f"{step}: no spawn form")
                t_start = time.monotonic()
                # the form's action carries _xsrf in its query, as JupyterHub renders it
                async with s.post(f"{url}/hub/spawn/{name}", headers=nav, allow_redirects=False,
                                  params={"_xsrf": xsrf(jar, url + "/hub/")}, data={"profile": PROFILE}) as r:
                    await read_ok(r, step, expect=(302,))
                    location = r.headers.get("Location", "")
            else:  # stock: no form, the GET starts the server (where login's redirect takes a browser)
                t_start = time.monotonic()
                async with s.get(f"{url}/hub/spawn/{name}", headers=nav, allow_redirects=False) as r:
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
                told = [0.0]  # when the admission message first came

                async def follow() -> bool:
                    nonlocal events
                    async for line in r.content:
                        if line.startswith(b"data:"):
                            event = json.loads(line[5:])
                            events += 1
                            if MEMORY_MESSAGE in str(event.get("message", "")):
                                rec["waited_for_memory"] = True
                                rec.setdefault("memory_message", str(event["message"])[:300])
                                told[0] = told[0] or time.monotonic()
                            if event.get("failed"):
                                raise Failed(f"{step}: spawn failed: {str(event.get('message', ''))[:80]}")
                            if event.get("ready"):
                                return True
                    return False
                following = asyncio.ensure_future(follow())
                while not following.done():
                    await asyncio.wait({following}, timeout=2)
                    if not following.done() and told[0] and time.monotonic() - told[0] > ctx.memory_wait:
                        following.cancel()
                        raise Queued(f"queued for memory, told so ({ctx.memory_wait:.0f} s waited)")
                if not following.result():
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
            fetched = [0, 0, 0]

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
                        # stock's servers load extensions ours leave off (jupyter_lsp: lsp/status
                        # answers there) and lack ours (gpuhub/gpu): JupyterLab carries on
                        # either way, so an API call's 200-for-404 or 404-for-200 is counted, not failed
                        if not (ctx.lenient_api and item["type"] == "fetch" and {r.status, expected} == {200, 404}):
                            raise Failed(f"{step}: HTTP {r.status} (recorded {item['status']})")
                        fetched[2] += 1
                    fetched[0] += 1
                    fetched[1] += len(body)
            await asyncio.gather(*(get(item) for item in ctx.replay))
            rec["phases"]["assets"] = time.monotonic() - t
            rec["assets"] = {"requests": fetched[0], "bytes": fetched[1]}
            if fetched[2]:
                rec["assets"]["api_status_differed"] = fetched[2]
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
            ctx.idle_names.add(name)
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
    except Queued as e:
        rec["queued"] = str(e)
    except asyncio.TimeoutError:
        rec["failed"] = f"{step}: timeout"
    except Exception as e:  # noqa: BLE001 (every kind is counted, none stops the class)
        rec["failed"] = f"{step}: {type(e).__name__}"
    finally:
        if ws_session is not None:
            await ws_session.close()
    return rec



# ---- real browsers alongside -----------------------------------------------------------------

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def probe(url: str, name: str, password: str, spawn_form: bool, delay: float, oidc: bool = False,
          memory_wait: float = 120.0) -> dict:
    """A person with Chromium (headless, fresh profile): log in, press Start, wait until
    JupyterLab is usable (splash gone, launcher shown), open a notebook and run one cell.
    Times as that person sees them: login (login page to the page after it), start_to_usable
    (the Start press to JupyterLab usable; stock has no spawn form and starts on login, so there
    it is from the login press), usable_to_first_output (the launcher's Notebook card to the
    cell's output) and start_to_first_output. Runs in a thread (Playwright's sync API)."""
    # reason: only the probes need Playwright
    from playwright.sync_api import TimeoutError as PlaywrightTimeout, expect, sync_playwright
    time.sleep(delay)
    rec: dict = {"name": name, "phases": {}}
    step = "launch"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page()
                page.set_default_timeout(300_000)
                step = "login"
                t = time.monotonic()
                page.goto(f"{url}/hub/login")
                if oidc:  # the hub's button, then the provider's page (as tests/e2e/test_oauth.py)
                    page.get_by_role("button", name=re.compile("^Sign in with")).click()
                    page.wait_for_url("**/oauth2/authorize?**")
                    page.fill("input[name=sub]", name)
                    t_press = time.monotonic()
                    page.get_by_role("button", name="Authorize", exact=True).click()
                else:
                    page.fill("input[name=username]", name)
                    page.fill("input[name=password]", password)
                    t_press = time.monotonic()
                    page.click("input[type=submit], button[type=submit]")
                if spawn_form:
                    expect(page.locator("#spawn_form")).to_be_visible(timeout=300_000)
                    rec["phases"]["login"] = time.monotonic() - t
                    step = "start"
                    page.check(f"#profile-{PROFILE}")
                    t_start = time.monotonic()
                    page.click("#spawn_form [type=submit]")
                else:
                    page.wait_for_url(lambda u: "/hub/login" not in u, timeout=300_000)
                    rec["phases"]["login"] = time.monotonic() - t
                    step, t_start = "start", t_press
                    if "/hub/home" in page.url:  # landed on the home page: its Start button's link
                        t_start = time.monotonic()
                        page.goto(f"{url}/hub/spawn/{name}")
                told = 0.0
                while f"/user/{name}/lab" not in page.url:  # the spawn page until JupyterLab
                    try:
                        page.wait_for_url(f"**/user/{name}/lab**", timeout=2_000)
                    except PlaywrightTimeout:
                        if not told and page.get_by_text(MEMORY_MESSAGE, exact=False).count():
                            told = time.monotonic()
                            rec["waited_for_memory"] = True
                        if told and time.monotonic() - told > memory_wait:
                            rec["queued"] = f"queued for memory, told so ({memory_wait:.0f} s waited)"
                            return rec
                        if time.monotonic() - t_start > 600:
                            raise
                step = "usable"
                expect(page.locator("#jupyterlab-splash")).to_have_count(0, timeout=300_000)
                expect(page.locator(".jp-LauncherCard").first).to_be_visible(timeout=300_000)
                rec["start_to_usable"] = time.monotonic() - t_start
                step = "first_cell"
                t = time.monotonic()
                page.locator('.jp-LauncherCard[data-category="Notebook"]').first.click()
                expect(page.locator("#jp-main-statusbar")).to_contain_text("Idle", timeout=300_000)
                page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell .cm-content").first.click()
                page.keyboard.type("print(6 * 7)")
                page.keyboard.press("Shift+Enter")
                output = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output").first
                expect(output).to_contain_text("42", timeout=300_000)
                rec["usable_to_first_output"] = time.monotonic() - t
                rec["start_to_first_output"] = time.monotonic() - t_start
            finally:
                browser.close()
    except Exception as e:  # noqa: BLE001 (a probe's failure is a result, counted by kind)
        rec["failed"] = f"{step}: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
    return rec


def probe_summary(records: list[dict]) -> dict:
    ok = [r for r in records if "failed" not in r and "queued" not in r]
    return {"n": len(records), "ok": len(ok), "failures": [r["failed"] for r in records if "failed" in r],
            "queued_for_memory": sum(1 for r in records if "queued" in r),
            "login": stats([r["phases"]["login"] for r in records if "login" in r["phases"]]),
            "start_to_usable": stats([r["start_to_usable"] for r in records if "start_to_usable" in r]),
            "usable_to_first_output": stats([r["usable_to_first_output"] for r in ok]),
            "start_to_first_output": stats([r["start_to_first_output"] for r in ok])}


# ---- where the hub's time goes ---------------------------------------------------------------

REQUEST_METRIC = "jupyterhub_request_duration_seconds"


def request_durations(hub_url: str, token: str) -> dict[tuple, list[float]]:
    """JupyterHub's request histogram: (handler, method, code) -> [sum, count]."""
    text = requests.get(f"{hub_url}/hub/metrics", headers={"Authorization": f"token {token}"}, timeout=30).text
    out: dict = {}
    for family in text_string_to_metric_families(text):
        if family.name != REQUEST_METRIC:
            continue
        for sample in family.samples:
            key = (sample.labels.get("handler", "?"), sample.labels.get("method", "?"), sample.labels.get("code", "?"))
            if sample.name.endswith("_sum"):
                out.setdefault(key, [0.0, 0.0])[0] = sample.value
            elif sample.name.endswith("_count"):
                out.setdefault(key, [0.0, 0.0])[1] = sample.value
    return out


def request_profile(before: dict, after: dict, top: int = 12) -> list[dict]:
    """The handlers the hub spent the most wall time in during the class (sum of request
    durations, which includes awaiting, e.g. a spawn's first second or a progress stream)."""
    rows = []
    for key, (total, count) in after.items():
        t0, c0 = before.get(key, [0.0, 0.0])
        if count - c0 > 0:
            rows.append({"handler": key[0], "method": key[1], "code": key[2], "requests": int(count - c0),
                         "total_s": round(total - t0, 2), "mean_ms": round(1000 * (total - t0) / (count - c0), 1)})
    return sorted(rows, key=lambda r: -r["total_s"])[:top]


def hub_python_pid(container_pid: int) -> int:
    """The jupyterhub process in the hub's container (tini's child, or the first process)."""
    for pid in [container_pid, *child_pids(container_pid)]:
        try:
            if (os.path.basename(os.readlink(f"/proc/{pid}/exe")).startswith("python")
                    and b"jupyterhub" in Path(f"/proc/{pid}/cmdline").read_bytes()):
                return pid
        except OSError:
            pass
    return container_pid


def py_spy_start(py_spy: str, pid: int, seconds: float, out: Path) -> subprocess.Popen:
    """Sample the hub's Python process (100/s, its idle threads left out) into collapsed stacks."""
    return subprocess.Popen([py_spy, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "100",
                             "-f", "raw", "-o", str(out), "--nonblocking", "--nolineno"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def short(frame: str) -> str:
    frame = re.sub(r":\d+\)$", ")", frame)
    return re.sub(r" \(.*/(site-packages|lib/python3\.\d+)/", " (", frame)


def py_spy_summary(path: Path, top: int = 15, rate: int = 100) -> dict:
    """From collapsed stacks, the event loop's thread only (the hub's other threads, Docker
    calls and bcrypt, wait in thread pools and do not hold the loop up): its busy seconds
    (samples / rate; py-spy leaves idle samples out), and the share of them each function was
    on the stack (inclusive) and at its top (self). Line numbers and paths up to the package
    are dropped, so a function is one row."""
    inclusive: dict = {}
    own: dict = {}
    total = other = 0
    for line in path.read_text(errors="replace").splitlines():  # py-spy may write a name's bytes as read
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue  # a frame's name py-spy read wrong can span lines: its pieces are skipped
        n = int(n)
        frames = stack.split(";")
        if frames[0].startswith("_bootstrap (") and "threading.py" in frames[0]:
            other += n  # a thread started by threading: a pool's worker
            continue
        total += n
        for f in {short(f) for f in frames}:
            inclusive[f] = inclusive.get(f, 0) + n
        leaf = short(frames[-1])
        own[leaf] = own.get(leaf, 0) + n
    pct = lambda v: round(100.0 * v / total, 1) if total else 0.0  # noqa: E731
    # frames (nearly) every loop sample has, the loop itself, say nothing about where its time goes
    incl = [(k, v) for k, v in sorted(inclusive.items(), key=lambda kv: -kv[1]) if v < 0.9 * total]
    return {"loop_thread_busy_s": round(total / rate, 1), "other_threads_samples": other,
            "inclusive_pct": [{"frame": k, "pct": pct(v)} for k, v in incl[:top]],
            "self_pct": [{"frame": k, "pct": pct(v)} for k, v in sorted(own.items(), key=lambda kv: -kv[1])[:top]]}


# ---- the hubs under test ---------------------------------------------------------------------

class Stock:
    """jupyterhub-deploy-docker's setup (bench/stock/, as bench/run.py runs it): JupyterHub with
    its own configurable-http-proxy in one container, DockerSpawner, NativeAuthenticator with
    open sign-up; no spawn form (GET /hub/spawn starts the server), no admission by memory."""
    url = "http://127.0.0.1:18030"
    container = "gpuhubstock-jupyterhub"

    def __init__(self, image: str):
        self.token = uuid.uuid4().hex
        # built from the local base as `make bench` does (no registry here)
        self.env = {"PYTHON_BASE_IMAGE": "local/python:3.11-bookworm", **os.environ,
                    "BENCH_TOKEN": self.token, "SINGLEUSER_IMAGE": image}
        self.compose = ["docker", "compose", "-f", str(ROOT / "bench/stock/docker-compose.yml")]

    def _docker(self, *args: str) -> str:
        return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=300).stdout

    def down(self) -> None:
        for c in self._docker("ps", "-aq", "--filter", "name=^gpuhubstock-").split():
            self._docker("rm", "-f", c)
        subprocess.run([*self.compose, "down", "--volumes"], env=self.env, capture_output=True, timeout=300)
        for v in self._docker("volume", "ls", "-q", "--filter", "name=^gpuhubstock-user-").split():
            self._docker("volume", "rm", "-f", v)

    def up(self) -> None:
        subprocess.run([*self.compose, "build", "-q"], env=self.env, check=True, capture_output=True, timeout=900)
        subprocess.run([*self.compose, "up", "-d"], env=self.env, check=True, capture_output=True, timeout=300)
        deadline = time.monotonic() + 90
        while True:
            try:
                if requests.get(f"{self.url}/hub/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the stock hub did not start")
            time.sleep(0.5)

    def inspect(self, container: str) -> dict:
        return json.loads(self._docker("inspect", container))[0]

    def sign_up(self, names: list[str]) -> dict[str, str]:
        """Everyone signs up through the form (open sign-up), as stock's students would."""
        passwords = {n: f"Pw-{n}-2026" for n in names}

        def one(name: str) -> None:
            s = requests.Session()
            s.get(f"{self.url}/hub/signup", timeout=60).raise_for_status()
            s.post(f"{self.url}/hub/signup", timeout=120, data={
                "username": name, "signup_password": passwords[name],
                "signup_password_confirmation": passwords[name], "_xsrf": s.cookies.get("_xsrf")}).raise_for_status()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(one, names))
        return passwords

class OidcProvider:
    """The OpenID Connect provider of the e2e tests (tests/e2e/oidc/, oidc-provider-mock) on the
    stack of tests/e2e/oauth-stack.env, for --login oidc: every student is a user there (PUT
    /users/<sub> with preferred_username), the hub a registered client (RFC 7591)."""
    image = "gpuhub/oidc-mock:test"

    def __init__(self, stack: Stack):
        self.name = f"{stack.prefix}-oidc"
        authorize = URL(stack.env["OIDC_AUTHORIZE_URL"])
        self.public_url = f"{authorize.scheme}://{authorize.host}:{authorize.port}"

    def _docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=600)

    def start(self, network: str) -> None:
        base = "local/python:3.11-bookworm"
        has_base = not self._docker("image", "inspect", base, check=False).returncode
        self._docker("build", "-q", "-t", self.image, *(["--build-arg", f"BASE_IMAGE={base}"] if has_base else []),
                     str(ROOT / "tests/e2e/oidc"))
        port = URL(self.public_url).port
        self._docker("run", "-d", "--name", self.name, "--network", network, "-p", f"127.0.0.1:{port}:9400",
                     "--cap-drop", "ALL", "--security-opt", "no-new-privileges", self.image,
                     "--require-registration", "true")
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"{self.public_url}/.well-known/openid-configuration", timeout=2).raise_for_status()
                return
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def register_client(self, redirect_uri: str) -> dict[str, str]:
        r = requests.post(f"{self.public_url}/oauth2/clients", timeout=10,
                          json={"redirect_uris": [redirect_uri], "token_endpoint_auth_method": "client_secret_post"})
        r.raise_for_status()
        return {"OAUTH_CLIENT_ID": r.json()["client_id"], "OAUTH_CLIENT_SECRET": r.json()["client_secret"]}

    def add_users(self, names: list[str], admins: tuple[str, ...] = ()) -> None:
        with requests.Session() as s:
            for name in names:
                s.put(f"{self.public_url}/users/{name}", timeout=10, json={
                    "preferred_username": name, "email": f"{name}@example.org",
                    "groups": ["hub-admins"] if name in admins else []}).raise_for_status()

    def remove(self) -> None:
        self._docker("rm", "-f", "-v", self.name, check=False)


def oidc_admin_token(stack: Stack, admin: str) -> str:
    """An admin's API token on the OAuth stack: sign in through the provider (admin by the
    provider's group, OAUTH_ADMIN_GROUPS), then ask for a token as on the token page."""
    s = requests.Session()
    r = s.get(f"{stack.url}/hub/oauth_login?next=", timeout=30)  # follows to the provider's page
    r.raise_for_status()
    r = s.post(r.url, data={"sub": admin}, timeout=60)  # back through the hub's callback
    r.raise_for_status()
    r = s.post(f"{stack.url}/hub/api/users/{admin}/tokens", timeout=30,
               headers={"X-XSRFToken": s.cookies.get("_xsrf", path="/hub/") or s.cookies.get("_xsrf")},
               json={"note": "class rush", "expires_in": 7200})
    r.raise_for_status()
    return r.json()["token"]


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
                    monitor: Monitor, deadline: float = 0.0) -> tuple[list, dict]:
    """Students arrive evenly over the window; returns once all are idle (or failed) + `idle` s.
    With a deadline (seconds from the first arrival), students not in by then are stopped and
    counted as failed ("unfinished at the deadline"), so a run that would not end still reports."""
    names = sorted(passwords)
    n = len(names)
    marks: dict = {"class_start_s": monitor.now()}

    async def arrive(i: int, name: str) -> dict:
        await asyncio.sleep(window * i / n if n > 1 else 0)
        try:
            return await student(ctx, name, passwords[name],
                                 drops=int((i + 1) * ctx.drop_share) > int(i * ctx.drop_share))
        except asyncio.CancelledError:
            return {"name": name, "drops": False, "phases": {}, "failed": "unfinished at the deadline"}
    tasks = [asyncio.create_task(arrive(i, name)) for i, name in enumerate(names)]

    # everyone in (idle with a kernel, or failed), then the idle time with all websockets open
    began = time.monotonic()
    while sum(1 for t in tasks if t.done()) + ctx.idle < n:
        if deadline and time.monotonic() - began > deadline:
            marks["deadline_reached_s"] = monitor.now()
            for name, t in zip(names, tasks):
                if name not in ctx.idle_names:
                    t.cancel()
            break
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
    parser.add_argument("--probes", type=int, default=3,
                        help="real Chromium browsers arriving among the students (plus one alone before)")
    parser.add_argument("--target", choices=("ours", "stock"), default="ours",
                        help="ours: the test stack (tests/e2e/stack.env); stock: bench/stock/ (jupyterhub-deploy-docker)")
    parser.add_argument("--memory-wait", type=float, default=120.0,
                        help="seconds a student (or probe) waits once the hub said the host is short of memory, "
                             "then leaves: counted as queued, not failed")
    parser.add_argument("--deadline", type=float, default=0.0,
                        help="seconds from the first arrival after which students not yet in are stopped and counted "
                             "as unfinished (0: none)")
    parser.add_argument("--login", choices=("form", "oidc"), default="form",
                        help="form: the embedded login's form; oidc: everyone (probes too) through the OpenID Connect "
                             "provider of the e2e tests, on tests/e2e/oauth-stack.env's stack (a hub has one "
                             "authenticator, so a class is all one or all the other)")
    parser.add_argument("--hub-log-level", default="INFO",
                        help="ours: the hub's HUB_LOG_LEVEL for the run (a deployment's default, INFO; the e2e "
                             "stack's DEBUG spends about a sixth of the event loop's time writing logs)")
    parser.add_argument("--py-spy", default="", help="path of a py-spy binary: sample the hub's process during the class")
    parser.add_argument("--output", default=str(RESULTS / "class-rush-latest.json"))
    args = parser.parse_args()
    replay = [r for r in json.loads(REPLAY.read_text())["replay"] if r["type"] != "document"]

    if args.login == "oidc" and args.target != "ours":
        parser.error("--login oidc is for --target ours (stock's login is its form)")
    oidc = args.login == "oidc"
    ours = Stack(ROOT / "tests/e2e/oauth-stack.env") if oidc else Stack()
    hub_under_test = ours if args.target == "ours" else Stock(ours.env["SINGLEUSER_IMAGE"])
    provider = OidcProvider(ours) if oidc else None
    if provider:
        provider.remove()
    hub_under_test.down()
    if provider:
        provider.start(ours.create())
        # everyone the provider vouches for is let in; admins by the provider's group
        # the servers as on the form's stack (tests/e2e/stack.env), so the two runs compare
        same = {k: v for k, v in Stack().env.items() if k in SERVER_SETTINGS}
        ours.up(HUB_LOG_LEVEL=args.hub_log_level, OAUTH_ALLOW_ALL="true", OAUTH_ALLOWED_USERS="", **same,
                OAUTH_ALLOWED_GROUPS="", **provider.register_client(ours.env["OAUTH_CALLBACK_URL"]))
    elif args.target == "ours":
        ours.up(HUB_LOG_LEVEL=args.hub_log_level)
    else:
        hub_under_test.up()
    result: dict = {"target": args.target, "login": args.login, "hub_log_level": args.hub_log_level if args.target == "ours" else "stock's", "students": args.students, "window_s": args.window,
                    "drop_share": args.drop_share, "idle_s": args.idle, "profile": PROFILE if args.target == "ours" else None,
                    "replayed_requests": len(replay), "probes": args.probes, "image": ours.env["SINGLEUSER_IMAGE"],
                    "proxy_image": ours.env["PROXY_IMAGE"] if args.target == "ours" else "stock: CHP 4.6.3 in the hub's container",
                    "host_uptime_before": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()}
    monitor, proxy_ip, ports, spy = None, None, [], None
    try:
        if args.target == "ours":
            hub_id, proxy_id = container_id(ours, "hub"), container_id(ours, "proxy")
            if provider:
                provider.add_users(["rush-admin"], admins=("rush-admin",))
                token = oidc_admin_token(ours, "rush-admin")
            else:
                token = ours.admin_token()
        else:
            hub_id = proxy_id = Stock.container
            token = hub_under_test.token
        proxy_pid = hub_under_test.inspect(proxy_id)["State"]["Pid"]
        hub_pid = hub_python_pid(hub_under_test.inspect(hub_id)["State"]["Pid"])
        url = proxy_address(hub_under_test, proxy_id)
        proxy_ip = URL(url).host
        result["via"] = "proxy container address" if url != hub_under_test.url else "published port"
        names = [f"rush-{i:03d}" for i in range(args.students)]
        probe_names = [f"rush-probe-{i}" for i in range(args.probes)] + (["rush-probe-solo"] if args.probes else [])
        everyone = ["rush-solo", *probe_names, *names]
        t = time.monotonic()
        if provider:  # no password: the provider's page takes who you say you are
            provider.add_users(everyone)
            passwords = {n: "" for n in everyone}
        elif args.target == "ours":
            r = Hub(ours.url, token).api("POST", "/users", json={"usernames": everyone})
            assert r.status_code in (201, 409), r.text
            passwords = set_passwords(ours, everyone)
        else:
            passwords = hub_under_test.sign_up(everyone)
        result["passwords_set_s"] = round(time.monotonic() - t, 1)
        solo_password = passwords.pop("rush-solo")
        probe_passwords = {n: passwords.pop(n) for n in probe_names}

        monitor = Monitor({"hub": hub_id, "proxy": proxy_id} if hub_id != proxy_id else {"hub": hub_id},
                          proxy_pid).start()
        time.sleep(2)
        sockets0, rss0, _ = monitor.proxy_point()
        result["proxy_before"] = {"sockets": sockets0, "rss_mb": rss0,
                                  "tcp_8000": tcp_states_on(proxy_pid, 8000)}
        spawn_form = args.target == "ours"
        browsers = ThreadPoolExecutor(max(1, args.probes))

        async def everything():
            nonlocal spy
            loop = asyncio.get_running_loop()
            ctx = Context(url, replay, args.drop_share, spawn_form=spawn_form, oidc=oidc, memory_wait=args.memory_wait)
            # browsers with OIDC stay on the published address: the provider sends them back there
            probe_url = ours.url if oidc else url
            solo = await student(ctx, "rush-solo", solo_password, drops=False, solo=True)
            solo_probe = None
            if args.probes:
                solo_probe = await loop.run_in_executor(browsers, probe, probe_url, "rush-probe-solo",
                                                        probe_passwords["rush-probe-solo"], spawn_form, 0.0, oidc,
                                                        args.memory_wait)
            await asyncio.sleep(2)
            loop0 = await asyncio.to_thread(loop_histogram, hub_under_test.url, token)
            req0 = await asyncio.to_thread(request_durations, hub_under_test.url, token)
            if args.py_spy:
                spy = py_spy_start(args.py_spy, hub_pid, 3600, RESULTS / "class-rush-py-spy.txt")
            t0 = monitor.now()
            cpu0 = time.process_time()
            probes = [loop.run_in_executor(browsers, probe, probe_url, n, probe_passwords[n], spawn_form,
                                           args.window * (i + 0.5) / args.probes, oidc, args.memory_wait)
                      for i, n in enumerate(probe_names) if n != "rush-probe-solo"]
            tasks, marks = await run_class(ctx, passwords, args.window, args.idle, monitor, args.deadline)
            if spy is not None:
                spy.send_signal(2)  # SIGINT: py-spy writes what it sampled and exits
            loop1 = await asyncio.to_thread(loop_histogram, hub_under_test.url, token)
            req1 = await asyncio.to_thread(request_durations, hub_under_test.url, token)
            marks["loop_scraped_s"] = monitor.now()
            if probes:  # with a deadline, a probe still waiting a minute after it is stopped, not awaited
                done, _ = await asyncio.wait(probes, timeout=60 if args.deadline else None)
            probe_records = [p.result() if p in done else {"name": "?", "phases": {}, "failed": "unfinished at the deadline"}
                             for p in probes]
            marks["probes_done_s"] = monitor.now()
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
            return (solo, solo_probe, probe_records, records, marks, loop_lag(loop0, loop1),
                    request_profile(req0, req1), drops, t0)
        solo, solo_probe, probe_records, records, marks, lag, handlers, drops, t0 = asyncio.run(everything())
        browsers.shutdown(wait=False)
        monitor.stop()

        ok = [r for r in records if "failed" not in r and "queued" not in r]
        queued = [r for r in records if "queued" in r]
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
            "class": {"ok": len(ok), "failed": len(records) - len(ok) - len(queued), "failures": failures,
                      "queued_for_memory": len(queued),
                      "memory_message": next((r["memory_message"] for r in records if "memory_message" in r), None),
                      "phases": phases, "start_to_usable": usable,
                      "first_to_last_ready_s": round(max((r["ready_at"] for r in records if "ready_at" in r), default=0)
                                                 - min((r["ready_at"] for r in records if "ready_at" in r), default=0), 1),
                      "assets_per_student": ok[0]["assets"] if ok else None,
                      "waited_for_memory": sum(1 for r in records if r.get("waited_for_memory"))},
            "hub_event_loop": lag,
            "hub_requests_by_handler": handlers,
            "resources": monitor.summary(t0, marks["end_s"]),
            "proxy_drops": drops, "marks": marks, "timeline": monitor.timeline(),
        })
        if args.probes:
            result["probes_chromium"] = {
                "solo": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in solo_probe.items() if k != "phases"}
                        | {"login_s": round(solo_probe["phases"]["login"], 3) if "login" in solo_probe["phases"] else None},
                "class": probe_summary(probe_records),
                "each": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items() if k != "phases"}
                         | {"login_s": round(r["phases"]["login"], 3) if "login" in r["phases"] else None} for r in probe_records]}
            solo_probe_usable = solo_probe.get("start_to_usable")
            probe_usable = result["probes_chromium"]["class"]["start_to_usable"]
            if solo_probe_usable and probe_usable.get("n"):
                result["probes_chromium"]["usable_p95_over_solo"] = round(probe_usable["p95_s"] / solo_probe_usable, 2)
        if spy is not None:
            try:
                spy.wait(60)
                result["hub_py_spy"] = py_spy_summary(RESULTS / "class-rush-py-spy.txt")
                result["hub_py_spy"]["file"] = "bench/results/class-rush-py-spy.txt (not kept in git: copy it beside the JSON)"
            except Exception as e:  # noqa: BLE001 (the profile is extra; the run's figures stand)
                result["hub_py_spy"] = {"error": f"{type(e).__name__}: {e}",
                                        "stderr": spy.stderr.read().decode()[-500:] if spy.stderr else ""}
        if solo_usable and usable.get("n"):
            result["class"]["usable_p95_over_solo"] = round(usable["p95_s"] / solo_usable, 2)
        result["oom_killed"] = oom_killed(hub_under_test, args.target, ours)
        result["measures"] = {
            "zero_failed": result["class"]["failed"] == 0 and not solo.get("failed"),
            "probe_usable_p95_le_2x_solo": bool(result.get("probes_chromium", {}).get("usable_p95_over_solo", 99) <= 2.0),
            "usable_p95_le_2x_solo": bool(result["class"].get("usable_p95_over_solo", 99) <= 2.0),
            "login_p95_le_1s": bool(phases["login"].get("p95_s", 99) <= 1.0),
            "loop_lag_p99_le_100ms": bool(lag.get("p99_le_s", 99) <= 0.1),
            "nobody_oom_killed": not result["oom_killed"]["containers"] and not result["oom_killed"]["kernel_log_lines"],
        }
    finally:
        if monitor:
            monitor.stop()
        if spy is not None and spy.poll() is None:
            spy.kill()
        if ports and proxy_ip:
            drop_rules("-D", proxy_ip, 8000, ports)
        hub_under_test.down()
        if provider:
            provider.remove()
    result["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out = Path(args.output)
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    summary = {k: result.get(k) for k in ("target", "students", "window_s", "solo", "class", "probes_chromium",
                                          "hub_event_loop", "proxy_drops", "oom_killed", "measures")}
    print(json.dumps(summary))
    return 0 if result["class"]["failed"] == 0 else 1


def oom_killed(hub_under_test, target: str, ours: Stack) -> dict:
    """Containers of the run that the kernel OOM-killed (docker inspect State.OOMKilled, servers
    included, before they are removed) and the kernel log's OOM lines since the run began."""
    if target == "ours":
        names = ours.user_containers() + [container_id(ours, "hub"), container_id(ours, "proxy")]
    else:
        names = subprocess.run(["docker", "ps", "-aq", "--filter", "name=^gpuhubstock-"],
                               capture_output=True, text=True).stdout.split()
    killed = []
    for i in range(0, len(names), 50):
        out = subprocess.run(["docker", "inspect", "--format", "{{.Name}} {{.State.OOMKilled}}", *names[i:i + 50]],
                             capture_output=True, text=True).stdout
        killed += [line.split()[0].lstrip("/") for line in out.splitlines() if line.endswith(" true")]
    log = subprocess.run(["dmesg"], capture_output=True, text=True).stdout
    lines = [line for line in log.splitlines() if "oom-kill" in line or "Out of memory" in line]
    new = [line for line in lines if line not in DMESG_OOM_BEFORE]
    return {"containers_checked": len(names), "containers": killed, "kernel_log_lines": new[-10:]}


DMESG_OOM_BEFORE: set = set()


def stop_on_sigterm() -> None:
    """`timeout` (or anyone) sending SIGTERM ends the run through main's `finally`: the drop rules
    deleted and the stack removed, not left behind."""
    import signal  # reason: only the command line needs it

    def stop(_signum, _frame):
        raise SystemExit(143)
    signal.signal(signal.SIGTERM, stop)


if __name__ == "__main__":
    stop_on_sigterm()
    DMESG_OOM_BEFORE.update(line for line in subprocess.run(["dmesg"], capture_output=True, text=True).stdout.splitlines()
                            if "oom-kill" in line or "Out of memory" in line)
    code = main()
    sys.stdout.flush()
    os._exit(code)  # not waiting for a probe's thread stopped at the deadline
