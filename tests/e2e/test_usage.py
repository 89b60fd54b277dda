"""GPU accounting, quotas and metrics on the real stack and engine (docs/usage.md).

1. Short and long servers, a hub restart (the console restarts with it) and a server that
   starts and dies while the hub is down: the store's GPU-hours per user against the container
   lifetimes the engine's own events give, within 1 %.
2. A quota: bad input refused (nothing changed); a running server stopped at 100 % (audited, the
   reason on the user's next page), the next start refused with the usage and when it renews;
   a real Prometheus (the monitoring profile) scrapes the console with the hub's least-privilege
   token and a PromQL query returns the user's GPU-seconds.
"""
import json
import time

import pytest
import requests
import engine
from conftest import log_in
from consoleclient import user_token, wait_for

from hub.gpus.inventory import discover

GPUS = discover()[0]
ARTIFACTS = __import__("pathlib").Path(__file__).resolve().parents[1] / "artifacts"


pytestmark = pytest.mark.needs_gpus(4)


def engine_lifetimes(stack, since: float) -> dict[str, float]:
    """user -> seconds their GPU containers ran, from the engine's start and die events."""
    return engine.gpu_lifetimes(engine.container_events(stack.prefix, since))


def synced_after(console, t: float) -> bool:
    return (console.ok("GET", "usage?since=1h").get("synced_at") or 0) > t


def test_accounting_matches_the_engines_lifetimes_across_a_hub_restart(console, stack, hub):
    t0 = time.time()
    users = [f"acct-{i}" for i in range(4)]
    for u in users:
        hub.create_user(u)
    hub.start(users[0])  # long: the whole test, through the hub restart
    for _ in range(2):  # short ones
        for u in users[1:]:
            hub.start(u)
        time.sleep(2)
        for u in users[1:]:
            hub.stop(u)
    hub_container = f"{stack.prefix}-hub-1"
    stack.docker("stop", hub_container)
    # a server that starts and dies while the hub and its console are down: only the events know it
    stack.docker("run", "--rm", "--network", "none", "--label", f"gpuhub.instance={stack.prefix}",
                 "--label", "gpuhub.user=acct-ghost", "--label", "gpuhub.server=", "--label",
                 f"gpuhub.gpu.uuid={GPUS[3].uuid}", "--entrypoint", "sleep", stack.env["HUB_IMAGE"], "3")
    stack.docker("start", hub_container)
    wait_for(lambda: requests.get(f"{stack.url}/hub/api/", timeout=5).ok, timeout=90, what="hub back")
    hub.start(users[1])
    time.sleep(3)
    hub.stop(users[1])
    hub.stop(users[0])
    t1 = time.time()
    wait_for(lambda: synced_after(console, t1 + 1), timeout=60, what="a usage sync after the last stop")
    truth = engine_lifetimes(stack, t0 - 1)
    report = console.ok("GET", f"usage?since={t0 - 60:.0f}&by=user")
    stored = {r["user"]: r["gpu_hours"] * 3600 for r in report["rows"] if r["user"] in truth}
    errors = {u: abs(stored.get(u, 0.0) - s) / s for u, s in truth.items()}
    figures = {"users": len(truth), "engine_s": round(sum(truth.values()), 2), "stored_s": round(sum(stored.values()), 2),
               "max_error_pct": round(100 * max(errors.values()), 4),
               "total_error_pct": round(100 * abs(sum(stored.values()) - sum(truth.values())) / sum(truth.values()), 4)}
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "usage-accounting.json").write_text(json.dumps({"truth": truth, "stored": stored, **figures}, indent=1))
    print("accounting:", json.dumps(figures))
    assert set(truth) == {*users, "acct-ghost"}
    assert max(errors.values()) <= 0.01, (truth, stored)


def test_the_console_syncs_right_after_a_server_stops(console, stack, hub):
    """The console reads a server's start and die from the engine's event stream and syncs a
    second later, not only on its timer (15 s): the engine keeps events in memory only, and a
    Docker daemon restart before the next timed sync would lose a server that started and died
    meanwhile (tests/e2e/test_reliability_accounting.py, docs/usage.md)."""
    user = "acct-event"
    hub.create_user(user)
    hub.start(user)
    t = time.time()
    hub.stop(user)
    hub_container = f"{stack.prefix}-hub-1"

    def synced_by_event() -> bool:
        logs = stack.docker("logs", "--since", f"{t:.3f}", hub_container)
        return "usage: sync after" in logs.stdout + logs.stderr

    wait_for(synced_by_event, timeout=10, what="the console's sync after the server's die event")
    scheduled = time.monotonic()

    def counted() -> list:  # the log line comes as the sync begins: its result lands just after
        return [r for r in console.ok("GET", "usage?since=1h&by=user")["rows"]
                if r["user"] == user and r["gpu_hours"] > 0]

    # well within the timed sync's 15 s, so it is the event's sync that counted the server
    wait_for(counted, timeout=5, what=f"{user}'s GPU-hours after the event's sync")
    assert time.monotonic() - scheduled < 5


def logged_in(stack, user: str) -> requests.Session:
    """A browser-like session of a user with a password (signed up, approved by the admin):
    the hub's pages take no API token."""
    password, s = "Usage-e2e-Pass-42", requests.Session()
    stack.signed_up(user, password)
    r = stack.log_in(user, password, s)
    assert r.status_code == 302, r.text[:300]
    return s


def test_quota_stop_refusal_and_a_real_prometheus(console, stack, hub):
    user = "quota-e2e"
    browser_session = logged_in(stack, user)
    token = user_token(hub, user)
    before = console.ok("GET", "quotas")
    for body, fragment in (({"scope": "user", "name": user, "hours": -1, "window_days": 1}, "'hours'"),
                           ({"scope": "user", "name": user, "hours": 1e9, "window_days": 1}, "'hours'"),
                           ({"scope": "group", "name": "no-such-group", "hours": 1, "window_days": 1}, "no group"),
                           ({"scope": "user", "name": "no-such-user", "hours": 1, "window_days": 1}, "no user"),
                           ({"scope": "user", "name": user, "hours": 1, "window_days": 1, "who": "admin"}, "unknown field")):
        r = console.call("PUT", "quotas", body)
        assert r.status_code == 400 and fragment in r.json()["message"], r.text
    assert console.call("PUT", "quotas", {"scope": "user", "name": user, "hours": 9, "window_days": 1},
                        token=token).status_code == 403
    assert console.ok("GET", "quotas") == before
    console.ok("PUT", "quotas", {"scope": "user", "name": user, "hours": 0.003, "window_days": 1})  # 10.8 s
    try:
        hub.start(user)
        hub.wait(user, ready=False, timeout=60)  # stopped by the console's next sync after 10.8 s
        assert any(e.get("action") == "quota-stop" and e.get("user") == user for e in console.audit())
        page = browser_session.get(f"{stack.url}/hub/home", timeout=10)
        assert 'id="gpuhub-quota-stop"' in page.text and "is used up" in page.text, page.text[:2000]
        r = hub.api("POST", f"/users/{user}/server")
        assert r.status_code == 403, r.text
        message = r.json()["message"]
        assert "GPU-hours in the last 1 day" in message and "start one again from" in message
        assert "CPU-only profile" in message

        stack.compose("--profile", "monitoring", "up", "-d", "prometheus")
        prom = f"http://{stack.env['PROMETHEUS_PUBLISH']}"

        def scraped():
            try:
                r = requests.get(f"{prom}/api/v1/query", params={"query": f'gpuhub_gpu_seconds_total{{user="{user}"}}'},
                                 timeout=5)
            except requests.RequestException:
                return None
            result = r.json()["data"]["result"] if r.ok else []
            return result and float(result[0]["value"][1])
        seconds = wait_for(scraped, timeout=90, what="Prometheus has scraped the user's GPU-seconds")
        assert 9 <= seconds <= 40, seconds
        def health():  # both targets scraped with the least-privilege token (the hub's may come later)
            targets = requests.get(f"{prom}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
            found = {t["labels"]["job"]: t["health"] for t in targets}
            return found if "unknown" not in found.values() else None
        assert wait_for(health, timeout=60, what="both targets scraped") == {"gpuhub-gpus": "up", "jupyterhub": "up"}
    finally:
        console.call("DELETE", f"quotas/user/{user}")


def test_console_page_shows_the_usage_chart_and_refuses_a_bad_quota(browser, stack, console):
    """After the tests above: the admin's console page charts GPU-hours per user (the acct-*
    users' bars), and a negative quota typed into the form is refused with the API's message."""
    from playwright.sync_api import expect

    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    log_in(page, stack)
    page.goto(f"{stack.url}/services/gpu-console/")
    chart = page.locator("#usage-svg")
    expect(chart.locator("rect.usage-bar").first).to_be_visible(timeout=20_000)
    expect(chart).to_contain_text("acct-0")
    expect(page.locator("#usage-table")).to_contain_text("acct-ghost")
    page.select_option("#usage-by", "course")
    expect(page.locator("#usage-name-col")).to_have_text("Course", timeout=10_000)
    page.select_option("#usage-by", "user")
    page.fill("#quota-name", "acct-1")
    page.fill("#quota-hours", "-3")
    page.evaluate("document.getElementById('quota-hours').removeAttribute('min')")  # past the form's own check
    page.click("#quota-submit")
    expect(page.locator("#alerts")).to_contain_text("'hours' must be a number of GPU-hours above 0", timeout=10_000)
    page.locator("#usage-card").screenshot(path=ARTIFACTS / "usage-chart.png")
    assert console.ok("GET", "quotas")["quotas"] == []
    page.context.close()
