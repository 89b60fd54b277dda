"""bench/class_rush.py's arithmetic: the event-loop lag from two scrapes of JupyterHub's
histogram, and the per-phase figures."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from class_rush import loop_lag, stats  # noqa: E402

BOUNDS = [0.05, 0.1, 0.25, 0.5, 1.0, float("inf")]


def scrape(counts_per_bucket: list[int], total_s: float) -> dict:
    """A cumulative histogram as /hub/metrics gives it, from counts per bucket."""
    out, running = {}, 0
    for bound, n in zip(BOUNDS, counts_per_bucket):
        running += n
        out[bound] = running
    out["count"], out["sum"] = running, total_s
    return out


def test_lag_is_taken_from_the_difference_between_the_scrapes():
    before = scrape([1000, 0, 0, 0, 5, 0], 60.0)  # an old 1 s stall before the class
    after = scrape([1000 + 97, 1, 2, 0, 5, 0], 60.0 + 97 * 0.05 + 0.08 + 2 * 0.2)
    lag = loop_lag(before, after)
    assert lag["samples"] == 100
    assert lag["p50_le_s"] == 0.05
    assert lag["p99_le_s"] == 0.25  # the 99th of 100 is one of the two 0.1-0.25 s ticks
    assert lag["max_le_s"] == 0.25  # the old 1 s stall is not counted
    assert lag["over_100ms"] == 2


def test_no_new_samples_says_so():
    same = scrape([10, 0, 0, 0, 0, 0], 0.5)
    assert loop_lag(same, same)["samples"] == 0


def test_phase_figures():
    figures = stats([0.1 * i for i in range(1, 21)])
    assert figures["n"] == 20
    assert figures["max_s"] == 2.0
    assert figures["p50_s"] == 1.05
    assert figures["p95_s"] == 1.9  # nearest rank of 0.95 * 19 = 18.05 -> the 19th value


def test_request_profile_counts_only_the_class_and_sorts_by_total_time():
    from class_rush import request_profile
    before = {("SpawnHandler", "POST", "302"): [10.0, 10.0], ("HealthCheckHandler", "GET", "200"): [1.0, 100.0]}
    after = {("SpawnHandler", "POST", "302"): [130.0, 110.0], ("HealthCheckHandler", "GET", "200"): [1.0, 100.0],
             ("LoginHandler", "POST", "302"): [40.0, 100.0]}
    rows = request_profile(before, after)
    assert [r["handler"] for r in rows] == ["SpawnHandler", "LoginHandler"]  # health: no request in the class
    assert rows[0] == {"handler": "SpawnHandler", "method": "POST", "code": "302", "requests": 100,
                       "total_s": 120.0, "mean_ms": 1200.0}
    assert rows[1]["mean_ms"] == 400.0


def test_py_spy_summary_loop_thread_inclusive_and_self_shares(tmp_path):
    from class_rush import py_spy_summary
    raw = tmp_path / "raw.txt"
    site = "/usr/local/lib/python3.11/site-packages"
    loop = f"<module> (/opt/venv/bin/jupyterhub);run_forever ({site}/../asyncio/base_events.py:600)"
    raw.write_text(f"{loop};commit ({site}/sqlalchemy/orm/session.py:2);execute (sqlite3:3) 30\n"
                   f"{loop};emit (/usr/lib/python3.11/logging/__init__.py:1) 60\n"
                   f"{loop};commit ({site}/sqlalchemy/orm/session.py:9) 10\n"
                   "_bootstrap (/usr/lib/python3.11/threading.py:1);_worker (concurrent/futures/thread.py:2) 500\n")
    out = py_spy_summary(raw)
    assert out["loop_thread_busy_s"] == 1.0 and out["other_threads_samples"] == 500  # the pool's idle wait apart
    incl = {r["frame"]: r["pct"] for r in out["inclusive_pct"]}
    assert incl["commit (sqlalchemy/orm/session.py)"] == 40.0  # one row whatever the line
    assert not any(k.startswith(("<module>", "run_forever")) for k in incl)  # on every loop sample
    own = {r["frame"]: r["pct"] for r in out["self_pct"]}
    assert own == {"emit (logging/__init__.py)": 60.0, "execute (sqlite3)": 30.0,
                   "commit (sqlalchemy/orm/session.py)": 10.0}


def test_probe_summary_keeps_failures_apart():
    from class_rush import probe_summary
    records = [{"phases": {"login": 1.0}, "start_to_usable": 10.0, "usable_to_first_output": 2.0,
                "start_to_first_output": 12.0},
               {"phases": {"login": 3.0}, "failed": "first_cell: TimeoutError"},
               {"phases": {"login": 2.0}, "queued": "queued for memory, told so (120 s waited)"}]
    out = probe_summary(records)
    assert (out["n"], out["ok"], out["failures"]) == (3, 1, ["first_cell: TimeoutError"])
    assert out["queued_for_memory"] == 1
    assert out["login"]["n"] == 3 and out["start_to_first_output"] == {"p50_s": 12.0, "p95_s": 12.0, "max_s": 12.0, "n": 1}
