"""tests/e2e/reliability.py, the pytest plugin and the summary line of `make reliability`, on
stand-in reliability tests run by a real pytest: a run that breaks off (pytest's INTERNALERROR
in a report hook, as a failure report on a dead engine once did) shows which sections did not
run and exits 1, instead of a line of zeros."""
import json
import os
import subprocess
import sys
from pathlib import Path

E2E = Path(__file__).resolve().parents[1] / "e2e"

MODULES = {
    "test_reliability_load.py": """
import reliability
def test_load():
    reliability.add(users_started=3, users_failed=0, slowest_start_s=1.5)
""",
    "test_reliability_faults.py": """
import reliability
def test_fault_survived():
    with reliability.fault("survived"):
        pass
def test_fault_not_survived():
    with reliability.fault("not survived"):
        assert False, "the checks after the fault failed"
""",
    "test_reliability_data.py": """
import reliability
def test_breaks_the_run():
    reliability.add(files_checked=1)
    assert False
""",
    "test_reliability_input.py": """
import reliability
def test_input():
    reliability.add(bad_inputs=5)
""",
}

# A failure report that raises (as one running `docker ps` on a dead engine did): INTERNALERROR.
CRASHING_HOOK = """
import pytest
@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed and "breaks_the_run" in item.name:
        raise RuntimeError("the report hook crashed")
    return report
"""


def run(tmp_path: Path, modules: dict[str, str], conftest: str = "") -> tuple[int, dict]:
    for name, text in {**modules, "conftest.py": conftest}.items():
        (tmp_path / name).write_text(text)
    results = tmp_path / "reliability.json"
    env = {**os.environ, "PYTHONPATH": str(E2E), "GPUHUB_RELIABILITY_RESULTS": str(results)}
    subprocess.run([sys.executable, "-m", "pytest", "-p", "reliability", "-p", "no:cacheprovider", "-q",
                    *sorted(modules, key=list(MODULES).index)], cwd=tmp_path, env=env, capture_output=True,
                   timeout=120)
    out = subprocess.run([sys.executable, str(E2E / "reliability.py"), "12"], env=env, capture_output=True,
                         text=True, timeout=60)
    return out.returncode, json.loads(out.stdout)


def test_a_run_that_breaks_off_lists_what_did_not_run_and_fails(tmp_path):
    status, line = run(tmp_path, MODULES, CRASHING_HOOK)
    assert status == 1
    assert line["users_started"] == 3 and line["slowest_start_s"] == 1.5
    assert line["faults_injected"] == 2 and line["faults_survived"] == 1
    assert line["files_checked"] is None and line["files_lost"] is None  # its one test never ended
    assert line["bad_inputs"] is None and line["isolation_passed"] is None  # never ran; never collected
    assert (line["tests_passed"], line["tests_failed"], line["tests_not_run"]) == (2, 1, 2)
    assert line["not_run"] == ["data", "input"]
    assert line["wall_s"] == 12


def test_a_complete_run_with_everything_passing_exits_0(tmp_path):
    modules = {k: v for k, v in MODULES.items() if k in ("test_reliability_load.py", "test_reliability_input.py")}
    status, line = run(tmp_path, modules)
    assert (status, line["tests_passed"], line["tests_failed"], line["tests_not_run"], line["not_run"]) == (0, 2, 0, 0, [])
    assert line["users_started"] == 3 and line["bad_inputs"] == 5 and line["faults_injected"] is None


def test_no_results_at_all_fails(tmp_path):
    env = {**os.environ, "GPUHUB_RELIABILITY_RESULTS": str(tmp_path / "missing.json")}
    out = subprocess.run([sys.executable, str(E2E / "reliability.py")], env=env, capture_output=True, text=True,
                         timeout=60)
    line = json.loads(out.stdout)
    assert out.returncode == 1 and line["tests_not_run"] is None and line["users_started"] is None
