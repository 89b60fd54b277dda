"""`make bench` (part): a class of N people logging in at once, and a login storm, against the
real compose stack of the tests (tests/e2e/stack.env).

1. A class arrives: N users are created (as a roster import does), the admin makes their
   set-password links at /hub/invite ("make links for all"), each person sets a password
   through their link; then all N log in through the login form at once (CONCURRENCY at a
   time, as browsers would) while /hub/health is polled. Measures: logins that succeeded, the
   time until the last one did, login latency p50/p95/max, the hub's health p50/p95/max.
2. A storm: 64 wrong passwords for the admin, 16 at a time, while /hub/health is polled.

Writes bench/results/logins-latest.json and prints it as one JSON line. The stack is brought
up by this script and removed at the end. `--users N` (default 200), `--concurrency C` (50).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests/e2e")]
from hubclient import Hub, Stack  # noqa: E402

RESULTS = ROOT / "bench" / "results"


class HealthProbe:
    def __init__(self, url: str):
        self.url, self.samples, self._stop = url, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                requests.get(f"{self.url}/hub/health", timeout=10)
            except requests.RequestException:
                pass
            self.samples.append(time.monotonic() - t0)
            time.sleep(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def ms(values: list[float]) -> dict:
    if not values:
        return {}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return {"p50_ms": round(statistics.median(ordered) * 1000, 1), "p95_ms": round(p95 * 1000, 1),
            "max_ms": round(ordered[-1] * 1000, 1), "n": len(ordered)}


def log_in(url: str, name: str, password: str) -> tuple[int, float]:
    s = requests.Session()
    t0 = time.monotonic()
    s.get(f"{url}/hub/login", timeout=60)
    r = s.post(f"{url}/hub/login?next=", timeout=120, allow_redirects=False,
               data={"username": name, "password": password, "_xsrf": s.cookies.get("_xsrf")})
    return r.status_code, time.monotonic() - t0


def class_arrives(stack: Stack, hub: Hub, users: int, concurrency: int) -> dict:
    names = [f"class-{i:03d}" for i in range(users)]
    for name in names:
        hub.create_user(name)
    admin = stack.admin_session()
    admin.get(f"{stack.url}/hub/invite", timeout=30).raise_for_status()
    page = admin.post(f"{stack.url}/hub/invite", timeout=120,
                      data={"all": "1", "_xsrf": admin.cookies.get("_xsrf")})
    page.raise_for_status()
    links = {}
    for row in page.text.split("<tr><td>")[1:]:
        name, rest = row.split("</td>", 1)
        links[name] = rest.split("<code>", 1)[1].split("</code>", 1)[0].replace("&amp;", "&")
    missing = [n for n in names if n not in links]
    assert not missing, f"no link for {missing[:5]}"

    def set_password(name):
        s = requests.Session()
        s.get(links[name], timeout=60).raise_for_status()
        r = s.post(links[name], timeout=120, data={"password": f"Pw-{name}-2026", "password_confirmation":
                                                  f"Pw-{name}-2026", "_xsrf": s.cookies.get("_xsrf")})
        return r.status_code
    t0 = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        set_codes = list(pool.map(set_password, names))
    setting_s = time.monotonic() - t0
    with HealthProbe(stack.url) as probe, ThreadPoolExecutor(concurrency) as pool:
        t0 = time.monotonic()
        results = list(pool.map(lambda n: log_in(stack.url, n, f"Pw-{n}-2026"), names))
        wall = time.monotonic() - t0
    ok = [t for code, t in results if code == 302]
    return {"users": users, "concurrency": concurrency, "passwords_set": set_codes.count(200),
            "passwords_set_s": round(setting_s, 1), "logins_ok": len(ok),
            "logins_failed": {str(c): sum(1 for code, _ in results if code == c)
                              for c in {code for code, _ in results if code != 302}},
            "all_logged_in_s": round(wall, 1), "login": ms([t for _, t in results]), "health": ms(probe.samples)}


def storm(stack: Stack) -> dict:
    admin = stack.env["HUB_ADMIN_USER"]
    with HealthProbe(stack.url) as probe, ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: log_in(stack.url, admin, f"wrong-{i}"), range(64)))
    codes = [c for c, _ in results]
    return {"tries": 64, "concurrency": 16, "refused_429": codes.count(429), "checked": 64 - codes.count(429),
            "health": ms(probe.samples)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    stack = Stack()
    stack.down()
    stack.up()
    try:
        hub = Hub(stack.url, stack.admin_token())
        result = {"class": class_arrives(stack, hub, args.users, args.concurrency)}
        # the storm last: its address is this machine's, which it holds back for a while
        result["storm"] = storm(stack)
    finally:
        stack.down()
    result["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "logins-latest.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
    return 0 if result["class"]["logins_ok"] == args.users else 1


if __name__ == "__main__":
    sys.exit(main())
