"""The warm kernel (images/singleuser/gpuhub_warm), in a real browser on the real stack: after
JupyterLab's page, once the server has had a quiet moment (the page's assets and first API calls
served), the server keeps a spare kernel with torch imported that /api/kernels does not
list; the first notebook gets that very kernel (its process id, torch already imported, no CUDA
initialised, the notebook's directory), and a new spare replaces it."""
import json

import pytest
from playwright.sync_api import expect

from conftest import ARTIFACTS, log_in

SPARE_TIMEOUT = 90  # seconds: a kernel start and `import torch` at 1.5 CPUs, at low priority


def server_api(page, user: str, path: str):
    # With the _xsrf token, as JupyterLab sends it: JupyterHub's servers refuse a cookie-authenticated
    # API request without it, GET too (403).
    return page.evaluate(f"""fetch('/user/{user}/{path}', {{headers: {{'X-XSRFToken':
        decodeURIComponent((document.cookie.match(/(?:^|; )_xsrf=([^;]*)/) || [, ''])[1])}}}}).then(r => r.json())""")


def wait_for_spare(page, user: str, different_from: int | None = None) -> dict:
    """The warm-kernel status once a ready spare (another than `different_from`) is there."""
    status = None
    for _ in range(SPARE_TIMEOUT * 2):
        status = server_api(page, user, "api/gpuhub/warm-kernel")
        spare = status.get("spare")
        if spare and spare["ready"] and spare["pid"] != different_from:
            return status
        page.wait_for_timeout(500)
    raise AssertionError(f"no ready spare kernel after {SPARE_TIMEOUT} s: {json.dumps(status)}")


@pytest.mark.browser
@pytest.mark.needs_gpus(1)
def test_first_notebook_gets_the_warm_kernel_and_a_new_spare_follows(stack, hub, page):
    user = stack.env["HUB_ADMIN_USER"]
    log_in(page, stack)
    page.goto(f"{stack.url}/hub/spawn")
    expect(page.locator("#spawn_form")).to_be_visible(timeout=15_000)
    page.check("#profile-gpu")
    page.click("#spawn_form [type=submit]")
    page.wait_for_url(f"**/user/{user}/lab**", timeout=180_000)
    expect(page.locator(".jp-LauncherCard").first).to_be_visible(timeout=120_000)
    try:
        first = wait_for_spare(page, user)
        assert first["imports"] and "torch" in first["imports"]
        assert first["started"] == 1 and first["claimed"] == 0
        # It started on the quiet after the page load, not at the page (nor at the 10 s limit).
        assert first["start_after"] == "quiet" and first["first_started_because"] == "quiet", first
        spare_pid = first["spare"]["pid"]
        assert server_api(page, user, "api/kernels") == []  # the spare is nobody's kernel yet

        page.locator('.jp-LauncherCard[data-category="Notebook"]').first.click()
        expect(page.locator("#jp-main-statusbar")).to_contain_text("Idle", timeout=60_000)
        page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell .cm-content").first.click()
        page.keyboard.type("import os, sys, json; print(json.dumps([os.getpid(), 'torch' in sys.modules, "
                           "sys.modules['torch'].cuda.is_initialized() if 'torch' in sys.modules else None, "
                           "os.getcwd(), __session__]))")
        page.keyboard.press("Shift+Enter")
        output = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output").first
        expect(output).to_contain_text("[", timeout=60_000)
        page.screenshot(path=ARTIFACTS / "warm-kernel-notebook.png")
        pid, torch_imported, cuda_initialised, cwd, session = json.loads(output.inner_text())
        assert pid == spare_pid, "the notebook's kernel is not the spare"
        assert torch_imported is True and cuda_initialised is False
        assert cwd == "/home/jovyan/work" and session.startswith("/home/jovyan/work/Untitled")
        # The execution counter starts at 1: the spare's imports left no trace in the history.
        expect(page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-InputPrompt").first).to_contain_text("[1]")

        kernels = server_api(page, user, "api/kernels")
        assert len(kernels) == 1 and kernels[0]["name"] == "python3"
        second = wait_for_spare(page, user, different_from=spare_pid)
        assert second["started"] == 2 and second["claimed"] == 1
        assert len(server_api(page, user, "api/kernels")) == 1  # the new spare is not listed either
    finally:
        container = stack.user_containers()
        if container:  # the server's log (the spare's start, the claim) for a failure's reader
            logs = stack.docker("logs", container[0], check=False)
            (ARTIFACTS / "warm-kernel-server.log").write_text(logs.stdout + logs.stderr)
        hub.stop(user)
