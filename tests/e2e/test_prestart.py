"""Start before Start, on the real engine (fake GPUs): a reservation's pre-start starts its
course's servers on the reservation's GPUs with the course's profile; a claimed server's GPU time
begins at its person's first visit, not at the pre-start; an unclaimed one is stopped when the
window closes, with a reason its person reads, and the console shows and audits both; and
PRESTART_AT_LOGIN starts a single-profile user's server as they log in (and not one of a user
with a choice to make).

The window is made short with the settings alone: the reservation starts 90 s from now with a
5-minute pre-start (so it is open at once) and RESERVATION_PRESTART_GRACE_MINUTES=0 (it closes at
the reservation's start)."""
import json
import time

import pytest
import requests

from conftest import ARTIFACTS
from consoleclient import wait_for
from hubclient import UserServer
from hub.gpus.inventory import discover

GPUS = discover()[0]
COURSE = "pst101"
A, B, C = "pst-a", "pst-b", "pst-c"  # A and B sign up (they log in), C only from the roster
SOLO = "pst-solo"  # one profile: started at login
PASSWORD = "Prestart-e2e-Pass-42"
LEAD = 90  # seconds from now to the reservation's start (its pre-start window's close)
SETTINGS = {"HUB_PROFILES": "./tests/e2e/prestart-profiles.yaml", "RESERVATION_PRESTART_GRACE_MINUTES": "0",
            "PRESTART_AT_LOGIN": "true"}

pytestmark = pytest.mark.needs_gpus(4)


@pytest.fixture(scope="module")
def prestarting(stack, hub):
    stack.up(**SETTINGS)
    try:
        yield stack
    finally:
        for name in (A, B, C, SOLO):
            if hub.api("GET", f"/users/{name}").ok and hub.user(name)["servers"]:
                hub.stop(name)
        stack.up()  # the stack as the other tests expect it


def logged_in(stack, name: str) -> requests.Session:
    s = requests.Session()
    r = stack.log_in(name, PASSWORD, s)
    assert r.status_code == 302, r.text[:300]
    return s


def container(stack, name: str) -> dict:
    return stack.inspect(stack.container_of(name))


def gpu_seconds(console, since: float) -> dict[str, float]:
    report = console.ok("GET", f"usage?since={since:.0f}&by=user")
    return {r["user"]: r["gpu_hours"] * 3600 for r in report["rows"]}


def synced_after(console, t: float) -> bool:
    return (console.ok("GET", "usage?since=1h").get("synced_at") or 0) > t


def reservation_of(console) -> dict:
    course = next(c for c in console.ok("GET", "courses")["courses"] if c["name"] == COURSE)
    (r,) = course["reservations"]
    return r


def test_a_reservation_prestarts_its_roster_and_stops_the_unused(prestarting, hub, console):
    stack = prestarting
    for name in (A, B):
        stack.signed_up(name, PASSWORD)
    roster = "username,course,role\n" + "".join(f"{u},{COURSE},student\n" for u in (A, B, C))
    console.ok("POST", "courses/roster", {"roster": roster})
    # the reservation's three GPUs must be free: a server left on the shared engine would make a
    # pre-start fail with "all 4 GPUs are in use", which is not what this test is about
    def held():
        return [(g["index"], g["holder"]) for g in console.state()["gpus"] if g["holder"]]
    try:
        wait_for(lambda: len(held()) <= 1, timeout=60, what="three free GPUs")
    except TimeoutError:
        pytest.fail(f"GPUs held by servers this test did not start: {held()}")
    t0 = time.time()
    start = t0 + LEAD
    r = console.call("POST", "reservations", {"course": COURSE, "gpus": 3, "start": start, "end": start + 3600,
                                             "prestart_minutes": 5})
    assert r.status_code == 201, r.text
    reserved = set(r.json()["reservation"]["gpus"])
    assert r.json()["reservation"]["prestart_minutes"] == 5

    # the console's next round (every 10 s) starts the three, each on a reserved GPU, profile pst101
    for name in (A, B, C):
        hub.wait(name, ready=True, timeout=60)
    ready_at = time.time()
    labels = {n: container(stack, n)["Config"]["Labels"] for n in (A, B, C)}
    assert {labels[n]["gpuhub.gpu.uuid"] for n in (A, B, C)} == reserved, labels
    assert {labels[n]["gpuhub.profile"] for n in (A, B, C)} == {COURSE}
    assert ready_at < start - 20, "the pre-start came too late for the test's window"
    # started ahead of its person, a server has its spare kernel (imports done) with no JupyterLab
    # page served: ready when they come (C never comes; asking is no visit, no claim)
    server_c = UserServer(stack.url, f"/user/{C}/", hub.s.headers["Authorization"].split()[1])
    seen = {}

    def spare_ready():
        r = server_c.get("api/gpuhub/warm-kernel")
        seen.update(status=r.status_code, body=r.text[:600])
        w = r.json() if r.ok else {}
        return (w.get("spare") or {}).get("ready") and w
    try:
        warm = wait_for(spare_ready, timeout=60, what="C's spare kernel, started with its server")
    except TimeoutError:
        logs = stack.docker("logs", stack.container_of(C))
        lines = [line for line in (logs.stdout + logs.stderr).splitlines() if "arm kernel" in line or "gpuhub_warm" in line]
        pytest.fail(f"no ready spare in C's server: {seen}\n" + "\n".join(lines[-20:]))
    assert warm["start_after"] == "server" and warm["spare"]["pid"], warm

    # a member with two profiles is not started at login (nothing to start without a choice),
    # and logging in is no claim; A's first visit to their server is
    time.sleep(8)
    session = logged_in(stack, A)
    claimed_at = time.time()
    page = session.get(f"{stack.url}/user/{A}/lab", timeout=30)  # via the hub's OAuth step, as a browser
    assert page.status_code == 200 and page.url == f"{stack.url}/user/{A}/lab", (page.status_code, page.url)
    status = wait_for(lambda: (s := reservation_of(console)["prestart"])["claimed"] == 1 and s, timeout=15,
                      what="the console counting A's claim")
    assert status["prestarted"] == 3 and status["done"] and status["started"] == 3, status

    # GPU time: A's from the claim on, B's and C's none while nobody has come
    checked = time.time()
    wait_for(lambda: synced_after(console, checked + 1), timeout=60, what="a usage sync after the claim")
    seconds = gpu_seconds(console, t0 - 60)
    started_a = container(stack, A)["State"]["StartedAt"]
    figures = {"claimed_after_ready_s": round(claimed_at - ready_at, 1), "seconds": seconds, "a_started": started_a}
    assert seconds.get(B, 0) == 0 and seconds.get(C, 0) == 0, figures
    assert 0 < seconds.get(A, 0) <= time.time() - claimed_at + 2, figures  # not from its start, 8+ s earlier

    # the window closes at the reservation's start: B and C are stopped, A keeps running
    wait_for(lambda: not hub.user(B)["servers"] and not hub.user(C)["servers"], timeout=LEAD + 40,
             what="the unused pre-started servers stopped")
    stopped_at = time.time()
    assert stopped_at >= start - 1, "stopped before the window closed"
    assert hub.user(A)["servers"][""]["ready"]
    # B reads why on their next page load; B has two profiles, so logging in starts nothing
    page = logged_in(stack, B).get(f"{stack.url}/user/{B}/lab", timeout=30)  # the hub's "not running" page
    assert "was stopped because it was not used" in page.text and COURSE in page.text, page.text[-2000:]
    assert not hub.user(B)["servers"], "a user with two profiles was started at login"
    audit = [e for e in console.audit() if e.get("action") in ("prestart", "prestart-unclaimed")]
    assert [e["action"] for e in audit][-2:] == ["prestart", "prestart-unclaimed"], audit
    assert sorted(s["user"] for s in audit[-1]["stopped"]) == [B, C] and audit[-2]["started"] == 3
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "prestart.json").write_text(json.dumps({**figures, "stopped_after_start_s":
                                                         round(stopped_at - start, 1)}, indent=1))


def test_a_single_profile_user_is_started_at_login(prestarting, hub):
    stack = prestarting
    stack.signed_up(SOLO, PASSWORD)  # NativeAuthenticator makes the hub's user at the first login
    before = hub.api("GET", f"/users/{SOLO}")
    assert before.status_code == 404 or not before.json()["servers"], before.text
    s = requests.Session()
    s.get(f"{stack.url}/hub/login", timeout=10)
    # next=/hub/home: JupyterHub itself would start nothing here
    r = s.post(f"{stack.url}/hub/login?next=/hub/home", timeout=30, allow_redirects=False,
               data={"username": SOLO, "password": PASSWORD, "_xsrf": s.cookies.get("_xsrf")})
    assert r.status_code == 302 and r.headers["Location"].endswith("/hub/home"), (r.status_code, r.headers)
    # no request after the login's answer: the start was begun by the login itself
    wait_for(lambda: hub.user(SOLO)["servers"].get(""), timeout=10, what="a server starting after the login")
    hub.wait(SOLO, ready=True, timeout=60)
    assert container(stack, SOLO)["Config"]["Labels"]["gpuhub.profile"] == "cpu"
    hub.stop(SOLO)
