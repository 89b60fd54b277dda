"""The hub's roster route (hub/hub_process/roster_api.py), registered by configure_console: its scope, and
its checks of the body before anything is created. (The route at work: tests/e2e/
test_teaching_labs.py, where the console's token creates a roster's users through it.)"""
import pytest
from traitlets.config import Config

from hub.hub_process import roster_api


def test_install_registers_the_route_and_its_scope_once():
    c = Config()
    c.JupyterHub.extra_handlers = [("/api/other", object)]
    roster_api.install(c)
    roster_api.install(c)
    assert [p for p, _ in c.JupyterHub.extra_handlers] == ["/api/other", "/api/gpuhub/roster"]
    assert "never delete" in c.JupyterHub.custom_scopes[roster_api.SCOPE]["description"]


@pytest.mark.parametrize("body,key,words", [
    ({"users": "alice"}, "users", "must be a list of names"),
    ({"users": ["alice", 3]}, "users", "must be a list of names"),
    ({"users": [" "]}, "users", "must be a list of names"),
    ({"groups": ["g"] * 201}, "groups", "more than 200 names"),
])
def test_bad_name_lists_are_refused(body, key, words):
    with pytest.raises(ValueError, match=words):
        roster_api.names(body, key)


def test_name_lists_default_to_none():
    assert roster_api.names({}, "users") == [] and roster_api.names({"users": ["a"]}, "users") == ["a"]
