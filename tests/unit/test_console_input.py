"""The GPU console's API against malformed and oversized input (issue 25): every refusal a 4xx
with {"status", "message"}, never a 5xx (a fuzz driven by openapi.yaml); bodies bounded before
they are read, and before authentication; rosters parsed in a time bounded by their size and
off the event loop; CSV exports that a spreadsheet shows as text."""
from __future__ import annotations

import csv
import io
import json
import os
import re
import socket
import threading
import time
from urllib.parse import urlsplit

import pytest
import requests
from console_fakes import ADMIN_TOKEN, GPUS, FakeNVML, ServedApp, StubAuth, make_console

from hub import courses
from hub.service_process.console.app import make_app, usage_keeper
from hub.service_process.console.handlers import MAX_BODY, roster_body_limit
from hub.service_process.console.usage_api import spreadsheet_cell, to_csv
from hub.settings.gpu_settings import GPUSettings

PREFIX = "/services/gpu-console/api/"
ADMIN = {"Authorization": f"token {ADMIN_TOKEN}"}


def announce(base_url: str, path: str, length: int, token: str | None = None, method: str = "POST",
             first: bytes = b"") -> bytes:
    """Send only the head of a request that announces ``length`` bytes of body (and ``first``,
    the body's first bytes: a Node proxy forwards the head only with them), and return what the
    server answers without waiting for the rest (b"" if it closed without a word)."""
    url = urlsplit(base_url)
    head = [f"{method} {path} HTTP/1.1", f"Host: {url.netloc}", "Content-Type: application/json",
            f"Content-Length: {length}"] + ([f"Authorization: token {token}"] if token else [])
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + first)
        answer = b""
        while not _complete(answer):  # a proxy keeps the connection open after its answer
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            answer += chunk
    return answer


def _complete(answer: bytes) -> bool:
    if b"\r\n\r\n" not in answer:
        return False
    head, body = answer.split(b"\r\n\r\n", 1)
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    if length:
        return len(body) >= int(length.group(1))
    return b"chunked" in head.lower() and body.endswith(b"0\r\n\r\n")


def json_of(answer: bytes) -> dict:
    """The JSON body of a raw HTTP answer (a proxy may relay it chunked)."""
    head, body = answer.split(b"\r\n\r\n", 1)
    if b"transfer-encoding: chunked" in head.lower():
        out = b""
        while True:
            size, rest = body.split(b"\r\n", 1)
            if int(size, 16) == 0:
                break
            out, body = out + rest[:int(size, 16)], rest[int(size, 16) + 2:]
        body = out
    return json.loads(body)


@pytest.fixture
def served(tmp_path):
    console, engine, hub = make_console(tmp_path, FakeNVML())
    console.usage = usage_keeper(console, GPUSettings(name_prefix="gpuhubtest", usage_db=str(tmp_path / "u.sqlite")),
                                 _no_events)
    app = make_app(console, "/services/gpu-console/", "/", authenticator=StubAuth(), cookie_secret=b"x" * 32,
                   roster_max_bytes=8192)
    with ServedApp(app) as s:
        s.hub = hub
        yield s


async def _no_events(since, until, filters):
    return []


def call(served, method, path, body=None, raw=None, headers=ADMIN):
    data = raw if raw is not None else (json.dumps(body) if body is not None else None)
    return requests.request(method, served.url + PREFIX + path, data=data, headers=headers, timeout=30)


# ---- malformed input: a 4xx that says what to fix ------------------------------------------------

DEEP = "- " * 3000 + "x"
BOMB = "".join(f"- &{c} [{','.join([f'*{p}' if p else 'x'] * 9)}]\n" for c, p in zip("abcdefgh", " abcdefg")).replace("* ", "x")
MALFORMED = [
    # (method, path, raw body, status, words in the message)
    ("GET", "audit?limit=%C2%B2", None, 400, "limit='²': use a whole number from 1 to 1000"),  # '²'.isdigit()
    ("GET", "audit?limit=%EF%BC%95", None, 400, "whole number"),  # a full-width 5
    ("GET", "audit?limit=" + "9" * 5000, None, 400, "whole number from 1 to 1000"),  # int() refuses 4300+ digits
    ("GET", "audit?limit=-1", None, 400, "whole number"),
    ("GET", "audit?limit=", None, 400, "whole number"),
    ("POST", "pins", '{"user": "alice", "gpu": ' + "1" * 5000 + "}", 400, "a number too long to read"),
    ("PUT", "quotas", '{"scope": "user", "name": "alice", "hours": ' + "9" * 5000 + ', "window_days": 7}', 400,
     "a number too long"),
    ("POST", "pins", '{"user": "\\ud800", "gpu": "x"}', 400, "lone UTF-16 surrogate"),
    ("POST", "pins", '{"user": NaN, "gpu": "x"}', 400, "'user' must be a string"),
    ("POST", "courses/roster", json.dumps({"roster": "- [1, 2]\n- [[3], {a: b}]\n"}), 400,
     "line 1: a row must be a mapping with username or email, course and role"),
    ("POST", "courses/roster", json.dumps({"roster": "roster:\n  - [1]\n"}), 400, "a row must be a mapping"),
    ("POST", "courses/roster", json.dumps({"roster": "- {username: [1, 2], course: ml}\n"}), 400, "'username' must be text"),
    ("POST", "courses/roster", json.dumps({"roster": "- {username: 2026-02-30, course: ml}\n", "format": "yaml"}), 400,
     "not valid YAML"),
    ("POST", "courses/roster", json.dumps({"roster": "- !!python/object:os.system {}\n", "format": "yaml"}), 400,
     "not valid YAML"),
    ("POST", "courses/roster", json.dumps({"roster": DEEP, "format": "yaml"}), 400, "nests more than 8 levels"),
    ("POST", "courses/roster", json.dumps({"roster": "[" * 8000, "format": "yaml"}), 400, "nests more than 8 levels"),
    ("POST", "courses/roster", json.dumps({"roster": BOMB + "- {username: *h, course: ml}\n", "format": "yaml"}), 400,
     "9 bad rows in the roster"),
    ("POST", "courses/roster", json.dumps({"roster": "username,course\n\"" + "a" * 7000}), 400,
     "line 2: the username is longer than 255 characters"),
    ("POST", "courses/roster", json.dumps({"roster": "x" * 9000}), 413, "CONSOLE_ROSTER_MAX_SIZE"),
    ("GET", "usage?since=" + "9" * 5000, None, 400, "since="),
    ("GET", "usage?since=1e999", None, 400, "since="),
    ("GET", "usage?since=nan", None, 400, "since="),
]


@pytest.mark.parametrize("method,path,raw,status,words", MALFORMED, ids=[f"{i} {m} {p[:30]}" for i, (m, p, *_) in
                                                                          enumerate(MALFORMED)])
def test_malformed_input_is_a_4xx_that_says_what_to_fix(served, method, path, raw, status, words):
    started = time.monotonic()
    r = call(served, method, path, raw=raw)
    assert r.status_code == status, (r.status_code, r.text[:300])
    data = r.json()
    assert data["status"] == status and words in data["message"], data["message"]
    assert len(data["message"]) < 1000  # the admin reads it: bounded, whatever the input
    assert time.monotonic() - started < 10
    assert served.hub.changes == []


# ---- bodies: bounded per route, before they are read ----------------------------------------------

def test_a_100_mb_body_is_refused_from_its_head_before_authentication(served):
    """Announced with Content-Length and never sent: the 413 comes from prepare(), before the
    login is even looked at (no token here: not a 401), and the body is not waited for."""
    for path, limit in ((PREFIX + "pins", MAX_BODY), (PREFIX + "courses/roster", roster_body_limit(8192)),
                        (PREFIX + "no-such-route", MAX_BODY)):
        started = time.monotonic()
        answer = announce(served.url, path, 100_000_000)
        assert time.monotonic() - started < 5
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        data = json_of(answer)
        assert data["status"] == 413 and f"limit of {limit} bytes" in data["message"], data
    assert "CONSOLE_ROSTER_MAX_SIZE" in json_of(announce(served.url, PREFIX + "courses/roster", 10**8))["message"]
    # the page and the OAuth callback: the server's own limit (tornado's bare 400), body unread
    assert announce(served.url, "/services/gpu-console/", 100_000_000, method="GET").startswith(b"HTTP/1.1 400")


def test_a_body_over_the_routes_limit_is_drained_and_refused_in_json(served):
    """A little over the limit: read and dropped, so that a client that sends it all before it
    reads (requests, the CLI) gets the 413, not a reset connection; no login needed for it."""
    for headers in (ADMIN, {}):
        r = call(served, "PUT", "access", raw=json.dumps({"users": ["a" * 60] * 1500, "groups": []}), headers=headers)
        assert r.status_code == 413 and r.json()["status"] == 413, r.text
        assert f"limit of {MAX_BODY} bytes" in r.json()["message"]
    rows = "username,course\n" + "".join(f"student{i:04d},ml101\n" for i in range(300))  # 6.8 KB < 8192
    r = call(served, "POST", "courses/roster", {"roster": rows, "dry_run": True})
    assert r.status_code == 200, r.text


def test_the_roster_route_takes_a_body_up_to_twice_its_setting(served):
    """A roster of 60 000 bytes of UTF-8 ('é') is 180 KB of JSON (\\u00e9): over every other
    route's 64 KiB, within the roster route's 2 x CONSOLE_ROSTER_MAX_SIZE + 64 KiB."""
    app = make_app(served.app.settings["console"], "/services/gpu-console/", "/", authenticator=StubAuth(),
                   cookie_secret=b"x" * 32, roster_max_bytes=2**16)
    body = json.dumps({"roster": "username,course\n" + "é" * 30_000, "dry_run": True})
    assert MAX_BODY < len(body) < roster_body_limit(2**16)
    with ServedApp(app) as s:
        r = requests.post(s.url + PREFIX + "courses/roster", data=body, headers=ADMIN, timeout=30)
        assert r.status_code == 400 and "cannot read the roster" not in r.json()["message"], r.text[:300]
        r = requests.post(s.url + PREFIX + "courses/roster", data=json.dumps({"roster": "x" * 70_000}),
                          headers=ADMIN, timeout=30)
        assert r.status_code == 413 and "roster (70000 bytes)" in r.json()["message"], r.text[:300]


def test_a_chunked_body_is_cut_at_the_routes_limit(served):
    def chunks():
        yield b'{"users": ['
        for _ in range(200):
            yield b'"' + b"a" * 1000 + b'",'
        yield b'"b"], "groups": []}'
    try:
        r = requests.put(served.url + PREFIX + "access", data=chunks(), headers=ADMIN, timeout=30)
        assert r.status_code in (400, 413), r.text  # tornado stops reading at the limit (a bare 400)
    except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
        pass  # it closed the connection while the client was still sending, or reading
    assert call(served, "GET", "access").status_code == 200  # and serves the next request


# ---- rosters: time bounded by size, off the event loop -----------------------------------------------

PATHOLOGICAL = {
    "the issue's 40 KB of ,'": ",'" * 20_000,  # csv.Sniffer took seconds on it
    "1 MiB of ,'": ",'" * 2**19,
    "a 1 MiB header": "username,course" + ",x" * 2**19,
    "an unclosed quote": 'username,course\n"' + "a" * 2**20,
    "260 000 lines": "username,course\n" + "a,b\n" * 260_000,
    "[[[[… 1 MiB": "[" * 2**20,
    "- - - … 1 MiB": "- " * 2**19 + "x",
    "an alias bomb": BOMB + "- {username: *h, course: ml}\n",
}


@pytest.mark.parametrize("name", list(PATHOLOGICAL))
def test_pathological_rosters_are_read_or_refused_fast(name):
    text = PATHOLOGICAL[name]
    for fmt in ("auto", "csv", "yaml"):
        started = time.perf_counter()
        try:
            courses.parse_roster(text, fmt)
        except courses.RosterError as exc:
            assert len(str(exc)) < 600
        assert time.perf_counter() - started < 2.0, (name, fmt)  # about 0.2 s at most on a 2-core runner


def test_delimiter_is_counted_on_the_header():
    assert [r.username for r in courses.parse_roster("username;course;role\nann;ml;ta\n").rows] == ["ann"]
    assert courses.parse_roster("username\tcourse\nbob\tml\n").rows[0].course == "ml"
    assert courses.parse_roster("email,course\n\"a@b.org\",ml\n").rows[0].username == "a@b.org"


def test_a_large_roster_is_parsed_while_the_console_keeps_answering(served):
    """A roster at the limit is parsed in the roster thread: other requests are answered
    meanwhile (the event loop also runs gpu-reclaim's rounds and the quota stops)."""
    app = make_app(served.app.settings["console"], "/services/gpu-console/", "/", authenticator=StubAuth(),
                   cookie_secret=b"x" * 32, roster_max_bytes=2**20)
    rows = "".join(f"- {{username: user{i:05d}, course: ml, role: student, email: u{i}@example.org}}\n"
                   for i in range(12_000))[:2**20 - 200]
    rows = rows[:rows.rindex("\n") + 1]
    with ServedApp(app) as big:
        requests.post(big.url + PREFIX + "pins", data="{}", headers=ADMIN, timeout=30)  # jsonschema loaded
        lags, done = [], threading.Event()

        def probe():
            while not done.is_set():
                started = time.perf_counter()
                requests.get(big.url + PREFIX + "audit?limit=1", headers=ADMIN, timeout=30)
                lags.append(time.perf_counter() - started)
                time.sleep(0.01)
        prober = threading.Thread(target=probe)
        prober.start()
        started = time.perf_counter()
        r = requests.post(big.url + PREFIX + "courses/roster", data=json.dumps({"roster": rows, "dry_run": True}),
                          headers=ADMIN, timeout=60)
        took = time.perf_counter() - started
        done.set()
        prober.join()
    assert r.status_code == 400 and "more than 5000 rows" in r.json()["message"], r.text[:300]
    # before: the parse ran on the loop, and a probe waited as long as the parse (7.5 s here)
    assert len(lags) >= 3 and max(lags) < max(1.0, took / 2), (took, sorted(lags)[-5:])


# ---- CSV exports ------------------------------------------------------------------------------

def test_csv_cells_that_a_spreadsheet_would_run_are_escaped():
    evil = ["=HYPERLINK(\"http://x\",\"y\")", "+1+2", "-2+3", "@SUM(A1)", "\tx", "\rx", "=1"]
    rows = [{"user": name, "start": 1_700_000_000, "gpu_hours": 1.0, "used_gpu_hours": None, "sampled_hours": 0.0,
             "servers": 1} for name in [*evil, "alice", "o'brien", "a=b"]]
    text = to_csv({"by": "user", "rows": rows})
    cells = [line[0] for line in csv.reader(io.StringIO(text))][1:]
    assert cells == ["'" + name for name in evil] + ["alice", "o'brien", "a=b"]
    assert spreadsheet_cell(-2.5) == -2.5  # numbers stay numbers


def test_usage_csv_from_the_api_escapes_user_names(served):
    from hub.usage.accounting import Interval

    keeper = served.app.settings["usage_keeper"]
    now = time.time()
    keeper.store.save([Interval(f"c-{i}", GPUS[i].uuid, now - 7200, now - 3600, open=False, user=name)
                       for i, name in enumerate(("=cmd|' /C calc'!A0", "bob"))])
    r = call(served, "GET", "usage?since=1d&format=csv")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/csv")
    names = {row[0] for row in list(csv.reader(io.StringIO(r.text)))[1:]}
    assert names == {"'=cmd|' /C calc'!A0", "bob"}


# ---- a fuzz of the whole API from its spec ----------------------------------------------------------

def _fuzz_cases():
    """(path, method, mode) for every operation: positive for all; negative where there is
    something to break (parameters or a body); known where the path names something."""
    from hub.service_process.console import openapi
    cases = []
    for path, item in openapi.spec()["paths"].items():
        for method, op in item.items():
            if method not in ("get", "put", "post", "patch", "delete") or path in ("/openapi.yaml", "/health"):
                continue
            inputs = item.get("parameters") or op.get("parameters") or op.get("requestBody")
            cases += [(path, method, "positive")] + [(path, method, "negative")] * bool(inputs) + \
                [(path, method, "known")] * ("{" in path)
    return cases


FUZZ_EXAMPLES = int(os.environ.get("GPUHUB_FUZZ_EXAMPLES", "15"))
KNOWN = {"user": "alice", "uuid": GPUS[0].uuid, "course": "ml101", "id": "r-1", "scope": "user", "name": "alice"}


def _schema():
    """The spec without its security scheme: the fuzz logs in as the admin (the stand-in login),
    instead of spending its negative examples on mangled Authorization headers (401s)."""
    import copy

    import schemathesis

    from hub.service_process.console import openapi
    raw = copy.deepcopy(openapi.spec())
    raw.pop("security", None)
    raw.get("components", {}).pop("securitySchemes", None)
    return schemathesis.openapi.from_dict(raw)


@pytest.mark.parametrize("path,method,mode", _fuzz_cases())
def test_fuzz_from_the_openapi_spec_never_answers_5xx(served, path, method, mode):
    """schemathesis generates requests from hub/service_process/console/openapi.yaml for every operation: valid
    ones, ones that break the schema, and valid ones whose path names a user, GPU and course that
    exist ("known": past the 404s, into the actions). None may get a 5xx; every refusal is JSON
    with a status and a message. (GET /health runs the host's checks: test_console_api.py.)
    GPUHUB_FUZZ_EXAMPLES sets the examples per operation and mode (15)."""
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode

    hub = served.hub
    hub.groups.setdefault("ml101", ["alice", "bob"])
    hub.properties.setdefault("ml101", {"gpuhub.course": {"teachers": ["bob"]}})
    operation = _schema()[path][method.upper()]
    params = {k: v for k, v in KNOWN.items() if "{" + k + "}" in path} if mode == "known" else None
    seen: list[int] = []

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(operation.as_strategy(generation_mode=GenerationMode("positive" if mode == "known" else mode),
                                 path_parameters=params))
    def fuzz(case):
        r = case.call(base_url=served.url + PREFIX.rstrip("/"), headers=ADMIN, timeout=30)
        seen.append(r.status_code)
        assert r.status_code < 500, (case.method, case.formatted_path, case.query, case.body, r.text[:300])
        if r.status_code >= 400 and r.status_code != 405:
            data = r.json()
            assert data["status"] == r.status_code and data["message"], r.text[:300]
    fuzz()
    assert seen


def test_a_refused_request_leaves_the_connection_open(served):
    """A 401 answered from ``prepare`` (before tornado read the body) closed the connection
    without saying so; the proxy, reusing it, answered the next request with a 503 (seen in the
    live fuzz). Refusals now come once the bounded body is in: the connection stays usable."""
    import socket
    host, port = served.url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as c:
        request = (f"GET {PREFIX}pins HTTP/1.1\r\nHost: x\r\nAuthorization: \r\n\r\n").encode()
        for _ in range(2):
            c.sendall(request)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = c.recv(65536)
                assert chunk, "the console closed the connection after a refusal"
                head += chunk
            assert head.startswith(b"HTTP/1.1 401"), head[:80]
            length = int(head.split(b"Content-Length: ", 1)[1].split(b"\r\n", 1)[0])
            body = head.split(b"\r\n\r\n", 1)[1]
            while len(body) < length:
                body += c.recv(65536)
