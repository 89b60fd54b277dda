"""Counts of the reliability tests (tests/e2e/test_reliability_*.py), and their summary.

Each test adds what it tried and what held to tests/artifacts/reliability.json as it goes
(a failing test has still counted what it injected, so a failure shows up as a count, not
as a missing line); the pytest plugin (`-p reliability`) records which tests were collected
and how each ended. `make reliability` empties the file, runs the tests, then runs this
module, which prints ONE JSON line:

    {"users_started", "users_failed", "slowest_start_s", "faults_injected", "faults_survived",
     "files_checked", "files_lost", "bad_inputs", "bad_input_5xx", "isolation_passed",
     "isolation_failed", "tests_passed", "tests_failed", "tests_not_run", "not_run", "wall_s"}

and exits 1 if anything failed, was lost or did not run. A test that was collected but never
ended (the run broke off: pytest crashed, the engine went down) or was skipped counts in
tests_not_run, its section (load, faults, data, input, isolation, accounting: the module's
name) is listed in not_run, and the counts of a section none of whose tests ran are null, not
a 0 that reads as "nothing went wrong". The file also keeps each measurement ("details"): how
long routes took to come back, the slowest start, each isolation check.
"""
import fcntl
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

# GPUHUB_RELIABILITY_RESULTS: another file, for the unit tests of this module.
RESULTS = Path(os.environ.get("GPUHUB_RELIABILITY_RESULTS")
               or Path(__file__).resolve().parents[1] / "artifacts" / "reliability.json")
COUNTS = ("users_started", "users_failed", "faults_injected", "faults_survived", "files_checked", "files_lost",
          "bad_inputs", "bad_input_5xx", "isolation_passed", "isolation_failed")
# The sections (test_reliability_<section>.py) that add to each count.
SECTIONS = {"users_started": ("load",), "users_failed": ("load",), "slowest_start_s": ("load",),
            "faults_injected": ("faults", "accounting"), "faults_survived": ("faults", "accounting"),
            "files_checked": ("data",), "files_lost": ("data",), "bad_inputs": ("input",),
            "bad_input_5xx": ("input",), "isolation_passed": ("isolation",), "isolation_failed": ("isolation",)}


@contextmanager
def locked_json(path: Path):
    """A results file several test processes add to: read, changed in the block, written back,
    under a lock of its own (also tests/e2e/doors.py's)."""
    path.parent.mkdir(exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = json.loads(path.read_text()) if path.exists() and path.stat().st_size else {}
        yield data
        path.write_text(json.dumps(data, indent=1) + "\n")


@contextmanager
def _results():
    with locked_json(RESULTS) as data:
        data.setdefault("counts", {}).setdefault("slowest_start_s", 0.0)
        data.setdefault("details", [])
        yield data


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


def section(nodeid: str) -> str:
    """tests/e2e/test_reliability_load.py::test_x -> load"""
    return nodeid.split("::")[0].rsplit("test_reliability_", 1)[-1].removesuffix(".py")


def summary(wall_s: float | None = None) -> dict:
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() and RESULTS.stat().st_size else {}
    counts, outcomes = data.get("counts", {}), data.get("outcomes", {})
    collected = data.get("collected", [])
    ran = {section(n) for n, o in outcomes.items() if o in ("passed", "failed")}
    not_run = [n for n in collected if outcomes.get(n) not in ("passed", "failed", "error")]
    line = {}
    for key in ("users_started", "users_failed", "slowest_start_s", *COUNTS[2:]):
        default = 0.0 if key == "slowest_start_s" else 0
        line[key] = counts.get(key, default) if ran & set(SECTIONS[key]) else None
    line["tests_passed"] = sum(o == "passed" for o in outcomes.values())
    line["tests_failed"] = sum(o in ("failed", "error") for o in outcomes.values())
    line["tests_not_run"] = len(not_run) if collected else None  # None: the tests were never collected
    line["not_run"] = sorted({section(n) for n in not_run})
    if wall_s is not None:
        line["wall_s"] = round(wall_s)
    return line


def failed(line: dict) -> bool:
    return bool(line["users_failed"] or line["files_lost"] or line["bad_input_5xx"] or line["isolation_failed"]
                or line["tests_failed"] or line["tests_not_run"] is None or line["tests_not_run"]
                or line["faults_survived"] != line["faults_injected"])


def pytest_collection_finish(session) -> None:
    """pytest plugin (`-p reliability`): the reliability tests this run is to run."""
    ids = [item.nodeid for item in session.items if "test_reliability_" in item.nodeid]
    with _results() as data:
        data["collected"] = ids


def pytest_runtest_logreport(report) -> None:
    """pytest plugin: how each reliability test ended: passed; failed (in its call or teardown);
    error (its setup failed: its body never ran); skipped (not run)."""
    if "test_reliability_" not in report.nodeid:
        return
    with _results() as data:
        outcomes = data.setdefault("outcomes", {})
        if report.failed:
            body_ran = report.when != "setup" and outcomes.get(report.nodeid) != "error"
            outcomes[report.nodeid] = "failed" if body_ran else "error"
        elif report.skipped:
            outcomes.setdefault(report.nodeid, "skipped")
        elif report.when == "call":
            outcomes.setdefault(report.nodeid, "passed")


def main(argv: list[str]) -> int:
    wall = float(argv[1]) if len(argv) > 1 else None
    line = summary(wall)
    print(json.dumps(line))
    return 1 if failed(line) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
