"""Counts of the reliability tests (tests/e2e/test_reliability_*.py), and their summary.

Each test adds what it tried and what held to tests/artifacts/reliability.json as it goes
(a failing test has still counted what it injected, so a failure shows up as a count, not
as a missing line). `make reliability` empties the file, runs the tests, then runs this
module, which prints ONE JSON line:

    {"users_started", "users_failed", "slowest_start_s", "faults_injected", "faults_survived",
     "files_checked", "files_lost", "bad_inputs", "bad_input_5xx", "isolation_passed",
     "isolation_failed", "tests_passed", "tests_failed", "wall_s"}

and exits 1 if anything failed or was lost. The file also keeps each measurement
("details"): how long routes took to come back, the slowest start, each isolation check.
"""
import fcntl
import json
import sys
from contextlib import contextmanager
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "artifacts" / "reliability.json"
COUNTS = ("users_started", "users_failed", "faults_injected", "faults_survived", "files_checked", "files_lost",
          "bad_inputs", "bad_input_5xx", "isolation_passed", "isolation_failed", "tests_passed", "tests_failed")


@contextmanager
def _results():
    RESULTS.parent.mkdir(exist_ok=True)
    with open(RESULTS.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = json.loads(RESULTS.read_text()) if RESULTS.exists() and RESULTS.stat().st_size else {}
        data.setdefault("counts", {}).setdefault("slowest_start_s", 0.0)
        data.setdefault("details", [])
        yield data
        RESULTS.write_text(json.dumps(data, indent=1) + "\n")


def add(**counts) -> None:
    """Add to the counts (slowest_start_s keeps the largest)."""
    with _results() as data:
        for key, value in counts.items():
            if key == "slowest_start_s":
                data["counts"][key] = round(max(data["counts"][key], value), 2)
            else:
                assert key in COUNTS, key
                data["counts"][key] = data["counts"].get(key, 0) + value


def detail(**fields) -> None:
    """One measurement, kept in the results file (not in the summary line)."""
    with _results() as data:
        data["details"].append(fields)


@contextmanager
def fault(name: str):
    """A fault injected in the block; it counts as survived only if the block's checks pass."""
    add(faults_injected=1)
    yield
    add(faults_survived=1)
    detail(fault=name, survived=True)


def isolation(name: str, passed: bool, evidence: str = "") -> bool:
    add(**{"isolation_passed" if passed else "isolation_failed": 1})
    detail(isolation=name, passed=passed, evidence=evidence[:300])
    return passed


def reset() -> None:
    RESULTS.unlink(missing_ok=True)


def summary(wall_s: float | None = None) -> dict:
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"counts": {}}
    line = {key: data["counts"].get(key, 0) for key in COUNTS}
    line["slowest_start_s"] = data["counts"].get("slowest_start_s", 0.0)
    order = ["users_started", "users_failed", "slowest_start_s", *COUNTS[2:]]
    line = {key: line[key] for key in order}
    if wall_s is not None:
        line["wall_s"] = round(wall_s)
    return line


def pytest_runtest_logreport(report) -> None:
    """pytest plugin (`-p reliability`): count the reliability tests that passed and failed."""
    if "test_reliability_" not in report.nodeid:
        return
    if report.when == "call" and not report.skipped:
        add(**{"tests_passed" if report.passed else "tests_failed": 1})
    elif report.failed:  # an error in setup or teardown
        add(tests_failed=1)


def main(argv: list[str]) -> int:
    wall = float(argv[1]) if len(argv) > 1 else None
    line = summary(wall)
    print(json.dumps(line))
    bad = (line["users_failed"] or line["files_lost"] or line["bad_input_5xx"] or line["isolation_failed"]
           or line["tests_failed"] or line["faults_survived"] != line["faults_injected"])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
