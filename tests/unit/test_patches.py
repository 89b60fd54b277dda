"""The JupyterHub workarounds (hub/patches/): each still fits the pinned JupyterHub, refuses
another version, and does what it says."""
import asyncio

import jupyterhub
import pytest

from hub.patches import PatchVersionError, api_body_500, request_checks, require


def test_wrapped_jupyterhub_method_still_exists():
    from jupyterhub.handlers.base import BaseHandler
    assert asyncio.iscoroutinefunction(BaseHandler.prepare)


@pytest.mark.parametrize("module", [request_checks, api_body_500])
def test_each_patch_was_written_for_the_pinned_jupyterhub(module):
    require(module.__name__, module.WRITTEN_FOR, module.UPSTREAM)  # raises if not
    assert module.UPSTREAM


def test_a_patch_refuses_a_jupyterhub_it_was_not_written_for(monkeypatch):
    monkeypatch.setattr(jupyterhub, "__version__", "6.0.0")
    with pytest.raises(PatchVersionError, match=r"hub.patches.api_body_500 works around JupyterHub >=5.5,<5.6.*this is JupyterHub 6.0.0.*WRITTEN_FOR"):
        require("hub.patches.api_body_500", api_body_500.WRITTEN_FOR, api_body_500.UPSTREAM)


@pytest.mark.parametrize("method,path,body,refused", [
    ("POST", "/hub/api/users/a/server", b"[]", True),
    ("POST", "/hub/api/users/a/servers/named", b'"gpu"', True),
    ("POST", "/hub/api/users/a/server", b'{"profile": "gpu"}', False),
    ("POST", "/hub/api/users/a/server", b"", False),
    ("POST", "/hub/api/users/a/server", b"not json", False),  # JupyterHub's own 400
    ("POST", "/hub/api/users", b'{"usernames": [1, 2]}', True),
    ("POST", "/hub/api/users", b'{"usernames": "alice"}', True),
    ("POST", "/hub/api/users", b'{"usernames": ["alice", "bob"]}', False),
    ("POST", "/prefix/hub/api/users", b"[]", True),
    ("GET", "/hub/api/users", b"[]", False),
    ("POST", "/hub/api/users/a/tokens", b"[]", False),
])
def test_api_bodies_jupyterhub_would_answer_with_500(method, path, body, refused):
    assert bool(api_body_500.malformed_api_body(method, path, body)) is refused
