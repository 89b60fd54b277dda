"""The GPU console in a real browser: an admin opens it from the hub's navigation, pins a user,
drains a GPU and frees one (through the confirmation dialog); a user who is not an admin is
refused. Screenshots land in tests/artifacts/console-*.png."""
import json
import math
import re
import uuid

import pytest
from consoleclient import gpu_of, wait_for
from playwright.sync_api import expect

from conftest import ARTIFACTS, log_in
from hub.gpus.inventory import discover

GPUS = discover()[0]
pytestmark = pytest.mark.needs_gpus(4)


def login(browser, stack, username, password):
    page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
    log_in(page, stack, username, password)
    return page


def signed_up_user(stack) -> tuple[str, str]:
    """A user with a password: signs up on the login page's form, approved by the admin."""
    name, password = f"viewer{uuid.uuid4().hex[:6]}", "Console-e2e-Pass-42"
    stack.signed_up(name, password)
    return name, password


def row(page, gpu):
    return page.locator(f'#gpu-table tr[data-uuid="{gpu.uuid}"]')


@pytest.mark.browser
def test_admin_pins_drains_and_frees_a_non_admin_is_refused(browser, stack, hub, console):
    holder_gpu, pin_gpu, drain_gpu = GPUS[0], GPUS[2], GPUS[3]
    hub.create_user("web-pinned")
    hub.create_user("web-holder")
    hub.start("web-holder")  # the lowest free GPU: #0
    wait_for(lambda: (gpu_of(console, holder_gpu.uuid)["holder"] or {}).get("user") == "web-holder",
             what="web-holder holds GPU #0")

    # The admin opens the console from the hub's navigation (Services → gpu-console)
    page = login(browser, stack, stack.env["HUB_ADMIN_USER"], stack.env["HUB_ADMIN_PASSWORD"])
    page.goto(f"{stack.url}/hub/home")
    page.get_by_role("button", name="Services").or_(page.locator("a.dropdown-toggle", has_text="Services")).first.click()
    page.get_by_role("link", name="gpu-console").click()
    page.wait_for_url("**/services/gpu-console/", timeout=30_000)
    expect(page.locator("#gpu-table tbody tr")).to_have_count(len(GPUS), timeout=15_000)
    expect(row(page, holder_gpu).locator(".holder")).to_contain_text("web-holder")
    expect(row(page, holder_gpu).locator(".holder a")).to_have_attribute("href", "/user/web-holder/")
    expect(row(page, GPUS[1]).locator(".state")).to_contain_text("free")
    if console.state()["usage"]["source"] == "n/a":  # fake GPUs: no figures, and it says so
        expect(row(page, GPUS[1]).locator(".util")).to_contain_text("n/a")
        expect(page.locator("#status-line")).to_contain_text("usage n/a")
    page.screenshot(path=ARTIFACTS / "console-1-opened.png", full_page=True)

    # Pin a user to GPU #2
    page.fill("#pin-user", "web-pinned")
    page.select_option("#pin-gpu", pin_gpu.uuid)
    page.click("#pin-submit")
    expect(page.locator("#alerts .alert-success").first).to_contain_text("Pinned web-pinned to GPU #2")
    expect(row(page, pin_gpu).locator(".state")).to_contain_text("pinned to web-pinned")
    expect(page.locator('#pins tr[data-user="web-pinned"]')).to_be_visible()

    # Drain GPU #3
    row(page, drain_gpu).locator(".btn-drain").click()
    expect(page.locator("#alerts .alert-success").first).to_contain_text("Drained GPU #3")
    expect(row(page, drain_gpu).locator(".state")).to_contain_text("drained")
    expect(row(page, drain_gpu).locator(".btn-undrain")).to_be_visible()
    audit = page.locator("#audit tbody tr")  # newest first
    expect(audit.nth(0)).to_contain_text("drained GPU #3")
    expect(audit.nth(1)).to_contain_text("pinned web-pinned to GPU #2")
    expect(audit.nth(0)).to_contain_text("browser")
    page.screenshot(path=ARTIFACTS / "console-2-pinned-drained.png", full_page=True)

    # Free GPU #0: the confirmation dialog, then the holder's server is stopped
    row(page, holder_gpu).locator(".btn-free").click()
    dialog = page.locator("#free-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("Stop web-holder's server to free GPU #0")
    expect(dialog).to_have_class(re.compile(r"\bshow\b"))
    page.wait_for_timeout(500)  # Bootstrap's fade-in, for the screenshot
    page.screenshot(path=ARTIFACTS / "console-3-confirm-free.png")
    page.click("#free-confirm")
    expect(dialog).to_be_hidden()
    expect(page.locator("#alerts .alert-success").first).to_contain_text("Stopped web-holder's server")
    hub.wait("web-holder", ready=False, timeout=60)
    expect(row(page, holder_gpu).locator(".state")).to_have_text("free", timeout=30_000)
    expect(audit.nth(0)).to_contain_text("stopped web-holder's server to free GPU #0")
    expect(audit.nth(0)).to_contain_text("browser")
    expect(audit.nth(1)).to_contain_text("drained GPU #3")
    page.screenshot(path=ARTIFACTS / "console-4-freed.png", full_page=True)

    # What the page did is what the files say
    assert console.intent() == {"pins": {"web-pinned": pin_gpu.uuid}, "drained": [drain_gpu.uuid]}
    entries = console.audit()[-3:]
    assert [(e["action"], e["who"], e["via"]) for e in entries] == [
        ("pin", "admin", "browser"), ("drain", "admin", "browser"), ("free", "admin", "browser")]

    # A request from the page without its XSRF token is refused (cookie auth needs it)
    status = page.evaluate("""async () => (await fetch('api/drained', {method: 'POST',
        headers: {'Content-Type': 'application/json'}, body: JSON.stringify({gpu: '%s'})})).status""" % GPUS[1].uuid)
    assert status in (401, 403)
    assert console.intent()["drained"] == [drain_gpu.uuid]

    # A user who is not an admin: no link in the hub's navigation, and the hub refuses the console
    name, password = signed_up_user(stack)
    user_page = login(browser, stack, name, password)
    user_page.goto(f"{stack.url}/hub/home")
    expect(user_page.locator("#start")).to_be_visible(timeout=15_000)
    expect(user_page.get_by_role("link", name="gpu-console")).to_have_count(0)
    response = user_page.goto(f"{stack.url}/services/gpu-console/")
    assert response.status == 403
    expect(user_page.locator("body")).to_contain_text("403")
    expect(user_page.locator("body")).to_contain_text("You do not have permission to access")
    user_page.screenshot(path=ARTIFACTS / "console-5-non-admin-refused.png")
    api = user_page.evaluate("""async () => { const r = await fetch('/services/gpu-console/api/gpus');
        return [r.status, await r.text()]; }""")
    assert api[0] in (401, 403) and json.loads(api[1])["status"] == api[0]


@pytest.mark.browser
def test_usage_sparklines_render_from_samples(browser, stack, console):
    """The hub here has no NVML (fake GPUs), so the page is given samples the way a GPU host's
    API returns them (the API's reply is rewritten in the browser) to check the chart."""
    page = login(browser, stack, stack.env["HUB_ADMIN_USER"], stack.env["HUB_ADMIN_PASSWORD"])

    def with_samples(route):
        response = route.fetch()
        state = response.json()
        now = state["time"]
        state["usage"] = {**state["usage"], "source": "nvml", "reason": ""}
        for i, gpu in enumerate(state["gpus"]):
            # a training job's shape: busy with dips (data loading, checkpoints); none for GPU 3
            history = [[now - 3600 + 10 * k,
                        None if i == 3 else round(max(0, min(100, 70 + 25 * math.sin(k / (5 + i)) - (30 if k % 45 < 3 else 0)))),
                        8192 + 60 * k] for k in range(360)]
            gpu.update(name="NVIDIA H100 80GB HBM3", memory_total_mib=81559, memory_used_mib=history[-1][2],
                       utilization_pct=history[-1][1], history=history)
        route.fulfill(response=response, json=state)

    page.route("**/services/gpu-console/api/gpus*", with_samples)
    page.goto(f"{stack.url}/services/gpu-console/")
    first = row(page, GPUS[0])
    expect(first.locator("svg.sparkline polyline")).to_have_count(1, timeout=15_000)
    expect(first.locator(".util")).to_contain_text("%")
    expect(first.locator(".memory")).to_contain_text("/ 79.6 GiB")
    title = first.locator("svg.sparkline title")
    expect(title).to_contain_text("last 60 min")
    expect(row(page, GPUS[3]).locator("svg.sparkline")).to_contain_text("n/a")  # no utilisation samples
    page.locator("#gpu-table").screenshot(path=ARTIFACTS / "console-6-usage-synthetic-samples.png")
