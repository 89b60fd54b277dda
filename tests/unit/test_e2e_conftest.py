"""The e2e tier's conftest (tests/e2e/conftest.py), run by a real pytest on stand-in tests.

The failure report when the Docker engine does not answer (here: a docker CLI pointed at a
socket nobody listens on): the failure is reported with the engine's state, pytest does not
crash (INTERNALERROR, exit 3), and the stack fixture says the engine is down instead of calling
an image missing. And @pytest.mark.needs_gpus(n): a test needing more GPUs than the engine has
fails before its fixtures, saying why."""
import os
import subprocess
import sys
from pathlib import Path

E2E = Path(__file__).resolve().parents[1] / "e2e"

TESTS = """
from pathlib import Path
import pytest
import conftest
from hubclient import Stack

conftest.ARTIFACTS = Path(__file__).parent / "artifacts"

@pytest.fixture
def stack():
    return Stack()

def test_fails_on_a_dead_engine(stack):
    assert False, "the real failure"

def test_after_it():
    pass
"""

USES_THE_REAL_STACK = """
def test_needs_the_stack(stack):
    pass
"""


NEEDS_MORE_GPUS = """
import pytest

@pytest.fixture
def expensive():
    raise AssertionError("the fixture ran")

@pytest.mark.needs_gpus(1_000_000)
def test_needs_many_gpus(expensive):
    pass

@pytest.mark.needs_gpus(0)
def test_needs_none():
    pass
"""


def run(tmp_path: Path, text: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_dead.py").write_text(text)
    env = {**os.environ, "PYTHONPATH": str(E2E), "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider", "-q",
                           "test_dead.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_a_failure_on_a_dead_engine_is_reported_not_crashed_on(tmp_path):
    out = run(tmp_path, TESTS)
    assert out.returncode == 1, out.stdout + out.stderr  # tests failed; 3 would be INTERNALERROR
    assert "INTERNALERROR" not in out.stdout + out.stderr
    assert "the real failure" in out.stdout and "1 failed, 1 passed" in out.stdout
    assert "Docker engine is not answering" in out.stdout
    log = (tmp_path / "artifacts" / "test_fails_on_a_dead_engine.log").read_text()
    assert log.startswith("the Docker engine is not answering")


def test_the_stack_fixture_says_the_engine_is_down(tmp_path):
    out = run(tmp_path, USES_THE_REAL_STACK)
    assert out.returncode == 1 and "1 error" in out.stdout, out.stdout + out.stderr
    assert "the Docker engine is not answering" in out.stdout and "is missing" not in out.stdout


def test_a_test_needing_more_gpus_than_the_engine_has_fails_saying_so(tmp_path):
    out = run(tmp_path, NEEDS_MORE_GPUS)
    assert out.returncode == 1 and "1 passed, 1 error" in out.stdout, out.stdout + out.stderr
    assert "needs an engine with 1000000 GPUs, this one has" in out.stdout and "--fake-gpus 4" in out.stdout
    assert "the fixture ran" not in out.stdout
