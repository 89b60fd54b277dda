"""Fixtures for the end-to-end tier: the real compose stack on the real Docker engine.

The stack uses its own names (HUB_NAME_PREFIX=gpuhubtest) and port, so it never touches a
deployment running on the same host; everything it creates is removed at the end. When a
test fails, the stack's and the user containers' logs are written to tests/artifacts/.
"""
import subprocess
from pathlib import Path

import pytest

from hubclient import Hub, Stack

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def pytest_collection_modifyitems(items):
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def stack():
    s = Stack()
    for key in ("HUB_IMAGE", "PROXY_IMAGE", "SINGLEUSER_IMAGE"):
        image = s.env[key]
        if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode:
            pytest.fail(f"image {image} is missing: build the test images with `make test-images`")
    s.down()  # leftovers of an interrupted run
    try:
        s.up()
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"compose up failed:\n{exc.stderr}\n{s.logs()}")
    yield s
    s.down()


@pytest.fixture(scope="session")
def hub(stack) -> Hub:
    return Hub(stack.url, stack.admin_token())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call" and report.failed and "stack" in item.fixturenames:
        ARTIFACTS.mkdir(exist_ok=True)
        stack = item.funcargs.get("stack") or Stack()
        (ARTIFACTS / f"{item.name}.log").write_text(stack.logs())
    return report
