"""What a commit of the hub's database costs, SQLite's defaults (rollback journal,
synchronous=FULL) against the hub's mode (WAL, synchronous=NORMAL: hub/hub_process/config/
database.py), alternating in one run on the same disk as the hub's state volume.

A throwaway container of the hub's image (--image, default the test image) on a throwaway
volume commits, round after round, a write like JupyterHub's (a server's state and a user's
last activity: one UPDATE of a ~1 KB row) `--commits` times per round in each mode, the modes
alternating (--rounds pairs), so the disk's other traffic (other sessions on this machine)
falls on both. Prints one JSON line and writes bench/results/db-commits-latest.json: per mode
the median and p95 of a commit in ms, each round's median, and the ratio.

Run under the Docker lock: flock /tmp/gpuhub-docker.lock .venv/bin/python bench/db_commits.py
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"

INSIDE = r'''
import json, os, sqlite3, statistics, sys, time
commits, rounds = int(sys.argv[1]), int(sys.argv[2])
MODES = {"default": [], "wal_normal": ["PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL"]}
conns = {}
for mode, pragmas in MODES.items():
    c = sqlite3.connect(f"/state/{mode}.sqlite", isolation_level=None)
    for p in pragmas:
        c.execute(p)
    c.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, last_activity REAL, state TEXT)")
    c.executemany("INSERT INTO users VALUES (?, ?, ?)", [(i, 0.0, "") for i in range(200)])
    conns[mode] = c
state = json.dumps({"object_id": "x" * 64, "object_name": "gpuhub-user", "gpus": [], "pad": "y" * 800})
out = {m: {"ms": [], "round_medians_ms": []} for m in MODES}
for r in range(rounds):
    for mode in (MODES if r % 2 == 0 else reversed(list(MODES))):
        c, times = conns[mode], []
        for i in range(commits):
            t = time.perf_counter()
            c.execute("BEGIN")
            c.execute("UPDATE users SET last_activity = ?, state = ? WHERE id = ?", (time.time(), state, i % 200))
            c.execute("COMMIT")
            times.append(1000 * (time.perf_counter() - t))
        out[mode]["ms"] += times
        out[mode]["round_medians_ms"].append(round(statistics.median(times), 3))
for mode, o in out.items():
    ms = sorted(o.pop("ms"))
    o.update({"commits": len(ms), "p50_ms": round(statistics.median(ms), 3),
              "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 3), "max_ms": round(ms[-1], 3)})
print(json.dumps(out))
'''


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", default="gpuhub/hub:test")
    parser.add_argument("--commits", type=int, default=200, help="commits per round and mode")
    parser.add_argument("--rounds", type=int, default=6, help="rounds, the modes alternating their order")
    parser.add_argument("--output", default=str(RESULTS / "db-commits-latest.json"))
    args = parser.parse_args()
    volume = f"gpuhubbench-db-{uuid.uuid4().hex[:8]}"
    subprocess.run(["docker", "volume", "create", volume], check=True, capture_output=True)
    try:
        out = subprocess.run(["docker", "run", "--rm", "--network", "none", "--user", "0", "--entrypoint", "python",
                              "-v", f"{volume}:/state", args.image, "-c", INSIDE, str(args.commits), str(args.rounds)],
                             check=True, capture_output=True, text=True, timeout=600)
    finally:
        subprocess.run(["docker", "volume", "rm", "-f", volume], capture_output=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["default_over_wal_normal_p50"] = round(result["default"]["p50_ms"] / max(result["wal_normal"]["p50_ms"], 1e-6), 1)
    result.update({"image": args.image, "commits_per_round": args.commits, "rounds": args.rounds,
                   "host_uptime_before": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
                   "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    Path(args.output).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
