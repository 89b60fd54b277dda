"""Fixtures for the end-to-end tier: the real compose stack on the real Docker engine.

The stack uses its own names (HUB_NAME_PREFIX=gpuhubtest) and port, so it never touches a
deployment running on the same host; everything it creates is removed at the end. When a
test fails, the stack's and the user containers' logs are written to tests/artifacts/.

The hooks and the stack's clean-up run after failures, the Docker engine's own included (a
daemon restart that did not come back): each asks the engine with a timeout first and, when it
does not answer, says so and moves on. An exception in a report hook would be pytest's
INTERNALERROR, which ends the run and hides the failure that caused it.
"""
import functools
import subprocess
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

import engine
from hub.gpus.inventory import discover
from consoleclient import clean_console
from hubclient import Hub, Stack

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM = "/usr/bin/chromium"
# Flags that let headless Chromium run as root on a machine with a closed network.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def pytest_configure(config):
    config.addinivalue_line("markers", "needs_gpus(n): needs an engine with at least n GPUs (fake ones on a "
                            "GPU-less host); fails, saying so, on an engine with fewer")


def pytest_collection_modifyitems(items):
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@functools.cache
def engine_gpus() -> int:
    """How many GPUs the engine has, found the way the hub finds them (NVML, else CDI specs)."""
    return len(discover()[0])


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """@pytest.mark.needs_gpus(n): a test whose claims are about GPUs (or that starts a server of
    the GPU profile) fails before its fixtures on an engine with fewer than n GPUs. It fails
    rather than skips: CI and the test machines have 4 fake GPUs, and a skip would turn an engine
    installed without them into a green run that tested no GPU at all (docs/development.md)."""
    marker = item.get_closest_marker("needs_gpus")
    if marker:
        need = marker.args[0] if marker.args else 1
        if engine_gpus() < need:
            pytest.fail(f"needs an engine with {need} GPU{'s' * (need > 1)}, this one has {engine_gpus()}: "
                        "fake ones on a GPU-less host with ../shared/engine/install-docker.sh --fake-gpus 4, "
                        "or leave these tests out with -m 'not needs_gpus'", pytrace=False)


ENGINE_DOWN = "the Docker engine is not answering (`docker info` within 10 s)"


@pytest.fixture(scope="session")
def stack():
    s = Stack()
    if not engine.docker_ok(timeout=10):
        pytest.fail(ENGINE_DOWN)
    for key in ("HUB_IMAGE", "PROXY_IMAGE", "SINGLEUSER_IMAGE"):
        image = s.env[key]
        if subprocess.run(["docker", "image", "inspect", image], capture_output=True, timeout=30).returncode:
            pytest.fail(f"image {image} is missing: build the test images with `make test-images`")
    s.down()  # leftovers of an interrupted run
    try:
        s.up()
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"compose up failed:\n{exc.stderr}\n{logs_or_why_not(s)}")
    yield s
    if not engine.docker_ok(timeout=10):  # the next run's set-up removes what is left
        pytest.fail(f"{ENGINE_DOWN}: the test stack was not removed", pytrace=False)
    s.down()


def logs_or_why_not(stack: Stack) -> str:
    """The stack's and its users' logs; or why there are none (never raises)."""
    if not engine.docker_ok(timeout=10):
        return ENGINE_DOWN + ": no logs"
    try:
        return stack.logs()
    except (subprocess.SubprocessError, OSError) as exc:
        return f"the logs could not be read: {exc}"


@pytest.fixture(scope="module")
def configured_stack(stack, request):
    """The stack with the test module's ``SETTINGS`` (.env overrides: fake GPU readings, short
    reclaim timeouts, ...) for the whole module, and as the other tests expect it again after."""
    stack.up(**request.module.SETTINGS)
    try:
        yield stack
    finally:
        stack.up()


@pytest.fixture(scope="session")
def hub(stack) -> Hub:
    return Hub(stack.url, stack.admin_token())


@pytest.fixture
def console(stack, hub):
    """The GPU console as the admin, with no pins, drains, reservations, shared GPUs or quotas
    before and after the test (``consoleclient.Console.reset``)."""
    with clean_console(stack, hub) as c:
        yield c


@pytest.fixture(scope="module")
def module_console(stack, hub):
    """``console`` for a whole module (reset before its first test and after its last)."""
    with clean_console(stack, hub) as c:
        yield c


def log_in(page, stack, username: str | None = None, password: str | None = None, timeout: int = 30_000) -> None:
    """The hub's login form in a browser page (the admin by default), until a hub page is shown."""
    page.goto(f"{stack.url}/hub/login")
    page.fill("input[name=username]", username or stack.env["HUB_ADMIN_USER"])
    page.fill("input[name=password]", password or stack.env["HUB_ADMIN_PASSWORD"])
    page.click("input[type=submit], button[type=submit]")
    page.wait_for_url("**/hub/**", timeout=timeout)


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, headless, one per test module: closing it at the module's end closes
    every page the module opened (and ends Playwright's event loop before other tests run)."""
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    """A fresh browser context (no cookies of an earlier login, the hub's or a provider's)."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    yield context.new_page()
    context.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call" and report.failed and "stack" in item.fixturenames:
        logs = logs_or_why_not(item.funcargs.get("stack") or Stack())
        if logs.startswith(ENGINE_DOWN):
            report.sections.append(("Docker engine", logs))  # shown with the failure
        try:
            ARTIFACTS.mkdir(exist_ok=True)
            (ARTIFACTS / f"{item.name}.log").write_text(logs)
        except OSError as exc:
            report.sections.append(("test logs", f"not written: {exc}"))
    return report
