"""Teaching labs against the running compose stack: a 40-student roster imported through the GPU
console (and re-imported with changes and bad rows), course profiles and read-only materials,
nbgitpuller, resetting a student, a reservation holding 2 of the 4 (fake) GPUs for one course,
and a GPU shared by 4 students that refuses the fifth."""
import time
from urllib.parse import quote

import pytest
import requests
from consoleclient import user_token
from hubclient import UserServer

from hub.gpus.inventory import discover

GPUS = discover()[0]
A, B = "ml101", "nlp"
STUDENTS_A = [f"a{i:02d}" for i in range(20)]
STUDENTS_B = [f"b{i:02d}" for i in range(20)]
ROSTER = ("username,course,role,student_id\nteach-a,ml101,teacher,\nta-b,nlp,TA,\n"
          + "".join(f"{u},{A},student,{i}\n" for i, u in enumerate(STUDENTS_A))
          + "".join(f"{u},{B},student,{i}\n" for i, u in enumerate(STUDENTS_B)))


pytestmark = pytest.mark.needs_gpus(4)


@pytest.fixture(scope="module")
def console(module_console):
    """One console for the module: course_stack (module-wide) builds on it."""
    return module_console


def names(hub, path) -> set[str]:
    """Every name the hub lists at `path`, page by page (the hub gives at most 200 at once)."""
    found, offset = set(), 0
    while True:
        page = hub.api("GET", f"{path}?offset={offset}&limit=200").json()
        found |= {item["name"] for item in page}
        if len(page) < 200:
            return found
        offset += 200


@pytest.fixture(scope="module")
def course_stack(console, hub):
    """The roster, imported once for the module's tests. The stack is shared with earlier test
    modules (the reliability suite's fuzzer imports rosters too), so what existed before is
    recorded, and the two courses' settings are put back to the defaults."""
    before = {"users": names(hub, "/users"), "groups": names(hub, "/groups")}
    r = console.call("POST", "courses/roster", {"roster": ROSTER})
    assert r.status_code == 200, r.text
    for course in (A, B):
        console.ok("PATCH", f"courses/{course}", {"max_session_hours": None, "materials": True})
    return {**r.json()["report"], "before": before}


def members(hub, group):
    r = hub.api("GET", f"/groups/{group}")
    r.raise_for_status()
    return sorted(r.json()["users"])


def stop_all(hub, names):
    for name in names:
        if hub.user(name)["servers"]:
            hub.stop(name)


def server(stack, hub, name) -> UserServer:
    return UserServer(stack.url, f"/user/{quote(name)}/", user_token(hub, name))


def test_roster_import_re_import_and_bad_rows(console, hub, course_stack):
    report, before = course_stack, course_stack["before"]
    assert report["groups_created"] == sorted({A, B} - before["groups"]) and report["bad_rows"] == []
    rostered = {"teach-a", "ta-b", *STUDENTS_A, *STUDENTS_B}
    assert set(report["users_created"]) == rostered - before["users"] and report["ignored_columns"] == ["student_id"]
    assert members(hub, A) == sorted(["teach-a", *STUDENTS_A])
    assert len(members(hub, B)) == 21
    # the same roster again: nothing changes
    again = console.call("POST", "courses/roster", {"roster": ROSTER}).json()
    assert again["report"]["unchanged"] and "nothing to change" in again["message"]
    # changes (a19 leaves, a20 joins, ta-b becomes a teacher) and two bad rows: refused as a whole
    changed = (ROSTER.replace(f"a19,{A},student,19\n", "").replace("ta-b,nlp,TA,", "ta-b,nlp,teacher,")
               + f"a20,{A},student,20\nbad one,ML 101!,student,\nc00,{A},wizard,\n")
    audit_before = len(console.audit())
    r = console.call("POST", "courses/roster", {"roster": changed})
    assert r.status_code == 400, r.text
    bad = r.json()["report"]["bad_rows"]
    assert [b["line"] for b in bad] == [44, 45] and "nothing was changed" in r.json()["message"]
    assert "a20" not in members(hub, A) and len(console.audit()) == audit_before
    # the good rows only, when asked
    r = console.call("POST", "courses/roster", {"roster": changed, "skip_bad_rows": True})
    assert r.status_code == 200, r.text
    c = r.json()["report"]["courses"]
    assert c[A]["added"] == ["a20"] and c[A]["removed"] == ["a19"]
    assert c[B]["role_changes"] == [{"user": "ta-b", "from": "ta", "to": "teacher"}]
    assert "a20" in members(hub, A) and "a19" not in members(hub, A)
    assert hub.user("a19")["name"] == "a19"  # leaving a course keeps the account (and its files)
    listing = {x["name"]: x for x in console.ok("GET", "courses")["courses"]}
    assert listing[A]["teachers"] == ["teach-a"] and len(listing[A]["students"]) == 20
    assert listing[B]["teachers"] == ["ta-b"]


def test_the_consoles_token_creates_roster_users_and_cannot_delete_or_rename(stack, hub, course_stack):
    """Least privilege (issue 25): the token JupyterHub hands the console's process has the
    roster route's scope (hub/hub_process/roster_api.py), which created the roster's users above, and not
    admin:users or admin:groups: it cannot delete or rename a user, read auth state, or delete a
    group. The roster route refuses every other token, an admin's included."""
    container = f"{stack.prefix}-hub-1"
    # as the hub's user: root in the container has no capabilities to read another user's /proc
    environ = stack.docker("exec", "-u", "jupyterhub", container, "sh", "-c", "for p in /proc/[0-9]*; do "
                           "grep -qa hub.service_process.console.app $p/cmdline 2>/dev/null && cat $p/environ; done; true").stdout
    token = next(v.split("=", 1)[1] for v in environ.split("\0") if v.startswith("JUPYTERHUB_API_TOKEN="))
    auth = {"Authorization": f"token {token}"}
    me = requests.get(f"{stack.url}/hub/api/user", headers=auth, timeout=10).json()
    assert (me["kind"], me["name"]) == ("service", "gpu-console"), me
    assert "custom:gpuhub-roster:create" in me["scopes"] and "groups" in me["scopes"]
    assert not {"admin:users", "admin:groups", "delete:users", "delete:groups", "admin:auth_state"} & set(me["scopes"])
    victim = STUDENTS_A[0]
    for method, path, body in (("DELETE", f"/users/{victim}", None), ("PATCH", f"/users/{victim}", {"name": "zz-renamed"}),
                               ("GET", f"/users/{victim}?include_stopped_servers", None), ("DELETE", f"/groups/{A}", None),
                               ("POST", "/users", {"usernames": ["zz-not-rostered"]})):
        r = requests.request(method, f"{stack.url}/hub/api{path}", json=body, headers=auth, timeout=10)
        assert r.status_code in (403, 200) and (r.status_code == 403 or method == "GET"), (method, path, r.text)
        if method == "GET":
            assert "auth_state" not in r.json()
    assert hub.user(victim) and victim in members(hub, A)
    # the route itself: the console's token only
    assert hub.api("POST", "/gpuhub/roster", json={"users": ["zz-admin-made"]}).status_code == 403
    r = requests.post(f"{stack.url}/hub/api/gpuhub/roster", json={"groups": ["Not A Course"]}, headers=auth, timeout=10)
    assert r.status_code == 400 and "is not a course name" in r.json()["message"], r.text
    assert hub.api("GET", "/users/zz-admin-made").status_code == 404


def test_course_profile_materials_read_only_for_students_and_nbgitpuller(stack, hub, console, course_stack):
    try:
        # students of nlp are not offered ml101's profile
        r = hub.api("POST", "/users/b01/server", json={"profile": A})
        assert r.status_code == 400, r.text
        # the teacher writes the materials, and a git repository of notebooks in them
        hub.start("teach-a", options={"profile": A})
        teacher = server(stack, hub, "teach-a")
        out = teacher.execute(
            "import os, subprocess, json, shutil\n"
            "d = '/home/jovyan/work/courses/ml101'\n"
            "open(d + '/syllabus.md', 'w').write('# ML 101\\n')\n"
            "repo = d + '/lab1.git'\n"
            "shutil.rmtree(repo, ignore_errors=True)  # a materials volume outlives a test run\n"
            "nb = {'cells': [], 'metadata': {}, 'nbformat': 4, 'nbformat_minor': 5}\n"
            "os.makedirs(repo, exist_ok=True)\n"
            "json.dump(nb, open(repo + '/lab1.ipynb', 'w'))\n"
            "git = ['git', '-C', repo, '-c', 'user.name=T', '-c', 'user.email=t@example.org']\n"
            "subprocess.run(['git', 'init', '-q', '-b', 'main', repo], check=True)\n"
            "subprocess.run(git + ['add', '.'], check=True)\n"
            "subprocess.run(git + ['commit', '-q', '-m', 'lab 1'], check=True)\n"
            "print(sorted(os.listdir(d)))\n")
        assert "syllabus.md" in out and "lab1.git" in out
        # a student reads them, cannot change them, and pulls the notebooks with nbgitpuller
        hub.start("a01", options={"profile": A})
        student = server(stack, hub, "a01")
        assert student.read_text("courses/ml101/syllabus.md") == "# ML 101\n"
        out = student.execute(
            "try:\n    open('/home/jovyan/work/courses/ml101/syllabus.md', 'a').write('x')\n"
            "except OSError as e:\n    print('refused', e.errno)\n")
        assert "refused 30" in out  # EROFS: mounted read-only
        query = (f"repo={quote('file:///home/jovyan/work/courses/ml101/lab1.git', safe='')}"
                 "&branch=main&targetpath=lab1")
        page = student.get(f"git-pull?{query}")
        assert page.status_code == 200, page.text[:300]
        with student.s.get(student.base + f"git-pull/api?{query}", stream=True, timeout=120) as events:
            log = "".join(line for line in events.iter_lines(decode_unicode=True) if line)
        assert '"phase": "finished"' in log, log[-500:]
        assert '"cells": []' in student.read_text("lab1/lab1.ipynb")
        # reset: a fresh container (what was outside work/ is gone), files in work/ untouched
        student.execute("open('/home/jovyan/scratch.txt', 'w').write('x')\n"
                        "open('/home/jovyan/work/keep.txt', 'w').write('mine')\n")
        old = stack.container_of("a01")
        reply = console.ok("POST", f"courses/{A}/reset", {"user": "a01"})
        assert reply["stopped"] == [{"user": "a01", "server": ""}] and "files are untouched" in reply["message"]
        hub.wait("a01", ready=False, timeout=60)
        assert old not in stack.user_containers()
        hub.start("a01", options={"profile": A})
        out = server(stack, hub, "a01").execute(
            "import os\nprint(os.path.exists('/home/jovyan/scratch.txt'), open('/home/jovyan/work/keep.txt').read())\n")
        assert out.strip() == "False mine"
    finally:
        stop_all(hub, ["teach-a", "a01", "b01"])


def gpu_of_user(stack, name) -> str:
    info = stack.inspect(stack.container_of(name))
    return info["Config"]["Labels"]["gpuhub.gpu.uuid"]


def test_a_reservation_holds_2_of_4_gpus_for_the_course(stack, hub, console, course_stack):
    now = time.time()
    r = console.call("POST", "reservations", {"course": A, "gpus": 2, "start": now - 60, "end": now + 3600})
    assert r.status_code == 201, r.text
    reserved = r.json()["reservation"]["gpus"]
    assert reserved == [GPUS[0].uuid, GPUS[1].uuid]
    try:
        # course B first: they get the two others, and the third is refused, naming the course
        for name in ("b02", "b03"):
            hub.start(name, options={"profile": "gpu"})
        assert {gpu_of_user(stack, n) for n in ("b02", "b03")} == {GPUS[2].uuid, GPUS[3].uuid}
        r = hub.api("POST", "/users/b04/server", json={"profile": "gpu"})
        assert r.status_code == 503, r.text
        assert "2 GPUs reserved for course 'ml101' now" in r.json()["message"]
        # course A's students get the reserved ones
        for name in ("a02", "a03"):
            hub.start(name, options={"profile": "gpu"})
        assert {gpu_of_user(stack, n) for n in ("a02", "a03")} == set(reserved)
        states = {g["uuid"]: g for g in console.state()["gpus"]}
        assert all(states[u]["reserved_for"] == A for u in reserved)
        # stop all of course A's servers from the console
        reply = console.ok("POST", f"courses/{A}/stop", {})
        assert sorted(s["user"] for s in reply["stopped"]) == ["a02", "a03"]
        for name in ("a02", "a03"):
            hub.wait(name, ready=False, timeout=60)
    finally:
        console.call("DELETE", f"reservations/{r.json().get('reservation', {}).get('id', 'none')}")
        for res in console.state()["reservations"]:
            console.call("DELETE", f"reservations/{res['id']}")
        stop_all(hub, ["a02", "a03", "b02", "b03", "b04"])


def test_a_shared_gpu_serves_4_students_and_refuses_the_fifth(stack, hub, console, course_stack):
    shared = GPUS[0].uuid
    console.ok("PUT", "shared", {"gpu": shared, "capacity": 4})
    for g in GPUS[1:]:
        console.ok("POST", "drained", {"gpu": g.uuid})
    names = ["a04", "a05", "a06", "a07"]
    try:
        for name in names:
            hub.start(name, options={"profile": "gpu"})
        for name in names:
            info = stack.inspect(stack.container_of(name))
            assert info["Config"]["Labels"]["gpuhub.gpu.uuid"] == shared
            assert info["HostConfig"]["DeviceRequests"][0]["DeviceIDs"] == [f"nvidia.com/gpu={shared}"]
            assert "GPUHUB_GPU_SHARED_BY=4" in info["Config"]["Env"]
        r = hub.api("POST", "/users/a08/server", json={"profile": "gpu"})
        assert r.status_code == 503, r.text
        assert "shared GPU #0 has all 4 seats taken" in r.json()["message"]
        row = next(g for g in console.state()["gpus"] if g["uuid"] == shared)
        assert row["shared"] and row["capacity"] == 4 and sorted(h["user"] for h in row["holders"]) == names
    finally:
        stop_all(hub, [*names, "a08"])
        console.call("DELETE", f"shared/{shared}")
        console.reset()


@pytest.mark.browser
def test_the_console_page_imports_a_roster_shares_a_gpu_and_reserves(browser, stack, hub, console, course_stack):
    from playwright.sync_api import expect

    from conftest import ARTIFACTS
    from test_console_browser import login

    page = login(browser, stack, stack.env["HUB_ADMIN_USER"], stack.env["HUB_ADMIN_PASSWORD"])
    page.goto(f"{stack.url}/services/gpu-console/")
    expect(page.locator('#courses tr[data-course="ml101"] .students')).to_have_text("20", timeout=15_000)
    # a roster pasted into the page: a dry run first, then for real
    page.fill("#roster-text", "username,course,role\nprof-d,ds200,teacher\n"
              + "".join(f"d{i},ds200,student\n" for i in range(5)) + "d9,ds200,wizard\n")
    page.click("#roster-submit")
    expect(page.locator("#roster-report")).to_contain_text("bad row, line 8: unknown role 'wizard'")
    assert "ds200" not in [g["name"] for g in hub.api("GET", "/groups").json()]
    page.uncheck("#roster-dry-run")
    page.check("#roster-skip-bad")
    page.click("#roster-submit")
    expect(page.locator('#courses tr[data-course="ds200"] .students')).to_have_text("5", timeout=15_000)
    expect(page.locator("#roster-report")).to_contain_text("ds200: 6 members, 5 students; teachers prof-d")
    # GPU #3 shared by 4, GPU #0-#1 reserved for ml101 for the next hour
    page.select_option("#share-gpu", GPUS[3].uuid)
    page.fill("#share-capacity", "4")
    page.click("#share-submit")
    expect(page.locator(f'#shared tr[data-uuid="{GPUS[3].uuid}"]')).to_contain_text("0 of 4")
    expect(page.locator(f'#gpu-table tr[data-uuid="{GPUS[3].uuid}"] .state')).to_contain_text("shared: 0 of 4 seats")
    page.select_option("#reserve-course", "ml101")
    page.fill("#reserve-gpus", "2")
    page.evaluate("""() => {
        const local = (d) => new Date(d - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
        document.getElementById('reserve-start').value = local(new Date(Date.now() - 60000));
        document.getElementById('reserve-end').value = local(new Date(Date.now() + 3600000));
    }""")
    page.click("#reserve-submit")
    expect(page.locator("#reservations tbody tr")).to_have_count(1, timeout=15_000)
    expect(page.locator("#reservations tbody tr")).to_contain_text("ml101")
    expect(page.locator(f'#gpu-table tr[data-uuid="{GPUS[0].uuid}"] .state')).to_contain_text("reserved for ml101")
    page.screenshot(path=ARTIFACTS / "console-courses.png", full_page=True)
    assert [r["course"] for r in console.state()["reservations"]] == ["ml101"]
    assert console.state()["shared"] == {GPUS[3].uuid: 4}
    console.reset()
