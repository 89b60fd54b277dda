"""Record, once, the requests a real Chromium makes to load JupyterLab from a user's server, for
bench/class_rush.py to replay (bench/lab-requests.json).

A fresh browser (no cache) logs in on the test stack (tests/e2e/stack.env), starts the `cpu`
profile through the spawn form and waits until JupyterLab is usable (its launcher is shown);
every GET that finished between the lab page and then is written down, as a path relative to
the user's server prefix (/user/<name>/) or to the hub (/hub/), with its size. Websockets and
non-GET requests (workspace saves) are left out: class_rush.py opens its own kernel websocket.

Run under the Docker lock; brings the stack up and removes it:
  flock /tmp/gpuhub-docker.lock sh -c 'make test-images && .venv/bin/python bench/record_lab_assets.py'
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests/e2e")]
from hubclient import Hub, Stack  # noqa: E402

OUT = ROOT / "bench" / "lab-requests.json"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
NAME = "recorder"


def main() -> int:
    stack = Stack()
    stack.down()
    stack.up()
    try:
        hub = Hub(stack.url, stack.admin_token())
        hub.create_user(NAME)
        admin = stack.admin_session()
        page = admin.post(f"{stack.url}/hub/invite", timeout=60,
                          data={"all": "1", "_xsrf": admin.cookies.get("_xsrf")})
        link = page.text.split(f"<tr><td>{NAME}</td>", 1)[1].split("<code>", 1)[1].split("</code>", 1)[0]  # as logins.py
        link = link.replace("&amp;", "&")
        import requests
        s = requests.Session()
        s.get(link, timeout=30).raise_for_status()
        s.post(link, timeout=30, data={"password": "Pw-recorder-2026", "password_confirmation": "Pw-recorder-2026",
                                       "_xsrf": s.cookies.get("_xsrf")}).raise_for_status()
        requests_seen: list[dict] = []
        prefix = f"/user/{NAME}/"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page()
            page.goto(f"{stack.url}/hub/login")
            page.fill("input[name=username]", NAME)
            page.fill("input[name=password]", "Pw-recorder-2026")
            page.click("input[type=submit], button[type=submit]")
            page.wait_for_url("**/hub/**")
            page.goto(f"{stack.url}/hub/spawn/{NAME}")
            page.check("#profile-cpu")

            def finished(request):
                if request.method != "GET":
                    return
                path = urlsplit(request.url)
                response = request.response()
                size = 0
                try:
                    size = len(response.body()) if response and response.status == 200 else 0
                except Exception:  # redirects and bodies the browser dropped
                    pass
                requests_seen.append({"url": path.path + (f"?{path.query}" if path.query else ""),
                                      "status": response.status if response else None,
                                      "type": request.resource_type, "bytes": size})
            page.on("requestfinished", finished)
            t0 = time.monotonic()
            page.click("#spawn_form [type=submit]")
            page.wait_for_url(f"**{prefix}lab**", timeout=180_000)
            expect(page.locator(".jp-LauncherCard").first).to_be_visible(timeout=120_000)
            page.wait_for_timeout(3000)  # the requests JupyterLab makes right after it shows
            usable_s = time.monotonic() - t0
            browser.close()
        replay = []
        for r in requests_seen:
            if r["type"] in ("websocket", "eventsource"):
                continue
            if r["url"].startswith(prefix):
                rel = r["url"][len(prefix):]
                if rel.startswith("lab") and "/" not in rel.split("?")[0] and r["type"] == "document":
                    continue  # the page itself: class_rush.py fetches it (with the login redirects)
                if rel.startswith("oauth_callback"):
                    continue
                replay.append({"base": "user", "path": rel, "status": r["status"], "bytes": r["bytes"],
                               "type": r["type"]})
            elif r["url"].startswith("/hub/static/"):
                replay.append({"base": "hub", "path": r["url"][len("/hub/"):], "status": r["status"],
                               "bytes": r["bytes"], "type": r["type"]})
        doc = {"recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "how": "bench/record_lab_assets.py: headless /usr/bin/chromium via Playwright, fresh profile, "
                      "spawn form (cpu profile) until JupyterLab's launcher was visible, then 3 s",
               "browser_start_to_usable_s": round(usable_s, 2),
               "requests": len(replay), "bytes": sum(r["bytes"] for r in replay), "replay": replay}
        OUT.write_text(json.dumps(doc, indent=1) + "\n")
        print(json.dumps({k: v for k, v in doc.items() if k != "replay"}))
    finally:
        stack.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
