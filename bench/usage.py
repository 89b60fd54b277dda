"""`make bench` (part): the GPU console's metrics endpoint and usage sync with many servers.

The console's tornado app on a loopback port (the real handlers, store and collector; the
login is a stand-in, the engine a stand-in that answers at once), with:
  - SERVERS running servers on GPUS GPUs shared by SERVERS/GPUS (open intervals, all sampled),
  - HISTORY_DAYS of past usage: every user SESSIONS_PER_DAY closed sessions a day,
  - a default quota (so every scrape evaluates a quota per user).
Measures, in one run: GET /metrics latency (p50, p95, max over REQUESTS sequential scrapes)
and its size, GET api/usage?since=30d&by=user&bucket=day latency, and one sync's time (inspect
of every live container, events, store write). The endpoint never calls the engine, so the
stand-in engine does not flatter the scrape; the sync figure excludes the engine's own time.

Writes bench/results/usage-latest.json and prints it as one JSON line.
"""
from __future__ import annotations

import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests/unit")]
from console_fakes import ADMIN_TOKEN, FakeEngine, FakeHub, FakeNVML, ServedApp, StubAuth, container  # noqa: E402

from hub.service_process.console.app import make_app, usage_keeper  # noqa: E402
from hub.common.audit import AuditLog  # noqa: E402
from hub.service_process.console.state import Console  # noqa: E402
from hub.gpus.activity import ActivitySampler  # noqa: E402
from hub.settings.gpu_settings import GPUSettings  # noqa: E402
from hub.gpus.manager import GPUManager  # noqa: E402
from hub.gpus.model import GPU  # noqa: E402
from hub.usage.accounting import Interval  # noqa: E402

SERVERS, GPUS, HISTORY_DAYS, SESSIONS_PER_DAY, REQUESTS = 200, 50, 30, 2, 100


def pct(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p * (len(ordered) - 1))))]


def timed(url, headers, n, before=lambda: None):
    out = []
    for _ in range(n):
        before()
        t = time.perf_counter()
        r = requests.get(url, headers=headers, timeout=30)
        out.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200, r.text[:300]
    return {"p50_ms": round(statistics.median(out), 2), "p95_ms": round(pct(out, 0.95), 2),
            "max_ms": round(max(out), 2), "bytes": len(r.content)}


def main() -> int:
    random.seed(1)
    tmp = Path(tempfile.mkdtemp(prefix="gpuhub-bench-usage-"))
    gpus = [GPU(f"GPU-{i:04d}", i, "Fake GPU", 81920) for i in range(GPUS)]
    engine = FakeEngine()
    hub = FakeHub(engine)
    users = [f"user{i:03d}" for i in range(SERVERS)]
    for u in users:
        hub.users[u] = {"name": u, "groups": [f"course{int(u[4:]) % 5}"]}
    for g in range(5):
        hub.groups[f"course{g}"] = [u for u in users if int(u[4:]) % 5 == g]
        hub.properties[f"course{g}"] = {"gpuhub.course": {}}
    manager = GPUManager(gpus, "static", "cdi", str(tmp / "intent.json"), "gpuhub")
    nvml = FakeNVML()
    nvml.read = lambda: [__import__("hub.gpus.nvml", fromlist=["Reading"]).Reading(g.uuid, g.index, g.name, random.randint(0, 100), 1000, 81559) for g in gpus]
    sampler = ActivitySampler(reader=nvml, interval=10)
    sampler.sample()
    console = Console(manager, engine, hub, sampler, AuditLog(tmp / "audit.jsonl"), instance="gpuhubtest",
                      cache_seconds=0)
    settings = GPUSettings(usage_db=str(tmp / "usage.sqlite"), quota_default="40h/7d")

    async def no_events(*a):
        return []

    console.usage = keeper = usage_keeper(console, settings, no_events)
    now = time.time()
    history = []
    for d in range(HISTORY_DAYS):
        for u in users:
            for s in range(SESSIONS_PER_DAY):
                start = now - (d + 1) * 86400 + s * 20000 + random.random() * 3600
                history.append(Interval(f"{u}-{d}-{s}", gpus[int(u[4:]) % GPUS].uuid, start, start + 3600 * random.random() * 3,
                                        False, u, weight=GPUS / SERVERS, model="Fake GPU", groups=(f"course{int(u[4:]) % 5}",),
                                        courses=(f"course{int(u[4:]) % 5}",), used_s=600, sampled_s=3600))
    keeper.store.save(history, now - 60)
    for i, u in enumerate(users):
        c = container(f"live-{u}", gpus[i % GPUS].uuid, u, since=now - 3600)
        c["Config"]["Env"] = [f"GPUHUB_GPU_SHARED_BY={SERVERS // GPUS}"]
        engine.containers.append(c)
    t = time.perf_counter()
    first = asyncio.run(keeper.sync())
    first_ms = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    asyncio.run(keeper.sync())
    sync_ms = (time.perf_counter() - t) * 1000
    from hub.usage.metrics import warm
    t = time.perf_counter()
    warm(keeper)  # what the console's sync task does after each sync
    warm_ms = (time.perf_counter() - t) * 1000
    app = make_app(console, "/services/gpu-console/", "/", authenticator=StubAuth(), cookie_secret=b"x" * 32)
    headers = {"Authorization": f"token {ADMIN_TOKEN}"}
    with ServedApp(app) as served:
        metrics = timed(served.url + "/services/gpu-console/metrics", headers, REQUESTS)
        # without the sync task's warm-up: each scrape computes the store's families itself
        uncached = timed(served.url + "/services/gpu-console/metrics", headers, REQUESTS,
                         before=lambda: setattr(keeper, "_metrics_cache", None))
        report = timed(served.url + "/services/gpu-console/api/usage?since=30d&by=user&bucket=day", headers, 20)
    result = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "servers": SERVERS, "gpus": GPUS,
              "intervals": len(history) + first.created, "history_days": HISTORY_DAYS,
              "metrics": {**metrics, "requests": REQUESTS, "goal_ms": 50, "met": metrics["p95_ms"] <= 50},
              "metrics_cold": uncached,
              "usage_report_30d_by_user_day": report,
              "sync": {"first_ms": round(first_ms, 1), "steady_ms": round(sync_ms, 1), "metrics_warm_ms": round(warm_ms, 1), "live": first.live}}
    out = ROOT / "bench/results/usage-latest.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
