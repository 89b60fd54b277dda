"""HTTPS with the `tls` profile (HUB_DOMAIN set): Caddy in front of the proxy with its internal
CA. The certificate chains to Caddy's root for the hub's name; HTTP redirects to HTTPS; HSTS;
the proxy is no longer published; in a real browser a user logs in, starts a server and runs a
kernel (its websocket goes through TLS). Bad TLS settings stop `make up` naming the variable.
The stack goes back to plain HTTP at the end."""
import http.client
import os
import socket
import ssl
import subprocess
import time

import pytest
from playwright.sync_api import expect

import doors
from conftest import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS
from hubclient import ROOT, STACK_ENV
from netns_browser import IsolatedBrowserNetwork

DOMAIN = "hub.gpuhubtest.internal"
HTTPS, HTTP = 18443, 18080
ROOT_CA = "/data/caddy/pki/authorities/local/root.crt"


def host_setup(stack, out, **env) -> subprocess.CompletedProcess:
    return subprocess.run(["python3", "-m", "hub.settings.host_setup", "--env-file", str(stack.env_file),
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=60)


class PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1 for the hub's name (SNI and hostname check on that name)."""

    def connect(self):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def test_bad_tls_settings_stop_make_up_naming_the_variable():
    cases = {"HUB_DOMAIN": dict(HUB_DOMAIN="https://hub.example.org:443"),
             "TLS_CERT_FILE": dict(HUB_DOMAIN=DOMAIN, TLS_CERT_FILE="/nonexistent/cert.pem",
                                   TLS_KEY_FILE="/nonexistent/key.pem")}
    for variable, env in cases.items():
        r = subprocess.run(["make", "-s", "up", f"ENV_FILE={STACK_ENV}"], cwd=ROOT, capture_output=True,
                           text=True, env={**os.environ, **env}, timeout=120)
        assert r.returncode != 0 and variable in r.stderr, (variable, r.stdout, r.stderr)
        assert "docker compose" not in r.stdout  # stopped before building or starting anything


@pytest.mark.browser
def test_https_by_caddy_in_a_real_browser(stack, hub, tmp_path):
    image = stack.env["CADDY_IMAGE"]
    if stack.docker("image", "inspect", image, check=False).returncode:
        pytest.fail(f"image {image} is missing: build the test images with `make test-images`")
    setup = host_setup(stack, tmp_path / "compose.host.yml", HUB_DOMAIN=DOMAIN, HTTPS_PUBLISH=f"127.0.0.1:{HTTPS}")
    assert setup.returncode == 0, setup.stderr
    exports = dict(line.removeprefix("export ").replace("'", "").split("=", 1) for line in setup.stdout.splitlines())
    tls = dict(COMPOSE_FILE=exports["COMPOSE_FILE"], COMPOSE_PROFILES="tls", HUB_DOMAIN=DOMAIN,
               HTTPS_PUBLISH=f"127.0.0.1:{HTTPS}", HTTP_PUBLISH=f"127.0.0.1:{HTTP}")
    try:
        stack.up(**tls)
        check_https(stack, tls, tmp_path)
        run_kernel_in_browser(stack)
    finally:
        stack.compose("rm", "-sf", "caddy", check=False, **tls)
        stack.up()  # plain HTTP again, the proxy published, for the tests after this one
        stack.docker("volume", "rm", "-f", f"{stack.prefix}_caddy-data", check=False)
        hub.stop(stack.env["HUB_ADMIN_USER"])


def check_https(stack, tls: dict, tmp_path) -> None:
    # The proxy has no published port any more: Caddy's are the only ones.
    published = stack.docker("ps", "--filter", f"label=com.docker.compose.project={stack.prefix}",
                             "--format", "{{.Names}} {{.Ports}}").stdout.splitlines()
    assert [line.split()[0] for line in published if "->" in line] == [f"{stack.prefix}-caddy-1"], published

    root = tmp_path / "caddy-root.crt"
    for _ in range(60):  # Caddy creates its CA and the certificate at start
        r = stack.compose("exec", "-T", "caddy", "cat", ROOT_CA, check=False, **tls)
        if r.returncode == 0 and "BEGIN CERTIFICATE" in r.stdout:
            break
        time.sleep(1)
    root.write_text(r.stdout)
    context = ssl.create_default_context(cafile=str(root))  # Caddy's root only: the chain must lead there
    for _ in range(60):
        try:
            conn = PinnedHTTPS(DOMAIN, HTTPS, context=context, timeout=10)
            conn.request("GET", "/hub/login")
            response = conn.getresponse()
            break
        except (OSError, ssl.SSLError) as exc:
            last = exc
            time.sleep(1)
    else:
        pytest.fail(f"no HTTPS answer for {DOMAIN}: {last}")
    assert response.status == 200 and b'name="username"' in response.read()
    assert response.getheader("Strict-Transport-Security") == "max-age=31536000"
    assert conn.sock.getpeercert()["subjectAltName"] == (("DNS", DOMAIN),)
    with pytest.raises(ssl.SSLCertVerificationError):  # the same server, not trusted without the root
        bare = PinnedHTTPS(DOMAIN, HTTPS, context=ssl.create_default_context(), timeout=10)
        bare.request("GET", "/hub/login")

    plain = http.client.HTTPConnection("127.0.0.1", HTTP, timeout=10)
    plain.request("GET", "/hub/login?next=%2Fhub%2F", headers={"Host": DOMAIN})
    redirect = plain.getresponse()
    assert redirect.status in (301, 308)
    assert redirect.getheader("Location") == f"https://{DOMAIN}/hub/login?next=%2Fhub%2F"


def run_kernel_in_browser(stack) -> None:
    from playwright.sync_api import sync_playwright

    admin, base = stack.env["HUB_ADMIN_USER"], f"https://{DOMAIN}:{HTTPS}"
    # Chromium in a network namespace of its own: over HTTP/2 (Caddy) it fails every request in
    # flight when an interface appears, as the new server's veth does on this host
    # (netns_browser.py says how that was found); a user's browser elsewhere never sees those.
    with IsolatedBrowserNetwork([HTTPS], CHROMIUM) as network, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=network.executable, headless=True,
                                    args=[*CHROMIUM_ARGS, f"--host-resolver-rules=MAP {DOMAIN} 127.0.0.1, "
                                                          f"MAP *.{DOMAIN} 127.0.0.1"])
        # The chain to Caddy's root is checked above with Python's ssl; Chromium's own store
        # would need NSS tools to add that root.
        context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 800})
        page = context.new_page()
        sockets, failed, errors = [], [], []
        page.on("websocket", lambda ws: sockets.append(ws.url))
        # What a failure would need to be understood: requests that failed and the page's errors
        page.on("requestfailed", lambda r: failed.append(f"{r.url} {r.failure}"))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            page.goto(f"{base}/hub/login")
            page.fill("input[name=username]", admin)
            page.fill("input[name=password]", stack.env["HUB_ADMIN_PASSWORD"])
            page.click("input[type=submit], button[type=submit]")
            page.goto(f"{base}/hub/spawn")
            expect(page.locator("#spawn_form")).to_be_visible(timeout=15_000)
            page.check("#profile-cpu")
            page.click("#spawn_form [type=submit]")
            page.wait_for_url(f"https://{admin}.{DOMAIN}:{HTTPS}/user/{admin}/lab**", timeout=180_000)
            card = page.locator('.jp-LauncherCard[data-category="Notebook"]').first
            expect(card).to_be_visible(timeout=120_000)
            card.click()
            cell = page.locator(".jp-Notebook .jp-Cell .cm-content").first
            expect(cell).to_be_visible(timeout=60_000)
            # The kernel's status arrives through its websocket (wss://): Idle once connected
            expect(page.locator("#jp-main-statusbar")).to_contain_text("Idle", timeout=90_000)
            cell.click()
            page.keyboard.type("print(6 * 7, 'over TLS')")
            output = page.locator(".jp-OutputArea-output").first
            for _ in range(3):  # a run pressed while the session still settles can be dropped
                page.locator(".jp-Notebook .jp-Cell").first.click()
                page.keyboard.press("Control+Enter")
                try:
                    expect(output).to_contain_text("42 over TLS", timeout=20_000)
                    break
                except AssertionError:
                    continue
            expect(output).to_contain_text("42 over TLS", timeout=20_000)
            page.screenshot(path=ARTIFACTS / "tls-kernel.png")
            # Behind Caddy the proxy leaves X-Forwarded-Proto as https: the hub's login cookie and
            # the server's own are Secure, so a browser never sends them over plain HTTP.
            cookies = {c["name"]: c["secure"] for c in context.cookies() if c["name"].startswith("jupyterhub")}
            secure = bool(cookies) and all(cookies.values()) and "jupyterhub-hub-login" in cookies \
                and any(name.startswith("jupyterhub-user-") for name in cookies)
            doors.door("stranger on the network: read a login cookie sent over plain HTTP (no Secure behind Caddy)",
                       secure, cookies)
            assert secure, cookies
            # What a page or JupyterLab extension served from a user's server can do with the
            # credentials of the person viewing it (here the admin): run in that server's origin.
            seen = page.evaluate(ATTACK, f"{base}")
            doors.door("student: a page from a user's server calls the hub's API as the admin viewing it",
                       seen["api"] != 200 and seen["api_with_xsrf"] != 200, seen)
            doors.door("student: a page from a user's server reads a hub page (its xsrf token) of the admin viewing it",
                       not seen["xsrf"], seen)
            doors.door("student: a page from a user's server frames the GPU console",
                       seen["console_framed"] is not True, seen)
            assert seen["api"] != 200 and seen["api_with_xsrf"] != 200 and not seen["xsrf"], seen
        except Exception as exc:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=ARTIFACTS / "tls-failure.png")
            raise AssertionError(f"{exc}\nfailed requests: {failed}\npage errors: {errors}") from exc
        finally:
            browser.close()
    assert any(url.startswith(f"wss://{admin}.{DOMAIN}:{HTTPS}/user/{admin}/api/kernels/") for url in sockets), sockets


# Runs in a page of a user's server: try to use the hub's cookies (fetch with credentials), to
# read a hub page through a frame (its _xsrf token would unlock the API), and to frame the console.
ATTACK = """async (hub) => {
  const out = {xsrf: null, api_with_xsrf: null, console_framed: null};
  try { out.api = (await fetch(hub + '/hub/api/users', {credentials: 'include'})).status; }
  catch (e) { out.api = 'blocked: ' + e.message; }
  const frame = (url) => new Promise((resolve) => {
    const f = document.createElement('iframe');
    f.onload = () => { let d = null; try { d = f.contentDocument; if (d) d.jhdata = f.contentWindow.jhdata; } catch (e) {}
                       resolve(d); };
    setTimeout(() => resolve(undefined), 8000);
    f.src = url; document.body.appendChild(f);
  });
  let home = await frame(hub + '/hub/home');
  let popup = null;
  if (!home) {  // the hub's pages refuse frames (JupyterHub >= 4.1); a window it opens is no frame
    popup = window.open(hub + '/hub/home');
    for (let i = 0; i < 40 && popup; i++) {
      await new Promise((r) => setTimeout(r, 250));
      try { if (popup.document.readyState === 'complete' && popup.jhdata) break; } catch (e) { break; }
    }
    try { out.popup = !!popup; home = popup.document; home.jhdata = popup.jhdata; } catch (e) { home = null; out.popup = 'blocked: ' + e.message; }
  }
  if (home) {  // the token a hub page carries: its page data, a form, or the cookie
    const input = home.querySelector('input[name=_xsrf]');
    out.xsrf = (home.jhdata && home.jhdata.xsrf_token) || (input && input.value)
               || ((home.cookie || '').match(/_xsrf=([^;]+)/) || [])[1] || null;
  }
  if (out.xsrf) {
    out.api_with_xsrf = (await fetch(hub + '/hub/api/users', {credentials: 'include',
                                                             headers: {'X-XSRFToken': out.xsrf}})).status;
  }
  if (popup) popup.close();
  const consolePage = await frame(hub + '/services/gpu-console/');
  out.console_framed = !!(consolePage && consolePage.body && consolePage.body.innerHTML.length);
  return out;
}"""
