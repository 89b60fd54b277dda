"""Bad input: usernames that would collide or break Docker names, forged spawn-form fields,
malformed API bodies, and a schemathesis fuzz run against the GPU console's OpenAPI spec.
Every answer must be a 2xx or a 4xx with a message: never a 5xx."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import reliability
from consoleclient import Console, admin_console
from hubclient import ROOT

NASTY_NAMES = ["a.b", "a-b", "a_b", "Alice", "émile", "用户", "x" * 200, "../etc", "..", "a b",
               "a;rm -rf", "a%2fb", "-lead", "trail-", "a--b", "$(id)", "con", "a@b.c"]


def count(status: int, what: str) -> bool:
    """Count one bad input; a 5xx is counted (and reported) as such."""
    reliability.add(bad_inputs=1, **({"bad_input_5xx": 1} if status >= 500 else {}))
    if status >= 500:
        reliability.detail(bad_input_5xx=what, status=status)
    return status < 500


def test_usernames_that_would_collide_or_break_names(stack, hub):
    created, problems = [], []
    for name in NASTY_NAMES:
        r = hub.api("POST", f"/users/{quote(name, safe='')}")
        if not count(r.status_code, f"create user {name!r}"):
            problems.append((name, r.status_code))
        if r.status_code == 201:
            created.append(r.json()["name"])
        elif r.status_code >= 400:
            assert r.json().get("message"), (name, r.text)
    assert not problems, problems
    # Every user the hub accepted gets a server with its own container and volume.
    started = []
    for name in created:
        r = hub.api("POST", f"/users/{quote(name, safe='')}/server", json={"profile": "cpu"})
        count(r.status_code, f"start {name!r}")
        assert r.status_code in (201, 202), (name, r.status_code, r.text)
        started.append(name)
    for name in started:
        hub.wait(name, ready=True, timeout=120)
    containers = {name: stack.container_of(name) for name in started}
    volumes = {name: next(m["Name"] for m in stack.inspect(c)["Mounts"] if m["Destination"] == "/home/jovyan/work")
               for name, c in containers.items()}
    reliability.detail(usernames={n: c for n, c in containers.items()})
    try:
        assert len(set(containers.values())) == len(started), containers
        assert len(set(volumes.values())) == len(started), volumes
        for c in containers.values():
            assert re.fullmatch(rf"{stack.prefix}-[a-z0-9][a-z0-9-]*", c) and len(c) <= len(stack.prefix) + 41, c
        assert {"a.b", "a-b"} <= set(started) and containers["a.b"] != containers["a-b"]
    finally:
        for name in started:
            hub.stop(name)


def test_forged_spawn_form_fields_start_nothing(stack, hub):
    """The spawn form posted by a logged-in admin for another user, with fields it never offers."""
    hub.create_user("form-forger")
    s = stack.admin_session()
    forged = [{"profile": "gpu", "image": "local/debian:bookworm"}, {"profile": "cpu", "mem_limit": "64G"},
              {"profile": "cpu", "cpu_limit": "64"}, {"profile": "gpu", "environment": "LD_PRELOAD=/x"},
              {"profile": "gpu", "env": "NVIDIA_VISIBLE_DEVICES=all"},
              {"profile": "gpu", "device_requests": '[{"Driver": "nvidia", "Count": -1}]'},
              {"profile": "course-a"}, {"profile": "no-such-profile"}, {"profile": ["gpu", "cpu"]},
              {"profile": "gpu", "volumes": "/:/host"}, {"profile": "gpu", "privileged": "true"}]
    for fields in forged:
        r = s.post(f"{stack.url}/hub/spawn/form-forger", data={**fields, "_xsrf": s.cookies.get("_xsrf")},
                   allow_redirects=False, timeout=30)
        count(r.status_code, f"spawn form {fields}")
        assert r.status_code == 400, (fields, r.status_code, r.text[:300])
        assert not hub.user("form-forger")["servers"], fields
    assert not [c for c in stack.user_containers() if "form-forger" in c]


def test_malformed_api_bodies_get_4xx(stack, hub):
    hub.create_user("body-user")
    console = admin_console(stack, hub)
    hub_cases = [("POST", "/users/body-user/server", "not json"), ("POST", "/users/body-user/server", "{"),
                 ("POST", "/users/body-user/server", "[]"), ("POST", "/users/body-user/server", '{"profile": 5}'),
                 ("POST", "/users/body-user/server", '"gpu"'),
                 ("PATCH", "/users/body-user/server", '{"profile": "gpu"}'), ("PATCH", "/users/body-user/server", '"gpu"'),
                 ("POST", "/users/body-user/server", json.dumps({"profile": "x" * 100000})),
                 ("POST", "/users", '{"usernames": "notalist"}'), ("POST", "/users", '{"usernames": [1, 2]}'),
                 ("POST", "/users", "\x00\xff"), ("PATCH", "/users/body-user", '{"admin": "yes"}'),
                 ("PATCH", "/users/body-user", '{"name": ""}'), ("POST", "/groups/g1/users", '{"users": 1}'),
                 ("POST", "/users/body-user/tokens", '{"expires_in": "forever"}'),
                 ("POST", "/users/body-user/tokens", '{"scopes": ["no:such:scope"]}')]
    bad = []
    for method, path, body in hub_cases:
        r = hub.api(method, path, data=body.encode("utf-8", "surrogateescape"))
        if not count(r.status_code, f"hub {method} {path} {body[:40]!r}") or r.status_code < 400:
            bad.append((method, path, body[:40], r.status_code, r.text[:200]))
        if hub.user("body-user")["servers"]:
            bad.append((method, path, body[:40], "started a server"))
            hub.stop("body-user")
    console_cases = [("POST", "pins", "nope"), ("POST", "pins", "{}"), ("POST", "pins", '{"user": 1, "gpu": []}'),
                     ("POST", "drained", '{"gpu": "GPU-nonexistent"}'), ("POST", "free", '{"user": "nobody-here"}'),
                     ("PUT", "access", '{"users": "alice"}'), ("PUT", "access", "[" * 1000),
                     ("POST", "pins", json.dumps({"user": "x" * 10000, "gpu": "y"})), ("DELETE", "pins/%00", None),
                     ("GET", "audit?limit=-1", None), ("GET", "audit?limit=abc", None)]
    for method, path, body in console_cases:
        r = console.call(method, path, raw=body)
        if not count(r.status_code, f"console {method} {path} {str(body)[:40]!r}") or r.status_code < 400:
            bad.append((method, path, str(body)[:40], r.status_code, r.text[:200]))
    assert not hub.user("body-user")["servers"]
    assert not bad, bad


def test_fuzz_the_console_api_from_its_openapi_spec(stack, hub):
    """schemathesis generates requests from hub/service_process/console/openapi.yaml (valid and invalid ones)
    and checks that none is answered with a 5xx (and that answers match the spec's codes)."""
    token = hub.s.headers["Authorization"].split()[1]
    console = Console(stack, token)
    report = reliability.RESULTS.with_name("schemathesis.ndjson")
    report.unlink(missing_ok=True)
    examples = os.environ.get("GPUHUB_FUZZ_EXAMPLES", "25")
    cmd = [str(Path(sys.executable).with_name("schemathesis")), "run", str(ROOT / "hub/service_process/console/openapi.yaml"),
           "--url", f"{stack.url}/services/gpu-console/api", "-H", f"Authorization: token {token}",
           "--checks", "not_a_server_error", "--max-examples", examples, "--seed", "6",
           "--phases", "examples,coverage,fuzzing", "--exclude-path", "/openapi.yaml", "--no-shrink",
           "--request-timeout", "30", "--report", "ndjson", "--report-ndjson-path", str(report)]
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    finally:
        console.reset()  # the fuzzer may have pinned, drained or restricted access
    requests_sent, server_errors = fuzz_counts(report)
    reliability.add(bad_inputs=requests_sent, bad_input_5xx=server_errors)
    reliability.detail(fuzz_requests=requests_sent, fuzz_5xx=server_errors, schemathesis_rc=run.returncode,
                       summary=run.stdout[-600:])
    assert requests_sent > 50, run.stdout[-3000:] + run.stderr[-2000:]
    assert server_errors == 0, run.stdout[-5000:]
    assert run.returncode == 0, run.stdout[-5000:]


def fuzz_counts(report: Path) -> tuple[int, int]:
    """(requests sent, responses with a 5xx status) from schemathesis' NDJSON event stream."""
    sent = errors = 0
    if not report.exists():
        return 0, 0
    for line in report.read_text().splitlines():
        for status in re.findall(r'"status_code":\s*(\d{3})', line):
            sent += 1
            errors += int(status) >= 500
    return sent, errors
