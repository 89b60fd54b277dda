"""Logging in through an OAuth provider, chosen and configured entirely from .env.

``OAUTH_PROVIDER`` picks one of OAuthenticator's authenticators — GitHub, GitLab, Google, or
the generic one for any OpenID Connect provider (Keycloak, Azure AD, Authentik, Dex, …) — and
the other ``OAUTH_*``, ``GITLAB_URL`` and ``OIDC_*`` variables become its traits. A missing or
contradictory value stops the hub at start with a ConfigError that names the variable and the
fix, so a mistake shows in ``docker compose logs hub`` instead of as a 500 at the first login.
"""
import json
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from traitlets.config.loader import ConfigError

from hub.settings.table import given, read

CALLBACK_PATH = "/hub/oauth_callback"
CALLBACK_HINT = f"https://<your host>{CALLBACK_PATH}"
OIDC_ISSUER_HINT = ("Keycloak: https://<host>/realms/<realm>; Azure AD: "
                    "https://login.microsoftonline.com/<tenant id>/v2.0")


@dataclass(frozen=True)
class Provider:
    authenticator_class: str  # OAuthenticator's class, dotted
    name: str                 # as people know it: messages, login button
    app: str                  # where its client id and secret come from
    redirect_field: str       # what the provider calls the callback URL
    orgs: str                 # what OAUTH_ALLOWED_ORGS means here ("" where it means nothing)

    @property
    def section(self) -> str:
        return self.authenticator_class.rsplit(".", 1)[1]


PROVIDERS = {
    "github": Provider(
        "oauthenticator.github.GitHubOAuthenticator", "GitHub",
        "your GitHub OAuth app (GitHub: Settings → Developer settings → OAuth Apps → New OAuth App)",
        "Authorization callback URL", "GitHub organisations or org:team"),
    "gitlab": Provider(
        "oauthenticator.gitlab.GitLabOAuthenticator", "GitLab",
        "your GitLab application (GitLab: Edit profile → Applications, or a group's Settings → "
        "Applications; scopes read_user, plus read_api when OAUTH_ALLOWED_ORGS is set)",
        "Redirect URI", "GitLab group paths"),
    "google": Provider(
        "oauthenticator.google.GoogleOAuthenticator", "Google",
        "an OAuth client ID of type Web application (Google Cloud console → APIs & Services → "
        "Credentials → Create credentials → OAuth client ID)",
        "Authorized redirect URI", "Google Workspace domains"),
    "oidc": Provider(
        "oauthenticator.generic.GenericOAuthenticator", "OpenID Connect",
        "the client you registered with your OpenID Connect provider (Keycloak: the realm's "
        "Clients → Create client, with Client authentication on; Azure AD: App registrations → "
        "New registration, then Certificates & secrets)",
        "redirect URI", ""),
}

# Variables that mean something for one provider only: set for another, they are a mistake.
ONLY_FOR = {
    "GITLAB_URL": "gitlab",
    "OIDC_ISSUER": "oidc", "OIDC_AUTHORIZE_URL": "oidc", "OIDC_TOKEN_URL": "oidc",
    "OIDC_USERDATA_URL": "oidc", "OIDC_CLAIMS_FROM": "oidc", "OIDC_SCOPES": "oidc",
    "OIDC_USERNAME_CLAIM": "oidc", "OIDC_GROUPS_CLAIM": "oidc", "OIDC_LOGIN_SERVICE": "oidc",
    "OAUTH_ALLOWED_GROUPS": "oidc", "OAUTH_ADMIN_GROUPS": "oidc",
}
VARIABLES = ("OAUTH_CLIENT_ID", "OAUTH_CLIENT_SECRET", "OAUTH_CALLBACK_URL", "OAUTH_ALLOWED_USERS",
             "OAUTH_ADMIN_USERS", "OAUTH_ALLOWED_ORGS", "OAUTH_ALLOW_ALL", *ONLY_FOR)

FetchJson = Callable[[str], dict]


def fetch_json(url: str, timeout: float = 10) -> dict:
    """GET a JSON document (the OpenID Connect discovery document)."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


def provider_key(env: Mapping[str, str]) -> str:
    """OAUTH_PROVIDER: none (the embedded login) or a key of PROVIDERS."""
    raw = read(env, "OAUTH_PROVIDER").lower()
    if raw not in ("none", *PROVIDERS):
        raise ConfigError(f"OAUTH_PROVIDER={raw!r} is not one of {', '.join(PROVIDERS)} (or empty for the hub's own "
                          f"login); Keycloak, Azure AD, Authentik, Dex and other OpenID Connect providers are "
                          f"OAUTH_PROVIDER=oidc")
    return raw


def check_unset(env: Mapping[str, str]) -> None:
    """With the embedded login, an OAuth variable that is set means OAUTH_PROVIDER was forgotten."""
    stray = [name for name in VARIABLES if given(env, name)]
    if stray:
        verb, them = ("is", "it") if len(stray) == 1 else ("are", "them")
        raise ConfigError(f"{', '.join(stray)} {verb} set but OAUTH_PROVIDER is empty, so the hub would use its own "
                          f"login and ignore {them}: set OAUTH_PROVIDER to one of {', '.join(PROVIDERS)}, or remove "
                          f"{them} from .env")


def configure_oauth(c, env: Mapping[str, str], key: str, fetch: FetchJson = fetch_json) -> None:
    """Configure OAuthenticator's authenticator for provider ``key`` (a key of PROVIDERS)."""
    provider = PROVIDERS[key]
    for name, only in ONLY_FOR.items():
        if given(env, name) and only != key:
            raise ConfigError(f"{name} is only used with OAUTH_PROVIDER={only}, and OAUTH_PROVIDER is "
                              f"{key}: remove {name} from .env")
    client_id, client_secret, callback = _credentials(env, key, provider)

    users = read(env, "OAUTH_ALLOWED_USERS")
    admins = read(env, "OAUTH_ADMIN_USERS")
    orgs = read(env, "OAUTH_ALLOWED_ORGS")
    groups = read(env, "OAUTH_ALLOWED_GROUPS")
    admin_groups = read(env, "OAUTH_ADMIN_GROUPS")
    allow_all = read(env, "OAUTH_ALLOW_ALL")
    if orgs and not provider.orgs:
        raise ConfigError("OAUTH_ALLOWED_ORGS is for GitHub organisations, GitLab groups and Google "
                          "domains; with OAUTH_PROVIDER=oidc let a group claim decide: set "
                          "OAUTH_ALLOWED_GROUPS instead")
    # With Google, the domains restrict who can log in; with the others they let people in.
    allowing = {"OAUTH_ALLOWED_USERS": users, "OAUTH_ALLOWED_GROUPS": groups,
                "OAUTH_ALLOWED_ORGS": orgs if key != "google" else []}
    if allow_all and any(allowing.values()):
        names = ", ".join(name for name, value in allowing.items() if value)
        raise ConfigError(f"OAUTH_ALLOW_ALL=true lets every {provider.name} account log in, so {names} "
                          f"would change nothing: remove one or the other from .env")
    if not (allow_all or users or admins or orgs or groups or admin_groups):
        rules = "OAUTH_ALLOWED_USERS (usernames)"
        if provider.orgs:
            rules += f", OAUTH_ALLOWED_ORGS ({provider.orgs})"
        if key == "oidc":
            rules += ", OAUTH_ALLOWED_GROUPS (values of the group claim)"
        raise ConfigError(f"OAUTH_PROVIDER={key} would let nobody log in: set {rules} or OAUTH_ADMIN_USERS; "
                          f"or OAUTH_ALLOW_ALL=true to let every {provider.name} account in")

    c.JupyterHub.authenticator_class = provider.authenticator_class
    a = getattr(c, provider.section)
    a.client_id = client_id
    a.client_secret = client_secret
    a.oauth_callback_url = callback
    a.allowed_users = set(users)
    a.admin_users = set(admins)
    a.allow_all = allow_all
    service = provider.name
    if key == "github":
        if orgs:
            a.allowed_organizations = set(orgs)
            a.scope = ["read:org"]  # so private memberships count too
    elif key == "gitlab":
        a.gitlab_url = read(env, "GITLAB_URL").rstrip("/")
        a.scope = ["read_user", "read_api"] if orgs else ["read_user"]
        if orgs:
            a.allowed_gitlab_groups = set(orgs)
    elif key == "google":
        if orgs:
            a.hosted_domain = [domain.lower() for domain in orgs]
            # Everyone in those domains, unless OAUTH_ALLOWED_USERS narrows it down.
            a.allow_all = allow_all or not users
    else:
        service = _configure_oidc(a, env, groups, admin_groups, fetch)
    # The page someone sees who signed in at the provider but is not let in (403).
    a.custom_403_message = (f"You signed in with {service}, but that account is not allowed to use this hub. "
                            f"Ask the hub's administrator to let you in, or sign out of {service} and sign "
                            f"in with an account that is allowed.")


def _credentials(env: Mapping[str, str], key: str, provider: Provider) -> tuple[str, str, str]:
    client_id = read(env, "OAUTH_CLIENT_ID")
    client_secret = read(env, "OAUTH_CLIENT_SECRET")
    callback = read(env, "OAUTH_CALLBACK_URL")
    if not client_id or not client_secret:
        missing = [name for name, value in (("OAUTH_CLIENT_ID", client_id), ("OAUTH_CLIENT_SECRET", client_secret))
                   if not value]
        raise ConfigError(f"OAUTH_PROVIDER={key} needs OAUTH_CLIENT_ID and OAUTH_CLIENT_SECRET, but {' and '.join(missing)} "
                          f"{'is' if len(missing) == 1 else 'are'} empty: copy them from {provider.app}; "
                          f"its {provider.redirect_field} must be OAUTH_CALLBACK_URL, {CALLBACK_HINT}")
    if not callback:
        raise ConfigError(f"OAUTH_PROVIDER={key} needs OAUTH_CALLBACK_URL, the address {provider.name} sends people "
                          f"back to after they sign in: {CALLBACK_HINT}, exactly as it is entered as "
                          f"{provider.redirect_field} in {provider.app}")
    parts = urlsplit(callback)
    if (parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment
            or not parts.path.endswith(CALLBACK_PATH)):
        raise ConfigError(f"OAUTH_CALLBACK_URL={callback!r} is not the hub's callback: it must be an absolute "
                          f"http(s) URL ending in {CALLBACK_PATH}, e.g. OAUTH_CALLBACK_URL={CALLBACK_HINT} "
                          f"(the address people open the hub at), and the same as the {provider.redirect_field} "
                          f"in {provider.app}")
    return client_id, client_secret, callback


def _configure_oidc(a, env: Mapping[str, str], groups: list[str], admin_groups: list[str], fetch: FetchJson) -> str:
    """GenericOAuthenticator for an OpenID Connect provider; returns its name for messages."""
    claims_from = read(env, "OIDC_CLAIMS_FROM")
    issuer = read(env, "OIDC_ISSUER")
    urls = {
        "authorization_endpoint": read(env, "OIDC_AUTHORIZE_URL"),
        "token_endpoint": read(env, "OIDC_TOKEN_URL"),
        "userinfo_endpoint": read(env, "OIDC_USERDATA_URL"),
    }
    variables = {"authorization_endpoint": "OIDC_AUTHORIZE_URL", "token_endpoint": "OIDC_TOKEN_URL",
                 "userinfo_endpoint": "OIDC_USERDATA_URL"}
    if claims_from == "id_token":
        if urls.pop("userinfo_endpoint"):
            raise ConfigError("OIDC_CLAIMS_FROM=id_token reads the claims from the ID token, so OIDC_USERDATA_URL "
                              "is not used: remove one or the other from .env")
    missing = [endpoint for endpoint, value in urls.items() if not value]
    if missing and not issuer:
        raise ConfigError(f"OAUTH_PROVIDER=oidc needs OIDC_ISSUER, the provider's issuer URL ({OIDC_ISSUER_HINT}), "
                          f"or else {', '.join(variables[e] for e in urls)}; missing: "
                          f"{', '.join(variables[e] for e in missing)}")
    if missing:
        document = _discover(issuer, fetch)
        for endpoint in missing:
            value = document.get(endpoint)
            if not isinstance(value, str) or urlsplit(value).scheme not in ("http", "https"):
                raise ConfigError(f"OIDC_ISSUER={issuer}: its discovery document has no {endpoint}; set "
                                  f"{variables[endpoint]} in .env")
            urls[endpoint] = value

    scopes = read(env, "OIDC_SCOPES").replace(",", " ").split()
    if "openid" not in scopes:
        raise ConfigError(f"OIDC_SCOPES={' '.join(scopes)!r} lacks openid, without which the provider gives "
                          f"no OpenID Connect claims: e.g. OIDC_SCOPES=openid profile email")
    a.authorize_url = urls["authorization_endpoint"]
    a.token_url = urls["token_endpoint"]
    if claims_from == "id_token":
        a.userdata_from_id_token = True
    else:
        a.userdata_url = urls["userinfo_endpoint"]
    a.scope = scopes
    a.username_claim = read(env, "OIDC_USERNAME_CLAIM")
    service = read(env, "OIDC_LOGIN_SERVICE")
    a.login_service = service
    if groups or admin_groups:
        # JupyterHub's groups follow the provider's group claim; the allow/admin rules use them.
        a.manage_groups = True
        a.auth_state_groups_key = "oauth_user." + read(env, "OIDC_GROUPS_CLAIM")
        a.allowed_groups = set(groups)
        a.admin_groups = set(admin_groups)
    return service


def _discover(issuer: str, fetch: FetchJson) -> dict:
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        document = fetch(url)
    except Exception as exc:  # noqa: BLE001 - any failure means the same to the person fixing .env
        reason = f"{type(exc).__name__}: {exc}"
    else:
        if isinstance(document, dict):
            return document
        reason = "it is not a JSON object"
    raise ConfigError(f"OIDC_ISSUER={issuer}: could not read its discovery document {url} ({reason}). Check the "
                      f"issuer ({OIDC_ISSUER_HINT}) and that the hub container can reach it, or set "
                      f"OIDC_AUTHORIZE_URL, OIDC_TOKEN_URL and OIDC_USERDATA_URL instead")
