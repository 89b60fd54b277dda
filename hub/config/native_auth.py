"""The embedded login used when no OAuth provider is configured.

NativeAuthenticator lets people sign up and an admin approve them. Left alone, the admin
account is whoever signs up first under the admin's name; here the admin account is created
at hub start with the initial password that gpuhub-init wrote (from HUB_ADMIN_PASSWORD, or
generated), so that race never opens.

NativeAuthenticator 1.3.0 (the newest) was written for JupyterHub 5: its login handler times
each login with ``self.statsd``, which JupyterHub 6 removed (jupyterhub#5407), so every login
would be a 500. StatsdFreeLoginHandler gives it a timer that records nothing (JupyterHub 6's
own login metrics are Prometheus'), and get_handlers serves it at /login in its place.
"""
import bcrypt
from nativeauthenticator import NativeAuthenticator
from nativeauthenticator.handlers import LoginHandler
from nativeauthenticator.orm import UserInfo
from traitlets import Unicode


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


def without_statsd(handlers: list[tuple]) -> list[tuple]:
    """NativeAuthenticator's handlers with its LoginHandler swapped for StatsdFreeLoginHandler."""
    return [(route, StatsdFreeLoginHandler if handler is LoginHandler else handler, *rest)
            for route, handler, *rest in handlers]


class SeededNativeAuthenticator(NativeAuthenticator):
    initial_admin_password_file = Unicode(
        "",
        config=True,
        help="""File with the initial password of the admin users, created on first start.

        Used only to create an admin account that does not exist yet; once created, the admin
        changes the password at /hub/change-password and this file no longer matters.
        """,
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seed_admin_accounts()

    def get_handlers(self, app):
        return without_statsd(super().get_handlers(app))

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
