"""The embedded login on JupyterHub 6: NativeAuthenticator 1.3.0's login handler times logins
with JupyterHub 5's statsd client, which JupyterHub 6 removed; ours serves a copy that does not."""
import asyncio
import inspect
import re
from types import SimpleNamespace

import nativeauthenticator.handlers as native_handlers
import pytest
from jupyterhub.handlers.base import BaseHandler

from hub.hub_process.config.native_auth import (GuardedSignUpHandler, GuardedToggleAuthorizationHandler,
                                    SeededNativeAuthenticator, StatsdFreeLoginHandler)


def test_jupyterhub_has_no_statsd_any_more():
    """Why StatsdFreeLoginHandler exists; when this fails, JupyterHub brought statsd back."""
    assert not hasattr(BaseHandler, "statsd")


def test_the_login_route_is_served_by_the_statsd_free_handler():
    authenticator = SeededNativeAuthenticator.__new__(SeededNativeAuthenticator)  # no database needed
    handlers = dict(authenticator.get_handlers(app=None))
    assert handlers[r"/login"] is StatsdFreeLoginHandler
    assert native_handlers.LoginHandler not in handlers.values()
    # sign-up and approval are guarded (names the hub knows); the others are NativeAuthenticator's
    assert handlers[r"/signup"] is GuardedSignUpHandler
    assert handlers[r"/authorize/([^/]*)"] is GuardedToggleAuthorizationHandler
    assert handlers[r"/change-password"] is native_handlers.ChangePasswordHandler
    assert {r"/invite", r"/set-password/([^/]+)"} <= set(handlers)


def test_no_other_nativeauthenticator_handler_uses_statsd():
    """StatsdFreeLoginHandler only covers LoginHandler: a newer NativeAuthenticator that uses
    statsd elsewhere fails here instead of on a user's request."""
    using = {name for name, cls in inspect.getmembers(native_handlers, inspect.isclass)
             if cls.__module__ == native_handlers.__name__ and re.search(r"\bstatsd\b", inspect.getsource(cls))}
    assert using <= {"LoginHandler"}


def login_handler(cls, login_user):
    cls = type(cls.__name__, (cls,), {"authenticator": SimpleNamespace()})  # no back-off (stock has none)
    handler = cls.__new__(cls)
    form = {"username": "alice", "password": "secret"}
    handler.request = SimpleNamespace(arguments={k: [v.encode()] for k, v in form.items()})
    handler.get_argument = lambda name, default=None, strip=True: form.get(name, default)
    handler.get_body_argument = handler.get_argument
    handler.login_user = login_user
    handler.get_next_url = lambda user: "/hub/spawn"
    handler.redirected = []
    handler.redirect = handler.redirected.append
    return handler


def test_a_login_posts_without_statsd():
    user = SimpleNamespace(name="alice")

    async def login_user(data):
        assert data == {"username": "alice", "password": "secret"}
        return user

    handler = login_handler(StatsdFreeLoginHandler, login_user)
    asyncio.run(handler.post())
    assert handler.redirected == ["/hub/spawn"] and handler._jupyterhub_user is user

    stock = login_handler(native_handlers.LoginHandler, login_user)
    with pytest.raises(AttributeError, match="statsd"):
        asyncio.run(stock.post())
