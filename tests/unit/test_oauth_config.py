"""OAuth login from .env (hub/hub_process/config/oauth.py via configure_auth) against a bare Config().

Each provider's mapping is checked twice: in the Config that jupyterhub_config.py builds, and
in a real OAuthenticator instance made from it (so trait names and types are OAuthenticator
17's own). Each error case starts from a configuration that works and changes one thing.
"""
import http.server
import json
import re
import threading
from pathlib import Path

import pytest
from oauthenticator.generic import GenericOAuthenticator
from oauthenticator.github import GitHubOAuthenticator
from oauthenticator.gitlab import GitLabOAuthenticator
from oauthenticator.google import GoogleOAuthenticator
from traitlets.config import Config
from traitlets.config.loader import ConfigError

from hub.hub_process.config import oauth
from hub.settings import readers
from hub.hub_process.config.configure import configure_auth

ROOT = Path(__file__).resolve().parents[2]
CALLBACK = "https://hub.example.org/hub/oauth_callback"
CREDENTIALS = {"OAUTH_CLIENT_ID": "id-123", "OAUTH_CLIENT_SECRET": "secret-456", "OAUTH_CALLBACK_URL": CALLBACK}
ISSUER = "https://sso.example.org/realms/lab"
DISCOVERY = {
    "issuer": ISSUER,
    "authorization_endpoint": f"{ISSUER}/protocol/openid-connect/auth",
    "token_endpoint": f"{ISSUER}/protocol/openid-connect/token",
    "userinfo_endpoint": f"{ISSUER}/protocol/openid-connect/userinfo",
}
# A working configuration per provider; error cases change one variable of it.
VALID = {
    "github": {"OAUTH_PROVIDER": "github", **CREDENTIALS, "OAUTH_ALLOWED_USERS": "alice"},
    "gitlab": {"OAUTH_PROVIDER": "gitlab", **CREDENTIALS, "OAUTH_ALLOWED_ORGS": "lab"},
    "google": {"OAUTH_PROVIDER": "google", **CREDENTIALS, "OAUTH_ALLOWED_ORGS": "example.org"},
    "oidc": {"OAUTH_PROVIDER": "oidc", **CREDENTIALS, "OIDC_ISSUER": ISSUER, "OAUTH_ALLOWED_GROUPS": "gpu"},
}
CLASSES = {"github": GitHubOAuthenticator, "gitlab": GitLabOAuthenticator,
           "google": GoogleOAuthenticator, "oidc": GenericOAuthenticator}


class FakeDiscovery:
    """The provider's discovery document, without a network; records what was asked."""

    def __init__(self, document=None, error=None):
        self.document = DISCOVERY if document is None else document
        self.error = error
        self.urls = []

    def __call__(self, url):
        self.urls.append(url)
        if self.error:
            raise self.error
        return self.document


def no_network(url):
    raise AssertionError(f"no discovery expected, but {url} was fetched")


def configured(env, fetch=None) -> Config:
    c = Config()
    configure_auth(c, env, fetch_json=fetch or FakeDiscovery())
    return c


def authenticator(env, fetch=None):
    """The OAuthenticator instance JupyterHub would make from this .env."""
    c = configured(env, fetch)
    cls = CLASSES[env["OAUTH_PROVIDER"].lower()]
    assert c.JupyterHub.authenticator_class == f"{cls.__module__}.{cls.__name__}"
    return cls(config=c)


# ---- the two readers OAuth added -------------------------------------------------------

def test_name_list():
    assert readers.name_list({"L": " alice, bob ,,Team A "}, "L") == ["alice", "bob", "Team A"]
    assert readers.name_list({"L": " "}, "L") == readers.name_list({}, "L") == []


@pytest.mark.parametrize("raw", ["https://sso.example.org/realms/lab", "http://idp:9400", "https://h/p?x=1"])
def test_url(raw):
    assert readers.url({"U": raw}, "U", "https://e.org") == raw
    assert readers.url({}, "U", "https://e.org") == "" and readers.url({}, "U", "x", "https://d.org") == "https://d.org"


@pytest.mark.parametrize("raw", ["sso.example.org", "/realms/lab", "ftp://h/x", "https://", "https://h/#frag", "https:///path"])
def test_url_rejects_with_an_example(raw):
    with pytest.raises(ConfigError, match=r"^U=.* is not an absolute http\(s\) URL, e\.g\. U=https://e\.org$"):
        readers.url({"U": raw}, "U", "https://e.org")


# ---- the embedded login stays the default ------------------------------------------------------

ALL_EMPTY = {name: "" for name in ("OAUTH_PROVIDER", *oauth.VARIABLES)}


def compose_defaults() -> dict[str, str]:
    """What the hub container gets for the OAuth variables when .env sets none of them."""
    text = (ROOT / "docker-compose.yml").read_text()
    found = dict(re.findall(r"^\s+[A-Z_]+: \$\{((?:OAUTH|OIDC|GITLAB)_[A-Z_]+):-([^}]*)\}$", text, re.MULTILINE))
    assert set(found) == {"OAUTH_PROVIDER", *oauth.VARIABLES}, "compose must pass every OAuth variable to the hub"
    return found


@pytest.mark.parametrize("value", ["", "none", "None", "  "])
def test_no_provider_is_the_embedded_login_exactly_as_before(value):
    c = Config()
    env = {**compose_defaults(), "OAUTH_PROVIDER": value, "HUB_ADMIN_USER": "boss"}
    configure_auth(c, env, fetch_json=no_network)
    before = Config()  # what configure_auth set before OAuth existed
    before.JupyterHub.authenticator_class = "hub.hub_process.config.native_auth.SeededNativeAuthenticator"
    before.Authenticator.admin_users = {"boss"}
    before.SeededNativeAuthenticator.initial_admin_password_file = "/srv/jupyterhub/state/admin-password"
    before.NativeAuthenticator.open_signup = False
    before.NativeAuthenticator.minimum_password_length = 8
    before.NativeAuthenticator.check_common_password = True
    before.NativeAuthenticator.allow_all = True
    assert c == before


@pytest.mark.parametrize("name", oauth.VARIABLES)
def test_an_oauth_variable_without_provider_stops_the_hub(name):
    with pytest.raises(ConfigError, match=rf"^{name} is set but OAUTH_PROVIDER is empty.*set OAUTH_PROVIDER to one of github, gitlab, google, oidc"):
        configured({**ALL_EMPTY, name: "x"})


def test_unknown_provider_says_which_exist_and_where_keycloak_and_azure_go():
    with pytest.raises(ConfigError, match=r"OAUTH_PROVIDER='azure' is not one of github, gitlab, google, oidc.*Azure AD.*OAUTH_PROVIDER=oidc"):
        configured({**VALID["oidc"], "OAUTH_PROVIDER": "Azure"})


# ---- each provider's mapping --------------------------------------------------------------------

@pytest.mark.parametrize("key", VALID)
def test_common_settings_of_every_provider(key):
    a = authenticator({**VALID[key], "OAUTH_PROVIDER": key.upper(), "OAUTH_ADMIN_USERS": "root, Chief ,"})
    assert (a.client_id, a.client_secret, a.oauth_callback_url) == ("id-123", "secret-456", CALLBACK)
    assert a.get_callback_url() == CALLBACK
    assert a.admin_users == {"root", "Chief"}
    assert "not allowed to use this hub" in a.custom_403_message


def test_github_users_admins_organisations_and_teams():
    env = {**VALID["github"], "OAUTH_ALLOWED_USERS": "alice,bob", "OAUTH_ADMIN_USERS": "carol",
           "OAUTH_ALLOWED_ORGS": "my-lab, my-org:gpu-users"}
    c = configured(env, no_network)
    assert c.JupyterHub.authenticator_class == "oauthenticator.github.GitHubOAuthenticator"
    a = authenticator(env, no_network)
    assert a.allowed_users == {"alice", "bob"} and a.admin_users == {"carol"}
    assert a.allowed_organizations == {"my-lab", "my-org:gpu-users"}
    assert a.scope == ["read:org"]  # so that private org memberships count
    assert a.allow_all is False
    assert a.authorize_url == "https://github.com/login/oauth/authorize"
    assert a.login_service == "GitHub"


def test_github_without_organisations_asks_for_no_scope():
    a = authenticator(VALID["github"], no_network)
    assert a.scope == [] and a.allowed_organizations == set()


def test_gitlab_groups_and_self_hosted_url():
    a = authenticator({**VALID["gitlab"], "OAUTH_ALLOWED_ORGS": "lab,org/gpu-users",
                       "GITLAB_URL": "https://git.example.org/"}, no_network)
    assert a.allowed_gitlab_groups == {"lab", "org/gpu-users"}
    assert a.scope == ["read_user", "read_api"]  # the group membership API needs read_api
    assert a.gitlab_url == "https://git.example.org"
    assert a.authorize_url == "https://git.example.org/oauth/authorize"
    assert a.userdata_url == "https://git.example.org/api/v4/user"


def test_gitlab_defaults_to_gitlab_com_and_read_user():
    a = authenticator({**VALID["gitlab"], "OAUTH_ALLOWED_ORGS": "", "OAUTH_ALLOWED_USERS": "alice"}, no_network)
    assert a.gitlab_url == "https://gitlab.com" and a.scope == ["read_user"]
    assert a.allowed_users == {"alice"} and a.allowed_gitlab_groups == set()


def test_google_domain_lets_everyone_of_it_in():
    a = authenticator({**VALID["google"], "OAUTH_ALLOWED_ORGS": "Example.org"}, no_network)
    assert a.hosted_domain == ["example.org"]
    assert a.allow_all is True


def test_google_domain_with_users_lets_only_those_in():
    a = authenticator({**VALID["google"], "OAUTH_ALLOWED_ORGS": "a.edu,b.edu", "OAUTH_ALLOWED_USERS": "x@a.edu"},
                      no_network)
    assert a.hosted_domain == ["a.edu", "b.edu"]
    assert a.allow_all is False and a.allowed_users == {"x@a.edu"}


def test_google_users_without_domain():
    a = authenticator({**VALID["google"], "OAUTH_ALLOWED_ORGS": "", "OAUTH_ALLOWED_USERS": "x@gmail.com"}, no_network)
    assert a.hosted_domain == [] and a.allow_all is False and a.allowed_users == {"x@gmail.com"}


@pytest.mark.parametrize("key", VALID)
def test_allow_all_when_asked_for(key):
    env = {**VALID[key], "OAUTH_ALLOWED_USERS": "", "OAUTH_ALLOWED_GROUPS": "", "OAUTH_ALLOW_ALL": "true"}
    if key != "google":
        env["OAUTH_ALLOWED_ORGS"] = ""
    assert authenticator(env).allow_all is True


def test_oidc_discovery_groups_and_claims():
    fetch = FakeDiscovery()
    env = {**VALID["oidc"], "OIDC_ISSUER": ISSUER + "/", "OAUTH_ALLOWED_USERS": "guest",
           "OAUTH_ALLOWED_GROUPS": "gpu-users, staff", "OAUTH_ADMIN_GROUPS": "hub-admins",
           "OIDC_GROUPS_CLAIM": "realm_access.roles", "OIDC_USERNAME_CLAIM": "email",
           "OIDC_LOGIN_SERVICE": "Lab SSO", "OIDC_SCOPES": "openid, profile email roles"}
    a = authenticator(env, fetch)
    assert fetch.urls == [f"{ISSUER}/.well-known/openid-configuration"]
    assert a.authorize_url == DISCOVERY["authorization_endpoint"]
    assert a.token_url == DISCOVERY["token_endpoint"]
    assert a.userdata_url == DISCOVERY["userinfo_endpoint"]
    assert a.userdata_from_id_token is False
    assert a.scope == ["openid", "profile", "email", "roles"]
    assert a.username_claim == "email"
    assert a.login_service == "Lab SSO"
    assert a.manage_groups is True
    assert a.auth_state_groups_key == "oauth_user.realm_access.roles"
    assert a.allowed_groups == {"gpu-users", "staff"} and a.admin_groups == {"hub-admins"}
    assert a.allowed_users == {"guest"}
    assert "You signed in with Lab SSO" in a.custom_403_message


def test_oidc_defaults():
    a = authenticator(VALID["oidc"])
    assert a.scope == ["openid", "profile", "email"]
    assert a.username_claim == "preferred_username"
    assert a.auth_state_groups_key == "oauth_user.groups"
    assert a.login_service == "OpenID Connect"


def test_oidc_without_group_rules_leaves_groups_alone():
    a = authenticator({**VALID["oidc"], "OAUTH_ALLOWED_GROUPS": "", "OAUTH_ALLOWED_USERS": "alice"})
    assert a.manage_groups is False and a.allowed_groups == set()


def test_oidc_explicit_urls_override_discovery():
    """The browser may reach the provider at another address than the hub does."""
    fetch = FakeDiscovery()
    a = authenticator({**VALID["oidc"], "OIDC_AUTHORIZE_URL": "http://127.0.0.1:9400/oauth2/authorize"}, fetch)
    assert a.authorize_url == "http://127.0.0.1:9400/oauth2/authorize"
    assert a.token_url == DISCOVERY["token_endpoint"]
    assert len(fetch.urls) == 1


def test_oidc_all_urls_explicit_needs_no_issuer_and_no_discovery():
    env = {**VALID["oidc"], "OIDC_ISSUER": "", "OIDC_AUTHORIZE_URL": "https://idp/authorize",
           "OIDC_TOKEN_URL": "https://idp/token", "OIDC_USERDATA_URL": "https://idp/userinfo"}
    a = authenticator(env, no_network)
    assert (a.authorize_url, a.token_url, a.userdata_url) == ("https://idp/authorize", "https://idp/token", "https://idp/userinfo")


def test_oidc_claims_from_id_token():
    """Azure AD's userinfo lacks preferred_username and groups; its ID token has them."""
    fetch = FakeDiscovery(document={k: v for k, v in DISCOVERY.items() if k != "userinfo_endpoint"})
    a = authenticator({**VALID["oidc"], "OIDC_CLAIMS_FROM": "id_token"}, fetch)
    assert a.userdata_from_id_token is True and a.userdata_url == ""
    assert a.token_url == DISCOVERY["token_endpoint"]


def test_oidc_discovery_over_http():
    """The default fetcher reads a real discovery document from a server on loopback."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({**DISCOVERY, "authorization_endpoint": "http://idp/auth"}).encode()
            status = 200 if self.path == "/realm/.well-known/openid-configuration" else 404
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        c = Config()
        configure_auth(c, {**VALID["oidc"], "OIDC_ISSUER": f"{base}/realm"})
        assert c.GenericOAuthenticator.authorize_url == "http://idp/auth"
        with pytest.raises(ConfigError, match=r"could not read its discovery document .*/wrong/\.well-known/openid-configuration \(HTTPError: HTTP Error 404"):
            configure_auth(Config(), {**VALID["oidc"], "OIDC_ISSUER": f"{base}/wrong"})
    finally:
        server.shutdown()
        server.server_close()


# ---- every mistake stops the hub with the variable and the fix ---------------------------------

ERRORS = [
    # (provider, changed variables, what the message must say)
    ("github", {"OAUTH_CLIENT_ID": ""},
     r"OAUTH_PROVIDER=github needs OAUTH_CLIENT_ID and OAUTH_CLIENT_SECRET, but OAUTH_CLIENT_ID is empty: copy them from your GitHub OAuth app \(GitHub: Settings → Developer settings → OAuth Apps.*\); its Authorization callback URL must be OAUTH_CALLBACK_URL, https://<your host>/hub/oauth_callback"),
    ("gitlab", {"OAUTH_CLIENT_SECRET": " "},
     r"OAUTH_PROVIDER=gitlab needs .*, but OAUTH_CLIENT_SECRET is empty: copy them from your GitLab application .*; its Redirect URI must be"),
    ("google", {"OAUTH_CLIENT_ID": "", "OAUTH_CLIENT_SECRET": ""},
     r"OAUTH_PROVIDER=google needs .*, but OAUTH_CLIENT_ID and OAUTH_CLIENT_SECRET are empty: copy them from .*Google Cloud console .*; its Authorized redirect URI"),
    ("oidc", {"OAUTH_CLIENT_SECRET": ""},
     r"OAUTH_PROVIDER=oidc needs .* registered with your OpenID Connect provider \(Keycloak: .*Azure AD: "),
    ("github", {"OAUTH_CALLBACK_URL": ""},
     r"OAUTH_PROVIDER=github needs OAUTH_CALLBACK_URL, .*https://<your host>/hub/oauth_callback, exactly as it is entered as Authorization callback URL"),
    ("oidc", {"OAUTH_CALLBACK_URL": "/hub/oauth_callback"}, r"OAUTH_CALLBACK_URL='/hub/oauth_callback' is not the hub's callback: it must be an absolute http\(s\) URL ending in /hub/oauth_callback"),
    ("oidc", {"OAUTH_CALLBACK_URL": "hub.example.org/hub/oauth_callback"}, r"OAUTH_CALLBACK_URL=.* is not the hub's callback"),
    ("oidc", {"OAUTH_CALLBACK_URL": "ftp://hub.example.org/hub/oauth_callback"}, r"OAUTH_CALLBACK_URL=.* is not the hub's callback"),
    ("google", {"OAUTH_CALLBACK_URL": "https://hub.example.org/oauth_callback"}, r"OAUTH_CALLBACK_URL=.* is not the hub's callback.*Authorized redirect URI"),
    ("github", {"OAUTH_CALLBACK_URL": "https://hub.example.org/hub/login"}, r"OAUTH_CALLBACK_URL=.* is not the hub's callback"),
    ("github", {"OAUTH_CALLBACK_URL": CALLBACK + "?next=/"}, r"OAUTH_CALLBACK_URL=.* is not the hub's callback"),
    ("github", {"OAUTH_ALLOWED_USERS": ""},
     r"OAUTH_PROVIDER=github would let nobody log in: set OAUTH_ALLOWED_USERS \(usernames\), OAUTH_ALLOWED_ORGS \(GitHub organisations or org:team\) or OAUTH_ADMIN_USERS; or OAUTH_ALLOW_ALL=true to let every GitHub account in"),
    ("gitlab", {"OAUTH_ALLOWED_ORGS": ""}, r"OAUTH_PROVIDER=gitlab would let nobody log in: .*OAUTH_ALLOWED_ORGS \(GitLab group paths"),
    ("google", {"OAUTH_ALLOWED_ORGS": " , "}, r"OAUTH_PROVIDER=google would let nobody log in: .*OAUTH_ALLOWED_ORGS \(Google Workspace domains"),
    ("oidc", {"OAUTH_ALLOWED_GROUPS": ""}, r"OAUTH_PROVIDER=oidc would let nobody log in: set OAUTH_ALLOWED_USERS \(usernames\), OAUTH_ALLOWED_GROUPS \(values of the group claim\)"),
    ("github", {"OAUTH_ALLOW_ALL": "true"}, r"OAUTH_ALLOW_ALL=true lets every GitHub account log in, so OAUTH_ALLOWED_USERS would change nothing"),
    ("oidc", {"OAUTH_ALLOW_ALL": "yes"}, r"OAUTH_ALLOW_ALL=true lets every OpenID Connect account log in, so OAUTH_ALLOWED_GROUPS would change nothing"),
    ("gitlab", {"OAUTH_ALLOW_ALL": "1"}, r"so OAUTH_ALLOWED_ORGS would change nothing"),
    ("google", {"OAUTH_ALLOW_ALL": "true", "OAUTH_ALLOWED_USERS": "x@example.org"}, r"so OAUTH_ALLOWED_USERS would change nothing"),
    ("github", {"OAUTH_ALLOW_ALL": "maybe"}, r"OAUTH_ALLOW_ALL='maybe' is not a yes/no value"),
    ("oidc", {"OAUTH_ALLOWED_ORGS": "lab"}, r"OAUTH_ALLOWED_ORGS is for GitHub organisations, GitLab groups and Google domains; with OAUTH_PROVIDER=oidc .*set OAUTH_ALLOWED_GROUPS instead"),
    ("github", {"OAUTH_ALLOWED_GROUPS": "gpu"}, r"OAUTH_ALLOWED_GROUPS is only used with OAUTH_PROVIDER=oidc, and OAUTH_PROVIDER is github: remove OAUTH_ALLOWED_GROUPS from .env"),
    ("gitlab", {"OAUTH_ADMIN_GROUPS": "admins"}, r"OAUTH_ADMIN_GROUPS is only used with OAUTH_PROVIDER=oidc"),
    ("google", {"OIDC_ISSUER": ISSUER}, r"OIDC_ISSUER is only used with OAUTH_PROVIDER=oidc, and OAUTH_PROVIDER is google"),
    ("oidc", {"GITLAB_URL": "https://git.example.org"}, r"GITLAB_URL is only used with OAUTH_PROVIDER=gitlab, and OAUTH_PROVIDER is oidc"),
    ("gitlab", {"GITLAB_URL": "git.example.org"}, r"GITLAB_URL='git.example.org' is not an absolute http\(s\) URL, e.g. GITLAB_URL=https://gitlab.example.org"),
    ("oidc", {"OIDC_ISSUER": ""},
     r"OAUTH_PROVIDER=oidc needs OIDC_ISSUER, the provider's issuer URL \(Keycloak: https://<host>/realms/<realm>; Azure AD: https://login.microsoftonline.com/<tenant id>/v2.0\), or else OIDC_AUTHORIZE_URL, OIDC_TOKEN_URL, OIDC_USERDATA_URL; missing: OIDC_AUTHORIZE_URL, OIDC_TOKEN_URL, OIDC_USERDATA_URL"),
    ("oidc", {"OIDC_ISSUER": "", "OIDC_AUTHORIZE_URL": "https://idp/a", "OIDC_USERDATA_URL": "https://idp/u"}, r"missing: OIDC_TOKEN_URL$"),
    ("oidc", {"OIDC_ISSUER": "sso.example.org"}, r"OIDC_ISSUER='sso.example.org' is not an absolute http\(s\) URL"),
    ("oidc", {"OIDC_TOKEN_URL": "/token"}, r"OIDC_TOKEN_URL='/token' is not an absolute http\(s\) URL"),
    ("oidc", {"OIDC_CLAIMS_FROM": "saml"}, r"OIDC_CLAIMS_FROM='saml' is not one of userinfo, id_token"),
    ("oidc", {"OIDC_CLAIMS_FROM": "id_token", "OIDC_USERDATA_URL": "https://idp/u"}, r"OIDC_CLAIMS_FROM=id_token reads the claims from the ID token, so OIDC_USERDATA_URL is not used"),
    ("oidc", {"OIDC_SCOPES": "profile email"}, r"OIDC_SCOPES='profile email' lacks openid.*e.g. OIDC_SCOPES=openid profile email"),
]


@pytest.mark.parametrize("key,change,message", ERRORS, ids=[f"{k}-{'+'.join(c)}" for k, c, _ in ERRORS])
def test_mistakes_stop_the_hub_with_the_fix(key, change, message):
    configured(VALID[key])  # works as it is ...
    with pytest.raises(ConfigError, match=message):
        configured({**VALID[key], **change})  # ... and fails because of the change


@pytest.mark.parametrize("fetch,message", [
    (FakeDiscovery(error=OSError("Name or service not known")),
     r"OIDC_ISSUER=https://sso.example.org/realms/lab: could not read its discovery document https://sso.example.org/realms/lab/\.well-known/openid-configuration \(OSError: Name or service not known\)\. Check the issuer \(Keycloak: .*\) and that the hub container can reach it, or set OIDC_AUTHORIZE_URL, OIDC_TOKEN_URL and OIDC_USERDATA_URL instead"),
    (FakeDiscovery(document=["not", "an", "object"]), r"could not read its discovery document .*\(it is not a JSON object\)"),
    (FakeDiscovery(document={**DISCOVERY, "userinfo_endpoint": None}), r"its discovery document has no userinfo_endpoint; set OIDC_USERDATA_URL in .env"),
    (FakeDiscovery(document={**DISCOVERY, "token_endpoint": "/relative"}), r"its discovery document has no token_endpoint; set OIDC_TOKEN_URL"),
])
def test_discovery_failures_stop_the_hub_with_the_fix(fetch, message):
    with pytest.raises(ConfigError, match=message):
        configured(VALID["oidc"], fetch)
