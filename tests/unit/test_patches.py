"""The JupyterHub workarounds (hub/hub_process/patches/): each still fits the pinned JupyterHub, refuses
another version, and does what it says."""
import asyncio

import jupyterhub
import pytest

from hub.hub_process.patches import (PatchVersionError, api_body_500, error_reason, request_checks, require, restart_check,
                         system_resolver)


def test_wrapped_jupyterhub_method_still_exists():
    from jupyterhub.handlers.base import BaseHandler
    assert asyncio.iscoroutinefunction(BaseHandler.prepare)
    assert callable(BaseHandler._resolve_roles_and_scopes)  # what a refusal calls before raising


@pytest.mark.parametrize("module", [request_checks, api_body_500, error_reason, restart_check, system_resolver])
def test_each_patch_was_written_for_the_pinned_jupyterhub(module):
    require(module.__name__, module.WRITTEN_FOR, module.UPSTREAM)  # raises if not
    assert module.UPSTREAM


def test_a_patch_refuses_a_jupyterhub_it_was_not_written_for(monkeypatch):
    monkeypatch.setattr(jupyterhub, "__version__", "6.2.0")
    with pytest.raises(PatchVersionError, match=r"hub.hub_process.patches.api_body_500 works around JupyterHub >=6.1,<6.2.*this is JupyterHub 6.2.0.*WRITTEN_FOR"):
        require("hub.hub_process.patches.api_body_500", api_body_500.WRITTEN_FOR, api_body_500.UPSTREAM)


@pytest.mark.parametrize("method,path,body,refused", [
    ("POST", "/hub/api/users/a/server", b"[]", True),  # JupyterHub 6 would start the server
    ("POST", "/hub/api/users/a/servers/named", b'"gpu"', True),
    ("POST", "/hub/api/users/a/server", b'{"profile": "gpu"}', False),
    ("POST", "/hub/api/users/a/server", b"not json", False),  # JupyterHub's own 400
    ("PATCH", "/hub/api/users/a/server", b'{"profile": "gpu"}', True),
    ("PATCH", "/hub/api/users/a/servers/x", b'"gpu"', True),
    ("PATCH", "/hub/api/users/a/server", b'{"user_options": {"profile": "gpu"}}', False),
    ("POST", "/hub/api/users", b"", False),
    ("POST", "/hub/api/users", b"not json", False),  # JupyterHub's own 400
    ("POST", "/hub/api/users", b'{"usernames": [1, 2]}', True),
    ("POST", "/hub/api/users", b'{"usernames": "alice"}', True),
    ("POST", "/hub/api/users", b'{"usernames": ["alice", "bob"]}', False),
    ("POST", "/prefix/hub/api/users", b"[]", True),
    ("GET", "/hub/api/users", b"[]", False),
    ("POST", "/hub/api/users/a/tokens", b"[]", False),
])
def test_api_bodies_jupyterhub_would_answer_with_500(method, path, body, refused):
    assert bool(api_body_500.malformed_api_body(method, path, body)) is refused


def test_jupyterhub_takes_an_empty_list_as_no_server_options():
    """Why api_body_500 still checks server starts on JupyterHub 6 (which refuses other
    bodies that are not objects itself): when this fails, upstream fixed it."""
    from types import SimpleNamespace

    from jupyterhub.apihandlers.users import UserServerAPIHandler
    from tornado import web

    handler = UserServerAPIHandler.__new__(UserServerAPIHandler)
    handler.request = SimpleNamespace(body=b"[]")
    assert handler.get_server_json_body() == {"display_name": None, "user_options": None}
    handler.request = SimpleNamespace(body=b'"gpu"')
    with pytest.raises(web.HTTPError, match="400"):
        handler.get_server_json_body()


def test_wrapped_restart_methods_still_exist():
    from jupyterhub.handlers.base import BaseHandler
    from jupyterhub.spawner import Spawner
    from jupyterhub.user import User
    assert asyncio.iscoroutinefunction(User._wait_up) and asyncio.iscoroutinefunction(BaseHandler.stop_single_user)
    assert {"pending", "active", "_check_pending"} <= set(dir(Spawner))


def test_the_restart_check_waits_briefly_other_waits_unchanged():
    assert restart_check.check_timeout(120, True) == restart_check.CHECK_TIMEOUT == 10
    assert restart_check.check_timeout(120, False) == 120 and restart_check.check_timeout(5, True) == 5


class PendingSpawner:
    def __init__(self, pending, clears_after):
        self._pending, self._until = pending, clears_after

    @property
    def pending(self):
        import time
        return self._pending if time.monotonic() < self._until else None


def test_a_stop_waits_for_a_pending_check_then_says_what_is_still_pending():
    import time
    cleared = PendingSpawner("check", time.monotonic() + 0.3)
    assert asyncio.run(restart_check.wait_not_pending(cleared, 5, step=0.05)) is None
    stuck = PendingSpawner("check", time.monotonic() + 60)
    t0 = time.monotonic()
    assert asyncio.run(restart_check.wait_not_pending(stuck, 0.3, step=0.05)) == "check"
    assert time.monotonic() - t0 < 2
    assert asyncio.run(restart_check.wait_not_pending(PendingSpawner("stop", time.monotonic() + 60), 5)) is None


def test_a_stop_after_the_restart_check_removed_the_server_is_a_204_not_a_keyerror(monkeypatch):
    from types import SimpleNamespace

    from jupyterhub.handlers.base import BaseHandler
    from jupyterhub.user import User
    monkeypatch.setattr(restart_check, "_installed", False)
    monkeypatch.setattr(User, "_wait_up", User._wait_up)  # install() wraps it; put back after
    calls = []

    async def fake_original(self, user, server_name=""):
        calls.append(server_name)
        raise KeyError("User %s has no such spawner %r", user.name, server_name)
    monkeypatch.setattr(BaseHandler, "stop_single_user", fake_original)
    restart_check.install()
    gone = SimpleNamespace(name="hubkill0", spawners={})
    assert asyncio.run(BaseHandler.stop_single_user(SimpleNamespace(log=None), gone, "")) is None
    assert calls == []  # JupyterHub's stop_single_user (KeyError: a 500) is not reached


def test_a_stop_while_the_check_turns_into_a_stop_is_not_a_500(monkeypatch):
    """Found by make test: the restart check gave up on a server during the Stop's wait and
    began stopping it; JupyterHub's stop_single_user then raised RuntimeError 'pending stop'."""
    import time
    from types import SimpleNamespace

    from jupyterhub.handlers.base import BaseHandler
    from jupyterhub.user import User
    monkeypatch.setattr(restart_check, "_installed", False)
    monkeypatch.setattr(User, "_wait_up", User._wait_up)
    calls = []

    async def fake_original(self, user, server_name=""):
        calls.append(server_name)
        raise RuntimeError("hubkill0 pending stop")
    monkeypatch.setattr(BaseHandler, "stop_single_user", fake_original)
    restart_check.install()

    class CheckThenStop:  # pending "check" for 0.2 s, then "stop" (still active)
        def __init__(self):
            self.turn = time.monotonic() + 0.2
            self.active, self._log_name = True, "hubkill0"

        @property
        def pending(self):
            return "check" if time.monotonic() < self.turn else "stop"

    user = SimpleNamespace(name="hubkill0", spawners={"": CheckThenStop()})
    handler = SimpleNamespace(log=SimpleNamespace(info=lambda *a: None))
    assert asyncio.run(BaseHandler.stop_single_user(handler, user, "")) is None
    assert calls == []


def api_error(handler_class, exception):
    """What JupyterHub's APIHandler.write_error writes for this exception."""
    import json
    import sys

    handler = handler_class.__new__(handler_class)
    written = []
    handler.set_header = handler.clear_header = lambda *args: None
    handler.write = written.append
    try:
        raise exception
    except Exception:
        handler.write_error(exception.status_code, exc_info=sys.exc_info())
    return json.loads(written[0])


def test_an_api_error_without_a_message_says_its_status(monkeypatch):
    from jupyterhub.apihandlers.base import APIHandler
    from jupyterhub.handlers.base import BaseHandler
    from tornado import web

    # JupyterHub 6.1 alone: null (when this fails, upstream fixed it and error_reason can go)
    assert api_error(APIHandler, web.HTTPError(405)) == {"status": 405, "message": None}

    monkeypatch.setattr(error_reason, "_installed", False)
    for cls in (BaseHandler, APIHandler):
        monkeypatch.setattr(cls, "write_error", cls.__dict__["write_error"])  # put back after
    error_reason.install()
    assert api_error(APIHandler, web.HTTPError(405)) == {"status": 405, "message": "Method Not Allowed"}
    assert api_error(APIHandler, web.HTTPError(404)) == {"status": 404, "message": "Not Found"}
    # errors that say something keep it
    assert api_error(APIHandler, web.HTTPError(400, "Invalid JSON")) == {"status": 400, "message": "Invalid JSON"}
    assert api_error(APIHandler, web.HTTPError(409, reason="Busy"))["message"] == "Busy"


def test_the_hubs_http_client_resolves_with_the_system_resolver(monkeypatch):
    import asyncio

    from aiohttp.resolver import DefaultResolver, ThreadedResolver
    from jupyterhub.httpclient import JupyterHubHTTPClient

    async def resolvers():
        client = JupyterHubHTTPClient()
        plain = JupyterHubHTTPClient._new_connector(client)._resolver
        monkeypatch.setattr(system_resolver, "_installed", False)
        monkeypatch.setattr(JupyterHubHTTPClient, "_new_connector", JupyterHubHTTPClient._new_connector)
        system_resolver.install()
        patched = client._new_connector()
        admins = DefaultResolver()
        client.connector_options = {"resolver": admins}  # an admin's choice is kept
        kept = client._new_connector()._resolver is admins
        return plain, patched._resolver, kept

    plain, patched, kept = asyncio.run(resolvers())
    assert kept
    assert isinstance(plain, DefaultResolver)  # aiodns is installed: c-ares, which failed on Swarm overlays
    assert isinstance(patched, ThreadedResolver)
