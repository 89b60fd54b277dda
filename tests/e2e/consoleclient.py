"""The GPU console's REST API and files, for the end-to-end tests (test_console*.py)."""
import contextlib
import json
import time
from urllib.parse import quote

import requests

STATE = "/srv/jupyterhub/state"
SEP = "\n--8<-- gpu-console --8<--\n"


class Console:
    """The console's API as an admin (or with another token), and its files on the volume."""

    def __init__(self, stack, token: str):
        self.stack, self.token = stack, token
        self.base = f"{stack.url}/services/gpu-console/api/"
        self.hub_container = f"{stack.prefix}-hub-1"
        self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> None:
        """Until the proxy routes to the console and it answers: a hub recreated by an earlier
        test (the TLS test brings the stack back to plain HTTP, the reclaim tests to the default
        settings) is healthy before its service's route is back (404) and before the service
        answers (the hub's 503 page, or the proxy's 502/503)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.call("GET", "gpus").status_code not in (404, 502, 503):
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                return  # the test's own first call says what is wrong
            time.sleep(0.5)

    def call(self, method, path, body=None, raw=None, token="admin"):
        token = self.token if token == "admin" else token
        headers = {"Authorization": f"token {token}"} if token else {}
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        return requests.request(method, self.base + path, data=data, headers=headers, timeout=60)

    def ok(self, method, path, body=None):
        r = self.call(method, path, body)
        assert r.status_code in (200, 202), f"{method} {path} {body}: {r.status_code} {r.text}"
        return r.json()

    def state(self):
        return self.ok("GET", "gpus?fresh=1")

    def files(self) -> tuple[str, str]:
        """gpu-intent.json and gpu-audit.jsonl as they are on the hub's state volume."""
        out = self.stack.docker("exec", self.hub_container, "sh", "-c",
                                f"cat {STATE}/gpu-intent.json 2>/dev/null || echo '(absent)'; printf '{SEP}';"
                                f" cat {STATE}/gpu-audit.jsonl 2>/dev/null || echo '(absent)'").stdout
        intent, audit = out.split(SEP)
        return intent, audit

    def intent(self) -> dict:
        text = self.files()[0]
        return {} if text.startswith("(absent)") else json.loads(text)

    def audit(self) -> list[dict]:
        text = self.files()[1]
        return [] if text.startswith("(absent)") else [json.loads(line) for line in text.splitlines()]

    def reset(self):
        """No pins, no drains, no reservations, no shared GPUs, no GPU quotas, everyone may use
        GPUs (through the API, so it is audited too). Earlier modules (the reliability suite's
        schemathesis run sets random valid quotas) leave their intent on the shared stack."""
        for quota in self.ok("GET", "quotas").get("quotas", []):
            name = quota.get("name") or "all"
            self.ok("DELETE", f"quotas/{quote(quota['scope'], safe='')}/{quote(name, safe='')}")
        state = self.state()
        for reservation in state.get("reservations", []):
            self.ok("DELETE", f"reservations/{quote(reservation['id'], safe='')}")
        for uuid in state.get("shared", {}):
            self.ok("DELETE", f"shared/{quote(uuid, safe='')}")
        for user in state["pins"]:
            self.ok("DELETE", f"pins/{quote(user, safe='')}")
        for gpu in state["gpus"]:
            if gpu["drained"]:
                self.ok("DELETE", f"drained/{gpu['uuid']}")
        if not state["access"]["everyone"]:
            self.ok("PUT", "access", {"users": [], "groups": []})


def admin_console(stack, hub) -> Console:
    """The console as the hub's admin (the token the e2e Hub client holds)."""
    return Console(stack, hub.s.headers["Authorization"].split()[1])


@contextlib.contextmanager
def clean_console(stack, hub):
    """The admin's console, reset (``Console.reset``) before and after: the conftest's
    ``console`` and ``module_console`` fixtures."""
    c = admin_console(stack, hub)
    c.reset()
    try:
        yield c
    finally:
        c.reset()


def user_token(hub, name: str) -> str:
    hub.create_user(name)
    r = hub.api("POST", f"/users/{name}/tokens", json={"note": "console e2e", "expires_in": 3600})
    assert r.status_code == 201, r.text
    return r.json()["token"]


def wait_for(predicate, timeout=60, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise TimeoutError(f"{what} not reached within {timeout}s")


def gpu_of(console, uuid_):
    return next(g for g in console.state()["gpus"] if g["uuid"] == uuid_)
