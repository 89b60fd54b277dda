"""The GPU console against the running compose stack: its REST API through the proxy with real
tokens, the hub's real spawner and the engine's (fake) GPUs; the intent file and the audit
log read from the hub's state volume; the CLI from the host and inside the hub's container."""
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests
from consoleclient import gpu_of, user_token, wait_for

from hub.gpus.inventory import discover
from storm import gpu_holdings

GPUS = discover()[0]
ROOT = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.needs_gpus(4)


def test_table_through_the_proxy(console, stack):
    state = console.state()
    assert [g["uuid"] for g in state["gpus"]] == [g.uuid for g in GPUS]
    assert state["inventory_source"] == "cdi" and state["hub_reachable"]
    if state["usage"]["source"] == "n/a":  # fake GPUs, or no NVML in the hub: n/a, and why
        assert "NVML" in state["usage"]["reason"]
        assert all(g["utilization_pct"] is None and g["memory_used_mib"] is None for g in state["gpus"])
    else:
        assert state["usage"]["source"] == "nvml"
        assert all(g["memory_used_mib"] is not None for g in state["gpus"])
    spec = requests.get(console.base + "openapi.yaml", timeout=10)
    assert spec.status_code == 200 and "openapi: 3.0.3" in spec.text


def test_pin_drain_free_unpin_undrain_with_effects_and_audit(console, stack, hub):
    pinned, other = GPUS[2].uuid, GPUS[0].uuid
    hub.create_user("con-pinned")
    n_audit = len(console.audit())

    # pin: the user's next start gets exactly that GPU
    r = console.ok("POST", "pins", {"user": "con-pinned", "gpu": pinned, "note": "e2e"})
    assert "Pinned con-pinned to GPU #2" in r["message"]
    assert console.intent()["pins"] == {"con-pinned": pinned}
    hub.start("con-pinned")
    container = stack.container_of("con-pinned")
    assert gpu_holdings(stack)[container] == pinned
    gpu = gpu_of(console, pinned)
    assert gpu["holder"]["user"] == "con-pinned" and gpu["holder"]["server_url"] == "/user/con-pinned/"
    assert gpu["holder"]["this_hub"] and gpu["holder"]["ready"] and gpu["holder"]["since"] > time.time() - 600
    assert gpu["pinned_to"] == ["con-pinned"]

    # drain the held GPU: the holder keeps it; drain another: nobody new gets it
    r = console.ok("POST", "drained", {"gpu": pinned})
    assert "con-pinned keeps it until their server stops" in r["message"]
    assert stack.container_of("con-pinned") == container
    console.ok("POST", "drained", {"gpu": other})
    assert sorted(console.intent()["drained"]) == sorted([pinned, other])
    gpu = gpu_of(console, pinned)
    assert gpu["state"] == "held" and gpu["drained"] and gpu["holder"]["user"] == "con-pinned"
    hub.create_user("con-next")
    hub.start("con-next")
    got = gpu_holdings(stack)[stack.container_of("con-next")]
    assert got not in (pinned, other), "a drained or pinned GPU was handed out"

    # free: the console stops the holder's server through the hub's API; the GPU comes back
    r = console.ok("POST", "free", {"gpu": got, "note": "needed for a course"})
    assert r["result"] in ("stopped", "stopping") and "Stopped con-next's server" in r["message"]
    hub.wait("con-next", ready=False, timeout=60)
    wait_for(lambda: gpu_of(console, got)["holder"] is None, what="the freed GPU shows free")
    r = console.ok("POST", "free", {"user": "con-pinned"})
    hub.wait("con-pinned", ready=False, timeout=60)
    wait_for(lambda: gpu_of(console, pinned)["holder"] is None, what="the pinned GPU shows free")

    # a pinned user whose GPU is drained is refused with the reason
    r = hub.api("POST", "/users/con-pinned/server")
    assert r.status_code == 503 and "your pinned GPU" in r.json()["message"] and "drained" in r.json()["message"]

    console.ok("DELETE", f"drained/{pinned}")
    console.ok("DELETE", f"drained/{other}")
    console.ok("DELETE", "pins/con-pinned")
    assert console.intent() == {"pins": {}, "drained": []}

    entries = console.audit()[n_audit:]
    assert [(e["action"], e.get("user"), e.get("gpu")) for e in entries] == [
        ("pin", "con-pinned", pinned), ("drain", None, pinned), ("drain", None, other),
        ("free", "con-next", got), ("free", "con-pinned", pinned), ("undrain", None, pinned),
        ("undrain", None, other), ("unpin", "con-pinned", pinned)]
    assert all(e["who"] == stack.env["HUB_ADMIN_USER"] and e["via"] == "token" and e["time"].endswith("Z")
               for e in entries)
    assert entries[0]["note"] == "e2e" and entries[3]["note"] == "needed for a course"
    shown = console.ok("GET", "audit?limit=8")["entries"]
    assert [e["action"] for e in shown] == [e["action"] for e in reversed(entries)]


def test_access_allow_list_is_enforced_at_spawn(console, stack, hub):
    hub.create_user("con-allowed")
    hub.create_user("con-denied")
    hub.api("POST", "/groups/con-gpu-users", json={"users": ["con-allowed"]})
    r = console.ok("PUT", "access", {"users": [], "groups": ["con-gpu-users"]})
    assert r["access"] == {"users": [], "groups": ["con-gpu-users"]}
    assert console.intent()["access"] == {"users": [], "groups": ["con-gpu-users"]}

    r = hub.api("POST", "/users/con-denied/server")
    assert r.status_code == 403, r.text
    assert "may not use GPUs" in r.json()["message"] and "CPU-only profile" in r.json()["message"]
    assert not [c for c in stack.user_containers() if "con-denied" in c]
    hub.start("con-denied", options={"profile": "cpu"})  # what the message tells them to do
    assert not stack.inspect(stack.container_of("con-denied"))["HostConfig"].get("DeviceRequests")
    hub.stop("con-denied")

    hub.start("con-allowed")  # a member of the allowed group
    assert stack.container_of("con-allowed") in gpu_holdings(stack)
    hub.stop("con-allowed")

    console.ok("PUT", "access", {"users": [], "groups": []})
    assert "access" not in console.intent()
    assert [e["action"] for e in console.audit()[-2:]] == ["access", "access"]


def test_bad_inputs_are_4xx_and_leave_intent_and_audit_unchanged(console, stack, hub):
    hub.create_user("con-bad")
    console.ok("POST", "drained", {"gpu": GPUS[0].uuid})
    console.ok("POST", "pins", {"user": "con-bad", "gpu": GPUS[1].uuid})
    # a container this hub did not start holds GPU 3 (another deployment on the same engine)
    foreign = f"gpuconsole-foreign-{uuid.uuid4().hex[:6]}"
    stack.docker("run", "-d", "--rm", "--name", foreign, "--label", "gpuhub.user=foreign",
                 "--label", "gpuhub.instance=elsewhere", "--device", f"nvidia.com/gpu={GPUS[3].uuid}",
                 "--entrypoint", "sleep", stack.env["HUB_IMAGE"], "600")  # any image at hand
    try:
        gpu = gpu_of(console, GPUS[3].uuid)
        assert gpu["holder"]["container"] == foreign and not gpu["holder"]["this_hub"]
        assert gpu["holder"]["server_url"] is None
        U = GPUS[2].uuid
        bad = [
            ("POST", "pins", "{not json", 400, "not valid JSON"),
            ("POST", "pins", "", 400, "empty"),
            ("POST", "pins", "[1, 2]", 400, "must be a JSON object"),
            ("POST", "pins", {"user": "con-bad", "gpu": U, "priority": 1}, 400, "unknown field 'priority'"),
            ("POST", "pins", {"gpu": U}, 400, "missing field 'user'"),
            ("POST", "pins", {"user": "con-bad"}, 400, "missing field 'gpu'"),
            ("POST", "pins", {"user": 42, "gpu": U}, 400, "'user' must be a string"),
            ("POST", "pins", {"user": "con-bad", "gpu": 2}, 400, "'gpu' must be a string"),
            ("POST", "pins", {"user": "", "gpu": U}, 400, "must not be empty"),
            ("POST", "pins", {"user": "nobody-here", "gpu": U}, 400, "no user 'nobody-here'"),
            ("POST", "pins", {"user": "con-bad", "gpu": "GPU-00000000-dead"}, 400, "no GPU 'GPU-00000000-dead'"),
            ("POST", "pins", {"user": "con-bad", "gpu": GPUS[0].uuid}, 409, "is drained"),
            ("POST", "pins", {"user": "con-bad", "gpu": GPUS[1].uuid}, 409, "already pinned"),
            ("DELETE", "pins/nobody-pinned", None, 404, "not pinned"),
            ("POST", "drained", {"gpu": GPUS[0].uuid}, 409, "already drained"),
            ("POST", "drained", {"gpu": "GPU-unknown"}, 400, "no GPU 'GPU-unknown'"),
            ("POST", "drained", {"gpu": None}, 400, "not null"),
            ("DELETE", f"drained/{U}", None, 409, "is not drained"),
            ("DELETE", "drained/GPU-unknown", None, 404, "no GPU"),
            ("POST", "free", {"gpu": U}, 409, "free already"),
            ("POST", "free", {"gpu": GPUS[3].uuid}, 409, "this hub did not start"),
            ("POST", "free", {}, 400, "either 'gpu'"),
            ("POST", "free", {"user": "con-bad"}, 409, "holds no GPU"),
            ("POST", "free", {"user": "nobody-here"}, 400, "no user 'nobody-here'"),
            ("PUT", "access", {"users": "con-bad", "groups": []}, 400, "must be an array"),
            ("PUT", "access", {"users": ["nobody-here"], "groups": []}, 400, "no user 'nobody-here'"),
            ("PUT", "access", {"users": [], "groups": ["no-such-group"]}, 400, "no group 'no-such-group'"),
            ("PUT", "access", {"users": []}, 400, "missing field 'groups'"),
            ("GET", "audit?limit=-1", None, 400, "from 1 to 1000"),
            ("POST", "nope", {}, 404, "no such API endpoint"),
        ]
        assert len({(m, p, json.dumps(b, sort_keys=True) if not isinstance(b, str) else b) for m, p, b, *_ in bad}) >= 20
        before = console.files()
        stopped_before = [c for c in stack.user_containers()]
        for method, path, body, status, words in bad:
            raw = body if isinstance(body, str) else None
            r = console.call(method, path, None if raw is not None else body, raw=raw)
            assert r.status_code == status, (method, path, body, r.status_code, r.text)
            data = r.json()
            assert set(data) == {"status", "message"} and data["status"] == status, data
            assert words in data["message"], (path, body, data["message"])
            assert console.files() == before, f"{method} {path} {body} changed the intent or the audit log"
        assert stack.user_containers() == stopped_before
        assert stack.docker("inspect", "-f", "{{.State.Running}}", foreign).stdout.strip() == "true"
    finally:
        stack.docker("rm", "-f", foreign, check=False)


def test_non_admins_get_403(console, stack, hub):
    token = user_token(hub, "con-user")
    before = console.files()
    for method, path, body in (("GET", "gpus", None), ("GET", "audit", None), ("GET", "access", None),
                               ("GET", "names", None),
                               ("POST", "pins", {"user": "con-user", "gpu": GPUS[0].uuid}),
                               ("DELETE", "pins/con-user", None), ("POST", "drained", {"gpu": GPUS[0].uuid}),
                               ("DELETE", f"drained/{GPUS[0].uuid}", None), ("POST", "free", {"gpu": GPUS[0].uuid}),
                               ("PUT", "access", {"users": ["con-user"], "groups": []})):
        r = console.call(method, path, body, token=token)
        assert r.status_code == 403, (method, path, r.status_code, r.text)
        assert r.json() == {"status": 403, "message": "user 'con-user' may not use the GPU console: it is for hub admins only"}
    r = console.call("GET", "gpus", token=None)
    assert r.status_code == 401 and "/hub/token" in r.json()["message"]
    r = console.call("GET", "gpus", token="not-a-token")
    assert r.status_code == 401
    page = requests.get(f"{stack.url}/services/gpu-console/", headers={"Authorization": f"token {token}"}, timeout=30)
    assert page.status_code == 403 and "for the hub&#x27;s admins only" in page.text
    assert 'href="/hub/static/css/style.min.css"' in page.text
    assert console.files() == before


def test_a_100_mb_body_through_the_proxy_is_refused_before_it_is_read(console, stack, hub):
    """The request's head, announcing 100 MB, and its first KiB (the proxy, Node, forwards a
    head with the first body bytes): the console answers 413 in JSON through the proxy without
    waiting for the rest, to a stranger (no token) as to an admin; a body a little over the
    64 KiB limit, sent whole, gets the same 413 (issue 25)."""
    sys.path.insert(0, str(ROOT / "tests" / "unit"))
    from test_console_input import announce, json_of

    admin = hub.s.headers["Authorization"].split()[1]
    for token in (None, admin):
        started = time.monotonic()
        answer = announce(stack.url, "/services/gpu-console/api/pins", 100_000_000, token=token, first=b"{" * 1024)
        assert time.monotonic() - started < 10
        assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
        assert json_of(answer)["status"] == 413 and "limit of 65536 bytes" in json_of(answer)["message"]
    r = console.call("PUT", "access", raw=json.dumps({"users": ["u" * 60] * 1500, "groups": []}))
    assert r.status_code == 413 and r.json()["status"] == 413, r.text[:300]
    assert console.call("GET", "access").status_code == 200


def test_cli_from_the_host_and_in_the_hub_container(console, stack, hub):
    hub.create_user("con-cli")
    env = {"GPUHUB_TOKEN": console.token, "PATH": "/usr/bin:/bin"}
    host = [sys.executable, "-m", "hub.service_process.console.cli", "--url", stack.url]

    r = subprocess.run([*host, "pin", "con-cli", "1"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert r.returncode == 0 and "Pinned con-cli to GPU #1" in r.stdout, r.stderr
    r = subprocess.run([*host, "list"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert r.returncode == 0 and "pinned to con-cli" in r.stdout
    r = subprocess.run([*host, "drain", "#1"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert r.returncode == 0
    r = subprocess.run([*host, "pin", "con-cli", "7"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert r.returncode == 2 and "index 7 names no GPU" in r.stderr
    r = subprocess.run([*host, "pin", "nobody-here", "0"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert r.returncode == 1 and "no user 'nobody-here'" in r.stderr and "HTTP 400" in r.stderr
    r = subprocess.run([*host, "free", "0"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 2 and "--yes" in r.stderr

    # in the hub's container, as the README shows: docker compose exec hub gpuhub-gpus ...
    def in_hub(*args):
        return stack.compose("exec", "-T", "-e", f"GPUHUB_TOKEN={console.token}", "hub", "gpuhub-gpus", *args, check=False)

    r = in_hub("undrain", "1")
    assert r.returncode == 0 and "Undrained GPU #1" in r.stdout, r.stderr
    r = in_hub("unpin", "con-cli")
    assert r.returncode == 0, r.stderr
    r = in_hub("--json", "audit", "-n", "4")
    assert r.returncode == 0
    assert [e["action"] for e in json.loads(r.stdout)["entries"]] == ["unpin", "undrain", "drain", "pin"]
    r = stack.compose("exec", "-T", "hub", "gpuhub-gpus", "list", check=False)
    assert r.returncode == 2 and "/hub/token" in r.stderr


def test_host_health_from_the_hubs_container(console, stack):
    """The console's Host health card: the doctor's checks run in the hub's container against
    the real engine. This machine's GPUs are fake: no NVML, so the GPU checks say n/a."""
    health = console.ok("GET", "health")
    checks = {c["name"]: c for c in health["checks"]}
    engine_info = json.loads(stack.docker("info", "--format", "{{json .}}").stdout)
    assert checks["engine.version"]["status"] == "ok"
    assert checks["engine.cdi"]["status"] == ("ok" if engine_info.get("CDISpecDirs") else "warn")
    assert checks["engine.live_restore"]["status"] == ("ok" if engine_info["LiveRestoreEnabled"] else "warn")
    assert checks["toolkit.cves"]["status"] == "unknown" and checks["gpus"]["status"] == "unknown"
    assert checks["driver.cuda"]["status"] in ("ok", "unknown")  # the test image: a CPU build of PyTorch
    logs = stack.compose("logs", "--no-color", "hub").stdout
    assert "[gpuhub health] ok    engine.version" in logs  # the same checks at hub start
