"""Parking's notices in Chromium (fake GPUs, gpu-park's driver stand-in: parkclient.py): a
JupyterLab tab left open when the server is parked shows "GPU: parked" in its GPU status item,
the notice as its title and as a banner with Resume; the person opening /hub/home sees "Your session is parked since HH:MM … Resume"; Resume
(a form with the hub's XSRF token) brings JupyterLab back, and the kernel's variable is as it
was; the GPU console lists it while parked. Screenshots park-*.png in tests/artifacts/."""
import re
import secrets
import time

import pytest
from playwright.sync_api import expect

from conftest import ARTIFACTS, log_in
from consoleclient import wait_for
from hubclient import UserServer
from parkclient import SETTINGS, parked_records, start_cuda_process, status, wait_parked  # noqa: F401 - SETTINGS: configured_stack's
from storm import gpu_holdings


@pytest.mark.needs_gpus(1)
def test_parked_notices_and_resume_in_the_browser(configured_stack, hub, page, browser):
    stack = configured_stack
    admin = stack.env["HUB_ADMIN_USER"]
    log_in(page, stack, timeout=15_000)
    hub.start(admin, options={"profile": "gpu"})
    container = stack.container_of(admin)
    gpu = gpu_holdings(stack)[container]
    stack.feed_gpu_readings({gpu: {"util": 40, "mem": 2048}})  # busy while JupyterLab loads
    page.goto(f"{stack.url}/user/{admin}/lab")
    expect(page.locator("#jp-main-dock-panel")).to_be_visible(timeout=120_000)
    expect(page.locator(".gpuhub-gpu-item")).to_contain_text("GPU: 40%", timeout=30_000)

    # a kernel with a variable, and a "CUDA process" for the driver stand-in
    server = UserServer(stack.url, f"/user/{admin}/", hub.s.headers["Authorization"].split()[1])
    r = server.s.post(server.base + "api/kernels", json={"name": "python3"}, timeout=60)
    assert r.status_code == 201, r.text
    kernel = r.json()["id"]
    marker = secrets.token_hex(8)
    assert server.run(kernel, f"marker = {marker!r}\nprint(len(marker))").strip() == "16"
    start_cuda_process(stack, container)

    stack.feed_gpu_readings({gpu: {"util": 0, "mem": 600}})  # idle: parked after T + grace
    wait_parked(stack, container)
    since = parked_records(stack)[f"{admin}\n"]["since"]

    # the JupyterLab tab left open: its GPU item says parked, the notice its title
    item = page.locator(".gpuhub-gpu-item")
    expect(item).to_contain_text("GPU: parked", timeout=40_000)
    expect(item).to_have_attribute("title", re.compile(r"^Your session is parked since \d\d:\d\d"))
    # the notice on the page, with its Resume (a banner: JupyterLab's own toast needs code that the
    # parked server would have to serve)
    banner = page.locator(".gpuhub-parked-banner")
    expect(banner).to_contain_text(re.compile(r"Your session is parked since \d\d:\d\d"))
    expect(banner.get_by_role("link", name="Resume")).to_have_attribute("href", re.compile(r"/hub/parked/?$"))
    page.screenshot(path=ARTIFACTS / "park-1-jupyterlab-parked.png")

    # the GPU console (the admin's) lists it: since when, its size in host memory, its GPU
    console = page.context.new_page()
    console.goto(f"{stack.url}/services/gpu-console/")
    console.wait_for_url("**/services/gpu-console/", timeout=30_000)
    parked_row = console.locator("#parked tbody tr", has_text=admin)
    expect(parked_row).to_contain_text("0.6 GiB", timeout=15_000)
    expect(parked_row).to_contain_text("GPU #")
    expect(parked_row).to_contain_text("free")
    console.screenshot(path=ARTIFACTS / "park-console.png", full_page=True)
    console.close()

    # the hub's home page in another tab: the notice and Resume
    home = page.context.new_page()
    home.goto(f"{stack.url}/hub/home")
    notice = home.locator("#gpuhub-parked-home")
    expect(notice).to_contain_text(re.compile(r"Your session is parked since \d\d:\d\d"), timeout=15_000)
    home.screenshot(path=ARTIFACTS / "park-2-home-notice.png")
    hhmm = time.strftime("%H:%M", time.gmtime(since))  # the hub's container keeps UTC (no TZ set)
    expect(notice).to_contain_text(f"Your session is parked since {hhmm}")
    expect(home.locator("#gpuhub-parked-home-resume")).to_have_text("Resume")

    stack.feed_gpu_readings({gpu: {"util": 40, "mem": 2048}})  # busy once back: not parked again at once
    home.locator("#gpuhub-parked-home-resume").click()  # a POST with the XSRF token
    home.wait_for_url(f"**/user/{admin}/**", timeout=60_000)
    expect(home.locator("#jp-main-dock-panel")).to_be_visible(timeout=120_000)
    assert status(stack, container) == "running" and not parked_records(stack)
    home.screenshot(path=ARTIFACTS / "park-3-resumed.png")

    # the same kernel with its variable
    assert server.run(kernel, "print(marker)").strip() == marker
    # and the old tab's GPU item leaves the parked notice
    expect(item).to_contain_text("GPU: 40%", timeout=40_000)
    expect(banner).to_have_count(0)

    hub.stop(admin)
    wait_for(lambda: container not in stack.user_containers(), timeout=30, what="the container removed")
