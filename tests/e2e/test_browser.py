"""A person's path, in a real browser: log in on the default login page, press Start, get
JupyterLab. Screenshots land in tests/artifacts/."""
import pytest
from playwright.sync_api import expect

from conftest import ARTIFACTS


@pytest.mark.browser
@pytest.mark.needs_gpus(1)
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

    # The spawn form: profiles, and how many GPUs are free right now.
    expect(page.locator("#spawn_form")).to_be_visible(timeout=15_000)
    expect(page.locator(".gpuhub-gpus")).to_contain_text("free right now")
    page.check("#profile-gpu")
    page.screenshot(path=ARTIFACTS / "browser-3-spawn-form.png")
    page.click("#spawn_form [type=submit]")

    # JupyterLab in the user's container. JupyterHub shows its pending page (live progress)
    # only when a start takes more than a second, and ours takes less here; test_spawn.py
    # checks the progress events themselves.
    page.wait_for_url(f"**/user/{admin}/lab**", timeout=180_000)
    expect(page.locator("#jp-main-dock-panel")).to_be_visible(timeout=120_000)
    expect(page.locator("#jupyterlab-splash")).to_have_count(0, timeout=120_000)
    expect(page.locator(".jp-LauncherCard").first).to_be_visible(timeout=60_000)
    # What the user sees of their resources and of what persists
    expect(page.locator("#jp-main-statusbar")).to_contain_text("Mem", timeout=30_000)
    expect(page.locator(".jp-DirListing-content")).to_contain_text("WELCOME.md", timeout=30_000)
    page.screenshot(path=ARTIFACTS / "browser-5-jupyterlab.png")
    assert stack.container_of(admin)
    hub.stop(admin)
