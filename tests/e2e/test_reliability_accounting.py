"""GPU accounting across a Docker daemon restart with live-restore (docs/usage.md): short and
long servers, a hub restart (the console restarts with it), then the daemon restarted while
servers hold GPUs (the hub's socket dies with it: its watchdog has Docker restart it), more
starts and stops after it. The store's GPU-seconds per user against the container lifetimes
from the engine's own start/die events, within 1 %. The engine keeps its events in memory only,
so they are read just before the daemon restart and again after it.

Restarts the shared Docker daemon: it runs only when GPUHUB_RELIABILITY_FULL=1 (`make
reliability`), not in `make test`."""
import json
import os
import time

import pytest
import requests

import engine
import reliability
from consoleclient import admin_console, wait_for
from test_reliability_faults import hub_starts_work

FULL = os.environ.get("GPUHUB_RELIABILITY_FULL") == "1"
ARTIFACTS = __import__("pathlib").Path(__file__).resolve().parents[1] / "artifacts"


def synced_after(console, t: float) -> bool:
    try:
        return (console.ok("GET", "usage?since=1h").get("synced_at") or 0) > t
    except (requests.RequestException, AssertionError):  # the console restarting
        return False


def short_round(hub, users, seconds: float = 2.0) -> None:
    for u in users:
        hub.start(u)
    time.sleep(seconds)
    for u in users:
        hub.stop(u)


@pytest.mark.skipif(not FULL, reason="restarts the Docker daemon: GPUHUB_RELIABILITY_FULL=1 (make reliability)")
@pytest.mark.needs_gpus(4)  # two long and two short servers of the GPU profile at once
def test_accounting_within_one_percent_across_hub_and_daemon_restarts(stack, hub):
    engine.enable_live_restore()
    console = admin_console(stack, hub)
    console.reset()
    t0 = time.time()
    long_users, short_users = ["acctd-long-0", "acctd-long-1"], ["acctd-short-0", "acctd-short-1"]
    for u in long_users + short_users:
        hub.create_user(u)
    for u in long_users:  # through both restarts
        hub.start(u)
    short_round(hub, short_users)
    short_round(hub, short_users[:1], 1.0)
    # The hub (and its console) restarted: the servers keep running, the console catches up.
    hub_container = f"{stack.prefix}-hub-1"
    stack.docker("restart", hub_container)
    wait_for(lambda: requests.get(f"{stack.url}/hub/api/", timeout=5).ok, timeout=90, what="hub back")
    short_round(hub, short_users)
    hub.start(short_users[1])  # a short one that runs through the daemon restart too
    time.sleep(1)
    before = engine.container_events(stack.prefix, t0 - 1)
    t_restart = time.time()
    with reliability.fault("Docker daemon restarted during GPU accounting (live-restore)"):
        down_s = engine.restart_daemon()
        t_back = time.monotonic()
        wait_for(lambda: hub_starts_work(hub, "acctd-probe"), timeout=120, what="hub starting servers again")
        recovered_s = time.monotonic() - t_back
        short_round(hub, short_users[:1])
        hub.stop(short_users[1])
        for u in long_users:
            hub.stop(u)
        hub.stop("acctd-probe")
        t1 = time.time()
        wait_for(lambda: synced_after(console, t1 + 1), timeout=90, what="a usage sync after the last stop")
        after = engine.container_events(stack.prefix, t_restart)
        truth = engine.gpu_lifetimes(before + after)
        report = console.ok("GET", f"usage?since={t0 - 60:.0f}&by=user")
        stored = {r["user"]: r["gpu_hours"] * 3600 for r in report["rows"] if r["user"] in truth}
        errors = {u: abs(stored.get(u, 0.0) - s) / s for u, s in truth.items()}
        figures = {"users": len(truth), "engine_s": round(sum(truth.values()), 2),
                   "stored_s": round(sum(stored.values()), 2),
                   "max_error_pct": round(100 * max(errors.values()), 4),
                   "total_error_pct": round(100 * abs(sum(stored.values()) - sum(truth.values()))
                                            / sum(truth.values()), 4),
                   "daemon_restart_s": round(down_s, 1), "hub_starts_again_after_s": round(recovered_s, 1)}
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "usage-accounting-daemon-restart.json").write_text(
            json.dumps({"truth": truth, "stored": stored, "errors": errors, **figures}, indent=1))
        print("accounting across a daemon restart:", json.dumps(figures))
        reliability.detail(accounting_daemon_restart=figures)
        assert set(truth) == {*long_users, *short_users}
        assert max(errors.values()) <= 0.01, (truth, stored)
    console.reset()
