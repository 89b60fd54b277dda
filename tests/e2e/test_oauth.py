"""Login through a real OpenID Connect provider, in a real browser, on a stack of its own.

The provider is oidc-provider-mock (tests/e2e/oidc/) in a container on the stack's network,
published on loopback: the browser signs in on its page at 127.0.0.1, the hub talks to it by
container name (discovery, token, userinfo). It requires client registration, so the client
secret and the redirect URI the hub sends are really checked. The stack (tests/e2e/
oauth-stack.env: prefix gpuhuboauth, port 18001) does not touch the main test stack; it and
the provider are removed at the end. Screenshots: tests/artifacts/oauth-*.png.
"""
import json
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from playwright.sync_api import expect

from conftest import ARTIFACTS
from hubclient import Stack

OAUTH_ENV = Path(__file__).with_name("oauth-stack.env")
PROVIDER_DIR = Path(__file__).with_name("oidc")
PROVIDER_IMAGE = "gpuhub/oidc-mock:test"
LOCAL_PYTHON_BASE = "local/python:3.11-bookworm"
# The provider's users and their claims. alice: allowed and admin by group; bob: allowed by
# name (OAUTH_ALLOWED_USERS); mallory: in no allowed group, not named.
USERS = [
    {"sub": "alice", "preferred_username": "alice", "email": "alice@example.org",
     "groups": ["researchers", "hub-admins"]},
    {"sub": "bob", "preferred_username": "bob", "email": "bob@example.org", "groups": []},
    {"sub": "mallory", "preferred_username": "mallory", "email": "mallory@example.org",
     "groups": ["visitors"]},
]


def docker(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=timeout)


class Provider:
    """The OpenID Connect provider's container: <prefix>-oidc, port 9400, published on loopback."""

    def __init__(self, stack: Stack):
        self.name = f"{stack.prefix}-oidc"
        authorize = urlsplit(stack.env["OIDC_AUTHORIZE_URL"])
        self.public_url = f"{authorize.scheme}://{authorize.netloc}"  # what the browser uses
        assert stack.env["OIDC_ISSUER"] == f"http://{self.name}:9400", "oauth-stack.env names the provider"

    def build(self) -> None:
        base = LOCAL_PYTHON_BASE if not docker("image", "inspect", LOCAL_PYTHON_BASE, check=False).returncode else None
        docker("build", "-q", "-t", PROVIDER_IMAGE, *(["--build-arg", f"BASE_IMAGE={base}"] if base else []),
               str(PROVIDER_DIR), timeout=600)

    def start(self, network: str) -> None:
        port = urlsplit(self.public_url).port
        docker("run", "-d", "--name", self.name, "--network", network, "-p", f"127.0.0.1:{port}:9400",
               "--cap-drop", "ALL", "--security-opt", "no-new-privileges", PROVIDER_IMAGE,
               "--require-registration", "true", *[a for user in USERS for a in ("--user-claims", json.dumps(user))])
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"{self.public_url}/.well-known/openid-configuration", timeout=2).raise_for_status()
                return
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def register_client(self, redirect_uri: str) -> tuple[str, str]:
        """Register the hub as a client (RFC 7591), the way an admin registers an OAuth app."""
        r = requests.post(f"{self.public_url}/oauth2/clients", timeout=10,
                          json={"redirect_uris": [redirect_uri], "token_endpoint_auth_method": "client_secret_post"})
        assert r.status_code == 201, r.text
        return r.json()["client_id"], r.json()["client_secret"]

    def remove(self) -> None:
        docker("rm", "-f", "-v", self.name, check=False)

    def logs(self) -> str:
        return docker("logs", "--tail", "200", self.name, check=False).stderr


@pytest.fixture(scope="module")
def oauth_stack():
    stack = Stack(OAUTH_ENV)
    for key in ("HUB_IMAGE", "PROXY_IMAGE"):
        if docker("image", "inspect", stack.env[key], check=False).returncode:
            pytest.fail(f"image {stack.env[key]} is missing: build the test images with `make test-images`")
    provider = Provider(stack)
    provider.build()
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "oauth-misconfigured-hub.log").unlink(missing_ok=True)
    provider.remove()  # leftovers of an interrupted run
    stack.down()
    try:
        provider.start(stack.create())
        client_id, client_secret = provider.register_client(stack.env["OAUTH_CALLBACK_URL"])
        stack.credentials = {"OAUTH_CLIENT_ID": client_id, "OAUTH_CLIENT_SECRET": client_secret}
        try:
            stack.up(**stack.credentials)
        except subprocess.CalledProcessError as exc:
            pytest.fail(f"compose up failed:\n{exc.stderr}\n{stack.logs()}")
        yield stack
    finally:
        (ARTIFACTS / "oauth-stack.log").write_text(stack.logs() + "\n--- provider ---\n" + provider.logs())
        provider.remove()
        stack.down()
        leftovers = docker("ps", "-a", "--filter", f"name=^{stack.prefix}-", "--format", "{{.Names}}").stdout.split()
        leftovers += docker("volume", "ls", "--filter", f"name=^{stack.prefix}_", "--format", "{{.Name}}").stdout.split()
        leftovers += docker("network", "ls", "--filter", f"name=^{stack.prefix}-net$", "--format", "{{.Name}}").stdout.split()
        assert not leftovers, f"the oauth stack left {leftovers} behind"


def sign_in(page, stack: Stack, subject: str, shots: str) -> None:
    """What a person does: open the hub, press "Sign in with …", type who they are at the provider."""
    page.goto(f"{stack.url}/hub/home")
    page.wait_for_url("**/hub/login**")
    button = page.get_by_role("button", name=f"Sign in with {stack.env['OIDC_LOGIN_SERVICE']}")
    expect(button).to_be_visible()
    page.screenshot(path=ARTIFACTS / f"{shots}-1-hub-login.png")
    button.click()
    page.wait_for_url(f"{stack.env['OIDC_AUTHORIZE_URL']}?**")  # the provider's own page
    page.fill("input[name=sub]", subject)
    page.screenshot(path=ARTIFACTS / f"{shots}-2-provider.png")
    page.get_by_role("button", name="Authorize", exact=True).click()


def whoami(page, stack: Stack) -> dict:
    """The hub's /api/user with the browser's login cookie."""
    xsrf = next(c["value"] for c in page.context.cookies(f"{stack.url}/hub/api/user") if c["name"] == "_xsrf")
    r = page.request.get(f"{stack.url}/hub/api/user", headers={"X-XSRFToken": xsrf})
    assert r.ok, r.text()
    return r.json()


@pytest.mark.browser
def test_allowed_by_group_and_admin_by_group(oauth_stack, page):
    sign_in(page, oauth_stack, "alice", "oauth-alice")
    page.wait_for_url(f"{oauth_stack.url}/hub/home", timeout=30_000)
    expect(page.locator("#start")).to_be_visible()
    expect(page.get_by_role("link", name="Admin")).to_be_visible()
    page.screenshot(path=ARTIFACTS / "oauth-alice-3-hub-home.png")
    user = whoami(page, oauth_stack)
    assert (user["name"], user["admin"]) == ("alice", True)
    assert sorted(user["groups"]) == ["hub-admins", "researchers"]  # the provider's groups, managed


@pytest.mark.browser
def test_allowed_by_name(oauth_stack, page):
    sign_in(page, oauth_stack, "bob", "oauth-bob")
    page.wait_for_url(f"{oauth_stack.url}/hub/home", timeout=30_000)
    expect(page.locator("#start")).to_be_visible()
    expect(page.get_by_role("link", name="Admin")).to_have_count(0)
    page.screenshot(path=ARTIFACTS / "oauth-bob-3-hub-home.png")
    user = whoami(page, oauth_stack)
    assert (user["name"], user["admin"], user["groups"]) == ("bob", False, [])


@pytest.mark.browser
def test_not_allowed_gets_a_clear_denial(oauth_stack, page):
    sign_in(page, oauth_stack, "mallory", "oauth-mallory")
    page.wait_for_url(f"{oauth_stack.url}/hub/oauth_callback?**", timeout=30_000)
    expect(page.locator("body")).to_contain_text("403")
    expect(page.locator("body")).to_contain_text(
        "You signed in with Mock-IdP, but that account is not allowed to use this hub.")
    page.screenshot(path=ARTIFACTS / "oauth-mallory-3-denied.png")
    # Not logged in: the hub sends the browser back to its login page.
    page.goto(f"{oauth_stack.url}/hub/home")
    page.wait_for_url("**/hub/login**")
    logs = oauth_stack.compose("logs", "--no-color", "hub", check=False).stdout
    assert "mallory" in logs


@pytest.mark.parametrize("change,message", [
    ({"OAUTH_CLIENT_SECRET": ""},
     "OAUTH_PROVIDER=oidc needs OAUTH_CLIENT_ID and OAUTH_CLIENT_SECRET, but OAUTH_CLIENT_SECRET is empty: copy them "
     "from the client you registered with your OpenID Connect provider"),
    ({"OAUTH_CALLBACK_URL": "http://127.0.0.1:18001/oauth_callback"},
     "OAUTH_CALLBACK_URL='http://127.0.0.1:18001/oauth_callback' is not the hub's callback: it must be an absolute "
     "http(s) URL ending in /hub/oauth_callback, e.g. OAUTH_CALLBACK_URL=https://<your host>/hub/oauth_callback"),
], ids=["no-client-secret", "bad-callback-url"])
def test_misconfigured_hub_stops_at_start_saying_what_to_set(oauth_stack, change, message):
    """The same hub service, started with one setting wrong: it exits at once with the fix."""
    r = oauth_stack.compose("run", "--rm", "--no-deps", "-T", "hub", check=False, timeout=120,
                            **{**oauth_stack.credentials, **change})
    output = r.stdout + r.stderr
    with open(ARTIFACTS / "oauth-misconfigured-hub.log", "a") as log:  # what the admin sees
        log.write(f"--- {change} (exit status {r.returncode}) ---\n{output}\n")
    assert r.returncode != 0, output
    assert message in output, output
