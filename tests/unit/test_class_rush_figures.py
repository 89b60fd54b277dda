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
