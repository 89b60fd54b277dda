"""The embedded login used when no OAuth provider is configured.

NativeAuthenticator lets people sign up and an admin approve them. Left alone, the admin
account is whoever signs up first under the admin's name; here the admin account is created
at hub start with the initial password that gpuhub-init wrote (from HUB_ADMIN_PASSWORD, or
generated), so that race never opens.

NativeAuthenticator 1.3.0 (the newest) was written for JupyterHub 5: its login handler times
each login with ``self.statsd``, which JupyterHub 6 removed (jupyterhub#5407), so every login
would be a 500. StatsdFreeLoginHandler gives it a timer that records nothing (JupyterHub 6's
own login metrics are Prometheus'), and get_handlers serves it at /login in its place.

For a class of students who don't trust each other (docs/security.md, "Accounts"):

- bcrypt (about 0.2 s a check) runs in a small thread pool, never on the hub's event loop, and
  an unknown name costs a check too (no timing tells which names exist);
- failed logins back off per user and address, per address and per user (hub/login_backoff.py):
  a try during a wait is answered at once with 429 and the seconds left, unchecked;
- a name the hub already knows (an admin or the API created it: rosters, OAuth users) cannot be
  claimed by signing up, nor a pending sign-up of such a name approved; the person gets a
  one-time set-password link from an admin instead (/hub/invite).
"""
import asyncio
import base64
import hashlib
import hmac
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import bcrypt
from jupyterhub import orm
from nativeauthenticator import NativeAuthenticator
from nativeauthenticator.handlers import (LocalBase, LoginHandler, SignUpHandler, ToggleAuthorizationHandler,
                                          admin_users_scope)
from nativeauthenticator.orm import UserInfo
from tornado import web
from traitlets import Float, Integer, List, Unicode

from hub.login_backoff import Limits, LoginBackoff, client_address

# A hash to check passwords of unknown names against, so that they take as long as known ones.
_DUMMY_HASH = bcrypt.hashpw(b"no such user", bcrypt.gensalt())


class _NoTimer:
    def start(self):
        return self

    def stop(self, send=True):
        pass


class _NoStatsd:
    """The part of a statsd client NativeAuthenticator's LoginHandler.post uses."""

    def timer(self, stat, rate=1):
        return _NoTimer()


class StatsdFreeLoginHandler(LoginHandler):
    statsd = _NoStatsd()

    async def post(self):
        """NativeAuthenticator's login, with the back-off checked before any password, and
        without its second bcrypt check on the event loop (for the "not authorized" message)."""
        authenticator = self.authenticator
        username = self.get_body_argument("username", "", strip=False)
        wait = await authenticator.login_wait(self, username) if hasattr(authenticator, "login_wait") else 0
        if wait:
            self.set_status(429)
            self.set_header("Retry-After", str(int(wait) + 1))
            html = await self._render(login_error=f"Too many failed logins: try again in {int(wait) + 1} s.",
                                      username=username)
            return self.finish(html)
        data = {arg: self.get_argument(arg, strip=False) for arg in self.request.arguments}
        user = await self.login_user(data)
        if user:
            self._jupyterhub_user = user
            return self.redirect(self.get_next_url(user))
        error = "Invalid username or password."
        if getattr(self, "_gpuhub_not_authorized", False):
            error = f"User {username} has not been authorized by an administrator yet."
        self.set_status(403)
        html = await self._render(login_error=error, username=username)
        self.finish(html)


def hub_knows(db, username: str) -> bool:
    """Whether the hub has a user of this name (an admin, a roster, the API or OAuth made it)."""
    return orm.User.find(db, username) is not None


class GuardedSignUpHandler(SignUpHandler):
    """Sign-up that cannot claim a name the hub already knows, hashes off the event loop, and
    counts against the address's back-off (so a script cannot fill the approval list)."""

    async def post(self):
        authenticator = self.authenticator
        if not authenticator.enable_signup:
            raise web.HTTPError(404)
        username = authenticator.normalize_username(self.get_body_argument("username", "", strip=False))
        address = await authenticator._address(self)
        wait = authenticator.signup_backoff.wait("", address, time.monotonic())
        if wait:
            raise web.HTTPError(429, f"Too many sign-ups from this address: try again in {int(wait) + 1} s")
        authenticator.signup_backoff.failed("", address, time.monotonic())  # every sign-up counts
        if username and hub_knows(self.db, username) and not authenticator.user_exists(username):
            html = await self.render_template(
                "signup.html", ask_email=authenticator.ask_email_on_signup, two_factor_auth=authenticator.allow_2fa,
                recaptcha_key=authenticator.recaptcha_key, tos=authenticator.tos, alert="alert-danger",
                result_message=(f"The name {username} is already in use on this hub. If it is yours, ask an "
                                "administrator for a link to set your password."))
            self.set_status(409)
            return self.finish(html)
        password = self.get_body_argument("signup_password", "", strip=False)
        key = (username, password)
        authenticator._prehashed[key] = await authenticator.hash_password(password)
        try:
            return await super().post()
        finally:
            authenticator._prehashed.pop(key, None)


def claimed_by_someone_else(db, username: str) -> bool:
    """A hub user of this name who has never been active: made by an admin, a roster or the API
    for a person who has not logged in yet. (One who has been active and whose sign-up an admin
    un-authorized and now authorizes again is the same person.)"""
    user = orm.User.find(db, username)
    return user is not None and user.last_activity is None


class GuardedToggleAuthorizationHandler(ToggleAuthorizationHandler):
    """Approving a pending sign-up whose name the hub already knows would hand that account to
    whoever signed up: refused with what to do instead."""

    @admin_users_scope
    async def get(self, slug):
        info = self.authenticator.get_user(slug)
        if info is not None and not info.is_authorized and claimed_by_someone_else(self.db, info.username):
            raise web.HTTPError(409, (
                f"A pending sign-up for {info.username}, a name the hub already knows (an admin, a roster or the "
                f"API created it). Approving it would give that account to whoever signed up. Discard the "
                f"sign-up and send {info.username} a set-password link from /hub/invite."))
        return await super().get(slug)


class InviteHandler(LocalBase):
    """/hub/invite: an admin makes a one-time set-password link for a name the hub knows."""

    @admin_users_scope
    async def get(self):
        await self._page()

    @admin_users_scope
    async def post(self):
        if self.get_body_argument("all", ""):  # a class: one link for everyone without a password
            links = [(name, self.authenticator.set_password_link(self, name)) for name in self._without_password()]
            return await self._page(all_links=links)
        username = self.authenticator.normalize_username(self.get_body_argument("username", "", strip=True))
        if not username or not hub_knows(self.db, username):
            self.set_status(404)
            return await self._page(error=f"No user {username!r} on this hub: add them first (admin page or roster).")
        link = self.authenticator.set_password_link(self, username)
        await self._page(username=username, link=link)

    def _without_password(self) -> list[str]:
        known = sorted(u.name for u in self.db.query(orm.User).all())
        return [name for name in known if self.authenticator.get_user(name) is None]

    async def _page(self, **extra):
        html = await self.render_template("gpuhub_invite.html", users_without_password=self._without_password(),
                                          **extra)
        self.finish(html)


class SetPasswordHandler(LocalBase):
    """/hub/set-password/<token>: the person the link was made for sets their password once."""

    async def get(self, token):
        username = self._check(token)
        html = await self.render_template("gpuhub_set_password.html", username=username, token=token)
        self.finish(html)

    async def post(self, token):
        username = self._check(token)
        authenticator = self.authenticator
        password = self.get_body_argument("password", "", strip=False)
        if password != self.get_body_argument("password_confirmation", "", strip=False):
            error = "The two passwords differ."
        elif not authenticator.is_password_strong(password):
            error = (f"Choose a password of at least {authenticator.minimum_password_length} characters "
                     "that is not a common one.")
        else:
            authenticator.store_password(username, await authenticator.hash_password(password))
            html = await self.render_template("gpuhub_set_password.html", username=username, done=True)
            return self.finish(html)
        self.set_status(400)
        html = await self.render_template("gpuhub_set_password.html", username=username, token=token, error=error)
        self.finish(html)

    def _check(self, token: str) -> str:
        username = self.authenticator.check_set_password_token(self, token)
        if username is None:
            raise web.HTTPError(404, "This link is not valid (any more): links work once and expire; "
                                     "ask an administrator for a new one.")
        return username


def without_statsd(handlers: list[tuple]) -> list[tuple]:
    """NativeAuthenticator's handlers with its LoginHandler swapped for StatsdFreeLoginHandler."""
    return [(route, StatsdFreeLoginHandler if handler is LoginHandler else handler, *rest)
            for route, handler, *rest in handlers]


GUARDED = {SignUpHandler: GuardedSignUpHandler, ToggleAuthorizationHandler: GuardedToggleAuthorizationHandler}


class SeededNativeAuthenticator(NativeAuthenticator):
    initial_admin_password_file = Unicode(
        "",
        config=True,
        help="""File with the initial password of the admin users, created on first start.

        Used only to create an admin account that does not exist yet; once created, the admin
        changes the password at /hub/change-password and this file no longer matters.
        """,
    )

    hash_threads = Integer(
        2,
        config=True,
        help="""Threads that check and hash passwords (bcrypt, about 0.2 s each), off the event loop.

        A storm of logins queues here instead of freezing the hub; more threads than CPUs only
        add waiting.""",
    )
    login_free_failures = Integer(
        5,
        config=True,
        help="""Failed logins of one user from one address before each further try must wait
        (1 s, doubling up to ``login_max_wait``). Per address alone the free count is 6 times
        this (students behind one NAT), per user alone 4 times, and the per-user wait does not
        apply from an address this user logged in from before.""",
    )
    login_max_wait = Float(
        300.0,
        config=True,
        help="The longest wait (seconds) after failed logins; a refused try does not extend it.",
    )
    trusted_proxy_hosts = List(
        Unicode(),
        ["caddy"],
        config=True,
        help="""Hosts in front of the proxy whose X-Forwarded-For entries are skipped when finding
        a login's address (the TLS profile's Caddy). Names that do not resolve are ignored.""",
    )
    set_password_link_hours = Float(
        72.0,
        config=True,
        help="How long a set-password link from /hub/invite stays valid (it also works only once).",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        free = self.login_free_failures
        self.backoff = LoginBackoff(Limits(pair_free=free, address_free=6 * free, user_free=4 * free,
                                           cap=self.login_max_wait))
        # A class signing up from one lab's address: 100 sign-ups an hour from one address are free.
        self.signup_backoff = LoginBackoff(Limits(pair_free=100, address_free=100, user_free=10**9,
                                                  cap=self.login_max_wait))
        self._hash_pool = ThreadPoolExecutor(max(1, self.hash_threads), thread_name_prefix="bcrypt")
        self._trusted: tuple[float, frozenset[str]] = (0.0, frozenset())
        self._prehashed: dict[tuple[str, str], bytes] = {}
        self.seed_admin_accounts()

    def get_handlers(self, app):
        handlers = [(route, GUARDED.get(handler, handler), *rest)
                    for route, handler, *rest in without_statsd(super().get_handlers(app))]
        return [*handlers, (r"/invite", InviteHandler), (r"/set-password/([^/]+)", SetPasswordHandler)]

    # -- passwords off the event loop -------------------------------------------------------

    async def hash_password(self, password: str) -> bytes:
        return await asyncio.get_running_loop().run_in_executor(
            self._hash_pool, bcrypt.hashpw, password.encode(), bcrypt.gensalt())

    async def check_password(self, password: str, hashed: bytes) -> bool:
        return await asyncio.get_running_loop().run_in_executor(
            self._hash_pool, bcrypt.checkpw, password.encode(), hashed)

    def create_user(self, username, password, **kwargs):
        """NativeAuthenticator's create_user, with the hash the sign-up handler made off the
        event loop (its own hashes on the loop). Self-approval by e-mail is not offered here."""
        username = self.normalize_username(username)
        if (self.user_exists(username) or not self.validate_username(username)
                or not self.is_password_strong(password) or not self.enable_signup):
            return None
        hashed = self._prehashed.get((username, password)) or bcrypt.hashpw(password.encode(), bcrypt.gensalt())
        infos = {"username": username, "password": hashed, **kwargs}
        if self.open_signup or username in self.get_authed_users():
            infos["is_authorized"] = True
        try:
            info = UserInfo(**infos)
        except AssertionError:  # NativeAuthenticator's e-mail check
            return None
        self.db.add(info)
        self.db.commit()
        return info

    def store_password(self, username: str, hashed: bytes) -> None:
        """Set (or create, authorized) the account's password: a set-password link was used."""
        username = self.normalize_username(username)
        info = self.get_user(username)
        if info is None:
            self.db.add(UserInfo(username=username, password=hashed, is_authorized=True))
        else:
            info.password, info.is_authorized = hashed, True
        self.db.commit()
        self.log.info("Password of %s set with a set-password link", username)

    # -- back-off ----------------------------------------------------------------------------

    async def _address(self, handler) -> str:
        stamp, trusted = self._trusted
        if time.monotonic() - stamp > 60:
            loop, found = asyncio.get_running_loop(), set()
            for host in self.trusted_proxy_hosts:
                try:
                    infos = await asyncio.wait_for(loop.getaddrinfo(host, None, type=socket.SOCK_STREAM), 2)
                except (OSError, asyncio.TimeoutError):
                    continue
                found.update(info[4][0] for info in infos)
            trusted = frozenset(found)
            self._trusted = (time.monotonic(), trusted)
        request = handler.request
        peer = getattr(request.connection.context, "_orig_remote_ip", None) or request.remote_ip
        return client_address(request.headers.get("X-Forwarded-For"), peer, trusted)

    async def login_wait(self, handler, username: str) -> float:
        return self.backoff.wait(self.normalize_username(username), await self._address(handler), time.monotonic())

    async def authenticate(self, handler, data):
        username = self.normalize_username(data.get("username") or "")
        password = data.get("password") or ""
        address = await self._address(handler)
        if self.backoff.wait(username, address, time.monotonic()):
            return None
        info = self.get_user(username) if username else None
        valid = await self.check_password(password, info.password if info is not None else _DUMMY_HASH)
        if info is not None and valid and info.has_2fa:
            valid = info.is_valid_token(data.get("2fa"))
        if info is None or not valid:
            self.backoff.failed(username, address, time.monotonic())
            self.log.warning("Failed login for %r from %s", username, address)
            return None
        if not info.is_authorized:
            handler._gpuhub_not_authorized = True
            return None
        self.backoff.succeeded(username, address, time.monotonic())
        return username

    # -- set-password links ------------------------------------------------------------------

    def _link_mac(self, handler, payload: bytes) -> str:
        secret = handler.settings["cookie_secret"]
        secret = secret if isinstance(secret, bytes) else secret.encode()
        return hmac.new(secret, b"gpuhub-set-password:" + payload, hashlib.sha256).hexdigest()

    def _password_mark(self, username: str) -> str:
        """Changes when the password does: a used link is no longer valid."""
        info = self.get_user(username)
        return hashlib.sha256(info.password if info is not None else b"").hexdigest()[:16]

    def set_password_link(self, handler, username: str) -> str:
        payload = json.dumps({"u": username, "e": int(time.time() + 3600 * self.set_password_link_hours),
                              "m": self._password_mark(username)}, separators=(",", ":")).encode()
        token = base64.urlsafe_b64encode(payload).decode().rstrip("=") + "." + self._link_mac(handler, payload)
        # absolute, to hand out; the scheme the browser used (the first of X-Forwarded-Proto's
        # entries: the proxy appends its own "http" behind Caddy's "https")
        scheme = (handler.request.headers.get("X-Forwarded-Proto") or handler.request.protocol).split(",")[0].strip()
        return f"{scheme}://{handler.request.host}{handler.hub.base_url}set-password/{token}"

    def check_set_password_token(self, handler, token: str) -> str | None:
        try:
            encoded, mac = token.rsplit(".", 1)
            payload = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            if not hmac.compare_digest(mac, self._link_mac(handler, payload)):
                return None
            fields = json.loads(payload)
            username = fields["u"]
        except (ValueError, KeyError, TypeError):
            return None
        if not isinstance(username, str) or fields.get("e", 0) < time.time():
            return None
        if fields.get("m") != self._password_mark(username) or not hub_knows(self.db, username):
            return None
        return username

    def seed_admin_accounts(self) -> None:
        missing = [name for name in sorted(self.admin_users) if not self.user_exists(name)]
        if not missing:
            return
        if not self.initial_admin_password_file:
            self.log.warning("Admin accounts %s do not exist and no initial password file is set; "
                             "they can be claimed by signing up", missing)
            return
        with open(self.initial_admin_password_file) as f:
            password = f.read().strip()
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt())
        for name in missing:
            self.db.add(UserInfo(username=self.normalize_username(name), password=hashed, is_authorized=True))
            self.log.info("Created admin account %r with the initial password from %s",
                          name, self.initial_admin_password_file)
        self.db.commit()
