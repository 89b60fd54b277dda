"""`make bench` (GPU time, issue 15): the line for GPUs and idle-GPU reclaim on this machine's
engine with its GPUs (fake ones here: readings fed from a file, tests/e2e/fake_gpu/), in one run.

  single    single spawns of a GPU server on an idle host: from the start request until the
            server answers through the proxy (p50: the yardstick for the hand-over)
  queue     GPU_WHEN_FULL=queue, USERS ask at once for the host's GPUs: as many start as there
            are GPUs, the rest wait with their places; then the earliest holder stops, again and
            again: hand-over = from the holder's server stopped (the stop request's answer)
            until the first waiter's server answers through the proxy; also reported with the
            holder's stop request itself (handover_with_stop_request_p50_s). Checked: each waiter's progress stream (its spawn page)
            tells it its place, FIFO (waiters start in the order of their places), 0 failed,
            0 lost, no GPU held twice at any point.
  reclaim   GPU_IDLE_TIMEOUT=T, GPU_IDLE_GRACE=G, GPU_SAMPLE_INTERVAL=I shortened: an idle-held
            GPU (0 %) is stopped within T + G + 2 I (+ the hub's stop); a busy one (90 %) and an
            exempt user's never are (watched for 2 (T + G)).

Prints one JSON object and writes bench/results/gpu-time-<time>.json and gpu-time-latest.json. Options: --users N (20),
--single N (5).
"""
import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests/e2e"))

from consoleclient import user_token  # noqa: E402
from hubclient import Hub, Stack  # noqa: E402
from storm import gpu_holdings  # noqa: E402

from hub.gpus.inventory import discover  # noqa: E402

FAKE = {"COMPOSE_FILE": "docker-compose.yml:tests/e2e/fake_gpu/compose.yml"}
READINGS = "/srv/jupyterhub/state/fake-gpu-readings.json"


def answers(stack: Stack, server_url: str, token: str) -> bool:
    try:
        return requests.get(f"{stack.url}{server_url}api/status", headers={"Authorization": f"token {token}"},
                            timeout=5).status_code == 200
    except requests.RequestException:
        return False


def until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(what)


def spawn_and_answer(stack: Stack, hub: Hub, name: str, token: str) -> float:
    t0 = time.monotonic()
    r = hub.api("POST", f"/users/{name}/server", json={"profile": "gpu"})
    assert r.status_code in (201, 202), r.text
    server = until(lambda: (hub.user(name)["servers"].get("") or {}).get("ready") and hub.user(name)["servers"][""],
                   180, f"{name} ready")
    until(lambda: answers(stack, server["url"], token), 60, f"{name} answering")
    return time.monotonic() - t0


def line(stack: Stack) -> list[dict]:
    out = stack.compose("exec", "-T", "hub", "cat", "/srv/jupyterhub/state/gpu-queue.json", check=False).stdout
    try:
        return json.loads(out)["waiting"]
    except ValueError:
        return []


def place_shown(hub: Hub, name: str, position: int) -> bool:
    """Whether this waiter's progress stream (what its spawn page shows; it replays every event
    of the start) tells it its place. Places only fall while nobody is moved, so the message with
    the place it has now is its latest."""
    wanted = "next in line" if position == 1 else f"number {position} in line"
    try:
        for event in hub.progress(name, timeout=5):
            if wanted in event.get("message", ""):
                return True
    except requests.RequestException:  # the replay ended without it (the read timed out)
        pass
    return False


def single(stack: Stack, hub: Hub, runs: int) -> dict:
    name = "bench-single"
    token = user_token(hub, name)
    times = []
    for _ in range(runs):
        times.append(spawn_and_answer(stack, hub, name, token))
        hub.stop(name)
    return {"runs": runs, "p50_s": round(statistics.median(times), 2), "all_s": [round(t, 2) for t in times]}


def queue(stack: Stack, hub: Hub, users: int, gpus: int) -> dict:
    names = [f"bq{i:02d}" for i in range(users)]
    tokens = {n: user_token(hub, n) for n in names}
    double_booked = []
    stop_watch = threading.Event()

    def watch():  # no GPU held twice, checked all along
        while not stop_watch.is_set():
            try:
                held = list(gpu_holdings(stack).values())
            except subprocess.CalledProcessError:  # a container removed while listed
                continue
            if len(held) != len(set(held)):
                double_booked.append(held)
            time.sleep(0.5)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    with ThreadPoolExecutor(users) as pool:
        codes = list(pool.map(lambda n: hub.api("POST", f"/users/{n}/server", json={"profile": "gpu"}).status_code, names))
    assert all(c in (201, 202) for c in codes), codes
    until(lambda: sum(1 for n in names if (hub.user(n)["servers"].get("") or {}).get("ready")) == gpus,
          180, "the first servers ready")
    until(lambda: len(line(stack)) == users - gpus, 30, "everyone else in line")
    waiting = line(stack)
    shown = [w["user"] for w in waiting if place_shown(hub, w["user"], w["position"])]
    places = [w["user"] for w in waiting]
    running = [n for n in names if n not in places]
    started_order, handovers, with_stop, stops, failed = [], [], [], [], []
    while places:
        holder = running.pop(0)
        t_request = time.monotonic()
        r = hub.api("DELETE", f"/users/{holder}/server")
        assert r.status_code in (202, 204), r.text
        if r.status_code == 202:  # the stop goes on: the server is stopped when the hub says so
            until(lambda: "" not in hub.user(holder)["servers"], 60, f"{holder} stopped")
        t0 = time.monotonic()  # the holder's server stopped (204: its container exited and removed)
        stops.append(t0 - t_request)
        nxt = places.pop(0)
        try:
            server = until(lambda: (hub.user(nxt)["servers"].get("") or {}).get("ready") and hub.user(nxt)["servers"][""],
                           120, f"{nxt} ready")
            until(lambda: answers(stack, server["url"], tokens[nxt]), 60, f"{nxt} answering")
        except TimeoutError as exc:
            failed.append(str(exc))
            break
        handovers.append(time.monotonic() - t0)
        with_stop.append(time.monotonic() - t_request)
        others_ready = [n for n in places if (hub.user(n)["servers"].get("") or {}).get("ready")]
        started_order.append(nxt if not others_ready else f"{nxt} (+{others_ready} overtook)")
        running.append(nxt)
    stop_watch.set()
    for n in names:
        hub.api("DELETE", f"/users/{n}/server")
    for n in names:
        hub.wait(n, ready=False, timeout=120)
    return {"users": users, "gpus": gpus, "started_at_once": users - len(waiting), "waited": len(waiting),
            "places": [w["position"] for w in waiting], "places_shown_on_progress": len(shown),
            "fifo": started_order == [w["user"] for w in waiting], "failed": len(failed), "failures": failed,
            "lost": len(waiting) - len(started_order) - len(failed), "double_booked": len(double_booked),
            "handover_p50_s": round(statistics.median(handovers), 2) if handovers else None,
            "handover_max_s": round(max(handovers), 2) if handovers else None,
            "holder_stop_request_p50_s": round(statistics.median(stops), 2) if stops else None,
            "handover_with_stop_request_p50_s": round(statistics.median(with_stop), 2) if with_stop else None}


def feed(stack: Stack, readings: dict) -> None:
    """The readings the hub's sampler reads next (tests/e2e/fake_gpu/), written whole."""
    subprocess.run(["docker", "exec", "-i", f"{stack.prefix}-hub-1", "sh", "-c",
                    f"cat > {READINGS}.tmp && mv {READINGS}.tmp {READINGS}"],
                   input=json.dumps(readings), text=True, check=True, timeout=30)


def reclaim(stack: Stack, hub: Hub, t: int, grace: int, interval: int) -> dict:
    stack.up(**FAKE, GPU_IDLE_TIMEOUT=str(t), GPU_IDLE_GRACE=str(grace), GPU_SAMPLE_INTERVAL=str(interval),
             GPU_IDLE_EXEMPT_USERS="br-exempt")
    names = ["br-idle", "br-busy", "br-exempt"]
    tokens = {n: user_token(hub, n) for n in names}
    for n in names:
        hub.start(n, options={"profile": "gpu"})
    gpu = {n: gpu_holdings(stack)[stack.container_of(n)] for n in names}
    fed = time.time()
    feed(stack, {gpu["br-idle"]: {"util": 0, "mem": 4000}, gpu["br-busy"]: {"util": 90, "mem": 9000},
                 gpu["br-exempt"]: {"util": 0, "mem": 100}})

    def me(name: str) -> dict:
        r = requests.get(f"{stack.url}/services/gpu-reclaim/api/me",
                         headers={"Authorization": f"token {tokens[name]}"}, timeout=10)
        return r.json() if r.status_code == 200 else {}

    def warning() -> dict | None:
        servers = me("br-idle").get("servers") or []
        return servers[0]["warning"] if servers and servers[0].get("warning") else None

    until(warning, t + grace + 60, "the idle server warned")
    warned = time.time() - fed
    until(lambda: not hub.user("br-idle")["servers"], t + 2 * grace + 60, "idle server reclaimed")
    gone = time.time() - fed
    # when the service decided the stop (its audit entry), apart from the hub's stop that follows
    audit = requests.get(f"{stack.url}/services/gpu-console/api/audit?limit=50", headers=hub.s.headers,
                         timeout=10).json()["entries"]
    epochs = {e["action"]: e["epoch"] for e in audit if e.get("user") == "br-idle"}
    watch_until = fed + 2 * (t + grace)
    warned_others = False
    while time.time() < watch_until:
        warned_others |= any((me(n).get("servers") or [{}])[0].get("warning") for n in ("br-busy", "br-exempt"))
        time.sleep(1)
    kept = {n: bool((hub.user(n)["servers"].get("") or {}).get("ready")) for n in ("br-busy", "br-exempt")}
    for n in names:
        hub.api("DELETE", f"/users/{n}/server")
    bound = t + grace + 2 * interval
    decided = round(epochs["reclaim"] - fed, 1) if "reclaim" in epochs else None
    return {"timeout_s": t, "grace_s": grace, "interval_s": interval, "bound_s": bound,
            "warned_after_s": round(warned, 1),
            "warn_audited_after_s": round(epochs["reclaim-warn"] - fed, 1) if "reclaim-warn" in epochs else None,
            "stop_decided_after_s": decided, "server_gone_after_s": round(gone, 1),
            "within_bound": decided is not None and decided <= bound,
            "gone_within_bound": gone <= bound,
            "busy_kept": kept["br-busy"], "exempt_kept": kept["br-exempt"], "busy_or_exempt_warned": warned_others,
            "watched_s": 2 * (t + grace)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--single", type=int, default=5)
    parser.add_argument("--hub-log", help="write the hub's log (timestamped) of the hand-overs here")
    args = parser.parse_args()
    gpus = len((discover() or [[]])[0] or [])
    if not gpus:
        print(json.dumps({"skipped": "the engine has no GPUs"}))
        return 0
    started = time.time()
    stack = Stack()
    stack.down()
    result = {"gpus": gpus}
    failed = False
    try:
        stack.up(GPU_WHEN_FULL="queue")
        hub = Hub(stack.url, stack.admin_token())
        # each part on its own: one that fails is reported in the JSON, the others still measure
        for part, run in (("single", lambda: single(stack, hub, args.single)),
                          ("queue", lambda: queue(stack, hub, args.users, gpus)),
                          ("reclaim", lambda: reclaim(stack, hub, 10, 10, 2))):
            t0 = time.monotonic()
            try:
                result[part] = run()
            except Exception as exc:  # noqa: BLE001 - recorded, the logs dumped
                failed = True
                result[part] = {"error": f"{type(exc).__name__}: {exc}"}
                log = ROOT / f"bench/results/gpu-time-{part}-failure.log"
                log.write_text(stack.logs())
                print(f"{part} failed: {exc} (logs: {log})", file=sys.stderr)
                stack.down()  # a clean stack for the next part
                stack.up(GPU_WHEN_FULL="queue")
                hub = Hub(stack.url, stack.admin_token())
            result[part]["took_s"] = round(time.monotonic() - t0, 1)
            if part == "queue" and args.hub_log:  # the hand-overs' log: the reclaim part recreates the hub
                Path(args.hub_log).write_text(stack.compose("logs", "--no-color", "--timestamps", "hub",
                                                            check=False).stdout)
            print(part, json.dumps(result[part]), file=sys.stderr, flush=True)
        q = result["queue"]
        if q.get("handover_p50_s") is not None and "p50_s" in result["single"]:
            q["handover_p50_minus_single_p50_s"] = round(q["handover_p50_s"] - result["single"]["p50_s"], 2)
            q["handover_target_met"] = q["handover_p50_minus_single_p50_s"] <= 0.5
    finally:
        stack.down()
    result["time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))
    text = json.dumps(result, indent=1) + "\n"
    results = ROOT / "bench/results"
    (results / f"gpu-time-{time.strftime('%Y-%m-%dT%H%M%SZ', time.gmtime(started))}.json").write_text(text)
    (results / "gpu-time-latest.json").write_text(text)
    print(json.dumps(result))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
