"""A person's path, in a real browser: log in on the default login page, press Start, get
JupyterLab. Screenshots land in tests/artifacts/."""
import pytest
from playwright.sync_api import expect, sync_playwright

from conftest import ARTIFACTS

CHROMIUM = "/usr/bin/chromium"
# Flags that let headless Chromium run as root on a machine with a closed network.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def page():
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        yield page
        browser.close()


@pytest.mark.browser
def test_login_start_and_jupyterlab(stack, hub, page):
    admin = stack.env["HUB_ADMIN_USER"]
    page.goto(f"{stack.url}/hub/login")
    page.fill("input[name=username]", admin)
    page.fill("input[name=password]", stack.env["HUB_ADMIN_PASSWORD"])
    page.screenshot(path=ARTIFACTS / "browser-1-login.png")
    page.click("input[type=submit], button[type=submit]")

    # The home page with its Start button (the hub redirects to the spawn page or home).
    page.goto(f"{stack.url}/hub/home")
    start = page.locator("#start")
    expect(start).to_be_visible(timeout=15_000)
    page.screenshot(path=ARTIFACTS / "browser-2-home.png")
    start.click()

    # JupyterLab loads in the user's container (spawn pending page first).
    page.wait_for_url(f"**/user/{admin}/lab**", timeout=180_000)
    expect(page.locator("#jp-main-dock-panel")).to_be_visible(timeout=120_000)
    expect(page.locator("#jupyterlab-splash")).to_have_count(0, timeout=120_000)
    expect(page.locator(".jp-LauncherCard").first).to_be_visible(timeout=60_000)
    page.screenshot(path=ARTIFACTS / "browser-3-jupyterlab.png")
    assert stack.container_of(admin)
    hub.stop(admin)
